"""How many live calls one node holds: CPU per stream-second, and real-time runs.

Two measures, both over the broadband sample calls played back to back as mono
calls (the agent channel, so role separation runs as on a mono line):

``--profile S``: one stream of S seconds decoded in lockstep (never behind, so
the look-ahead always runs: the most a stream costs). Process CPU seconds per
second of audio, split by where they go (VAD, features, encoder, generation,
word alignment, role separation, phrase matching, the second pass). This figure
does not depend on what else runs on the machine; a node of C cores holds about
C / (CPU per stream-second) streams before headroom.

It also prints the decoding thread's own CPU per stream-second: what a decode
worker does itself (Python, Silero), not on CTranslate2's threads. It is small
(0.03-0.04 of 0.28-0.39), so decode workers are not held back by the GIL.
``--threads 1`` profiles with one CTranslate2 thread: the same alerts and texts,
and less CPU (generation parallelises poorly).

``--streams 4 6 8``: for each count, that many calls in real time on one shared
model for ``--duration`` seconds, once per ``--setups`` entry (``SETUPS``). Prints lag over time, alert latency p50/p95,
CPU per stream-second and RSS, and whether the count was held: lag bounded
(the last fifth no higher than the first by more than ``--lag-growth``) and
alert latency p95 within ``--max-p95``. The machine's load average is printed
with each run: real-time figures from a shared machine are noisy, so compare
settings within one run.

``--windows B``: first-pass windows of the real recordings decoded in batches of
up to B against one by one: CER against the references, CPU, texts changed.

    python bench/capacity.py --profile 300 --lookahead-scale 1 2 4
    python bench/capacity.py --windows 4 --corpus ../shared/corpus/real
    python bench/capacity.py --streams 4 6 8 --duration 240 --setups before paced batched
    python bench/capacity.py --streams 6 --duration 180 --setups paced --decode-workers 2 [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time
from collections import defaultdict

import numpy as np
from live_concurrency import broadband_audios, run_streams

from monitor.audio import SAMPLE_RATE
from monitor.live import LiveCall, load_transcriber
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.sources import BLOCK_S
from monitor.stream import NODE_DECODE_WORKERS, LoadOptions


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


class CpuProfile:
    """Process CPU time by component, exclusive of nested components.

    Wraps the functions named in ``wrap``; time spent inside a wrapped call that
    is itself inside another is charged to the inner one. ``second_pass`` marks
    calls under the refinement, so their encoder and generation are told apart
    from the first pass's. Only meaningful with one thread driving (lockstep).
    """

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [label, started cpu]

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            now = cpu_s()
            if self._stack:
                outer = self._stack[-1]
                self.spent[outer[0]] += now - outer[1]
            inner = label
            if self._stack and self._stack[-1][0].startswith("second pass") and not label.startswith("second pass"):
                inner = f"second pass: {label}"
            self._stack.append([inner, now])
            try:
                return original(*args, **kwargs)
            finally:
                end = cpu_s()
                self.spent[inner] += end - self._stack.pop()[1]
                if self._stack:
                    self._stack[-1][1] = end

        setattr(owner, name, timed)


def transcriber_for(workers: int, threads: int | None):
    """The shared model as a node loads it (``load_transcriber``), or with ``threads``
    CTranslate2 threads per decode worker."""
    if threads is None:
        return load_transcriber(None, workers)
    from monitor.asr import Transcriber

    return Transcriber(None, cpu_threads=threads, num_workers=workers)


def profile(seconds: float, scales: list[float], threads: int | None) -> None:
    import faster_whisper.feature_extractor
    import faster_whisper.transcribe
    import faster_whisper.vad

    import monitor.livecall
    import monitor.roles
    import monitor.stream

    prof = CpuProfile()
    prof.wrap(faster_whisper.vad, "get_speech_timestamps", "VAD (Silero)")
    prof.wrap(monitor.stream.GrowingSpeech, "spans", "VAD (Silero)")
    prof.wrap(faster_whisper.feature_extractor.FeatureExtractor, "__call__", "log-Mel features")
    prof.wrap(faster_whisper.transcribe.WhisperModel, "encode", "encoder")
    prof.wrap(faster_whisper.transcribe.WhisperModel, "generate_with_fallback", "generation")
    prof.wrap(faster_whisper.transcribe.WhisperModel, "add_word_timestamps", "word alignment")
    for name in ("feed", "commit", "role_at", "judge", "label"):
        prof.wrap(monitor.roles.LiveRoles, name, "roles (voices)")
    prof.wrap(monitor.stream.PhraseWatch, "check", "phrase matching")
    prof.wrap(monitor.livecall.LiveCall, "_revise_alerts", "phrase matching")
    prof.wrap(monitor.livecall, "refined_segments", "second pass (other)")

    phrasebook = load_phrasebook("broadband")
    matcher = matcher_for(phrasebook)
    audio = np.concatenate(broadband_audios())[: int(seconds * SAMPLE_RATE)]
    audio_s = len(audio) / SAMPLE_RATE
    transcriber = transcriber_for(1, threads)
    block = int(BLOCK_S * SAMPLE_RATE)
    for scale in scales:
        prof.spent.clear()
        delays = []  # audio (s) fed after a phrase's end before its alert: the policy's own latency

        class AlertDelay:
            def send(self, event: dict) -> None:
                if event["type"] == "alert" and event["pass"] == 1:
                    delays.append(call.duration_s - event["end"])

        call = LiveCall("profile", phrasebook, matcher, [AlertDelay()], stereo=False)
        for stream in call.streams:
            stream.lookahead_scale = scale
        wall, started, thread_started = time.monotonic(), cpu_s(), time.thread_time()
        for offset in range(0, len(audio), block):
            call.feed(audio[offset : offset + block][:, None])
            call.catch_up(transcriber)
        call.end()
        call.catch_up(transcriber)
        total = cpu_s() - started
        own = time.thread_time() - thread_started  # this thread's share: its Python, and its part of each decode
        p50, p95 = np.percentile(delays, [50, 95]) if delays else (float("nan"),) * 2
        print(f"\none stream in lockstep, look-ahead every {scale:g}x, {audio_s:.0f} s of audio: {total:.1f} CPU s in "
              f"{time.monotonic() - wall:.1f} s wall ({load()})")
        print(f"CPU per stream-second {total / audio_s:.3f}  -> about {2 / (total / audio_s):.1f} streams on 2 cores "
              f"at 100%, {0.7 * 2 / (total / audio_s):.1f} at 70%")
        print(f"decoding thread's own CPU per stream-second {own / audio_s:.3f} (the rest ran on CTranslate2's and "
              f"the BLAS threads; this part of several decode workers cannot overlap, it holds the GIL)")
        print(f"first-pass alerts {len(delays)}, audio after the phrase before its alert p50 {p50:.2f} s p95 {p95:.2f} s "
              f"(add decode time for latency); refined {call.refinement['refined']}/{call.refinement['groups']} groups")
        spent = dict(prof.spent)
        spent["stream policy, segments, other"] = total - sum(spent.values())
        for label, value in sorted(spent.items(), key=lambda item: -item[1]):
            print(f"  {label:34s} {value / audio_s:6.3f} CPU s per audio s  {100 * value / total:5.1f}%")


def windows(batch: int, corpus: str) -> None:
    """Batched against alone on real voices: each recording of ``corpus`` is one
    first-pass window; CER of both against the references, CPU of both, and how
    many windows a batched pass's result changed."""
    import random
    from dataclasses import replace

    from cer import cer_text, read_manifest
    from rapidfuzz.distance import Levenshtein

    from monitor.asr import Window
    from monitor.audio import load_call
    from monitor.stream import streaming_transcription_options

    rows = read_manifest(corpus)
    audio = [load_call(os.path.join(corpus, row["file"])).agent for row in rows]
    references = [cer_text(row["reference_text"]) for row in rows]
    transcriber = load_transcriber(None, 1)
    # Each window's prompt is what its stream said last (here: another recording's text), as in a live call.
    options = [replace(streaming_transcription_options(), max_new_tokens=8 + int(12 * len(a) / SAMPLE_RATE),
                       initial_prompt=rows[i - 1]["reference_text"][-40:])
               for i, a in enumerate(audio)]
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)  # streams' windows come in any order of length

    def text(segments) -> str:
        return cer_text("".join(s.text for s in segments))

    transcriber.decode_window_alone(audio[0], options[0])  # (warm-up)
    started = cpu_s()
    alone = [text(transcriber.decode_window_alone(a, o)) for a, o in zip(audio, options)]
    alone_cpu = cpu_s() - started
    results = {}
    for label, rule in (("any lengths", 10.0), ("padding <= 25%", 0.25)):
        batcher = transcriber.batched(batch).batcher
        batcher.max_padding = rule
        heard = [""] * len(rows)
        started = cpu_s()
        waiting = [Window(audio[i], options[i], "agent", 0.0) for i in order]
        batcher._waiting = waiting[:]
        while batcher._waiting:  # as the batcher takes them, one pass at a time
            passing = batcher._take()
            for window, segments in zip(passing, transcriber.decode_windows_together(passing) if len(passing) > 1
                                        else [transcriber.decode_window_alone(passing[0].samples, passing[0].options)]):
                heard[order[next(i for i, w in enumerate(waiting) if w is window)]] = text(segments)
            batcher.passes += 1
            batcher.windows += len(passing)
        results[label] = (heard, cpu_s() - started, batcher.windows / batcher.passes)

    def cer(hypotheses) -> float:
        return sum(Levenshtein.distance(r, h) for r, h in zip(references, hypotheses)) / sum(map(len, references))

    print(f"{len(rows)} real recordings ({sum(map(len, audio)) / SAMPLE_RATE:.0f} s) as first-pass windows, "
          f"batches of up to {batch} ({load()})")
    print(f"  alone:                         CER {cer(alone):.3f}  CPU {alone_cpu:.2f} s")
    for label, (heard, spent, mean) in results.items():
        changed = sum(a != h for a, h in zip(alone, heard))
        print(f"  batched, {label:15s}       CER {cer(heard):.3f}  CPU {spent:.2f} s ({spent / alone_cpu:.2f}x alone), "
              f"{mean:.1f} windows per pass, {changed} of {len(rows)} texts differ from alone")


def held(lags: list[list[float]], growth_s: float) -> tuple[bool, float, float]:
    """Lag bounded: the mean lag of the last fifth of samples against the first fifth."""
    fifth = max(1, len(lags) // 5)
    first, last = float(np.mean(lags[:fifth])), float(np.mean(lags[-fifth:]))
    return last - first <= growth_s, first, last


SETUPS = {
    "before": (1, LoadOptions(max_scale=1.0)),
    "paced": (1, LoadOptions()),
    "batched": (8, LoadOptions()),
}
"""Real-time setups: (windows per pass at most, look-ahead pacing). ``before``: one
window per pass, look-ahead every ``partial_every_s`` whatever the load (as before
this bench); ``paced``: the scheduler's default, look-ahead spaced out under load;
``batched``: paced, and windows of several streams sharing passes."""


def realtime(args) -> None:
    phrasebook = load_phrasebook("broadband")
    matcher = matcher_for(phrasebook)
    audios = broadband_audios()
    transcriber = transcriber_for(args.decode_workers, args.threads)
    rows = []
    for streams in args.streams:
        for setup in args.setups:
            batch, pacing = SETUPS[setup]
            print(f"\n== {streams} streams, {setup}, {args.duration:.0f} s ({load()})", flush=True)
            before = cpu_s()
            result = run_streams(transcriber, phrasebook, matcher, audios, streams, args.duration,
                                 args.decode_workers, batch, every_s=args.every, load=pacing)
            spent = cpu_s() - before
            per_stream_s = spent / max(result.audio_s, 1e-9)
            ok, first, last = held(result.lags, args.lag_growth)
            p50, p95 = (np.percentile(result.latencies, [50, 95]) if result.latencies else (float("nan"),) * 2)
            ok = ok and not p95 > args.max_p95
            rows.append((setup, streams, ok, per_stream_s, p50, p95, first, last, result.rss_mb, os.getloadavg()[0]))
            print(f"-> {'HELD' if ok else 'not held'}: CPU per stream-second {per_stream_s:.3f}, latency p50 {p50:.2f} "
                  f"p95 {p95:.2f} s, lag first fifth {first:.1f} s last fifth {last:.1f} s, RSS {result.rss_mb:.0f} MB, "
                  f"refined {result.refined}/{result.groups}, windows per pass {result.mean_batch:.2f}", flush=True)
            print("   latency parts p50 / p95: " + ", ".join(
                f"{name} {np.percentile(values, 50):.2f} / {np.percentile(values, 95):.2f}"
                for name in ("audio_s", "decode_s", "second_pass_s", "held_s")
                if (values := [p[name] for p in result.parts if p.get(name) is not None])), flush=True)
    print("\nsetup    streams held  CPU/stream-s  p50_s  p95_s  lag_first  lag_last  RSS_MB  load1")
    for setup, streams, ok, per, p50, p95, first, last, rss, load1 in rows:
        print(f"{setup:8s} {streams:7d} {'yes' if ok else 'no':>4s}  {per:12.3f}  {p50:5.2f}  {p95:5.2f}  {first:9.1f}  "
              f"{last:8.1f}  {rss:6.0f}  {load1:5.2f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=float, metavar="S", help="CPU breakdown of one stream of S seconds, lockstep")
    parser.add_argument("--lookahead-scale", type=float, nargs="+", default=[1.0],
                        help="with --profile: look-ahead spacing factors to profile (the scheduler's shedding)")
    parser.add_argument("--windows", type=int, metavar="B", help="batched (up to B) against alone on --corpus")
    parser.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus", "real"))
    parser.add_argument("--streams", type=int, nargs="*", default=[], help="stream counts to run in real time")
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of each real-time run")
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=["before", "paced"],
                        help="real-time setups to compare, each run for every stream count (see SETUPS)")
    parser.add_argument("--decode-workers", type=int, default=NODE_DECODE_WORKERS,
                        help=f"decoders shared by the streams (default {NODE_DECODE_WORKERS}, a node's: stream.NODE_DECODE_WORKERS)")
    parser.add_argument("--threads", type=int, help="CTranslate2 threads per decode worker (default: cores / workers)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between lag samples")
    parser.add_argument("--lag-growth", type=float, default=1.0, help="most the lag may grow (s) for a count to be held")
    parser.add_argument("--max-p95", type=float, default=2.0, help="longest alert latency p95 (s) for a count to be held")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.lookahead_scale, args.threads)
    if args.windows:
        windows(args.windows, args.corpus)
    if args.streams:
        realtime(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
