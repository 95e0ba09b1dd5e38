"""Detection quality and pipeline overhead of batch scoring on a labelled set of calls.

    python bench/evaluate.py [CALLS_DIR] [--hotwords] [--model M] [--threads N]

CALLS_DIR holds ``*.wav`` with ``*.labels.json`` (turns with speaker, start,
end and tags, plus the call's phrasebook), as ``../shared/samples/calls`` and
``samples/`` do. Prints per call and overall:

- forbidden-phrase recall and precision: a labelled ``forbidden`` agent turn
  is found when a forbidden event overlaps it within ±1 s; an event that
  overlaps no such turn is a false alarm;
- greeting and farewell checks against the ``greeting``/``farewell`` tags;
- coverage: the report's share of VAD speech covered by words, and labelled
  turns heard (a turn is heard when the transcript of its speaker around it
  holds a quarter of its characters), for the pipeline and for bare
  faster-whisper;
- the whole pipeline's time against bare faster-whisper (int8, beam 5, VAD,
  same prompt, no word timestamps) on the same audio in the same run, as wall
  time and as CPU time of this process. Both run as ``monitor score`` runs a
  call: one CTranslate2 thread (``batch.SCORING_THREADS``; the batch's
  parallelism is its processes). CPU time is the cost; on a machine shared
  with other work it is also the steadier of the two. ``--threads 0`` lets
  CTranslate2 choose (all cores), as a single ``monitor transcribe`` does;
  CPU time then includes threads waiting for each other.

Held-out style calls (noisy, telephone band, long gaps, a sparse agent
channel) are made from ``bench/data/heldout/*.json`` with
``synth_call.py SCRIPT.json OUT_DIR`` (see the shared tools' README) and
evaluated by passing OUT_DIR.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections import Counter

from labelled import forbidden_agent_turns, overlaps

from dataclasses import dataclass, field

from monitor.asr import DEFAULT_PROMPT, Transcriber
from monitor.batch import SCORING_ENVIRONMENT, SCORING_THREADS
from monitor.audio import load_call
from monitor.phrasebook import load_phrasebook
from monitor.report import is_violation
from monitor.pipeline import ScoreOptions, score_call
from monitor.text import spoken

HEARD_SHARE = 0.25
"""A labelled turn is heard when the transcript around it holds this share of its characters:
low, because this counts turns lost, not misheard (digits, for one, come out as numerals)."""


class Clock:
    """Wall and CPU seconds spent in ``with`` blocks."""

    def __init__(self) -> None:
        self.wall_s = self.cpu_s = 0.0

    def __enter__(self) -> Clock:
        self._started = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s += time.perf_counter() - self._started[0]
        self.cpu_s += time.process_time() - self._started[1]


@dataclass
class Tally:
    """Detection, coverage and time of the pipeline, summed over the calls."""

    clock: Clock = field(default_factory=Clock)
    found: int = 0
    labelled: int = 0
    events_ok: int = 0
    events_all: int = 0
    held: int = 0
    checks_agree: int = 0
    checks_all: int = 0
    heard: int = 0
    characters: int = 0
    coverages: list[float] = field(default_factory=list)


def bare_whisper(transcriber: Transcriber, path: str) -> list[dict]:
    """Bare faster-whisper's transcript of the same audio (both channels of a stereo call)."""
    call = load_call(path)
    transcript = []
    for speaker, channel in (("agent", call.agent), ("customer", call.customer)):
        if channel is not None:
            segments, _ = transcriber.model.transcribe(
                channel, language="zh", beam_size=5, vad_filter=True, initial_prompt=DEFAULT_PROMPT
            )
            transcript += [{"speaker": speaker, "start": s.start, "end": s.end, "text": s.text} for s in segments]
    return transcript


def turns_heard(labels: dict, transcript: list[dict], stereo: bool) -> int:
    """Labelled turns whose words the transcript holds (by speaker on a stereo call)."""
    heard = 0
    for turn in labels["turns"]:
        said = Counter(spoken(turn["text"]))
        around = "".join(
            t["text"] for t in transcript
            if (not stereo or t["speaker"] == turn["speaker"]) and overlaps(t["start"], t["end"], turn, 0.5)
        )  # fmt: skip
        heard += sum((said & Counter(spoken(around))).values()) >= HEARD_SHARE * sum(said.values())
    return heard


def score_labelled(
    tally: Tally, transcriber: Transcriber, options: ScoreOptions, labels: dict, audio: str, stereo: bool,
    heard_bare: int, loading: Clock,
) -> str:
    """Score one labelled call, add its counts to ``tally``; returns its table row
    (``heard_bare``: the call's turns bare faster-whisper heard; ``loading``: the
    clock of phrasebook loading, which a process does once per phrasebook)."""
    with loading:
        phrasebook = load_phrasebook(labels["phrasebook"])
    with tally.clock:
        report = score_call(audio, transcriber, phrasebook, options, labels["call_id"], labels.get("agent_id"))
    call_heard = turns_heard(labels, report["transcript"], stereo)
    tally.characters += sum(len(spoken(t["text"])) for t in report["transcript"])
    tally.heard += call_heard
    if report["coverage"] is not None:
        tally.coverages.append(report["coverage"])

    wanted = forbidden_agent_turns(labels)
    forbidden = [e for e in report["events"] if e["kind"] == "forbidden"]
    hit_turns = sum(1 for t in wanted if any(overlaps(e["start"], e["end"], t) for e in forbidden))
    tally.found += hit_turns
    tally.labelled += len(wanted)
    tally.events_ok += sum(1 for e in forbidden if any(overlaps(e["start"], e["end"], t) for t in wanted))
    tally.events_all += len(forbidden)
    tally.held += sum(1 for e in forbidden if not is_violation(e))

    checks = {c["id"]: c["passed"] for c in report["checks"] or []}
    verdicts = []
    for check in ("greeting", "farewell"):
        expected = any(check in t["tags"] and t["speaker"] == "agent" for t in labels["turns"])
        agree = checks.get(check) == expected
        tally.checks_agree += agree
        tally.checks_all += 1
        verdicts.append(f"{'ok' if agree else 'WRONG'}:{checks.get(check)}")
    false_alarms = [e["heard"] for e in forbidden if not any(overlaps(e["start"], e["end"], t) for t in wanted)]
    flagged = " 部分语音未识别" if any(r["kind"] == "partial_transcript" for r in report["review"]) else ""
    return (f"{hit_turns:>7}/{len(wanted):<7} {len(false_alarms):>12} "
            f"{verdicts[0]:>9} {verdicts[1]:>9} {report['score']['total']!s:>5} {report['coverage']!s:>8} "
            f"{call_heard:>5}/{len(labels['turns']):<5} {heard_bare:>5}{flagged}"
            + (f"  false alarms: {false_alarms}" if false_alarms else ""))  # fmt: skip


def print_tally(
    tally: Tally, turns: int, heard_bare: int, bare: Clock, audio_s: float, loading: Clock, bare_characters: int
) -> None:
    recall = tally.found / tally.labelled if tally.labelled else 1.0
    precision = tally.events_ok / tally.events_all if tally.events_all else 1.0
    coverages = tally.coverages
    print(f"\nforbidden phrases: recall {recall:.3f} ({tally.found}/{tally.labelled}), precision {precision:.3f} "
          f"({tally.events_ok}/{tally.events_all})  target >= 0.95 each")
    print(f"  of the {tally.events_all} forbidden events, {tally.held} held for review (speaker uncertain, no deduction)")
    print(f"greeting/farewell checks agree with labels: {tally.checks_agree}/{tally.checks_all} = "
          f"{tally.checks_agree / tally.checks_all:.3f}  target >= 0.95")
    print(f"labelled turns heard: {tally.heard}/{turns} (bare faster-whisper {heard_bare}/{turns}); coverage of VAD speech "
          f"min {min(coverages, default=float('nan')):.3f}, mean {sum(coverages) / max(len(coverages), 1):.3f}")
    clock = tally.clock
    print(f"time: pipeline {clock.wall_s:.1f} s wall, {clock.cpu_s:.1f} s CPU; bare faster-whisper {bare.wall_s:.1f} s wall, "
          f"{bare.cpu_s:.1f} s CPU; audio {audio_s:.1f} s")
    print(f"pipeline/bare ratio: wall {clock.wall_s / bare.wall_s:.2f}x, CPU {clock.cpu_s / bare.cpu_s:.2f}x "
          f"(target <= 0.60x); RTF pipeline {clock.wall_s / audio_s:.3f}, bare {bare.wall_s / audio_s:.3f}")  # fmt: skip
    print(f"characters transcribed: pipeline {tally.characters}, bare {bare_characters}; CPU ms per character "
          f"{1000 * clock.cpu_s / max(tally.characters, 1):.1f}, bare {1000 * bare.cpu_s / max(bare_characters, 1):.1f}")
    print(f"not in the pipeline's time: loading the phrasebooks, {loading.cpu_s:.1f} s CPU once per process "
          f"(with it: CPU {(clock.cpu_s + loading.cpu_s) / bare.cpu_s:.2f}x)")


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("calls", nargs="?", default=os.path.join(here, "..", "..", "shared", "samples", "calls"))
    parser.add_argument("--hotwords", action="store_true", help="bias decoding with the phrasebook's vocabulary")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=SCORING_THREADS, help="CTranslate2 threads (0: its own choice)")
    args = parser.parse_args()

    if args.threads == SCORING_THREADS:
        os.environ.update(SCORING_ENVIRONMENT)  # as in a scoring process, before the model loads
    transcriber = Transcriber(args.model, cpu_threads=args.threads)
    options = ScoreOptions(use_hotwords=args.hotwords)
    tally = Tally()
    bare, loading = Clock(), Clock()
    audio_s, turns, heard_bare, bare_characters = 0.0, 0, 0, 0
    print(f"{'call':30} {'forbidden found':>15} {'false alarms':>12} {'greeting':>9} {'farewell':>9} {'score':>5} "
          f"{'coverage':>8} {'turns heard':>11} {'bare':>5}")  # fmt: skip
    for label_path in sorted(glob.glob(os.path.join(args.calls, "*.labels.json"))):
        with open(label_path, encoding="utf-8") as handle:
            labels = json.load(handle)
        audio = label_path.replace(".labels.json", ".wav")
        call = load_call(audio)
        stereo = call.customer is not None
        audio_s += call.duration_s
        turns += len(labels["turns"])
        with bare:
            bare_transcript = bare_whisper(transcriber, audio)
        call_heard_bare = turns_heard(labels, bare_transcript, stereo)
        heard_bare += call_heard_bare
        bare_characters += sum(len(spoken(t["text"])) for t in bare_transcript)
        print(f"{labels['call_id']:30} {score_labelled(tally, transcriber, options, labels, audio, stereo, call_heard_bare, loading)}")

    print_tally(tally, turns, heard_bare, bare, audio_s, loading, bare_characters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
