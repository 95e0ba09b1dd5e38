"""Batch scoring on a Dask cluster against a local batch on the same cores, in one run.

    python bench/cluster_throughput.py [AUDIO...] [--repeat 2] [--setups SETUP...] [--model M]

A setup is ``local:P@CORES`` (``monitor score --workers P``) or
``cluster:WxT@CORES`` (``monitor score --cluster`` on a LocalCluster of W worker
processes with T task threads each, on loopback). CORES is a list such as
``0,1`` or ``0-3``: the setup runs in a fresh process pinned to those cores, so
a local batch and a cluster get exactly the same CPUs. On a machine of N cores
the default setups are

- ``local:N@all``, ``cluster:1xN@all`` (one worker on N cores, Dask's default
  ``dask worker`` on that machine) and ``cluster:Nx1@all`` (one worker per core);
- ``local:1@first`` and ``cluster:1x1@first``: one core, for the scaling.

Setups run one after another, round after round (``--repeat``), so a load
that other processes put on the machine falls on all of them alike. What is
timed is ``run_batch`` from call to return, for both. A cluster's worker
processes are already up, as a long-running cluster's are, but each setup
starts a fresh cluster, so its workers load the model during the batch, as
local scoring processes do (a long-running cluster's workers keep theirs
from one batch to the next).

Printed per setup: wall seconds, calls/s and audio-s/s (median over rounds),
the busy share of the scoring slots (sum of the reports' ``timing.total_s``
over wall × slots: what is not busy is scheduling, loading and waiting), the
CPU seconds of all its processes during the batch and the kernel's part of
them; then, against the local batch on the same cores in the same round, the
throughput ratio (local wall / this wall: 1.0 is as fast) and the CPU ratio
(this CPU / local CPU: 1.0 is as cheap), as median (min-max) over rounds.
CPU seconds hardly depend on what else runs on the machine; wall seconds do,
so read the throughput ratios on a quiet machine. Then the scaling:
throughput on all cores over throughput on one.

Default AUDIO: every recording in samples/.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Setup:
    """Where and how a batch is scored."""

    kind: str
    """``local`` or ``cluster``."""
    processes: int
    """Local scoring processes, or Dask worker processes."""
    threads: int
    """Task threads of each Dask worker (1 for local processes)."""
    cores: tuple[int, ...]
    """CPUs the whole setup (client, scheduler and workers) is pinned to."""

    @classmethod
    def parse(cls, text: str, all_cores: list[int]) -> Setup:
        kind, _, rest = text.partition(":")
        shape, _, cores_text = rest.partition("@")
        processes, _, threads = shape.partition("x")
        if kind not in ("local", "cluster") or (kind == "local" and threads):
            raise argparse.ArgumentTypeError(f"setup {text}: expected local:P@CORES or cluster:WxT@CORES")
        return cls(kind, int(processes), int(threads or 1), _parse_cores(cores_text or "all", all_cores))

    def __str__(self) -> str:
        shape = f"{self.processes}" if self.kind == "local" else f"{self.processes}x{self.threads}"
        return f"{self.kind}:{shape}@{','.join(map(str, self.cores))}"

    @property
    def label(self) -> str:
        cores = f"{len(self.cores)} core{'s' if len(self.cores) > 1 else ''}"
        if self.kind == "local":
            return f"local, {self.processes} process{'es' if self.processes > 1 else ''}, {cores}"
        workers = f"{self.processes} worker{'s' if self.processes > 1 else ''}"
        return f"cluster, {workers} x {self.threads} thread{'s' if self.threads > 1 else ''}, {cores}"


def _parse_cores(text: str, all_cores: list[int]) -> tuple[int, ...]:
    if text == "all":
        return tuple(all_cores)
    if text == "first":
        return (all_cores[0],)
    cores = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cores += range(int(first), int(last or first) + 1)
    return tuple(cores)


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> tuple[float, float]:
    """User and kernel CPU seconds of this process (or of its reaped children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime, usage.ru_stime


def run_setup(setup: Setup, audio: list[str], model: str | None) -> dict:
    """Score ``audio`` as ``setup`` says, in this process (already pinned); returns its timings.

    CPU seconds count every process of the setup during the batch: this one
    (client, and a cluster's scheduler and nannies), local scoring processes
    (reaped when the batch ends), and a cluster's worker processes.
    """
    from monitor.batch import BatchOptions, run_batch

    def timed(options: BatchOptions) -> tuple[float, list[float]]:
        before = [*cpu_seconds(), *cpu_seconds(resource.RUSAGE_CHILDREN)]
        started = time.perf_counter()
        exit_code = run_batch(audio, options)
        wall_s = time.perf_counter() - started
        after = [*cpu_seconds(), *cpu_seconds(resource.RUSAGE_CHILDREN)]
        if exit_code != 0:
            raise SystemExit(f"cluster_throughput: {setup}: the batch failed (exit {exit_code})")
        used = [b - a for a, b in zip(before, after)]
        return wall_s, [used[0] + used[2], used[1] + used[3]]

    with tempfile.TemporaryDirectory() as out:
        options = BatchOptions(out_dir=out, model=model, progress=False)
        if setup.kind == "local":
            options.workers = setup.processes
            wall_s, cpu = timed(options)
        else:
            from distributed import Client, LocalCluster

            with LocalCluster(
                n_workers=setup.processes, threads_per_worker=setup.threads, processes=True,
                host="127.0.0.1", dashboard_address=None,
            ) as cluster, Client(cluster, set_as_default=False) as client:  # fmt: skip
                options.cluster = cluster.scheduler_address
                workers_before = client.run(cpu_seconds)
                wall_s, cpu = timed(options)
                workers_after = client.run(cpu_seconds)
            for worker, (user, kernel) in workers_after.items():
                cpu[0] += user - workers_before[worker][0]
                cpu[1] += kernel - workers_before[worker][1]
        reports = [json.load(open(path, encoding="utf-8")) for path in glob.glob(os.path.join(out, "*.json"))]
    return {"wall_s": wall_s, "cpu_s": sum(cpu), "kernel_s": cpu[1], "busy_s": sum(r["timing"]["total_s"] for r in reports)}


def measure(setup: Setup, audio: list[str], model: str | None) -> dict:
    """Run one setup in a fresh process pinned to its cores."""
    command = [sys.executable, __file__, "--run", str(setup), *(["--model", model] if model else []), *audio]
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, setup.cores))
    if result.returncode != 0:
        raise SystemExit(f"cluster_throughput: {setup} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "-"


def main() -> None:
    all_cores = sorted(os.sched_getaffinity(0))
    n = len(all_cores)
    defaults = [f"local:{n}@all", f"cluster:1x{n}@all", f"cluster:{n}x1@all", "local:1@first", "cluster:1x1@first"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="*", default=sorted(glob.glob(os.path.join(ROOT, "samples", "*.wav"))))
    parser.add_argument("--setups", nargs="+", default=defaults, help=f"default: {' '.join(defaults)}")
    parser.add_argument("--repeat", type=int, default=2, help="rounds over all setups")
    parser.add_argument("--model", help="Whisper model (default: embedded base)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one setup, in a pinned child process
    args = parser.parse_args()
    audio = [os.path.abspath(path) for path in args.audio]

    if args.run:
        print(json.dumps(run_setup(Setup.parse(args.run, all_cores), audio, args.model)))
        return

    from monitor.audio import load_call
    from monitor.models import resolve_model

    resolve_model(args.model)  # assemble the embedded model before anything is timed
    audio_s = sum(load_call(path).duration_s for path in audio)
    setups = [Setup.parse(text, all_cores) for text in args.setups]
    print(f"{len(audio)} calls, {audio_s:.0f} s of audio; {n} cores; {args.repeat} rounds of {len(setups)} setups; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    runs: dict[Setup, list[dict]] = {setup: [] for setup in setups}
    for round_number in range(args.repeat):
        for setup in setups:
            result = measure(setup, audio, args.model)
            runs[setup].append(result)
            print(f"  round {round_number + 1}: {str(setup):<22} {result['wall_s']:6.1f} s wall, "
                  f"{result['cpu_s']:6.1f} s CPU", flush=True)  # fmt: skip

    print(f"  load average {os.getloadavg()[0]:.1f}")

    def local_twin(setup: Setup) -> Setup | None:
        return next((s for s in setups if s.kind == "local" and s.cores == setup.cores), None)

    print(f"\n{'setup':<44} {'wall s':>7} {'calls/s':>8} {'audio-s/s':>9} {'busy':>5} {'CPU s':>6} {'kernel':>6}"
          "   x local on the same cores: throughput | CPU per call")  # fmt: skip
    for setup, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        busy = statistics.median(r["busy_s"] / (r["wall_s"] * setup.processes * setup.threads) for r in results)
        cpu = statistics.median(r["cpu_s"] for r in results)
        kernel = statistics.median(r["kernel_s"] for r in results)
        twin = local_twin(setup)
        pairs = list(zip(runs[twin], results)) if twin and twin != setup else []
        speed = spread([local["wall_s"] / run["wall_s"] for local, run in pairs])
        cost = spread([run["cpu_s"] / local["cpu_s"] for local, run in pairs])
        print(f"{setup.label:<44} {wall:7.1f} {len(audio) / wall:8.3f} {audio_s / wall:9.2f} {busy:5.0%} {cpu:6.1f} {kernel:6.1f}"
              f"   {speed} | {cost}")  # fmt: skip

    one_core = [s for s in setups if len(s.cores) == 1]
    scaled = [(s, next(b for b in one_core if b.kind == s.kind)) for s in setups
              if len(s.cores) > 1 and any(b.kind == s.kind for b in one_core)]  # fmt: skip
    if scaled:
        print("\nscaling, throughput on all cores / on one core (same kind):")
        for setup, base in scaled:
            ratios = [base_run["wall_s"] / run["wall_s"] for base_run, run in zip(runs[base], runs[setup])]
            print(f"  {setup.label:<44} {spread(ratios)}  (linear: {len(setup.cores)})")


if __name__ == "__main__":
    main()
