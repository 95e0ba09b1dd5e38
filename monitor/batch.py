"""Batch scoring of recorded calls: ``monitor score INPUT... --out DIR``.

Calls are scored in this process, in a local process pool, or as tasks on a
Dask cluster (``--cluster``, see cluster.py); either way the reports come
back here and this process writes them, to ``--out`` and, with ``--db``, to
the results database (store.py). Each call's report is written as soon as
the call is done, and ``summary.csv`` is rewritten after every call, so an
interrupted batch loses at most the calls in progress. A rerun skips calls
whose report is complete, in ``--out`` or in the database. One bad file
becomes an error row; the rest of the batch goes on.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from monitor.audio import is_audio_file, is_url
from monitor.callid import check_call_id
from monitor.errors import MonitorError
from monitor.models import resolve_model
from monitor.phrasebook import load_phrasebook
from monitor.pipeline import ScoreOptions, call_id_for, score_call, write_report
from monitor.report import is_complete_report

log = logging.getLogger(__name__)

DEFAULT_PHRASEBOOK = "broadband"
SUMMARY_COLUMNS = (
    "call_id", "audio", "agent_id", "phrasebook", "status", "score", "greeting", "farewell",
    "checks_failed", "violations", "duration_s", "rtf", "error",
)  # fmt: skip


@dataclass
class CallJob:
    """One recording to score."""

    audio: str
    """Path of the recording."""
    call_id: str
    """Report name; the file stem, made unique within the batch."""
    phrasebook: str
    """Phrasebook name or path for this call."""
    agent_id: str | None = None
    """The agent, from ``--agent-id``, the manifest, or the call's sidecar."""


@dataclass
class BatchOptions:
    """What ``monitor score`` was asked to do."""

    out_dir: str
    """Where reports and summary.csv go."""
    phrasebook: str | None = None
    """Phrasebook for every call; None: each call's own (manifest or sidecar), else broadband."""
    agent_id: str | None = None
    """Agent of every call, unless the manifest says otherwise."""
    manifest: str | None = None
    """CSV with columns path, agent_id, call_id (and optionally phrasebook)."""
    workers: int = 1
    """Processes scoring calls at once; they share the machine's cores."""
    model: str | None = None
    """Whisper model name or directory; None is the embedded base model."""
    progress: bool = True
    """Show a progress bar on stderr."""
    score: ScoreOptions = field(default_factory=ScoreOptions)
    """Per-call options."""
    db: str | None = None
    """Results database URL (see ``store.open_store``): reports are saved there as well as in out_dir,
    and a call already saved there is not scored again."""
    cluster: str | None = None
    """Dask scheduler address (``tcp://HOST:8786``): score each call as a task on that cluster
    instead of in local processes (``workers`` then does not apply)."""


def find_audio(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand files and directories into audio files; also return (input, error) for inputs that are missing."""
    found, missing = [], []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files) if is_audio_file(f)]
        elif os.path.exists(item) or is_url(item):
            found.append(item)  # named explicitly: try it whatever its extension
        else:
            missing.append((item, f"{item}: no such file or directory"))
    return found, missing


def _unique_ids(paths: list[str]) -> list[str]:
    """File stems, prefixed by their folder where two inputs share a stem."""
    stems = [call_id_for(p) for p in paths]
    return [
        f"{os.path.basename(os.path.dirname(os.path.abspath(p)))}__{s}" if stems.count(s) > 1 else s
        for p, s in zip(paths, stems)
    ]


def _read_manifest(path: str) -> dict[str, dict]:
    """Manifest rows keyed by absolute audio path."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise MonitorError(f"manifest {path}: {exc.strerror}") from None
    if not rows or "path" not in rows[0]:
        raise MonitorError(f"manifest {path}: needs a header row with at least the column 'path'")
    for number, row in enumerate(rows, start=2):  # call ids name report files: refuse any that leave --out
        if row.get("call_id"):
            check_call_id(row["call_id"], f"manifest {path} line {number}: call_id")
    base = os.path.dirname(os.path.abspath(path))
    return {os.path.normpath(os.path.join(base, row["path"])): row for row in rows}


def _sidecar(audio: str) -> dict:
    """Call metadata next to a recording (``STEM.labels.json``: phrasebook, agent_id), if any."""
    path = os.path.splitext(audio)[0] + ".labels.json"
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def plan_jobs(audio_files: list[str], options: BatchOptions) -> list[CallJob]:
    manifest = _read_manifest(options.manifest) if options.manifest else {}
    jobs = []
    for audio, call_id in zip(audio_files, _unique_ids(audio_files)):
        row = manifest.get(os.path.normpath(os.path.abspath(audio)), {})
        sidecar = _sidecar(audio)
        jobs.append(
            CallJob(
                audio=audio,
                call_id=row.get("call_id") or call_id,
                phrasebook=options.phrasebook or row.get("phrasebook") or sidecar.get("phrasebook") or DEFAULT_PHRASEBOOK,
                agent_id=row.get("agent_id") or options.agent_id or sidecar.get("agent_id"),
            )
        )
    return jobs


def summary_row(job: CallJob, report: dict | None = None, error: str | None = None) -> dict:
    row = {"call_id": job.call_id, "audio": job.audio, "agent_id": job.agent_id or "", "phrasebook": job.phrasebook}
    if report is None:
        return {**row, "status": "error", "error": error or ""}
    checks = {c["id"]: c["passed"] for c in report.get("checks") or []}
    return {
        **row,
        "status": "ok",
        "score": "" if report["score"]["total"] is None else report["score"]["total"],
        "greeting": checks.get("greeting", ""),
        "farewell": checks.get("farewell", ""),
        "checks_failed": sum(1 for passed in checks.values() if passed is False),
        "violations": sum(1 for e in report["events"] if e["kind"] == "forbidden"),
        "duration_s": report["duration_s"],
        "rtf": (report.get("timing") or {}).get("rtf", ""),
        "error": "",
    }


def write_summary(rows: list[dict], out_dir: str) -> None:
    """Rewrite summary.csv atomically, so a reader never sees half a file."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
    fd, tmp = tempfile.mkstemp(prefix=".summary-", suffix=".csv", dir=out_dir)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
    os.replace(tmp, os.path.join(out_dir, "summary.csv"))


# --- worker side: one transcriber per process, loaded once -------------------------
# (a local pool process, or a Dask worker through cluster.TranscriberPlugin)
_transcriber = None


def load_worker_transcriber(model: str | None, cpu_threads: int) -> None:
    global _transcriber
    from monitor.asr import Transcriber

    _transcriber = Transcriber(model, cpu_threads=cpu_threads)


def score_job(job: CallJob, score_options: ScoreOptions) -> tuple[dict | None, str | None]:
    """Score one call with this process's transcriber; returns (report, None) or (None, error message).

    It never raises for a bad call, so a corrupt recording is an error row
    rather than a task that a cluster would retry.
    """
    try:
        phrasebook = load_phrasebook(job.phrasebook)
        report = score_call(job.audio, _transcriber, phrasebook, score_options, job.call_id, job.agent_id)
        return report, None
    except MonitorError as exc:
        return None, str(exc)
    except Exception as exc:  # one broken call must not end the batch
        log.debug("scoring %s failed", job.audio, exc_info=True)
        return None, f"{job.audio}: {type(exc).__name__}: {exc}"


def run_batch(inputs: list[str], options: BatchOptions) -> int:
    """Score every input; returns the exit code (0 all scored, 1 some failed)."""
    audio_files, missing = find_audio(inputs)
    jobs = plan_jobs(audio_files, options)
    # A malformed phrasebook fails the whole batch before any audio is decoded.
    for name in sorted({job.phrasebook for job in jobs}):
        load_phrasebook(name)
    if not options.cluster:
        # Likewise an unknown model; this also assembles the embedded model once,
        # here, rather than in every worker at the same time. (Cluster workers
        # resolve it from their own cache as they start.)
        resolve_model(options.model)
    os.makedirs(options.out_dir, exist_ok=True)
    store = _open_store(options.db) if options.db else None

    rows: dict[str, dict] = {}
    todo = []
    for job in jobs:
        report = _earlier_report(job, options.out_dir, store)
        if report is not None:
            rows[job.call_id] = summary_row(job, report)
        else:
            todo.append(job)
    errors = [{"call_id": call_id_for(item), "audio": item, "status": "error", "error": error} for item, error in missing]
    for error in errors:
        print(f"monitor: error: {error['error']}", file=sys.stderr)

    def finished(job: CallJob, report: dict | None, error: str | None) -> None:
        if report is not None:
            try:
                _save(report, job, options.out_dir, store)
            except Exception as exc:  # a full disk or a lost database fails this call, not the batch
                log.debug("saving %s failed", job.call_id, exc_info=True)
                report, error = None, f"{job.audio}: cannot save the report: {type(exc).__name__}: {exc}"
        rows[job.call_id] = summary_row(job, report, error)
        if error:
            print(f"monitor: error: {error}", file=sys.stderr)
        write_summary(_ordered(rows, jobs) + errors, options.out_dir)

    write_summary(_ordered(rows, jobs) + errors, options.out_dir)
    if todo:
        with _progress(options.progress) as progress:
            task = progress.add_task("scoring", total=len(jobs), completed=len(jobs) - len(todo))
            for job, (report, error) in _run(todo, options):
                finished(job, report, error)
                progress.advance(task)
    failed = len(errors) + sum(1 for r in rows.values() if r["status"] == "error")
    scored = sum(1 for r in rows.values() if r["status"] == "ok")
    print(f"monitor: {scored} scored ({len(jobs) - len(todo)} already done), {failed} failed; "
          f"reports in {options.out_dir}", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _open_store(url: str):
    from monitor.store import open_store

    return open_store(url)


def _save(report: dict, job: CallJob, out_dir: str, store) -> None:
    write_report(report, out_dir, job.audio)
    if store is not None:
        store.save_report(report, os.path.abspath(job.audio))


def _earlier_report(job: CallJob, out_dir: str, store) -> dict | None:
    """The report of a call that an earlier run scored, from out_dir or the database, or None.

    A report found in only one of the two is copied to the other, so both hold
    every scored call whichever run scored it.
    """
    report_path = os.path.join(out_dir, f"{job.call_id}.json")
    on_disk = is_complete_report(report_path) and os.path.exists(os.path.join(out_dir, f"{job.call_id}.html"))
    if on_disk:
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
        if store is not None and not store.has_report(job.call_id):
            store.save_report(report, os.path.abspath(job.audio))
        return report
    report = store.get_report(job.call_id) if store is not None else None
    if report is not None:
        write_report(report, out_dir, job.audio)
    return report


def _ordered(rows: dict[str, dict], jobs: list[CallJob]) -> list[dict]:
    return [rows[job.call_id] for job in jobs if job.call_id in rows]


def _run(todo: list[CallJob], options: BatchOptions):
    """Yield (job, (report, error)) as calls finish, in this process, in a pool or on a cluster."""
    if options.cluster:
        try:
            from monitor.cluster import score_on_cluster  # Dask is needed for --cluster only
        except ImportError as exc:
            raise MonitorError(
                f"cluster {options.cluster}: needs dask.distributed (pip install 'call-conduct-monitor[cluster]'): {exc}"
            ) from None
        yield from score_on_cluster(todo, options)
        return
    cores = os.cpu_count() or 1
    workers = max(1, min(options.workers, len(todo)))
    threads = max(1, cores // workers)
    if workers == 1:
        load_worker_transcriber(options.model, threads)
        for job in todo:
            yield job, score_job(job, options.score)
        return
    with ProcessPoolExecutor(workers, initializer=load_worker_transcriber, initargs=(options.model, threads)) as pool:
        pending = {pool.submit(score_job, job, options.score): job for job in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    yield job, future.result()
                except Exception as exc:  # a worker that died (killed, out of memory)
                    yield job, (None, f"{job.audio}: worker failed: {type(exc).__name__}: {exc}")


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
