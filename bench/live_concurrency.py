"""Several real-time calls on one shared model: alert latency, lag over time, memory.

Each of ``--streams`` calls plays the broadband sample calls back to back (each
stream starting at a different call) at speech speed for ``--duration`` seconds.
Every 30 s it records each call's lag (audio fed but not yet looked at).

    python bench/live_concurrency.py --streams 4 --duration 600 [--decode-workers 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
from labelled import latency_summary

from monitor.audio import SAMPLE_RATE, load_call
from monitor.live import LiveCall, load_transcriber
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.sources import BLOCK_S
from monitor.stream import DecodeScheduler


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", default="/work/shared/samples/calls")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--decode-workers", type=int, default=1)
    args = parser.parse_args()

    phrasebook = load_phrasebook("broadband")
    matcher = matcher_for(phrasebook)
    audios = []
    for wav in sorted(Path(args.calls).glob("*.wav")):
        if json.loads(wav.with_suffix("").with_suffix(".labels.json").read_text())["phrasebook"] == "broadband":
            audios.append(load_call(str(wav)).agent)
    transcriber = load_transcriber(None, args.decode_workers)
    scheduler = DecodeScheduler(transcriber, workers=args.decode_workers)
    calls = []
    for index in range(args.streams):
        call = LiveCall(f"stream{index}", phrasebook, matcher, [], stereo=False)
        call.scheduler = scheduler
        scheduler.add(call)
        calls.append(call)
    print(f"{args.streams} streams, {len(audios)} calls each in turn, {args.duration:.0f}s, RSS {rss_mb():.0f} MB", flush=True)

    def play(call: LiveCall, first: int) -> None:
        audio = np.concatenate(audios[first:] + audios[:first])
        block = int(BLOCK_S * SAMPLE_RATE)
        started = time.monotonic()
        offset = 0
        while offset / SAMPLE_RATE < args.duration:
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
    lags = []
    while any(p.is_alive() for p in players):
        time.sleep(30)
        lag = [max(s.pending_s() for s in c.streams) for c in calls]
        lags.append(lag)
        alerts = sum(len(c.alerts) for c in calls)
        print(f"t={len(lags) * 30:4d}s lag_s={' '.join(f'{x:.1f}' for x in lag)} alerts={alerts} RSS={rss_mb():.0f} MB", flush=True)
    for call in calls:
        call.wait()
    scheduler.close()
    latencies = [a["latency_s"] for c in calls for a in c.alerts]
    first, last = np.mean(lags[: max(1, len(lags) // 5)]), np.mean(lags[-max(1, len(lags) // 5) :])
    print(f"\nalerts: {len(latencies)}  {latency_summary(latencies)}")
    print(f"mean lag first fifth {first:.2f}s, last fifth {last:.2f}s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
