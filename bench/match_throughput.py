"""Matcher throughput: characters per second on a one-hour transcript, all phrasebooks.

The transcript is the sample calls' labelled turns, as Whisper base heard them
(bench/data/sample_calls_asr.json), repeated in 10 s segments until an hour of
speech at 280 characters a minute; phrases are dense, so this is a busy hour.

    python bench/match_throughput.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from monitor.asr import Segment
from monitor.match import matcher_for
from monitor.phrasebook import bundled_phrasebooks, load_phrasebook

HERE = Path(__file__).resolve().parent
TARGET_CHARS_PER_S = 200_000
CHARS_PER_MINUTE = 280


def hour_of_segments() -> list[Segment]:
    asr = json.loads((HERE / "data" / "sample_calls_asr.json").read_text(encoding="utf-8"))
    texts = [entry["text"] for entries in asr.values() for entry in entries]
    segments, t, i = [], 0.0, 0
    while t < 3600:
        text = texts[i % len(texts)]
        duration = len(text) * 60 / CHARS_PER_MINUTE
        segments.append(Segment(t, t + duration, text, "agent"))
        t += duration
        i += 1
    return segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    args = parser.parse_args()
    segments = hour_of_segments()
    chars = sum(len(s.text) for s in segments)
    matchers = [matcher_for(load_phrasebook(name)) for name in bundled_phrasebooks()]  # compiled outside the timing
    best, hits = float("inf"), 0
    for _ in range(args.repeat):
        started = time.perf_counter()
        hits = sum(len(m.match_segments(segments)) for m in matchers)
        best = min(best, time.perf_counter() - started)
    rate = chars / best
    print(f"{chars} characters, {len(segments)} segments, {len(matchers)} phrasebooks, {hits} hits")
    print(f"{best * 1000:.1f} ms: {rate:,.0f} chars/s = {rate / TARGET_CHARS_PER_S:.2f} × target ({TARGET_CHARS_PER_S:,})")


if __name__ == "__main__":
    main()
