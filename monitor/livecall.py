"""One live call: the streams of its speakers, its phrase watch and where its events go.

A ``LiveCall`` is one call being listened to: one ``UtteranceStream`` per
speaker, the phrase watch, and the sinks its events go to. Sources (``live.py``)
and the WebSocket ingest (``ingest.py``) feed it from their own threads; a
``DecodeScheduler`` shared by every call in the process does the decoding.
"""

from __future__ import annotations

import bisect
import datetime
import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from monitor.alerts import WebhookSink
from monitor.asr import Segment, segment_of
from monitor.meaning import model_for
from monitor.roles import REVIEW_BELOW, LiveRoles, text_evidence, uncertain_or_unknown
from monitor.sources import speaker_channels
from monitor.stream import (
    Committed, DecodeScheduler, Hypothesis, PhraseWatch, RefineJob, RefineOptions, StreamingOptions, UtteranceStream,
    characters_after, refined_segments,
)

log = logging.getLogger(__name__)

ROLE_REACH_CHARS = 4
"""Characters heard after a forbidden phrase on a mono stream, before its two
voices are told apart, that must carry no customer's word before it alerts
ahead of its sentence's commit (``LiveCall._early_on_mono``)."""

MAX_BACKLOG_S = 20.0
"""A source fed faster than real time (a file, a WebSocket client) waits while
this much audio is undecoded, so the VAD and decode windows and memory stay small."""


class LiveCall:
    """One call being transcribed live; events go to ``sinks`` as they happen."""

    def __init__(
        self,
        call_id: str,
        phrasebook,
        matcher,
        sinks: list,
        stereo: bool,
        agent_channel: str = "left",
        agent_id: str | None = None,
        options: StreamingOptions | None = None,
        audio_path: str | None = None,
        external_ref: str | None = None,
    ):
        self.call_id = call_id
        self.external_ref = external_ref
        """The client's own name for the call (a server owns ``call_id``)."""
        self.phrasebook = phrasebook
        self.agent_channel = agent_channel
        self.agent_id = agent_id
        self.audio_path = audio_path
        self.sinks = sinks
        self.stereo = stereo and agent_channel != "mono"
        speakers = ["agent", "customer"] if self.stereo else ["agent"]
        self.options = options or StreamingOptions()
        self.streams = [UtteranceStream(speaker, self.options) for speaker in speakers]
        self.watch = PhraseWatch(matcher, guard_wait_chars=self.options.guard_wait_chars,
                                 guard_pause_s=(self.options.refine or RefineOptions()).group_pause_s)
        self.roles = None if self.stereo else LiveRoles(matcher)
        """Who speaks each sentence of a mono stream (``roles.LiveRoles``); None on stereo."""
        self.meaning = model_for(matcher.phrasebook)
        """The meaning model (``monitor.meaning``) judging committed agent sentences; None when off."""
        self._last_agent_sentence: Segment | None = None
        self.segments: list[Segment] = []
        self.alerts: list[dict] = []
        self.started = time.monotonic()
        self.started_at = datetime.datetime.now(datetime.timezone.utc)
        """When the call began, the time its report is filed under (not when it was scored)."""
        self.asr_s = 0.0
        self.failed: str | None = None
        self.interrupted: str | None = None
        """Why the call stopped before its end (client gone, server stopping, too long); None if it ended."""
        self._fed_audio: list[float] = []  # call seconds fed so far, one entry per block
        self._fed_wall: list[float] = []  # monotonic time each block arrived
        self._lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._done = threading.Event()
        self.scheduler: DecodeScheduler | None = None
        self.refinement = {"groups": 0, "refined": 0, "not_refined": []}
        """The second pass so far: groups closed, groups refined, and those left as
        the first pass heard them (speaker, start, end, reason)."""
        self._refining = 0  # groups taken by a worker and not yet applied
        self.latency_parts: list[dict] = []
        """Where each alert's latency went, one entry per alert in ``alerts`` (``_parts``)."""
        self._held: list[tuple] = []  # (hit, Sighting, why): phrases matched and held back, when first seen
        self._refined_wall: list[tuple[float, float]] = []  # when this call's second pass had the decoder
        self.on_customer: list[tuple] = []
        """(hit, pass) of phrases not alerted on: their speaker was surely the customer (on a mono
        stream, by ``roles.LiveRoles``), for ``bench/live_latency.py`` to tell why a turn was missed."""
        self._guarded: list[tuple[dict, list]] = []
        """First-pass alerts withdrawn as ``guarded``, each with the words heard after its phrase
        that cancelled it (the second pass judges its refined text with them, ``_still_guarded``)."""

    # --- feeding (source threads) ------------------------------------------------
    def feed(self, frames: np.ndarray) -> None:
        """Add 16 kHz float32 audio shaped (frames, channels), channels as captured."""
        if self.failed or not len(frames):
            return
        for stream, samples in zip(self.streams, self._split(frames)):
            stream.feed(samples)
            if self.roles is not None:
                self.roles.feed(samples)
        with self._lock:
            self._fed_audio.append(self.streams[0].fed_until)
            self._fed_wall.append(time.monotonic())
        if self.scheduler:
            self.scheduler.wake()

    def _split(self, frames: np.ndarray) -> list[np.ndarray]:
        by_speaker = speaker_channels(frames, self.agent_channel)
        if not self.stereo and "customer" in by_speaker:  # stereo source, mono call: mix
            return [frames.mean(axis=1, dtype=np.float32)]
        return [by_speaker.get(stream.speaker, np.zeros(len(frames), np.float32)) for stream in self.streams]

    def backlog_s(self) -> float:
        return max(stream.pending_s() for stream in self.streams)

    def end(self, interrupted: str | None = None) -> None:
        """No more audio will come; decoding finishes what was fed.

        ``interrupted`` says why the call stopped before its real end; its report then says so.
        """
        if interrupted and self.interrupted is None:
            self.interrupted = interrupted
        for stream in self.streams:
            stream.end()
        if self._decoded():
            self._finish()  # nothing fed (or all decoded): no decoding step would ever finish it
        elif self.scheduler:
            self.scheduler.wake()

    def close(self) -> None:
        """Stop decoding now (e.g. a stopping server); what was decoded stays in ``segments``."""
        self._finish()

    @property
    def done(self) -> bool:
        """Decoded to its end, closed, or failed."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every stream is decoded to its end (after ``end()``)."""
        return self._done.wait(timeout)

    @property
    def duration_s(self) -> float:
        return self.streams[0].fed_until

    # --- decoding (scheduler threads) -------------------------------------------
    def waiting_since(self, stream: UtteranceStream) -> float:
        """When the oldest audio this stream has not looked at yet arrived."""
        with self._lock:
            index = bisect.bisect_right(self._fed_audio, stream.checked_until + 1e-6)
            return self._fed_wall[min(index, len(self._fed_wall) - 1)] if self._fed_wall else time.monotonic()

    def fed_at(self, call_time: float) -> float:
        """Wall time (monotonic) at which the audio at ``call_time`` had been fed."""
        with self._lock:
            index = bisect.bisect_left(self._fed_audio, call_time - 1e-6)
            return self._fed_wall[min(index, len(self._fed_wall) - 1)]

    def step(self, stream: UtteranceStream, transcriber) -> None:
        started = time.perf_counter()
        for event in stream.step(transcriber):
            if isinstance(event, Committed):
                sighting = Sighting(time.monotonic(), stream.checked_until, "commit")  # (its ending pause was heard)
                with self._lock:  # (a second pass may be replacing segments on another worker)
                    self.segments.append(event.segment)  # the stream's speaker: the report labels roles at the end
                segment = self._with_role(event.segment)
                self._emit({"type": "segment", "call_id": self.call_id, **segment.to_json(), "final": event.final})
                with self._watch_lock:
                    self._withdraw_if_customer(segment)
                    hits = self.watch.check(event.segment.words, stream.speaker, commit=True)
                    self._withdraw_guarded(event.segment.words, sighting)
                    hits += self._meaning_hits(segment)
                    self._alert(hits, event.segment.words, commit=True, sighting=sighting)
            elif isinstance(event, Hypothesis):
                sighting = Sighting(time.monotonic(), event.audio_end, "pause" if event.at_pause else "look-ahead")
                text = "".join(w.text for w in event.words)
                self._emit({"type": "partial", "call_id": self.call_id, "speaker": stream.speaker,
                            "start": round(event.words[0].start, 2), "end": round(event.words[-1].end, 2), "text": text})
                with self._watch_lock:
                    hits = self.watch.check(event.words, stream.speaker, commit=False, heard_until=event.heard_until)
                    self._withdraw_guarded(event.words, sighting)
                    self._hold(self.watch.held, sighting, "guard")
                    unheard = bool(self.watch.unheard)
                    held_for_role = self._alert(hits, event.words, commit=False, sighting=sighting,
                                                at_pause=event.at_pause)
                    stream.phrase_pending = unheard or held_for_role
        self.asr_s += time.perf_counter() - started
        if self._decoded():
            self._finish()

    def catch_up(self, transcriber, check_every_s: float = 0.1) -> None:
        """Decode on this thread everything fed so far, as the scheduler would.

        A recording fed block by block with a catch-up after each block is
        decoded the same way on any machine and at any load: the windows
        depend on the audio alone, not on when a decoder thread got to them.
        """
        while not self.done:
            ready = [stream for stream in self.streams if stream.has_work(check_every_s)]
            if not ready:
                while self.refine_jobs() and not self.done:  # every group as soon as it closes
                    self.refine(transcriber, when_quiet=False)
                return
            for stream in ready:
                self.step(stream, transcriber)

    def _alert(self, hits, words, commit: bool, decoding_pass: int = 1, sighting: Sighting | None = None,
               at_pause: bool = False) -> bool:
        """Alert on ``hits``; True when some were held back for their speaker's role."""
        held_for_role = False
        for hit in hits:  # (under _watch_lock: two workers may decode a call's two speakers at once)
            speaker, speaker_confidence = self._speaker_of(hit, words, commit, decoding_pass)
            sure = speaker_confidence is not None and speaker_confidence >= REVIEW_BELOW
            if self.roles is not None and not commit and not self._early_on_mono(
                hit, words, speaker, speaker_confidence, at_pause
            ):
                self.watch.forget(hit)
                self._hold([hit], sighting, "role")
                held_for_role = True
                continue
            if sure and speaker == "customer":
                self.on_customer.append((hit, decoding_pass))
                continue  # the customer's words are no agent violation
            event = {
                "type": "alert",
                "kind": hit.kind,
                "phrase_id": hit.phrase_id,
                "canonical": hit.canonical,
                "heard": hit.heard,
                "start": round(hit.start, 2),
                "end": round(hit.end, 2),
                "article": hit.article,
                "call_id": self.call_id,
                "speaker": speaker,
                "category": hit.category,
                "confidence": round(hit.confidence, 3),
                "speaker_confidence": speaker_confidence,
                "uncertain_speaker": speaker_confidence is None or speaker_confidence < REVIEW_BELOW,
                "pass": decoding_pass,
                "guard_pending": hit in self.watch.pending,
            }
            if hit.detected_by is not None:
                event.update(detected_by=hit.detected_by, model_probability=hit.model_probability)
            if self.external_ref is not None:
                event["external_ref"] = self.external_ref
            # Latency is measured last, just before the event is handed to the sinks.
            now = time.monotonic()
            event["latency_s"] = round(now - self.fed_at(hit.end), 3)
            self.alerts.append(event)
            self.latency_parts.append(self._parts(hit, sighting, now))
            self._emit(event)
        return held_for_role

    def _early_on_mono(self, hit, words, speaker: str, speaker_confidence: float | None, at_pause: bool) -> bool:
        """Whether a provisional hit on a mono stream alerts before its sentence is committed.

        Once the two voices are told apart (or would be, were the speech
        committed now: ``LiveRoles.judge``), it does when its voice leans to the
        agent's (``uncertain_speaker`` unless sure); it is withdrawn should its
        sentence turn out surely the customer's. Before that (no confidence),
        the words are all there is to go by, and a customer's outburst reads
        like an agent's forbidden phrase: it waits until ``ROLE_REACH_CHARS``
        more characters are heard after the phrase (where a customer's 我家的网…
        or 你们… follows 你有没有搞错), or the speaker pauses after it (``at_pause``:
        the sentence is all heard), then alerts, its speaker uncertain, only if
        nothing heard leans to the customer (``roles.text_evidence`` not below
        zero). Otherwise its sentence decides at the commit.
        """
        if speaker_confidence is not None:
            return speaker == "agent"
        if characters_after(words, hit.end) < ROLE_REACH_CHARS and not at_pause:
            return False
        text = "".join(w.text for w in words)
        return text_evidence(text, self.watch.matcher.match_text(text)) >= 0  # (a call's opening sentence too)

    def _meaning_hits(self, segment: Segment) -> list:
        """The meaning model's deducting hit in a committed agent sentence where nothing
        forbidden was found (not even provisionally): judged on committed text only, since a
        provisional sentence's meaning may still change; review-band hits wait for the report."""
        if self.meaning is None or segment.speaker != "agent":
            return []
        if self.roles is not None and uncertain_or_unknown(segment):
            return []  # on a mono stream, only sentences surely the agent's: the model has no guard words to lean on
        # with the agent's previous sentence: one stretch of such talk is one alert (meaning.STRETCH_GAP_S)
        sentences = [s for s in (self._last_agent_sentence, segment) if s is not None]
        self._last_agent_sentence = segment
        hits = [h for h in self.meaning.hits(self.watch.matcher.phrasebook, sentences, self.watch.reported)
                if h.end >= segment.end and self.meaning.deducts(h)]
        self.watch.reported += hits
        return hits

    # --- where an alert's latency goes (bench/live_latency.py) -------------------
    def _hold(self, hits, sighting: Sighting | None, why: str) -> None:
        """Note when held-back ``hits`` were first matched (a phrase is held again at every decode)."""
        for hit in hits:
            if sighting is not None and self._first_held(hit) is None:
                self._held.append((hit, sighting, why))

    def _first_held(self, hit, slack_s: float = 0.5) -> tuple | None:
        return next(((s, why) for old, s, why in self._held if old.phrase_id == hit.phrase_id
                     and old.start - slack_s < hit.end and hit.start < old.end + slack_s), None)

    def _parts(self, hit, sighting: Sighting | None, emitted: float) -> dict:
        """An alert's latency in parts: audio after the phrase before the decode
        that first matched it (``audio_s``), waiting for and doing that decode
        (``decode_s``, of which ``second_pass_s`` the decoder spent on this call's
        second pass), then held back by the alert policy (``held_s``; ``held_audio_s``
        the same in call seconds, ``held_for`` the guard or the speaker's role); ``heard_by``:
        the kind of decode that first matched it (``Sighting.heard_by``: a phrase no look-ahead
        heard waits for its sentence's commit).
        A second-pass alert has no parts."""
        if sighting is None:
            return {"held_for": None, "heard_to": None}
        first, why = self._first_held(hit) or (sighting, None)
        phrase_fed, heard_fed = self.fed_at(hit.end), self.fed_at(first.heard_to)
        return {
            "audio_s": round(heard_fed - phrase_fed, 3),
            "audio_call_s": round(first.heard_to - hit.end, 3),
            "decode_s": round(first.decoded - heard_fed, 3),
            "second_pass_s": round(sum(max(0.0, min(end, first.decoded) - max(start, heard_fed))
                                       for start, end in self._refined_wall), 3),
            "held_s": round(emitted - first.decoded, 3),
            "held_audio_s": round(sighting.heard_to - first.heard_to, 3),
            "held_for": why,
            "heard_by": first.heard_by,
            "heard_to": round(sighting.heard_to, 3),
        }

    # --- roles on a mono stream (roles.LiveRoles) --------------------------------
    def _with_role(self, segment: Segment) -> Segment:
        """A committed sentence with its speaker; on a mono stream, earlier
        sentences whose role changed with it are announced in a ``speakers`` event."""
        if self.roles is None:
            return segment
        segment, changed = self.roles.commit(segment)
        if changed:
            self._emit({"type": "speakers", "call_id": self.call_id, "segments": [
                {key: s.to_json()[key] for key in ("start", "end", "text", "speaker", "speaker_confidence")}
                for s in changed
            ]})  # fmt: skip
        return segment

    def _speaker_of(self, hit, words, commit: bool, decoding_pass: int = 1) -> tuple[str, float | None]:
        """Who said ``hit`` and how surely: a stereo channel is its speaker; on a mono
        stream, the committed sentence holding it, or the provisional ``words``. A
        phrase the second pass heard is judged on its own stretch of audio: the
        first pass's sentences there may be fragments too short to tell a voice by."""
        if self.roles is None:
            return hit.speaker, 1.0
        if decoding_pass == 2:
            return self.roles.judge(hit.start, hit.end, hit.heard)
        if commit:
            return self.roles.role_at(hit.start, hit.end)
        return self.roles.judge(words[0].start, words[-1].end, "".join(w.text for w in words))

    def _emit(self, event: dict) -> None:
        for sink in self.sinks:
            try:
                sink.send(event)
            except Exception:  # a broken sink must not cost the other sinks their events
                log.exception("call %s: event sink %r failed", self.call_id, sink)

    # --- the second pass (refinement; scheduler threads, after every first pass) --
    def _decoded(self) -> bool:
        """Every stream decoded to its end, and every group refined or given up."""
        return all(s.drained() for s in self.streams) and not self.refine_jobs() and not self._refining

    def refine_jobs(self) -> list[RefineJob]:
        """Closed groups waiting for the second pass, oldest first."""
        with self._lock:
            return sorted((job for s in self.streams for job in s.refine_jobs), key=lambda job: job.closed_at)

    def refine_due(self) -> bool:
        """A group can be refined now: no speaker of the call is in mid-utterance
        (the next first-pass decode is then at least a pause away), or one waited too long."""
        jobs = self.refine_jobs()
        if not jobs or self.done:
            return False
        return self._quiet() or time.monotonic() - jobs[0].closed_at > self.options.refine.max_wait_s

    def refine_waiting_since(self) -> float:
        jobs = self.refine_jobs()
        return jobs[0].closed_at if jobs else time.monotonic()

    def _quiet(self) -> bool:
        return not any(s.speaking and not s.ended for s in self.streams)

    def _take_job(self, when_quiet: bool) -> RefineJob | None:
        """The oldest group to refine; groups that waited too long are given up first."""
        now = time.monotonic()
        with self._lock:
            for stream in self.streams:
                for job in [j for j in stream.refine_jobs if now - j.closed_at > self.options.refine.max_wait_s]:
                    stream.refine_jobs.remove(job)
                    self._not_refined(job, "the decoder was busy with first passes")
            jobs = sorted((j for s in self.streams for j in s.refine_jobs), key=lambda j: j.closed_at)
            if not jobs or (when_quiet and not self._quiet()):
                return None
            job = jobs[0]
            next(s for s in self.streams if s.speaker == job.speaker).refine_jobs.remove(job)
            self._refining += 1
            return job

    def _not_refined(self, job: RefineJob, reason: str) -> None:
        self.refinement["groups"] += 1
        self.refinement["not_refined"].append(
            {"speaker": job.speaker, "start": round(job.start, 2), "end": round(job.end, 2), "reason": reason}
        )

    def refine(self, transcriber, when_quiet: bool = True) -> None:
        """Decode the oldest closed group again (``stream.RefineOptions``) and put
        the refined text in place of the first pass's, with its alerts revised."""
        job = self._take_job(when_quiet)
        if job is not None:
            try:
                started, wall = time.perf_counter(), time.monotonic()
                context = "".join(s.text for s in self._before(job))
                refined = refined_segments(transcriber, job, self.options.refine, context)
                self.asr_s += time.perf_counter() - started
                self._refined_wall.append((wall, time.monotonic()))
                self._apply_refinement(job, refined)
            finally:
                with self._lock:
                    self._refining -= 1
        if self._decoded():
            self._finish()

    def _before(self, job: RefineJob) -> list:
        """The speaker's segments before ``job``, the last few (the second pass's prompt and match context)."""
        replaced = {id(s) for s in job.first_pass}
        with self._lock:
            return [s for s in self.segments
                    if s.speaker == job.speaker and s.start < job.start and id(s) not in replaced][-3:]

    def _apply_refinement(self, job: RefineJob, refined: list[Segment]) -> None:
        self.refinement["groups"] += 1
        if not refined and not job.first_pass:  # (a click or a breath: neither pass heard words)
            self.refinement["refined"] += 1
            return
        if not refined:  # a second pass that hears nothing does not erase what the first heard
            self.refinement["not_refined"].append({"speaker": job.speaker, "start": round(job.start, 2),
                                                   "end": round(job.end, 2), "reason": "the second pass heard nothing"})
            return
        self.refinement["refined"] += 1
        context = self._before(job)
        with self._lock:
            replaced = {id(s) for s in job.first_pass}
            self.segments = sorted([s for s in self.segments if id(s) not in replaced] + refined,
                                   key=lambda s: (s.start, s.end))
        event = {"type": "revised", "call_id": self.call_id, "speaker": job.speaker,
                 "start": round(job.start, 2), "end": round(job.end, 2),
                 "replaced": [s.to_json() for s in job.first_pass], "segments": [s.to_json() for s in refined]}
        if self.external_ref is not None:
            event["external_ref"] = self.external_ref
        self._emit(event)
        with self._watch_lock:
            self._revise_alerts(job, context + refined)

    def _revise_alerts(self, job: RefineJob, segments: list[Segment], slack_s: float = 1.0) -> None:
        """Alerts the refined text raises that the first pass missed (``pass: 2``).

        A first-pass alert the refined text does not hear again stands: on noisy and
        phone-band mono calls the second pass mishears too, and withdrawing such alerts
        (``not_heard_again``) took back true alerts far more often than false ones: in
        lockstep on 8 noisy/phone mono calls (/tmp/heldout5) and 33 development calls, 10
        withdrawals, 8 of them on labelled forbidden turns of the agent's, 1 on a
        customer's words (speaker uncertain), 1 on a near miss (``bench/live_latency.py``)."""
        hits = [h for h in self.watch.matcher.match_segments(segments)
                if h.kind == "forbidden" and h.speaker == job.speaker and (h.start + h.end) / 2 >= job.start]
        if self.meaning is not None:  # the model's hits in the refined sentences back (or raise) alerts too
            hits += [h for h in self.meaning.hits(self.watch.matcher.phrasebook, segments, hits)
                     if self.meaning.deducts(h) and (h.start + h.end) / 2 >= job.start]

        def same(alert: dict, hit) -> bool:
            """The hit backs the alert: the same phrase about the same time (timestamps move between
            passes), or another forbidden phrase over the same words (这事不归我管 heard as the
            code's own wording where the first pass matched the lexicon's rule); a meaning-model
            alert is backed by any forbidden hit about the same time (the second pass's whole
            sentence may hold a rule's hit where the first pass's fragment held the model's)."""
            slack = slack_s if alert["phrase_id"] == hit.phrase_id or alert.get("detected_by") else 0.0
            return alert["start"] - slack < hit.end and hit.start < alert["end"] + slack

        new = [h for h in hits if not any(same(a, h) for a in self.alerts if not a.get("retracted"))
               and not self._still_guarded(h, segments, same)]
        self.watch.reported += new
        self._alert(new, [], commit=True, decoding_pass=2)

    def _withdraw_guarded(self, words: list, sighting: Sighting) -> None:
        """Withdraw the ``guard_pending`` alerts whose politeness guard the last check heard
        (``PhraseWatch.withdrawn``) in ``words``: 这个不归我们管 alerted at a comma's pause, then 不过我马上帮您…."""
        heard = "".join(w.text for w in words)
        for hit in self.watch.withdrawn:
            for alert in self.alerts:
                if (alert["pass"] == 1 and alert.get("guard_pending") and not alert.get("retracted")
                        and alert["phrase_id"] == hit.phrase_id and alert["start"] == round(hit.start, 2)):
                    self._retract(alert, "guarded", heard, sighting.heard_to)
                    self._guarded.append((alert, [w for w in words if w.start >= hit.end - 0.05]))

    def _still_guarded(self, hit, segments: list[Segment], same) -> bool:
        """Whether the second pass's ``hit`` is one the first pass withdrew as guarded, and
        the refined text, read on with the words that cancelled it (those past the refined
        text's end: a group may close between a phrase and its guard, ``RefineOptions.max_group_s``),
        still has it cancelled. Only a changed verdict raises it again (h3_04: 你听我说完 withdrawn
        by 不好意思，是我打断您了, the next group, then raised by its own group's refined text)."""
        guards = [words for alert, words in self._guarded if same(alert, hit)]
        if not guards or hit.detected_by is not None:  # (the meaning model judges the refined sentence whole)
            return False
        refined = [w for s in segments for w in s.words or []]
        heard_to = refined[-1].end if refined else hit.end
        for after in guards:
            words = refined + [w for w in after if w.start >= heard_to - 0.05]
            if not words or not any(h.kind == "forbidden" and h.start < hit.end and hit.start < h.end
                                    for h in self.watch.matcher.match_segments([segment_of(words, hit.speaker)])):
                return True
        return False

    def _retract(self, alert: dict, reason: str, heard_again: str, heard_to: float | None = None) -> None:
        """Withdraw ``alert``; ``heard_to``: the call time heard when it was (else all audio looked at)."""
        alert["retracted"] = True
        index = next(i for i, a in enumerate(self.alerts) if a is alert)
        if index < len(self.latency_parts):  # (how long it was shown, for bench/live_latency.py)
            self.latency_parts[index].update(withdrawn_for=reason, withdrawn_at=round(
                heard_to if heard_to is not None else max(s.checked_until for s in self.streams), 3))
        retraction = {"type": "retracted", "call_id": self.call_id, "speaker": alert["speaker"],
                      "phrase_id": alert["phrase_id"], "canonical": alert["canonical"],
                      "start": alert["start"], "end": alert["end"], "heard_again": heard_again, "reason": reason}
        if self.external_ref is not None:
            retraction["external_ref"] = self.external_ref
        self._emit(retraction)

    def _withdraw_if_customer(self, segment: Segment) -> None:
        """Withdraw the provisional alerts in a mono ``segment`` its commit found surely the customer's."""
        if self.roles is None or segment.speaker != "customer" or uncertain_or_unknown(segment):
            return
        for alert in self.alerts:
            middle = (alert["start"] + alert["end"]) / 2
            if alert["pass"] == 1 and not alert.get("retracted") and segment.start <= middle < segment.end:
                self._retract(alert, "customer", segment.text)

    def _live_summary(self) -> dict:
        """What the report says of the live run: every alert as raised (and
        retracted), and the groups the second pass did not refine."""
        pending = [{"speaker": j.speaker, "start": round(j.start, 2), "end": round(j.end, 2),
                    "reason": "the call ended before it was refined"} for j in self.refine_jobs()]
        fields = ("phrase_id", "canonical", "speaker", "start", "end", "article", "latency_s", "pass", "guard_pending")
        return {
            "alerts": [{**{k: a.get(k) for k in fields}, "retracted": bool(a.get("retracted"))} for a in self.alerts],
            "refinement": {**self.refinement, "not_refined": self.refinement["not_refined"] + pending},
        }

    def fail(self, reason: str) -> None:
        self.failed = reason
        self._finish()

    def _finish(self) -> None:
        if not self._done.is_set():
            self._done.set()
            if self.scheduler:
                self.scheduler.remove(self)

    # --- the end -----------------------------------------------------------------
    def report(self, redact: bool = True) -> dict:
        """The batch scorer's report for what was heard."""
        from monitor.asr import Coverage
        from monitor.pipeline import report_for_segments

        total_s = time.monotonic() - self.started
        timing = {"asr_s": round(self.asr_s, 2), "total_s": round(total_s, 2),
                  "rtf": round(self.asr_s / self.duration_s, 3) if self.duration_s else None}
        segments = sorted(self.segments, key=lambda s: (s.start, s.end))
        coverage = sum((stream.coverage(segments) for stream in self.streams), Coverage(0.0))
        if self.roles is not None:
            segments = self.roles.label(segments)
        report = report_for_segments(
            self.call_id, self.audio_path, self.agent_id, round(self.duration_s, 2), self.phrasebook,
            segments, self.stereo, timing, redact=redact, coverage=coverage,
        )
        # A call cut short is scored on what was heard; the report must not pass for a whole call.
        report["status"] = "interrupted" if self.interrupted else "complete"
        if self.interrupted:
            report["interrupted"] = self.interrupted
        if self.external_ref is not None:
            report["external_ref"] = self.external_ref
        report["live"] = self._live_summary()
        return report


@dataclass
class Sighting:
    """A decode the phrase watch looked at."""

    decoded: float
    """Wall time (monotonic) the decode was done."""
    heard_to: float
    """Call time of the end of the audio it had heard."""
    heard_by: str = "look-ahead"
    """Which decode: ``look-ahead`` (an unfinished utterance), ``pause`` (a look-ahead at a pause's
    onset, ``Hypothesis.at_pause``) or ``commit`` (the utterance, ended by its pause)."""


class PartialFilter:
    """Keeps ``partial`` events (provisional text) away from sinks that only want segments and alerts."""

    def __init__(self, sink):
        self.sink = sink

    def send(self, event: dict) -> None:
        if event.get("type") != "partial":
            self.sink.send(event)

    def close(self) -> None:
        self.sink.close()


def load_transcriber(model: str | None, decode_workers: int):
    from monitor.asr import Transcriber

    threads = max(1, (os.cpu_count() or 2) // decode_workers)
    return Transcriber(model, cpu_threads=threads, num_workers=decode_workers)


def finish_call(call: LiveCall, webhook: WebhookSink | None, report_dir: str | None) -> int:
    """Deliver what is pending, write the report, and say what went wrong.

    Returns 1 when alerts were lost or decoding failed; an interrupted call's
    report is written with ``"status": "interrupted"`` and the caller decides its exit code.
    """
    status = 0
    if webhook is not None:
        undelivered = webhook.close()
        if undelivered:
            log.error("webhook %s: %d alert(s) of call %s not delivered", webhook.url, len(undelivered), call.call_id)
            status = 1
    if report_dir and call.failed is None:
        from monitor.pipeline import write_report

        recording = call.audio_path if call.audio_path and os.path.isfile(call.audio_path) else None
        write_report(call.report(), report_dir, recording)
    if call.failed:
        log.error("call %s: %s", call.call_id, call.failed)
        status = 1
    elif call.interrupted:
        log.warning("call %s: interrupted (%s) after %.1fs of audio; its report says so",
                    call.call_id, call.interrupted, call.duration_s)
    return status
