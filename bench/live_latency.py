"""Alert latency and recall of the live monitor against batch scoring.

Feeds every sample call at speech speed (``--realtime``) through one in-process
``LiveCall`` at a time, and reports ``latency_s`` of every forbidden alert
(p50, p95) and the recall of labelled forbidden turns, live and batch.

    python bench/live_latency.py [/work/shared/samples/calls] [--time-scale 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from labelled import forbidden_agent_turns, latency_summary, overlaps

from monitor.asr import Transcriber
from monitor.audio import load_call
from monitor.live import LiveCall
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.sources import FileSource
from monitor.stream import DecodeScheduler


LIVE_TOLERANCE_S = 0.5
"""Stricter than batch's ±1 s: a live alert must point at the turn itself."""


def recalled(turns: list[dict], hits: list[tuple[float, float]]) -> int:
    return sum(any(overlaps(start, end, turn, LIVE_TOLERANCE_S) for start, end in hits) for turn in turns)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("calls", nargs="?", default="/work/shared/samples/calls")
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    transcriber = Transcriber(cpu_threads=2)
    scheduler = DecodeScheduler(transcriber)
    latencies, rows = [], []
    live_hits_total = batch_hits_total = turns_total = 0
    for wav in sorted(Path(args.calls).glob("*.wav")):
        labels = json.loads(wav.with_suffix("").with_suffix(".labels.json").read_text())
        phrasebook = load_phrasebook(labels["phrasebook"])
        matcher = matcher_for(phrasebook)
        source = FileSource(str(wav), realtime=True, time_scale=args.time_scale)
        call = LiveCall(wav.stem, phrasebook, matcher, [], stereo=source.channels > 1)
        call.scheduler = scheduler
        scheduler.add(call)
        for frames in source:
            call.feed(frames)
        call.end()
        call.wait()
        live = [(a["start"], a["end"]) for a in call.alerts if a["speaker"] == "agent" and not a.get("retracted")]
        segments = transcriber.transcribe_call(load_call(str(wav)))
        batch = [(h.start, h.end) for h in matcher.match_segments(segments) if h.kind == "forbidden" and h.speaker == "agent"]
        turns = forbidden_agent_turns(labels)
        latencies += [a["latency_s"] for a in call.alerts if a["pass"] == 1]  # pass 2 waits for the refinement
        turns_total += len(turns)
        live_hits_total += recalled(turns, live)
        batch_hits_total += recalled(turns, batch)
        rows.append((wav.stem, len(turns), recalled(turns, live), recalled(turns, batch),
                     [a["latency_s"] for a in call.alerts]))
        print(f"{wav.stem:28s} turns={len(turns)} live={rows[-1][2]} batch={rows[-1][3]} "
              f"alerts={len(call.alerts)} latency_s={rows[-1][4]}", flush=True)
    scheduler.close()
    print(f"\nforbidden alerts: {len(latencies)}  {latency_summary(latencies)}")
    print(f"recall of labelled forbidden turns: live {live_hits_total}/{turns_total}={live_hits_total / turns_total:.3f}"
          f"  batch {batch_hits_total}/{turns_total}={batch_hits_total / turns_total:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
