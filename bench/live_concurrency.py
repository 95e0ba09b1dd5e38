"""Several real-time calls on one shared model: alert latency, lag over time, memory.

Each of ``--streams`` calls plays the broadband sample calls back to back (each
stream starting at a different call) at speech speed for ``--duration`` seconds.
Every ``--every`` seconds it records each call's lag (audio fed but not yet looked at).
``bench/capacity.py`` runs this for several stream counts and batch sizes.

    python bench/live_concurrency.py --streams 4 --duration 600 [--decode-workers 1] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from labelled import latency_summary

from monitor.audio import SAMPLE_RATE, load_call
from monitor.live import LiveCall, load_transcriber
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.sources import BLOCK_S
from monitor.stream import DecodeScheduler, LoadOptions

CALLS = str(Path(__file__).resolve().parent.parent / "samples")  # the repo's copy of the shared samples


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def broadband_audios(calls: str = CALLS) -> list[np.ndarray]:
    """The agent channel of every broadband sample call, in name order."""
    audios = []
    for wav in sorted(Path(calls).glob("*.wav")):
        if json.loads(wav.with_suffix("").with_suffix(".labels.json").read_text())["phrasebook"] == "broadband":
            audios.append(load_call(str(wav)).agent)
    return audios


@dataclass
class StreamsRun:
    """What one real-time run of several streams measured."""

    lags: list[list[float]] = field(default_factory=list)
    """Every sample: each call's lag (s of audio fed and not yet looked at)."""
    latencies: list[float] = field(default_factory=list)
    """Every alert's latency (s from the phrase's audio arriving to the alert)."""
    parts: list[dict] = field(default_factory=list)
    """Where each of those alerts' latency went (``LiveCall.latency_parts``)."""
    audio_s: float = 0.0
    """Seconds of audio fed, all streams together."""
    rss_mb: float = 0.0
    """Resident memory at the end of the run."""
    groups: int = 0
    """Groups closed for the second pass, all calls together."""
    refined: int = 0
    """Of those, how many the second pass refined."""
    mean_batch: float = 1.0
    """Windows per pass of the model (1 without batching)."""


def run_streams(transcriber, phrasebook, matcher, audios: list[np.ndarray], streams: int, duration: float,
                decode_workers: int = 1, batch: int = 1, every_s: float = 30.0, load: LoadOptions | None = None) -> StreamsRun:
    """``streams`` mono calls fed at speech speed for ``duration`` seconds on one scheduler."""
    scheduler = DecodeScheduler(transcriber, workers=decode_workers, batch_size=batch, load=load)
    calls = []
    for index in range(streams):
        call = LiveCall(f"stream{index}", phrasebook, matcher, [], stereo=False)
        call.scheduler = scheduler
        scheduler.add(call)
        calls.append(call)

    def play(call: LiveCall, first: int) -> None:
        audio = np.concatenate(audios[first:] + audios[:first])
        block = int(BLOCK_S * SAMPLE_RATE)
        started = time.monotonic()
        offset = 0
        while offset / SAMPLE_RATE < duration:
            due = started + offset / SAMPLE_RATE
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            position = offset % len(audio)
            call.feed(audio[position : position + block][:, None])
            offset += block
        call.end()

    players = [threading.Thread(target=play, args=(call, i % len(audios))) for i, call in enumerate(calls)]
    for player in players:
        player.start()
    run = StreamsRun()
    started = time.monotonic()
    while any(p.is_alive() for p in players):
        time.sleep(every_s - (time.monotonic() - started) % every_s)
        if not any(p.is_alive() for p in players):  # (the audio ended: what is left is draining, not lag)
            break
        lag = [max(s.pending_s() for s in c.streams) for c in calls]
        run.lags.append(lag)
        alerts = sum(len(c.alerts) for c in calls)
        print(f"t={len(run.lags) * every_s:4.0f}s lag_s={' '.join(f'{x:.1f}' for x in lag)} alerts={alerts} "
              f"RSS={rss_mb():.0f} MB", flush=True)
    for call in calls:
        call.wait()
    scheduler.close()
    first_pass = [(a, part) for c in calls for a, part in zip(c.alerts, c.latency_parts) if a.get("pass", 1) == 1]
    run.latencies = [a["latency_s"] for a, _ in first_pass]
    run.parts = [part for _, part in first_pass]
    run.audio_s = sum(c.duration_s for c in calls)
    run.rss_mb = rss_mb()
    run.groups = sum(c.refinement["groups"] for c in calls)
    run.refined = sum(c.refinement["refined"] for c in calls)
    batcher = scheduler.transcriber.batcher
    if batcher is not None and batcher.passes:
        run.mean_batch = batcher.windows / batcher.passes
    return run


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", default=CALLS)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--decode-workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1, help="most windows of several streams decoded in one pass")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between lag samples")
    args = parser.parse_args()

    phrasebook = load_phrasebook("broadband")
    audios = broadband_audios(args.calls)
    transcriber = load_transcriber(None, args.decode_workers)
    print(f"{args.streams} streams, {len(audios)} calls each in turn, {args.duration:.0f}s, RSS {rss_mb():.0f} MB", flush=True)
    run = run_streams(transcriber, phrasebook, matcher_for(phrasebook), audios, args.streams, args.duration,
                      args.decode_workers, args.batch, args.every)
    fifth = max(1, len(run.lags) // 5)
    first, last = np.mean(run.lags[:fifth]), np.mean(run.lags[-fifth:])
    print(f"\nalerts: {len(run.latencies)}  {latency_summary(run.latencies)}")
    print(f"mean lag first fifth {first:.2f}s, last fifth {last:.2f}s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
