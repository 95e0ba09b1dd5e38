"""Throughput of batch scoring on a Dask cluster, 1 worker against N, on this machine.

    python bench/cluster_throughput.py [AUDIO...] [--workers 1 2] [--model M]

For each worker count it starts a LocalCluster of that many worker processes
(one task thread each, on loopback), then:

- times loading the model into every worker (``SetupPlugin`` running
  ``batch.start_scoring_process``, one CTranslate2 thread per worker; the
  workers load in parallel), and reports it amortised per call: the worker
  seconds spent loading, divided by the calls of the batch;
- times ``monitor score --cluster`` on the calls (``run_batch``, which loads the
  model on each worker once more, as every batch does) and reports throughput
  in audio hours per wall hour.

Default AUDIO: every recording in samples/.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

from distributed import Client, LocalCluster

from monitor.audio import load_call
from monitor.batch import BatchOptions, run_batch, start_scoring_process
from monitor.cluster import SetupPlugin
from monitor.models import resolve_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(audio: list[str], workers: int, model: str | None) -> dict:
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster, Client(cluster, set_as_default=False) as client:
        started = time.perf_counter()
        client.register_plugin(SetupPlugin(start_scoring_process, (model,)))
        load_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            exit_code = run_batch(audio, BatchOptions(out_dir=out, cluster=cluster.scheduler_address, model=model, progress=False))
            wall_s = time.perf_counter() - started
    if exit_code != 0:
        sys.exit(f"cluster_throughput: the batch on {workers} worker(s) failed (exit {exit_code})")
    return {"workers": workers, "load_s": load_s, "wall_s": wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="*", default=sorted(glob.glob(os.path.join(ROOT, "samples", "*.wav"))))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--model", help="Whisper model (default: embedded base)")
    args = parser.parse_args()

    resolve_model(args.model)  # assemble the embedded model before anything is timed
    audio_s = sum(load_call(path).duration_s for path in args.audio)
    print(f"{len(args.audio)} calls, {audio_s / 60:.1f} min of audio, {os.cpu_count()} cores")
    print(f"{'workers':>7} {'wall s':>7} {'audio h / wall h':>16} {'model load s':>12} {'load per call s':>15}")
    for workers in args.workers:
        result = measure(args.audio, workers, args.model)
        per_call = result["load_s"] * workers / len(args.audio)
        print(f"{workers:>7} {result['wall_s']:>7.1f} {audio_s / result['wall_s']:>16.1f} {result['load_s']:>12.2f} {per_call:>15.3f}")


if __name__ == "__main__":
    main()
