"""Batch scoring on a real Dask cluster: a LocalCluster of 2 worker processes, the real model, real samples."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import SAMPLES

pytest.importorskip("distributed", reason="--cluster needs the 'cluster' extra (dask[distributed])")
from distributed import Client, LocalCluster  # noqa: E402

import monitor.batch  # noqa: E402
from monitor.batch import BatchOptions, run_batch, start_scoring_process  # noqa: E402
from monitor.cluster import PROFILER_CALLBACKS, SetupPlugin  # noqa: E402
from monitor.store import open_store  # noqa: E402

CALLS = ("d02_fault_rude", "d06_no_greeting_rude", "d09_service_condescending")


def inputs() -> list[str]:
    return [str(SAMPLES / f"{call_id}.wav") for call_id in CALLS]


def reports(out) -> dict[str, dict]:
    return {call_id: json.loads((out / f"{call_id}.json").read_text(encoding="utf-8")) for call_id in CALLS}


def summary(out) -> list[dict]:
    return list(csv.DictReader(open(out / "summary.csv", encoding="utf-8")))


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local_cluster:
        yield local_cluster


@pytest.fixture(scope="module")
def local_reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    assert run_batch(inputs(), BatchOptions(out_dir=str(out), progress=False)) == 0
    return reports(out)


def test_cluster_reports_equal_local_ones_and_corrupt_input_is_an_error_row(cluster, local_reports, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    out, db = tmp_path / "out", f"sqlite:///{tmp_path / 'results.db'}"
    options = BatchOptions(out_dir=str(out), cluster=cluster.scheduler_address, db=db, progress=False)
    assert run_batch([*inputs(), str(broken)], options) == 1

    for call_id, report in reports(out).items():
        local = local_reports[call_id]
        for key in ("events", "checks", "transcript", "score", "agent_id", "phrasebook", "duration_s", "audio_sha256"):
            assert report[key] == local[key], (call_id, key)
    rows = {r["call_id"]: r for r in summary(out)}
    assert [rows[c]["status"] for c in CALLS] == ["ok"] * 3
    assert rows["broken"]["status"] == "error" and "broken.wav: cannot be decoded" in rows["broken"]["error"]
    store = open_store(db)
    assert all(store.get_report(c) == reports(out)[c] for c in CALLS) and not store.has_report("broken")
    # The corrupt file was one task that returned its error: nothing erred, so nothing was retried.
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        erred = client.run_on_scheduler(lambda dask_scheduler: [k for k, t in dask_scheduler.tasks.items() if t.state == "erred"])
        # The workers were set up for scoring: Dask's statistical profiler no longer samples their tasks.
        profiling = client.run(lambda dask_worker: sorted(set(PROFILER_CALLBACKS) & set(dask_worker.periodic_callbacks)))
    assert erred == []
    assert len(profiling) == 2 and all(names == [] for names in profiling.values())


def test_one_worker_of_two_threads_scores_like_local_and_keeps_its_model(local_reports, tmp_path):
    """Dask's default worker (one process, a task thread per core): a CTranslate2 replica
    per thread, so two calls are decoded at once; the reports are still the local ones."""
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster, Client(cluster, set_as_default=False) as client:  # fmt: skip
        assert run_batch(inputs(), BatchOptions(out_dir=str(tmp_path), cluster=cluster.scheduler_address, progress=False)) == 0
        for call_id, report in reports(tmp_path).items():
            assert report["transcript"] == local_reports[call_id]["transcript"], call_id
            assert report["events"] == local_reports[call_id]["events"], call_id
        worker_model = client.run(lambda: (monitor.batch._transcriber.model.model.num_workers, id(monitor.batch._transcriber)))
        ((replicas, loaded),) = worker_model.values()
        assert replicas == 2
        # The next batch sets the worker up again, for the same model: it keeps the loaded one.
        client.register_plugin(SetupPlugin(start_scoring_process, (None,)))
        assert list(client.run(lambda: id(monitor.batch._transcriber)).values()) == [loaded]


def _kill_a_busy_worker(address: str, killed: list, stop: threading.Event) -> None:
    """SIGKILL the first worker process seen a second into scoring a call."""
    with Client(address, set_as_default=False) as client:
        pids = client.run(os.getpid)
        while not stop.is_set():
            busy = [worker for worker, keys in client.processing().items() if keys]
            if busy:
                time.sleep(1.0)
                still = client.processing().get(busy[0])
                if still:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append((busy[0], list(still)))
                    return
            time.sleep(0.1)


def test_killed_worker_loses_no_call_and_each_is_written_once(cluster, tmp_path, monkeypatch):
    written = []
    write_report = monitor.batch.write_report
    monkeypatch.setattr(monitor.batch, "write_report", lambda report, *a: written.append(report["call_id"]) or write_report(report, *a))
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_a_busy_worker, args=(cluster.scheduler_address, killed, stop))
    killer.start()
    try:
        options = BatchOptions(out_dir=str(tmp_path), cluster=cluster.scheduler_address, progress=False)
        assert run_batch(inputs(), options) == 0
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed while it scored a call"
    assert sorted(written) == sorted(CALLS)
    assert sorted(r["call_id"] for r in summary(tmp_path) if r["status"] == "ok") == sorted(CALLS)
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarted the killed one


def test_local_path_does_not_import_dask():
    code = "import sys, monitor.cli, monitor.batch, monitor.store; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_unreachable_scheduler_is_one_line_naming_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "score", str(SAMPLES / "d06_no_greeting_rude.wav"), "--out", str(tmp_path),
         "--cluster", address],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"monitor: error: cluster {address}: cannot connect (")
    assert result.stderr.strip().count("\n") == 0, result.stderr
