"""Alert latency and recall of the live monitor against batch scoring.

Feeds every sample call at speech speed (``--realtime``) through one in-process
``LiveCall`` at a time, and reports ``latency_s`` of every first-pass forbidden
alert (p50, p95), where that time went (``LiveCall.latency_parts``), how many
alerts the second pass retracted, alerts on a customer's words (by the labels),
and the recall of labelled forbidden turns, live and batch.

    python bench/live_latency.py [/work/shared/samples/calls | CALL.wav ...] [--time-scale 1]

Wall latency depends on the machine's load. To compare two versions, run them
alternately call by call, each writing its alerts with ``--json``, then
``--summary BEFORE.jsonl AFTER.jsonl``; the held-back part in call seconds
(``held_audio_s``) does not depend on load.

Measured 2026-11-28 on the 10 sample calls and the 11 calls of tests/data/roles
(21 calls, 24 first-pass alerts), before (5f26633) and after the per-rule guard
reach and the early mono alert once the voices are told apart, run alternately
call by call on a machine at load ~12 on 2 cores: latency_s p50/p95 1.38/3.31
before, 1.25/3.32 after; audio after the phrase 0.62/0.70 s mean, decode
0.52/0.48 s, held back 0.53/0.38 s (16/17 of 24 alerts held for the speaker's
role, the voices not yet told apart). In lockstep (``--lockstep``, the mono
mixes of 16 of those calls, 22 alerts), held back 0.53 s of call time before,
0.51 s after; firing every provisional alert that leans to the agent (voices
told apart or not) held nothing back, but raised 3 more alerts on customers'
words, all withdrawn at the commit (retracted 1/22 -> 4/25).

Measured 2026-11-28 in lockstep on the mono mixes of 33 calls (the 10 samples,
tests/data/roles, held-out /tmp/roles_heldout dev+held x01-x04 y01-y04 and
/tmp/cov/heldout h01-h04), before (fdd4caa) and after the look-ahead at a
pause's onset (``StreamingOptions.pause_lookahead_s``), the early mono alert
before the voices are told apart (``LiveCall._early_on_mono``) and
``LiveRoles.judge`` fitting the voices as the commit will. Policy part of the
latency of alerts on the agent's words (audio_call_s + held_audio_s, call
seconds, load-free): p50/p95 0.89/2.17 s -> 0.64/1.14 s (samples 0.88/1.30 ->
0.64/1.04, held-out 0.97/2.82 -> 0.69/1.41); held for role 24/38 -> 15/39.
Alerts on customers' words 12 -> 11, none naming the agent surely in either
(naming the agent, uncertain, 9 -> 11; naming the customer 3 -> 0); retracted
2 -> 4; live recall 38/44 both. CPU (``bench/capacity.py --profile 180``):
0.444 -> 0.468 CPU s per audio second at full look-ahead, 0.328 -> 0.321 at
2x spacing (the pause look-ahead is shed under load); the first pass alone
0.371 -> 0.394 of it. Real time, base and new side by side on a machine at
load ~11 (samples + roles_heldout/held, agent's words): latency_s p50/p95
1.34/1.79 -> 1.23/2.80 (decode_s p95 0.54 -> 1.04: load spikes), policy
part 1.05/1.61 -> 0.79/1.55.

Measured 2026-11-28 in lockstep on the mono mixes of 30 calls (the 10 samples;
held-out /tmp/roles_heldout dev+held+fresh x01-x04 y01-y04 z01-z04,
/tmp/cov/heldout h01-h04, /tmp/heldout2 w01-w04), before (a720494) and after
a phrase followed by a decoded word, or decoded at a pause, counting as heard
within ``stable_margin_s``; the next look-ahead ``recheck_every_s`` (0.3 s)
after one that left a phrase unreported (too near the audio's end, or held for
its speaker); the pause look-ahead after 0.1 s of silence (was 0.2 s; off from
look-ahead spacing 2x) and decoded once (it was decoded again at the next
step); the cadence 0.7 s compared exactly (0.6 s had come 0.7-0.8 s apart).
Machine at load 8-14 on 2 cores; lockstep parts are load-free. Policy part
(audio_call_s + held_audio_s, call seconds) of the 38 first-pass alerts on the
agent's words, p50/p95: 0.71/2.58 -> 0.64/2.57; the 32 not held for a
politeness guard 0.69/1.37 -> 0.60/0.95; samples 0.69/1.04 -> 0.48/0.73;
held-out 0.74/2.84 -> 0.66/2.84, not guard-held 0.69/1.61 -> 0.62/0.95.
The held-out tail is the guard hold: a rule hit (推诿, 训斥...) on provisional
text waits for its guard's reach (12 characters) or its sentence's commit, and
w01/w04's long sentences put those alerts 1.9-3.3 s after the phrase
(0.4-0.6 s after the sentence's end; releasing them at the pause look-ahead
instead would have alerted on w01's near miss, 这个不归我们这边，但我马上帮您…,
whose comma pause started one). Guards, unchanged: alerts on customers'
words 11 -> 11 (naming the agent surely 0 -> 0), retracted 1 -> 1, live
recall 37/41 -> 37/41. Decodes: 168 -> 158 first-pass decodes over the first
120 s of the broadband samples (499 -> 469 s of audio decoded). CPU
(``bench/capacity.py --profile 180``, run after each other at load 7-10):
0.474 -> 0.453 CPU s per audio second at full look-ahead (first pass alone
0.401 -> 0.382: the whole live call is 1.13x the first pass alone before),
0.341 -> 0.314 at 2x spacing.

Measured 2026-11-28 (lead, merged code of that day) in real time, one call at a
time, on the 10 samples plus the sealed /tmp/heldout4 (k01-k05, never tuned
to) and /tmp/heldout3 (h3_01-h3_06): the machine at load ~1 after the first
samples. 33 first-pass alerts: latency_s p50/p95/max 1.11/4.39/5.95 after the
phrase; after the labelled turn's end (``after_turn_s``, the measure of the
comparison with WhisperLive) p50/p95/max 0.62/3.26/5.63 on the agent's words.
Held for a guard 22 alerts (held_s p95 2.92), for the role 7 (p95 0.98).
Retracted 6/39; alerts on customers' words 7, none naming the agent surely;
live recall 23/28 (heldout4 6/8). The held-out tail is the guard hold and
late hearing (k01's 你也听不懂 first heard 3.4 s of call time after it was
said); the samples alone are no guide to it.

Measured 2026-11-28 (issue 16: the politeness-guard hold), in lockstep with the
decodes cached (``--lockstep --cache DIR``: the guard policy changes no decode,
so each policy replays the same windows; call seconds, load-free) on 26
development calls: the 10 samples, /tmp/heldout3 (h3_01-06), /tmp/heldout2
(w01-04), bench/data/live_heldout (h1-h3) and bench/data/latency_dev (ld01-03:
polite continuations after a pause, real customer voices). Measures on the
agent's forbidden words: the first alert of each flagged labelled turn (31),
call seconds after its phrase and after the turn's end; near-miss alerts (in
turns labelled near_miss) and how long they were shown before withdrawn.

| policy (``--guard-wait``) | after phrase p50/p95 | after turn end p50/p95 | near misses shown (withdrawn, shown call s) | on customers | retracted | live recall |
|---|---|---|---|---|---|---|
| before: hold the whole reach or the commit (b07cf27) | 0.86/3.34 | 0.14/0.60 | 3 (2, after 1.8/4.8 s; 1 stood) | 7 | 5/51 | 32/36 |
| hold, the guard's reach past the commit (``whole``) | 0.86/3.34 | 0.14/0.60 | 3 (3, 0.8-1.8 s) | 8 | 7/52 | 32/36 |
| (B) wait 8 characters (the farthest polite guard measured) | 0.86/2.76 | 0.10/0.60 | 3 (3, 0.8-1.8 s) | 8 | 7/53 | 32/36 |
| (B) wait 4 characters | 0.84/2.27 | 0.01/0.60 | 3 (3, 0.8-1.8 s) | 8 | 7/54 | 32/36 |
| (A) alert when heard, withdraw if guarded (``0``, chosen) | 0.55/1.80 | -0.29/0.24 | 4 (4, 0.7-2.0 s) | 8 | 8/56 | 32/36 |

(A rule's hit over words another phrase was alerted on is now the same act,
not a second alert: 58 alerts before, per alert on the agent's forbidden words
after the phrase p95 4.01 -> 2.50 call s. The code's own wording after a rule
heard first still alerts: d06's 反问 rule on 你问我，我问… then 你问我，我问谁.) Polite guards come 2-8 characters after the rule's words in the near-miss
texts of the labelled calls and the match/compliance cases (25 cancelled hits,
p95 6.6): a wait short enough to matter alerts on them too, and a rule match
that grows with the next words (管不了…你自己去找) moves its end, so the wait
restarts. The "before" hold left ld02's near miss standing (这事我们处理不了，
then 0.6 s later 我这边帮您转到维修部门: the commit ended the guard's reach);
now the reach runs past the commit until a 1 s pause. With the first pass's alert on it withdrawn, ld02's near miss
gets a second-pass alert of the meaning model instead (meaning.shirking on the
refined 这事我们处理不了，我这边帮您转到维修部门，请稍等, at its deduct level: the
report holds it too). The one added alert on
a customer's words is h3_04's, withdrawn as guarded and raised again by the
second pass (the refined text holds it unguarded). The remaining tail after
the phrase (1.6-2.5 s: h3_02, h3_06, w01, w04) is late hearing: short
look-ahead windows mishear the phrase (跟你说的多小变了 for 跟你说了多少遍了;
行了行了 as 请问请问/写了写了) until a window of 2-4 s hears it; no window
cut, VAD or shedding in lockstep. The policy costs no decode (same windows);
its matching is a few matcher calls per look at a pending hit.

The same, in real time (one call at a time, one decoder, A and the whole-reach
hold alternately call by call, the machine at load ~9 from other jobs) on 11
of those calls (w01-w04, h3_02/04/06, ld02-03, h1, h3): wall latency_s of
first-pass alerts p50/p95 1.14/4.19 (A) against 1.24/4.41 (hold); after the
labelled turn's end (wall) 0.24/1.70 against 0.60/1.66; the first alert of
each flagged turn 0.74/2.10 call s after its phrase against 1.04/3.42, and
p95 0.87 against 1.00 after the turn's end; near misses shown 2 and 2, both
withdrawn as guarded (1.2 and 1.35 s); on customers 7 and 7; retracted 6/35
both; live recall 19/22 both. The late first hearings (1.6-2.0 s of call time
after the phrase: w04, h3_02, h3_06; w01 in the hold's run) had no second
pass between the phrase and the decode that heard it (``second_pass_s`` 0)
and no lag: the look-aheads ran and misheard, as in lockstep. (An earlier
version withdrew a pending alert whose sentence's commit heard it otherwise:
in this run that cost w01 its 跟你说了多少遍了, so only a guard withdraws.)

Measured 2026-11-28 (latency5), in lockstep with ``--cache`` on 28 development
calls (the 10 samples, bench/data/latency_dev ld01-ld05, /tmp/heldout2 w01-w04,
/tmp/heldout3 h3_01-h3_06, bench/data/live_heldout h1-h3): the first alert of
each of the 36 flagged forbidden turns came p50/p95 0.57/1.72 call s after its
phrase. Where that time went (``where it went``): hearing the phrase 73% (26
heard by a cadence look-ahead, p50 0.39 s; 10 by one at a pause's onset, p50
0.53 s), of it late hearing (more than 1 s, 6 alerts) 36% of all: short
look-ahead windows of phone-band or noisy speech mishear the phrase
(跟你说的多小变了 for 跟你说了多少遍了, 写了写了 for 行了行了) until a window of
the whole sentence hears it; beam 3, or encoder padding from 1 to 30 s, heard
those windows the same. The speaker's role 27% (17 alerts, p50 0.20 s): a
sentence-final phrase on a mono call whose voices are not told apart yet waits
for the pause's onset. No first alert waited for a guard or a commit. The
decoding since the audio arrived (``decode_call_s``: the cached decodes' own
times, as recorded at various loads) p50/p95 0.26/0.76 s before, 0.20/0.52 s
after the pause's onset reused a decode that had reached the end of the speech
(``UtteranceStream._missed_before``; 1701 -> 1640 windows decoded); policy and
decoding together after the phrase, samples 0.75/1.13 -> 0.69/1.13 s (max 1.25;
the samples at real time measured 0.77/1.17, max 1.38), all 0.91/1.95 ->
0.86/1.95 s. Unchanged: alerts on customers' words 7 (none naming the agent
surely), near misses 5, all withdrawn; live recall 38/42, batch (roles
separated, as ``monitor score``) 34/42; live misses: 2 never heard by either
pass, 2 first-pass alerts the second pass heard otherwise (``not_heard_again``;
batch missed both too). Live transcript on ld01-ld05 (``bench/live_accuracy.py
--no-realtime``, 638 characters): CER batch 0.241, first pass 0.270, refined
0.229 (refined - batch = -0.013); CPU refined / first pass 1.17x. In real
time (``--summary``), before (51c9e46) and after alternately call by call on
the samples d02-d09 (11 first-pass alerts, 8 flagged turns), the machine at
load 1-3: latency_s p50/p95/max 0.83/1.20/1.21 -> 0.82/1.07/1.17 after the
phrase, after the labelled turn's end p95 0.75 -> 0.68; held for the role 8 ->
7 alerts (held_s p95 0.87 -> 0.79); the rest there: audio after the phrase p50
0.20, decode p50 0.16 s. The role wait is what is left to cut on the samples
(46% of the first alerts' call seconds after): a sentence-final phrase before
the voices are told apart waits for Silero to find the pause (0.2-0.3 s after
the last word). Tried and left: the pause look-ahead after 0.064 s of silence
(was 0.1): in lockstep on the 28 calls the first alerts' policy part p50/p95
0.57/1.72 -> 0.51/1.70 s, but 6% more windows decoded and one more alert on a
customer's words (8).

Measured 2026-11-28 (latency6: the wait for the speaker's role on mono calls), on the
10 samples and five fresh mono calls with real customer voices (bench/data/latency_dev
ld06-ld10, written before measuring), with the 18 other development calls above for the
guards. In lockstep with ``--cache``: of the 15 first-pass alerts held for the role on
the samples and ld06-ld10, not one had its voices told apart (confidence None at every
look): the real customers say nothing a customer says (no 你们, no complaint), so
``LIVE_CUSTOMER_HEARD`` is never reached, and every sentence-final phrase waits for Silero
to find the pause (0.1 s of silence, found 0.3-0.6 s after Whisper's last word end) or 4
characters after it; the first alerts of flagged turns p50/p95/max 0.51/0.75/0.81 call s
after the phrase, of which the role wait 48%. Tried and left (lockstep, 33 calls):
- the decode's own gap after the last word as the pause: of 2096 look-aheads, 149 ended
  0.25 s or more before their window's end, and in 106 of them (71%) the turn went on:
  Whisper leaves out a word still being spoken (这是我们。 with 公司规定的 coming). With a
  0.2 s gap and Silero's last frame below 0.35, the first alerts p50 0.57 -> 0.49 call s,
  p95 1.64 -> 1.64 (samples and ld06-ld10: 0.51/0.75 -> 0.46/0.75), alerts on customers
  9 -> 9: no gain at the tail for a release that would hear customers' sentences half;
- a pause look-ahead after 0.064 s of silence only while a phrase waits: the role wait of
  the first alerts p50/p95 0.25/0.80 -> 0.30/0.97 call s (Silero's lag is its probability's
  slow fall, not the 0.1 s), 6 more windows;
- alerting at once with the speaker uncertain: 3 of the hits held for the role and never
  alerted were customers' words (d09 我不知道, w01 你问我，我问谁, h3_06 我也没办法), so
  3 more alerts on customers.
What was kept: ``LiveRoles.judge`` reuses the last description of the same uncommitted
sentence (``_open_voice``): a held phrase was described again with the speaker encoder at
every look-ahead, on the decoding thread ahead of the alert. Lockstep alerts identical on the
33 calls (75 alerts, 9 on customers' words, none naming the agent surely; live recall 45/51).
The emitting ``_alert`` took p50/p95 0.134/0.215 -> 0.025/0.137 s of wall time at load ~10
(thread CPU 0.02/0.03 -> 0.01/0.02 s): under load the encoder's few tens of ms of CPU were
a tenth of a second of latency. Estimated without load, base and new alternately call by
call (lockstep call seconds of the policy + the decodes since the last block as recorded
+ the emitting call's thread CPU), the 19 first-pass alerts on the agent's words of the
samples and ld06-ld10: p50/p95/max 0.63/0.94/1.04 -> 0.62/0.94/1.03 s; so on a quiet
machine the change is worth about 10 ms, and the role wait (14 of the 19, p95 0.97 s)
still sets the tail. In real time, base and new alternately call by call on the same 15
calls, the machine at load 6-12 from other jobs throughout (decode_s p50 0.57 and 0.78 s):
latency_s p50/p95 1.41/3.39 -> 1.76/3.45, held for the role held_s p50/p95 0.86/1.38 ->
0.65/1.26; alerts on customers' words 2 and 2 (none naming the agent surely); live recall
16/17 and 15/17 (ld09's 你有没有搞错 never heard in the second run, by either pass: the
windows a loaded decoder gets to differ). Alert p95 <= 1.0 s in real time was not shown here.

Measured 2026-11-28 (livefirst: the first pass on noisy phone-band mono calls), in lockstep
with ``--cache`` on /tmp/heldout5 (l01-l08, 8 noisy/phone mono calls, 19 forbidden agent
turns) and the 33 development calls of /tmp/me/lroles/calls (51 turns). Per turn
(``--summary --misses``): heldout5, a standing first-pass alert 11, a second-pass alert
only 4, neither 4; of the 8 first-pass misses, 2 had a first-pass alert the second pass
withdrew as ``not_heard_again`` (it misheard them: 别老打电话催我们 refined as 延老打电话吹我们),
5 were first-pass mishearings (小学生 as 小些声, 私底下 as 肃底下, 爱人卡 as 爱颜卡: 4 the
second pass heard right; 药代 as 腰带 by both), 1 both passes heard right and nothing matched
(今晚就让您破费了: the phrasebook, not the first pass). No miss was a phrase cut across
windows: the first pass's text of each missed turn, joined, matches nothing either.
Over both sets the second pass withdrew 10 first-pass alerts as ``not_heard_again``: 8 on
labelled forbidden turns of the agent's, 1 on a customer's words (uncertain), 1 on a near
miss. Kept: those alerts stand (``LiveCall._revise_alerts``). Same decodes (policy only):
heldout5 first-pass alerts standing 11 -> 13 of 19 turns, live recall 15 -> 17; first alert
of each flagged turn p50/p95 1.16/3.27 -> 0.76/3.00 call s after its phrase; development
42 -> 45 of 51, live recall 45 -> 47; alerts on customers' words standing 7 -> 8 (heldout5:
l04's shirking.not_mine, uncertain) and 8 -> 8, naming the agent surely 0 and 0; a near miss standing
0 -> 1 (h3_05's mocking.shabby). Tried and left (no forbidden turn flagged differently):
the first pass prompted with batch decoding's prompt (``--prompt-chars 0``, 5 heldout5 and
12 development calls); beam 3 for the decodes at a pause (pause look-ahead, a commit's own
decode), 6 heldout5 and 21 development calls, at 1.08x the first pass's CPU (``--no-refine``
under ``time``, l01, l05, ld04: 86.0 -> 92.8 CPU s with the model's load); the meaning model
on the first pass's committed mono sentences whose speaker is uncertain (``LiveCall._meaning_hits``
judges only those surely the agent's): heldout5 first-pass 13 -> 15 turns (l07, l08: what the
second pass's meaning model found before), development 45 -> 45, but alerts on
customers' words 8 -> 9 and 9 -> 10 (new first-pass meaning alerts on l02, l05, l06's customers).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from labelled import forbidden_agent_turns, labelled_calls, labels_of, latency_summary, overlaps
from roles import TURN_SLACK_S, speaker_at, turn_at

from monitor.audio import SAMPLE_RATE, load_call
from monitor.live import LiveCall
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.roles import match_by_role, separate_roles
from monitor.sources import FileSource
from monitor.stream import DecodeScheduler, StreamingOptions

LIVE_TOLERANCE_S = 0.5
"""Stricter than batch's ±1 s: a live alert must point at the turn itself."""
PARTS = ("audio_s", "audio_call_s", "decode_s", "second_pass_s", "held_s", "held_audio_s")


class DecodeCache:
    """A transcriber's ``decode_window`` kept on disk by its input: a lockstep run
    decodes the same windows whatever the alert policy (the guard wait changes no
    decode), so every policy after the first is measured without Whisper. Each entry
    keeps the seconds its decode took."""

    def __init__(self, transcriber, folder: Path):
        self.transcriber, self.folder = transcriber, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.entries: dict = {}
        self.misses = 0
        self.decodes = 0
        """Windows decoded (or replayed) in this run."""
        self.decode_s = 0.0
        """What those decodes took when they were decoded (the first pass's CPU, at whatever load then)."""

    def for_call(self, name: str):
        """The transcriber to hand a call: decodes come from (and go to) the call's file."""
        self.path = self.folder / f"{name}.pickle"
        self.entries = pickle.loads(self.path.read_bytes()) if self.path.exists() else {}
        view = copy.copy(self.transcriber)
        view.decode_window = self.decode_window
        return view

    def decode_window(self, samples, options, speaker="agent", offset=0.0):
        key = hashlib.sha1(samples.tobytes() + repr((options, speaker, round(offset, 4))).encode()).hexdigest()
        if key not in self.entries:
            started = time.perf_counter()
            segments = self.transcriber.decode_window(samples, options, speaker, offset)
            self.entries[key] = (segments, time.perf_counter() - started)
            self.misses += 1
        self.decodes += 1
        self.decode_s += self.entries[key][1]
        return self.entries[key][0]

    def save(self) -> None:
        if self.misses:
            self.path.write_bytes(pickle.dumps(self.entries))
            self.misses = 0


class DecodeWaits:
    """A lockstep sink: for each alert, the seconds the decodes since the last block of audio took
    when they were decoded (``DecodeCache``): the decoder's share of its latency on one call
    alone in real time, without the machine's load of the moment (what one decoder spends
    before it can alert on the audio just fed; an alert raised without a decode waits for none)."""

    def __init__(self, cache: DecodeCache | None):
        self.cache = cache
        self.waits: list[float] = []
        self._from = 0.0

    def block(self) -> None:
        self._from = self.cache.decode_s if self.cache else 0.0

    def send(self, event: dict) -> None:
        if event["type"] == "alert":
            self.waits.append(round(self.cache.decode_s - self._from, 3) if self.cache else None)


class Heard:
    """A sink keeping what each pass heard: the first pass's committed segments and
    look-ahead texts, and the second pass's refined segments (``revised`` events)."""

    def __init__(self):
        self.first: list[tuple[float, float, str]] = []
        self.partial: list[tuple[float, float, str]] = []
        self.refined: list[tuple[float, float, str]] = []

    def send(self, event: dict) -> None:
        if event["type"] == "segment":
            self.first.append((event["start"], event["end"], event["text"]))
        elif event["type"] == "partial":
            self.partial.append((event["start"], event["end"], event["text"]))
        elif event["type"] == "revised":
            self.refined += [(s["start"], s["end"], s["text"]) for s in event["segments"]]

    def during(self, spans: list[tuple[float, float, str]], turn: dict) -> str:
        return " | ".join(text for start, end, text in spans if overlaps(start, end, turn, LIVE_TOLERANCE_S))


def by_pass(turns: list[dict], alerts: list[dict], heard: Heard | None) -> list[dict]:
    """Each labelled forbidden turn: flagged by a standing first-pass alert on the agent's
    words, by a second-pass one only, or by neither; with the label's text and what each
    pass heard there (the first pass's committed text and its last look-ahead text)."""
    rows = []
    for turn in turns:
        near = [a for a in alerts if a["speaker"] == "agent" and not a["retracted"]
                and overlaps(a["start"], a["end"], turn, LIVE_TOLERANCE_S)]
        shown = [a for a in alerts if a["pass"] == 1 and a["speaker"] == "agent"
                 and overlaps(a["start"], a["end"], turn, LIVE_TOLERANCE_S)]
        row = {"start": turn["start"], "end": turn["end"], "label": turn["text"],
               "pass1": any(a["pass"] == 1 for a in near), "pass2": any(a["pass"] == 2 for a in near),
               "pass1_shown": bool(shown)}
        if heard is not None:
            row.update(first=heard.during(heard.first, turn), refined=heard.during(heard.refined, turn))
        rows.append(row)
    return rows


def recalled(turns: list[dict], hits: list[tuple[float, float]]) -> int:
    return sum(any(overlaps(start, end, turn, LIVE_TOLERANCE_S) for start, end in hits) for turn in turns)


def run_call(wav: Path, transcriber, scheduler, time_scale: float, batch: bool, lockstep: bool,
             options: StreamingOptions | None = None, cache: DecodeCache | None = None) -> dict:
    """One call fed at speech speed (or ``lockstep``: its mono mix, decoded
    after each block): its alerts (with their latency parts) and recall."""
    labels = json.loads(labels_of(wav).read_text())
    heard = Heard()
    decoded_before = (cache.decodes, cache.decode_s) if cache else (0, 0.0)
    phrasebook = load_phrasebook(labels.get("phrasebook", "broadband"))
    matcher = matcher_for(phrasebook)
    if lockstep:
        waits = DecodeWaits(cache)
        call = LiveCall(wav.stem, phrasebook, matcher, [waits, heard], stereo=False, options=options)
        samples = load_call(str(wav), "mono").agent
        decoder = cache.for_call(wav.stem) if cache else transcriber
        for at in range(0, len(samples), SAMPLE_RATE // 10):
            call.feed(samples[at : at + SAMPLE_RATE // 10, None])
            waits.block()
            call.catch_up(decoder)
        call.end()
        call.catch_up(decoder)
        if cache:
            cache.save()
    else:
        source = FileSource(str(wav), realtime=True, time_scale=time_scale)
        call = LiveCall(wav.stem, phrasebook, matcher, [heard], stereo=source.channels > 1, options=options)
        call.scheduler = scheduler
        scheduler.add(call)
        for frames in source:
            call.feed(frames)
        call.end()
        call.wait()
    turns = forbidden_agent_turns(labels)
    alerts = []
    decode_waits = waits.waits if lockstep and cache else [None] * len(call.alerts)
    for alert, parts, decode_wait in zip(call.alerts, getattr(call, "latency_parts", [{}] * len(call.alerts)),
                                         decode_waits):
        if decode_wait is not None:
            parts = {**parts, "decode_call_s": decode_wait}
        middle = (alert["start"] + alert["end"]) / 2
        alerts.append({**{k: alert[k] for k in ("phrase_id", "start", "end", "pass", "latency_s", "speaker",
                                                 "uncertain_speaker")}, "guard_pending": alert.get("guard_pending"),
                       "retracted": bool(alert.get("retracted")), "said_by": speaker_at(labels["turns"], middle),
                       "after_turn_s": None if lockstep else after_turn_s(alert, labels["turns"], time_scale),
                       "near_miss": "near_miss" in turn_at(labels["turns"], middle)["tags"],
                       **parts})
        if parts.get("heard_to") is not None:  # call seconds: what the policy costs, whatever the load
            turn = turn_at(labels["turns"], middle)
            alerts[-1]["after_turn_call_s"] = round(parts["heard_to"] - turn["end"], 3)
        if parts.get("withdrawn_at") is not None:
            alerts[-1]["shown_call_s"] = round(parts["withdrawn_at"] - parts["heard_to"], 3)
    live = [(a["start"], a["end"]) for a in alerts if a["speaker"] == "agent" and not a["retracted"]]
    missed = missed_turns(turns, alerts, call.on_customer)
    row = {"call": wav.stem, "stereo": call.stereo, "turns": len(turns), "live": recalled(turns, live), "missed": missed,
           "alerts": alerts, "first_in_turn": first_in_turn(turns, alerts),
           "by_pass": by_pass(turns, alerts, heard),
           "decodes": cache.decodes - decoded_before[0] if cache else None,
           "decode_s": round(cache.decode_s - decoded_before[1], 2) if cache else None,
           "audio_s": round(call.duration_s, 2), "asr_s": round(call.asr_s, 2)}
    if batch:  # as ``monitor score`` scores it: a mono call's roles separated (``pipeline.ScoreOptions``)
        mono = lockstep or not call.stereo  # (in lockstep the live call heard the mono mix too)
        audio = load_call(str(wav), "mono" if mono else "left")
        segments = transcriber.transcribe_call(audio)
        hits = matcher.match_segments(segments)
        row["batch_any_speaker"] = recalled(turns, [(h.start, h.end) for h in hits if h.kind == "forbidden"])
        if mono:
            hits = match_by_role(matcher, separate_roles(audio.agent, segments, phrasebook))
        row["batch"] = recalled(turns, [(h.start, h.end) for h in hits if h.kind == "forbidden" and h.speaker == "agent"])
    return row


def missed_turns(turns: list[dict], alerts: list[dict], on_customer: list[tuple]) -> list[dict]:
    """Why each labelled forbidden turn no standing alert on the agent's words flagged was missed:
    an alert there withdrawn (by its reason: ``guarded``, ``customer``; ``not_heard_again`` in runs
    of code before a first-pass alert stood when the second pass heard the words otherwise), its phrase found but its speaker surely the
    customer (``on_customer``, by pass), or nothing ever found there (neither pass heard a phrase)."""
    missed = []
    for turn in turns:
        near = [a for a in alerts if overlaps(a["start"], a["end"], turn, LIVE_TOLERANCE_S)]
        if any(a["speaker"] == "agent" and not a["retracted"] for a in near):
            continue
        customer = [f"pass {p}" for hit, p in on_customer if overlaps(hit.start, hit.end, turn, LIVE_TOLERANCE_S)]
        why = ([f"withdrawn: {a.get('withdrawn_for')}" for a in near if a["retracted"]]
               + [f"on the customer: {a['phrase_id']}" for a in near if not a["retracted"] and a["speaker"] != "agent"]
               + [f"surely the customer's, {p}" for p in customer])
        missed.append({"start": turn["start"], "end": turn["end"], "why": sorted(set(why)) or ["never heard"]})
    return missed


def first_in_turn(turns: list[dict], alerts: list[dict]) -> list[dict]:
    """For each labelled forbidden turn a first-pass alert standing on the agent's words flagged,
    the first such alert's call seconds after its phrase and after the turn's end: when the
    supervisor learnt of the violation (a second phrase over the same words adds nothing)."""
    firsts = []
    for turn in turns:
        flagged = [a for a in alerts if a["pass"] == 1 and a["speaker"] == "agent" and not a["retracted"]
                   and a.get("heard_to") is not None and overlaps(a["start"], a["end"], turn, LIVE_TOLERANCE_S)]
        if flagged:
            first = min(flagged, key=lambda a: a["heard_to"])
            firsts.append({"after_phrase_call_s": round(first["heard_to"] - first["end"], 3),
                           "after_turn_call_s": round(first["heard_to"] - turn["end"], 3),
                           **{k: first.get(k) for k in ("audio_call_s", "held_audio_s", "held_for", "heard_by",
                                                        "decode_s", "held_s", "decode_call_s")}})
    return firsts


def after_turn_s(alert: dict, turns: list[dict], time_scale: float) -> float | None:
    """Seconds from the end of the labelled turn that holds the phrase to the alert, as the issue's
    peers were compared ("completed text after a turn ends"); negative when the alert came while the
    turn was still being spoken. None when the phrase lies in no labelled turn."""
    middle = (alert["start"] + alert["end"]) / 2
    turn = turn_at(turns, middle)
    if not turn["start"] - TURN_SLACK_S <= middle <= turn["end"] + TURN_SLACK_S or alert.get("latency_s") is None:
        return None
    return round(alert["latency_s"] - (turn["end"] - alert["end"]) / time_scale, 3)


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95 = np.percentile(values, [50, 95])
    return f"p50={p50:.2f} p95={p95:.2f}"


def summary(rows: list[dict]) -> None:
    alerts = [a for row in rows for a in row["alerts"]]
    first = [a for a in alerts if a["pass"] == 1]  # pass 2 waits for the refinement
    print(f"forbidden alerts (pass 1): {len(first)}  {latency_summary([a['latency_s'] for a in first])}")
    for part in PARTS:
        values = [a[part] for a in first if a.get(part) is not None]
        print(f"  {part:13s} {percentiles(values)}  mean={np.mean(values) if values else float('nan'):.2f}")
    agents = [a for a in first if a["said_by"] == "agent" and a.get("audio_call_s") is not None]
    policy = [a["audio_call_s"] + a["held_audio_s"] for a in agents]
    unguarded = [a["audio_call_s"] + a["held_audio_s"] for a in agents if a.get("held_for") != "guard"]
    print(f"  policy part (audio_call_s + held_audio_s, call s) on the agent's words: {len(policy)} alerts "
          f"{percentiles(policy)}; not held for a guard: {len(unguarded)} {percentiles(unguarded)}")
    after_turn = [a["after_turn_s"] for a in first if a["said_by"] == "agent" and a.get("after_turn_s") is not None]
    if after_turn:
        print(f"  after the labelled turn's end (wall s) on the agent's words: {len(after_turn)} alerts "
              f"{percentiles(after_turn)} max={max(after_turn):.2f}")
    held = {}
    for a in first:
        held.setdefault(a.get("held_for"), []).append(a["held_s"] if a.get("held_s") is not None else 0.0)
    for why, values in sorted(held.items(), key=lambda item: str(item[0])):
        print(f"  held for {why!s:6s}: {len(values):3d} alerts, held_s {percentiles(values)}")
    policy_summary(first, rows)
    retracted = [a for a in alerts if a["retracted"]]
    reasons = {}
    for a in retracted:
        reasons[a.get("withdrawn_for")] = reasons.get(a.get("withdrawn_for"), 0) + 1
    print(f"alerts: {len(alerts)} ({len(alerts) - len(first)} pass 2), retracted later {len(retracted)}"
          f" = {len(retracted) / max(1, len(alerts)):.3f} (pass 1: {sum(a['pass'] == 1 for a in retracted)};"
          f" by reason {reasons})")
    on_customer = [a for a in alerts if a["said_by"] == "customer"]
    print(f"alerts on a customer's words: {len(on_customer)}, naming the agent surely: "
          f"{sum(a['speaker'] == 'agent' and not a['uncertain_speaker'] for a in on_customer)}")
    if all("asr_s" in row for row in rows):
        asr, audio = sum(row["asr_s"] for row in rows), sum(row["audio_s"] for row in rows)
        print(f"decoding: {asr:.1f} s for {audio:.1f} s of audio (rtf {asr / max(audio, 1e-9):.3f})")
    turns = sum(row["turns"] for row in rows)
    live = sum(row["live"] for row in rows)
    line = f"recall of labelled forbidden turns: live {live}/{turns}={live / max(1, turns):.3f}"
    if all("batch" in row for row in rows):
        batch = sum(row["batch"] for row in rows)
        line += f"  batch {batch}/{turns}={batch / max(1, turns):.3f}"
    if all("batch_any_speaker" in row for row in rows):
        any_speaker = sum(row["batch_any_speaker"] for row in rows)
        line += f" (a mono call's roles separated, as monitor score; any speaker's words: {any_speaker}/{turns})"
    print(line)
    if all("missed" in row for row in rows):
        reasons: dict[str, int] = {}
        for row in rows:
            for turn in row["missed"]:
                for why in turn["why"]:
                    reasons[why] = reasons.get(why, 0) + 1
        print(f"  live misses by why (a turn may count under several): {dict(sorted(reasons.items()))}")
    if all("by_pass" in row for row in rows):
        turns = [(row["call"], t) for row in rows for t in row["by_pass"]]
        first = sum(t["pass1"] for _, t in turns)
        second = sum(t["pass2"] and not t["pass1"] for _, t in turns)
        print(f"forbidden turns by pass: {len(turns)} turns; a standing first-pass alert {first}, "
              f"a second-pass alert only {second}, neither {len(turns) - first - second} "
              f"(a first-pass alert shown, standing or not: {sum(t['pass1_shown'] for _, t in turns)})")
    if all(row.get("decode_s") is not None for row in rows):
        print(f"first and second pass decodes (lockstep, as decoded): {sum(row['decodes'] for row in rows)} windows, "
              f"{sum(row['decode_s'] for row in rows):.1f} s")


def first_pass_misses(rows: list[dict]) -> None:
    """The labelled forbidden turns no standing first-pass alert flagged: the label's text,
    what the first pass committed there and what the second pass heard."""
    for row in rows:
        for turn in row.get("by_pass", []):
            if not turn["pass1"]:
                print(f"{row['call']} {turn['start']:.1f}-{turn['end']:.1f} pass2={turn['pass2']} "
                      f"shown={turn['pass1_shown']}\n  label:   {turn['label']}\n"
                      f"  first:   {turn.get('first')}\n  refined: {turn.get('refined')}")


def policy_summary(first: list[dict], rows: list[dict]) -> None:
    """The alert policy's measures in call seconds (load-free; lockstep gives the same on any
    machine): latency after the phrase and after the labelled turn's end on the agent's forbidden
    words, and the alerts on near misses (a polite continuation) shown, and for how long."""
    forbidden = [a for a in first if a["said_by"] == "agent" and not a["near_miss"] and a.get("heard_to") is not None]
    if not forbidden:
        return
    after_phrase = [a["audio_call_s"] + a["held_audio_s"] for a in forbidden]
    after_turn = [a["after_turn_call_s"] for a in forbidden]
    print(f"  call seconds on the agent's forbidden words ({len(forbidden)} alerts): after the phrase "
          f"{percentiles(after_phrase)} max={max(after_phrase):.2f}; after the turn's end {percentiles(after_turn)}"
          f" max={max(after_turn):.2f}")
    near = [a for a in first if a["said_by"] == "agent" and a["near_miss"]]
    if all("first_in_turn" in row for row in rows):
        firsts = [f for row in rows for f in row["first_in_turn"]]
        phrase, turn = [f["after_phrase_call_s"] for f in firsts], [f["after_turn_call_s"] for f in firsts]
        print(f"  first alert of each flagged forbidden turn ({len(firsts)}): after the phrase {percentiles(phrase)} "
              f"max={max(phrase, default=0):.2f}; after the turn's end {percentiles(turn)} max={max(turn, default=0):.2f}")
        time_goes(firsts)
    withdrawn = [a for a in near if a.get("withdrawn_for") in ("guarded", "not_heard_again", "customer")]
    shown = [a["shown_call_s"] for a in withdrawn if a.get("shown_call_s") is not None]
    print(f"  near-miss alerts shown: {len(near)}, withdrawn {len(withdrawn)} "
          f"(shown for {percentiles(shown)} call s, max {max(shown, default=0):.2f}; by reason "
          f"{sorted(a['withdrawn_for'] for a in withdrawn)}), left standing {len(near) - len(withdrawn)}"
          f" ({[a['phrase_id'] for a in near if a not in withdrawn]})")
    for a in near:
        print(f"    near miss {a['phrase_id']} {a['start']}-{a['end']} guard_pending={a.get('guard_pending')} "
              f"withdrawn={a.get('withdrawn_for')} shown={a.get('shown_call_s')}")


def time_goes(firsts: list[dict]) -> None:
    """Where the first alerts' latency went: hearing the phrase (call seconds from its end to the
    decode that first matched it, by that decode's kind: a look-ahead, one at a pause's onset, or
    the sentence's commit when no look-ahead heard it), then the hold for the speaker's role or the
    politeness guard (call seconds), and in real time the decode wait (wall: queue and decode)."""
    if not firsts or firsts[0].get("audio_call_s") is None:
        return
    total = sum(f["audio_call_s"] + f["held_audio_s"] for f in firsts)
    print(f"  where it went ({len(firsts)} first alerts, {total:.1f} call s in all):")
    for kind in ("look-ahead", "pause", "commit"):
        mine = [f for f in firsts if f.get("heard_by") == kind]
        if mine:
            hearing = [f["audio_call_s"] for f in mine]
            print(f"    heard by a {kind:10s} {len(mine):3d} alerts, hearing {percentiles(hearing)} "
                  f"max={max(hearing):.2f}, {sum(hearing) / max(total, 1e-9):.0%} of the time")
    for why in ("role", "guard"):
        held = [f["held_audio_s"] for f in firsts if f.get("held_for") == why]
        if held:
            print(f"    held for {why:5s} {len(held):3d} alerts, {percentiles(held)} max={max(held):.2f}, "
                  f"{sum(held) / max(total, 1e-9):.0%} of the time")
    late = [f["audio_call_s"] for f in firsts if f["audio_call_s"] > 1.0]
    print(f"    heard more than 1 s after the phrase: {len(late)} alerts ({sum(late) / max(total, 1e-9):.0%} of the time)")
    simulated = [f for f in firsts if f.get("decode_call_s") is not None]
    if simulated:
        waits = [f["decode_call_s"] for f in simulated]
        alone = [f["after_phrase_call_s"] + f["decode_call_s"] for f in simulated]
        print(f"    decoding since the last block (lockstep, as decoded): {percentiles(waits)} max={max(waits):.2f}, "
              f"{sum(waits) / max(total + sum(waits), 1e-9):.0%} of policy and decoding; with the policy part, "
              f"after the phrase {percentiles(alone)} max={max(alone):.2f}")
    decode = [f["decode_s"] for f in firsts if f.get("decode_s") is not None]
    if decode:
        print(f"    decode wait (wall) {percentiles(decode)} max={max(decode):.2f}; held (wall) "
              f"{percentiles([f['held_s'] for f in firsts if f.get('held_s') is not None])}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("calls", nargs="*", default=["/work/shared/samples/calls"],
                        help="labelled calls, or folders of them (default: the shared samples)")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--json", help="append each call's alerts to this JSON-lines file")
    parser.add_argument("--no-batch", action="store_true", help="skip batch scoring (recall against batch)")
    parser.add_argument("--lockstep", action="store_true",
                        help="feed each call's mono mix and decode after every block (as monitor live --file): "
                             "the same decodes on any machine; wall latencies then mean nothing, held_audio_s does")
    parser.add_argument("--partial-every", type=float, help="StreamingOptions.partial_every_s (look-ahead cadence)")
    parser.add_argument("--summary", nargs="+", metavar="JSONL", help="only summarise files written with --json")
    parser.add_argument("--misses", action="store_true",
                        help="with --summary: print the forbidden turns the first pass missed, label and heard text")
    parser.add_argument("--guard-wait", metavar="N|whole",
                        help="StreamingOptions.guard_wait_chars: characters a rule hit waits for its politeness guard "
                             "before a guard_pending alert; whole: its guard's whole reach (or the commit)")
    parser.add_argument("--prompt-chars", type=int,
                        help="StreamingOptions.prompt_chars: the first pass's prompt from the speaker's committed text "
                             "(0: batch decoding's prompt)")
    parser.add_argument("--no-refine", action="store_true",
                        help="no second pass (StreamingOptions.refine None): the first pass's CPU alone, "
                             "as `time` measures the whole run")
    parser.add_argument("--cache", type=Path, help="with --lockstep: keep each call's decodes here between runs")
    args = parser.parse_args()
    if args.summary:  # (over the calls every file holds, each call's last run)
        runs = [{row["call"]: row for row in map(json.loads, Path(path).read_text().splitlines())}
                for path in args.summary]
        common = [call for call in runs[0] if all(call in run for run in runs)]
        for path, run in zip(args.summary, runs):
            print(f"== {path}: {len(common)} calls")
            summary([run[call] for call in common])
            if args.misses:
                first_pass_misses([run[call] for call in common])
        return 0
    from monitor.asr import Transcriber

    try:
        wavs = labelled_calls(args.calls)
    except ValueError as error:
        parser.error(str(error))
    options = StreamingOptions()
    if args.partial_every:
        options.partial_every_s = args.partial_every
    if args.no_refine:
        options.refine = None
    if args.prompt_chars is not None:
        options.prompt_chars = args.prompt_chars
    if args.guard_wait is not None:
        options.guard_wait_chars = None if args.guard_wait == "whole" else int(args.guard_wait)
    transcriber = Transcriber(cpu_threads=2)
    cache = DecodeCache(transcriber, args.cache) if args.cache and args.lockstep else None
    scheduler = DecodeScheduler(transcriber)
    rows = []
    for wav in wavs:
        rows.append(run_call(wav, transcriber, scheduler, args.time_scale, batch=not args.no_batch,
                            lockstep=args.lockstep, options=options, cache=cache))
        first = [a["latency_s"] for a in rows[-1]["alerts"] if a["pass"] == 1]
        print(f"{wav.stem:28s} turns={rows[-1]['turns']} live={rows[-1]['live']} batch={rows[-1].get('batch', '-')} "
              f"alerts={len(rows[-1]['alerts'])} latency_s={first}", flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as out:
                out.write(json.dumps(rows[-1], ensure_ascii=False) + "\n")
    scheduler.close()
    print()
    summary(rows)
    if cache:
        print(f"windows decoded: {cache.decodes}, taking {cache.decode_s:.1f} s when decoded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
