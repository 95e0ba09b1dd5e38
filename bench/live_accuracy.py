"""Live transcript accuracy against batch, with and without the second pass, in one run.

For every call (the sample calls and any held-out calls given), in one process on one model:

* **batch**: ``Transcriber.hear`` over the recording (what ``monitor score`` transcribes);
* **live, first pass**: ``monitor live --file`` in lockstep with refinement off (the live path before it);
* **live, refined**: the same with the second pass on (``stream.RefineOptions``);

CER is corpus-level (edits over reference characters) against the labelled turns,
all speakers in time order, simplified script without punctuation. Then the calls
are played at speech speed (``--realtime``) through a ``DecodeScheduler``, before
and after, for alert latency p50/p95 (first-pass alerts, the fast path the 1 s
target is for; pass-2 alerts apart) and decoding CPU per call (process CPU time
over the run, divided by the calls).

    python bench/live_accuracy.py [CALLS_DIR ...] [--time-scale 1] [--no-realtime | --realtime-only]
        [--designs] [--group-pause 1.0] [--max-group 14] [--prompt-chars 0]

Measured 2026-11-28 on d02, d04, d06, d08 and three held-out calls synthesized with
tools/synth_call.py from ``bench/data/live_heldout/*.json`` (mono; phone band 8 kHz with noise at -38 and -42 dBFS, or
noise at -32 dBFS; other agent voices; 738 reference characters), on a machine
shared with other jobs (load 12-16 on 2 cores, so absolute latencies are high):

    lockstep CER       batch 0.144   first pass 0.160   refined 0.121 (refined - batch = -0.023)
      --designs        per utterance 0.142, preceding text as prompt 0.127,
                       first pass over 20 s windows with 1 s pauses 0.228 (3.45x CPU);
      --max-group 8    0.142 (so 14 s, batch's window length)
    CPU per call       refined / first pass 1.21x lockstep, 1.23x and 1.28x at speech speed
    first-pass alert latency at speech speed, before -> after (same run):
      p50 1.00 -> 0.92, p95 1.64 -> 1.79 (14 s groups); p50 0.69 -> 0.73, p95 1.32 -> 0.92
      (8 s groups); the run-to-run spread under this load is larger than the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from cer import cer_text
from labelled import labelled_calls, labels_of, latency_summary
from rapidfuzz.distance import Levenshtein

from monitor.asr import Transcriber
from monitor.audio import load_call
from monitor.livecall import LiveCall
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.sources import FileSource
from monitor.stream import DecodeScheduler, RefineOptions, StreamingOptions


def reference(labels: dict) -> str:
    return cer_text("".join(t["text"] for t in sorted(labels["turns"], key=lambda t: t["start"])))


def transcript(segments) -> str:
    return cer_text("".join(s.text for s in sorted(segments, key=lambda s: (s.start, s.end))))


def live_call(wav: Path, labels: dict, transcriber, options: StreamingOptions, scheduler=None,
              time_scale: float = 1.0) -> LiveCall:
    """One call through ``LiveCall``: in lockstep without a scheduler, else paced at speech speed."""
    phrasebook = load_phrasebook(labels["phrasebook"])
    source = FileSource(str(wav), realtime=scheduler is not None, time_scale=time_scale)
    call = LiveCall(wav.stem, phrasebook, matcher_for(phrasebook), [], stereo=source.channels > 1, options=options)
    if scheduler is not None:
        call.scheduler = scheduler
        scheduler.add(call)
    for frames in source:
        call.feed(frames)
        if scheduler is None:
            call.catch_up(transcriber)
    call.end()
    if scheduler is None:
        call.catch_up(transcriber)
    else:
        call.wait()
    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("calls", nargs="*", default=[str(Path(__file__).resolve().parent.parent / "samples")],
                        help="labelled calls (.wav beside .labels.json), or folders of them (default: the repo's samples)")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--no-realtime", action="store_true", help="CER only (lockstep), no latency run")
    parser.add_argument("--realtime-only", action="store_true", help="latency and CPU only, no lockstep CER run")
    parser.add_argument("--group-pause", type=float, default=RefineOptions.group_pause_s)
    parser.add_argument("--max-group", type=float, default=RefineOptions.max_group_s)
    parser.add_argument("--prompt-chars", type=int, default=RefineOptions.prompt_chars)
    parser.add_argument("--designs", action="store_true",
                        help="also measure per-utterance refinement, refinement with the preceding text as prompt, and a "
                             "first pass with longer windows (LocalAgreement over 20 s, 1 s pauses)")
    args = parser.parse_args()
    try:
        wavs = labelled_calls(args.calls)
    except ValueError as error:
        parser.error(str(error))
    transcriber = Transcriber(cpu_threads=2)
    refine = RefineOptions(group_pause_s=args.group_pause, max_group_s=args.max_group, prompt_chars=args.prompt_chars)
    configs = {"first pass": StreamingOptions(refine=None), "refined": StreamingOptions(refine=refine)}
    designs = {
        # the other designs, CER and CPU only (lockstep)
        "per utterance": StreamingOptions(refine=replace(refine, group_pause_s=0.0)),
        "with context": StreamingOptions(refine=replace(refine, prompt_chars=60)),
        "long windows": StreamingOptions(refine=None, pause_s=1.0, max_window_s=20.0),
    }
    print(f"refinement: {refine.__dict__ | {'transcription': '(batch defaults)'}}")

    lockstep = {} if args.realtime_only else {**configs, **(designs if args.designs else {})}
    edits = {name: 0 for name in ["batch", *lockstep]}
    cpu = {name: 0.0 for name in ["batch", *lockstep]}
    ref_chars = 0
    if lockstep:
        print(f"{'call':24s} {'chars':>5s} {'batch':>6s} " + " ".join(f"{n[:13]:>13s}" for n in lockstep)
              + "  refined: groups, alerts pass 2, retracted")
    for wav in wavs if lockstep else []:
        labels = json.loads(labels_of(wav).read_text())
        ref = reference(labels)
        ref_chars += len(ref)
        started = time.process_time()
        row = {"batch": Levenshtein.distance(ref, transcript(transcriber.hear(load_call(str(wav))).segments))}
        cpu["batch"] += time.process_time() - started
        for name, options in lockstep.items():
            started = time.process_time()
            call = live_call(wav, labels, transcriber, options)
            cpu[name] += time.process_time() - started
            row[name] = Levenshtein.distance(ref, transcript(call.segments))
            if name == "refined":
                refined = call
        for name, distance in row.items():
            edits[name] += distance
        alerts = refined.alerts
        print(f"{wav.stem[:24]:24s} {len(ref):5d} {row['batch'] / len(ref):6.3f} "
              + " ".join(f"{row[n] / len(ref):13.3f}" for n in lockstep)
              + f"  {refined.refinement['refined']}/{refined.refinement['groups']}, "
              + f"{[a['canonical'] for a in alerts if a['pass'] == 2]}, "
              + f"{[a['canonical'] for a in alerts if a.get('retracted')]}", flush=True)
    if lockstep:
        cer = {name: e / ref_chars for name, e in edits.items()}
        print(f"\nlockstep over {len(wavs)} calls ({ref_chars} reference chars):")
        for name in edits:
            print(f"  {name:14s} CER {cer[name]:.3f}  cpu_s/call {cpu[name] / len(wavs):6.2f}"
                  + (f"  ({cpu[name] / cpu['first pass']:.2f}x first pass)" if name != "batch" else ""))
        print(f"refined - batch = {cer['refined'] - cer['batch']:+.3f} (target <= +0.010)", flush=True)
    if args.no_realtime:
        return 0

    print(f"\nreal time (time scale {args.time_scale:g}), {len(wavs)} calls one after another:")
    results = {}
    for name, options in configs.items():
        scheduler = DecodeScheduler(transcriber)
        latencies, pass2_latencies, retracted, not_refined = [], [], 0, 0
        started = time.process_time()
        for wav in wavs:
            labels = json.loads(labels_of(wav).read_text())
            call = live_call(wav, labels, transcriber, options, scheduler, args.time_scale)
            latencies += [a["latency_s"] for a in call.alerts if a["pass"] == 1]
            pass2_latencies += [a["latency_s"] for a in call.alerts if a["pass"] == 2]
            retracted += sum(bool(a.get("retracted")) for a in call.alerts)
            not_refined += len(call.refinement["not_refined"])
        results[name] = (time.process_time() - started) / len(wavs)
        scheduler.close()
        print(f"  {name:10s} first-pass alerts={len(latencies)} {latency_summary(latencies)}  "
              f"cpu_s/call={results[name]:.2f}", flush=True)
        if name == "refined":
            print(f"  {'':10s} pass-2 alerts={len(pass2_latencies)} {latency_summary(pass2_latencies)}  "
                  f"retracted={retracted}  groups not refined={not_refined}", flush=True)
    print(f"  CPU per call refined / first pass = {results['refined'] / results['first pass']:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
