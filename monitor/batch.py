"""Batch scoring of recorded calls: ``monitor score INPUT... --out DIR``.

Calls are scored in worker processes: local ones that this process starts, or
the worker processes of a Dask cluster (``--cluster``, see cluster.py). Every
scoring process is set up by ``start_scoring_process``, with the same settings
wherever it runs, so a call gets the same report locally and on a cluster.
The reports come back here and this process writes them, to ``--out`` and,
with ``--db``, to the results database (store.py). Each call's report is
written as soon as the call is done, and ``summary.csv`` is rewritten after
every call, so an interrupted batch loses at most the calls in progress.

``summary.csv`` accumulates: it keeps the rows of earlier runs into the same
``--out`` and a call's newest row replaces its older one. A rerun skips calls
whose report is complete and was made from the same audio (``audio_sha256``),
in ``--out`` or in the database. One bad file becomes an error row; the rest
of the batch goes on.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace

from monitor.audio import is_audio_file, is_url, truncation_warning
from monitor.callid import call_id_problem, shown
from monitor.errors import MonitorError, UsageError
from monitor.models import file_sha256, resolve_model
from monitor.phrasebook import load_phrasebook
from monitor.pipeline import ScoreOptions, call_id_for, score_call, write_report
from monitor.report import is_complete_report, is_violation

log = logging.getLogger(__name__)

DEFAULT_PHRASEBOOK = "broadband"
SUMMARY_COLUMNS = (
    "call_id", "audio", "agent_id", "phrasebook", "status", "score", "greeting", "farewell",
    "checks_failed", "violations", "duration_s", "rtf", "error", "warning",
)  # fmt: skip

SCORING_THREADS = 1
"""CTranslate2 threads that decode one call. One, whatever the machine: a batch's
parallelism is its calls, scored at once in processes (``--workers``, a
cluster's worker processes) or in a worker's task threads, each with a model
replica of its own (``start_scoring_process``). And a fixed number keeps reports
identical between a local batch and a cluster, where the thread count would
otherwise differ."""

SCORING_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    # Intel MKL's conditional numerical reproducibility: without it MKL may pick
    # other code paths from run to run (memory alignment), and a word time moves
    # by 0.01 s. It costs nothing measurable here (CPU time 3.05 s against 2.98 s
    # on d02_fault_rude); "AUTO,STRICT" cost 5 times as much and "COMPATIBLE" 20.
    "MKL_CBWR": "AUTO",
}
"""Environment of every scoring process, set before the model loads. The first
three are what Dask gives its worker processes; local worker processes start with
the same, so numpy and MKL compute the same way in both."""


@dataclass
class CallJob:
    """One recording to score."""

    audio: str
    """Path or URL of the recording."""
    call_id: str
    """Report name: the manifest's call_id or the file stem, made unique within the batch (see ``unique_call_ids``)."""
    phrasebook: str
    """Phrasebook name or path for this call."""
    agent_id: str | None = None
    """The agent, from ``--agent-id``, the manifest, or the call's sidecar."""
    started_at: dt.datetime | None = None
    """When the call took place, from the manifest's ``started_at`` column (ISO 8601; without a zone, this
    machine's local time); None: the recording file's modification time (see ``recording_time``)."""


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
    """CSV with a header row and columns path, agent_id, call_id (and optionally phrasebook)."""
    workers: int | None = None
    """Local processes scoring calls at once, each with one CTranslate2 thread; None: one per core."""
    model: str | None = None
    """Whisper model: a catalogue name (models/catalogue.yaml), a directory or a hub name; None is base."""
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


def default_workers() -> int:
    """One scoring process per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def find_audio(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand files and directories into audio files, each once; also return (input, error) for missing inputs."""
    found, missing, seen = [], [], set()

    def add(path: str) -> None:
        key = path if is_url(path) else os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    for item in inputs:
        if os.path.isdir(item):
            audio_here = 0
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    if is_audio_file(name):
                        add(os.path.join(root, name))
                        audio_here += 1
            if not audio_here:
                print(f"monitor: warning: {item}: no audio files in this directory", file=sys.stderr)
        elif os.path.exists(item) or is_url(item):
            add(item)  # named explicitly: try it whatever its extension
        else:
            missing.append((item, f"{item}: no such file or directory"))
    return found, missing


def stem_call_id(path: str) -> str:
    """A recording's own call id: its stem, with its extension added when another audio
    file in its folder has the same stem and sorts first (``x.mp3`` → ``x``, ``x.ogg`` →
    ``x_ogg``, ``x.wav`` → ``x_wav``).

    It depends on the folder, not on which of its files a run is given, so a
    rerun on part of a folder gives each call the id (and report) it had.
    """
    stem = call_id_for(path)
    if is_url(path):
        return stem
    folder, name = os.path.split(os.path.abspath(path))
    try:
        siblings = sorted(f for f in os.listdir(folder) if is_audio_file(f) and os.path.splitext(f)[0] == stem)
    except OSError:
        return stem
    extension = os.path.splitext(name)[1].lstrip(".").lower()
    return stem if not siblings or siblings[0] == name or not extension else f"{stem}_{extension}"


def unique_call_ids(paths: list[str], wanted: list[str]) -> list[str]:
    """Make the wanted call ids unique, in input order: the first input keeps its id.

    A later input whose id is taken (a file of the same name in another folder,
    or a manifest's repeated call_id) gets its folder in front (``b__x``), then
    its extension added (``b__x_wav``), then a number (``x_2``). The results stay
    plain file names. Inputs are in a stable order (directories are walked
    sorted), so a rerun on the same inputs gives every call the id it had.
    """
    taken: set[str] = set()
    ids = []
    for path, want in zip(paths, wanted):
        extension = os.path.splitext(path)[1].lstrip(".").lower()
        folder = os.path.basename(os.path.dirname(os.path.abspath(path))) if not is_url(path) else ""
        prefixed = f"{folder}__{want}" if folder else want
        candidates = [want, prefixed, f"{prefixed}_{extension}" if extension else prefixed]
        call_id = next((c for c in candidates if c not in taken), None)
        number = 2
        while call_id is None:
            call_id = f"{want}_{number}" if f"{want}_{number}" not in taken else None
            number += 1
        taken.add(call_id)
        ids.append(call_id)
    return ids


def _read_manifest(path: str) -> dict[str, dict]:
    """Manifest rows keyed by absolute audio path; a malformed manifest is a usage error naming the line."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except OSError as exc:
        raise UsageError(f"manifest {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"manifest {path}: not a CSV file ({exc})") from None
    if "path" not in [name.strip() for name in header]:
        raise UsageError(
            f"manifest {path}: the first line must be a header naming the columns, at least 'path' "
            "(path,agent_id,call_id[,phrasebook])"
        )
    base = os.path.dirname(os.path.abspath(path))
    manifest = {}
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in row.items()}
        if "" in row:  # DictReader files extra fields under the key None
            raise UsageError(f"manifest {path} line {line}: more fields than the header has columns")
        audio = (row.get("path") or "").strip()
        if not audio:
            raise UsageError(f"manifest {path} line {line}: the path is empty")
        call_id = (row.get("call_id") or "").strip()
        if call_id and call_id_problem(call_id):  # call ids name report files: refuse any that leave --out
            raise UsageError(f"manifest {path} line {line}: call_id {shown(call_id)}: a call id {call_id_problem(call_id)}")
        started_at = (row.get("started_at") or "").strip()
        try:
            row["started_at"] = dt.datetime.fromisoformat(started_at).astimezone() if started_at else None
        except ValueError:
            raise UsageError(f"manifest {path} line {line}: started_at {shown(started_at)} is not a date and time "
                             "(ISO 8601, e.g. 2026-11-27 09:30:00+08:00)") from None
        key = audio if is_url(audio) else os.path.normpath(os.path.join(base, audio))
        manifest[key] = {k: v if k == "started_at" else (v or "").strip() for k, v in row.items()}
    return manifest


def recording_time(job: CallJob) -> dt.datetime | None:
    """When the call took place: the manifest's ``started_at``, else the recording file's modification time
    (None for a URL or an unreadable file). Not when it was scored."""
    if job.started_at is not None or is_url(job.audio):
        return job.started_at
    try:
        return dt.datetime.fromtimestamp(os.path.getmtime(job.audio), dt.timezone.utc)
    except OSError:
        return None


def _sidecar(audio: str) -> tuple[dict, str | None]:
    """Call metadata next to a recording (``STEM.labels.json``: phrasebook, agent_id), and a warning if it is unusable.

    A sidecar that cannot be read, or whose fields have the wrong type, is
    ignored for its call only, with a warning in that call's summary row.
    """
    path = os.path.splitext(audio)[0] + ".labels.json"
    if is_url(audio) or not os.path.exists(path):
        return {}, None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        return {}, f"{path}: ignored, not readable JSON ({exc})"
    if not isinstance(data, dict):
        return {}, f"{path}: ignored, not a JSON object"
    usable = {k: data[k] for k in ("phrasebook", "agent_id") if isinstance(data.get(k), str) and data[k].strip()}
    wrong = [k for k in ("phrasebook", "agent_id") if k in data and k not in usable and data[k] is not None]
    return usable, (f"{path}: ignored {', '.join(wrong)} (not a text)" if wrong else None)


def plan_jobs(audio_files: list[str], options: BatchOptions) -> tuple[list[CallJob], dict[str, str]]:
    """The jobs of a batch, and the sidecar warnings by call id."""
    manifest = _read_manifest(options.manifest) if options.manifest else {}
    rows = [manifest.get(audio if is_url(audio) else os.path.normpath(os.path.abspath(audio)), {}) for audio in audio_files]
    wanted = [row.get("call_id") or stem_call_id(audio) for audio, row in zip(audio_files, rows)]
    call_ids = unique_call_ids(audio_files, wanted)
    jobs, warnings = [], {}
    for audio, call_id, row in zip(audio_files, call_ids, rows):
        if call_id != (row.get("call_id") or call_id_for(audio)):
            print(f"monitor: note: {audio} is call {call_id} (another recording has the same name)", file=sys.stderr)
        sidecar, warning = _sidecar(audio)
        if warning:
            warnings[call_id] = warning
            print(f"monitor: warning: {warning}", file=sys.stderr)
        jobs.append(
            CallJob(
                audio=audio,
                call_id=call_id,
                phrasebook=options.phrasebook or row.get("phrasebook") or sidecar.get("phrasebook") or DEFAULT_PHRASEBOOK,
                agent_id=row.get("agent_id") or options.agent_id or sidecar.get("agent_id"),
                started_at=row.get("started_at"),
            )
        )
    return jobs, warnings


def summary_row(job: CallJob, report: dict | None = None, error: str | None = None, warning: str | None = None) -> dict:
    row = {"call_id": job.call_id, "audio": job.audio, "agent_id": job.agent_id or "", "phrasebook": job.phrasebook}
    warnings = [w for w in [warning, *((report or {}).get("warnings") or [])] if w]
    row["warning"] = "; ".join(warnings)
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
        "violations": sum(1 for e in report["events"] if is_violation(e)),
        "duration_s": report["duration_s"],
        "rtf": (report.get("timing") or {}).get("rtf", ""),
        "error": "",
    }


def read_summary(out_dir: str) -> dict[str, dict]:
    """The rows of an earlier summary.csv in out_dir by call id (none if there is none or it is unreadable)."""
    path = os.path.join(out_dir, "summary.csv")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["call_id"]: row for row in csv.DictReader(handle) if row.get("call_id")}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, csv.Error, KeyError) as exc:
        print(f"monitor: warning: {path}: earlier summary not readable, starting a new one ({exc})", file=sys.stderr)
        return {}


def write_summary(rows: list[dict], out_dir: str) -> None:
    """Rewrite summary.csv atomically, so a reader never sees half a file; a write error is one line naming it."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path = os.path.join(out_dir, "summary.csv")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".summary-", suffix=".csv", dir=out_dir)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise MonitorError(f"{path}: cannot write the summary ({exc.strerror or exc})") from None


def prepare_out_dir(out_dir: str) -> None:
    """Create --out, or fail with a usage error naming it (a file, no permission, a read-only disk)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out {out_dir}: is a file, not a directory")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out_dir}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir}: not writable")


# --- worker side: one transcriber per scoring process, loaded once ---------------------
_transcriber = None
_set_up_for: tuple | None = None  # (model, calls_at_once) that _transcriber was loaded for

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""Blocks below this come from the heap, not from a fresh mmap each. It is the
ceiling that glibc's own, dynamic threshold climbs to; Dask's nanny starts its
workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which pins the threshold at
128 KiB instead: every mel spectrogram, audio slice and encoder output was then
mapped, zero-filled and unmapped again, and a worker spent 4.8 s in the kernel
for every 10 s of scoring (5 sample calls, against 0.3 s in a local worker)."""


def _reuse_freed_memory() -> None:
    """Keep freed blocks up to ``MMAP_THRESHOLD_BYTES`` in the heap for reuse, and
    trim the heap only past twice that, as glibc does by default; set explicitly,
    so a Dask worker (see above) and a local worker allocate alike. Peak memory
    stayed the same (430 MB scoring 5 sample calls). Elsewhere than glibc, a no-op."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def start_scoring_process(model: str | None, calls_at_once: int = 1) -> None:
    """Set this process up to score calls: the same settings in a local worker and a Dask worker.

    ``calls_at_once`` is how many calls the process scores at the same time,
    each in a thread of its own (a Dask worker's ``--nthreads``). The model
    gets as many CTranslate2 replicas, which share its weights; with one, the
    calls would queue for it and one worker on N cores would use one. Each
    replica computes with ``SCORING_THREADS`` threads, so a report is the same
    whatever the count. A process already set up for the same model and count
    keeps it: a cluster's workers outlive a batch, and each batch sets them up.
    """
    global _transcriber, _set_up_for
    from monitor.asr import Transcriber

    os.environ.update(SCORING_ENVIRONMENT)  # before the model's first MKL call, which reads MKL_CBWR
    _reuse_freed_memory()
    if _set_up_for == (model, calls_at_once):
        return
    _transcriber = None  # free the old model before the new one loads
    _transcriber = Transcriber(model, cpu_threads=SCORING_THREADS, num_workers=calls_at_once)
    _set_up_for = (model, calls_at_once)


def _start_local_worker(model: str | None, parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group; the parent handles it and ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        # Die with the parent, even a parent killed with SIGKILL (PR_SET_PDEATHSIG = 1).
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took hold
        os._exit(1)
    # faster-whisper's progress bars (tqdm) would make a multiprocessing lock, which
    # a worker ended by Ctrl-C leaves behind, and the resource tracker then warns
    # of "leaked semaphore objects". Progress bars in one process need a thread lock only.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    start_scoring_process(model)


def score_job(job: CallJob, score_options: ScoreOptions) -> tuple[dict | None, str | None]:
    """Score one call with this process's transcriber; returns (report, None) or (None, error message).

    The report also carries ``audio_sha256``, the hash of the file that was
    scored (null for a URL: FFmpeg fetched it, nothing was hashed), and
    ``warnings`` (e.g. a truncated recording). It never raises for a bad call,
    so a corrupt recording is an error row rather than a task a cluster retries.
    """
    try:
        phrasebook = load_phrasebook(job.phrasebook)
        report = score_call(job.audio, _transcriber, phrasebook, score_options, job.call_id, job.agent_id)
        report["audio_sha256"] = None if is_url(job.audio) else file_sha256(job.audio)
        warning = truncation_warning(job.audio, report["duration_s"])
        report["warnings"] = [warning] if warning else []
        return report, None
    except MonitorError as exc:
        return None, str(exc)
    except Exception as exc:  # one broken call must not end the batch
        log.debug("scoring %s failed", job.audio, exc_info=True)
        return None, f"{job.audio}: {type(exc).__name__}: {exc}"


# --- the batch ---------------------------------------------------------------------------


def run_batch(inputs: list[str], options: BatchOptions) -> int:
    """Score every input; returns the exit code (0 all scored, 1 some failed, 130 interrupted)."""
    audio_files, missing = find_audio(inputs)
    jobs, warnings = plan_jobs(audio_files, options)
    if options.phrasebook:  # a wrong --phrasebook fails the whole batch before any audio is decoded
        load_phrasebook(options.phrasebook)
    if not options.cluster:
        # Likewise an unknown model; this also assembles the embedded model once,
        # here, rather than in every worker at the same time. (Cluster workers
        # resolve it from their own cache as they start.)
        resolve_model(options.model)
    prepare_out_dir(options.out_dir)
    store = _open_store(options.db) if options.db else None

    rows = read_summary(options.out_dir)  # earlier runs' rows stay; this run's replace them
    this_run: dict[str, dict] = {}

    def record(row: dict) -> None:
        rows[row["call_id"]] = this_run[row["call_id"]] = row
        if row["status"] == "error":
            print(f"monitor: error: {row['error']}", file=sys.stderr)

    # A missing input's row gets an id of its own too, never one of a call that is there.
    missing_ids = unique_call_ids(
        [job.audio for job in jobs] + [item for item, _ in missing],
        [job.call_id for job in jobs] + [call_id_for(item) for item, _ in missing],
    )[len(jobs):]
    for call_id, (item, error) in zip(missing_ids, missing):
        record({"call_id": call_id, "audio": item, "status": "error", "error": error})
    todo = []
    already = 0
    for job in jobs:
        try:
            load_phrasebook(job.phrasebook)  # cached; a call's own phrasebook fails that call only
        except MonitorError as exc:
            record(summary_row(job, error=str(exc), warning=warnings.get(job.call_id)))
            continue
        report = _earlier_report(job, options.out_dir, store)
        if report is not None:
            this_run[job.call_id] = rows[job.call_id] = summary_row(job, report, warning=warnings.get(job.call_id))
            already += 1
        else:
            todo.append(job)

    def finished(job: CallJob, report: dict | None, error: str | None) -> None:
        if report is not None:
            try:
                _save(report, job, options.out_dir, store)
            except Exception as exc:  # a full disk or a lost database fails this call, not the batch
                log.debug("saving %s failed", job.call_id, exc_info=True)
                report, error = None, f"{job.audio}: cannot save the report: {type(exc).__name__}: {exc}"
        record(summary_row(job, report, error, warnings.get(job.call_id)))
        write_summary(list(rows.values()), options.out_dir)

    write_summary(list(rows.values()), options.out_dir)
    interrupted = False
    if todo:
        results = _run(todo, options)
        try:
            with _progress(options.progress) as progress:
                task = progress.add_task("scoring", total=len(jobs), completed=len(jobs) - len(todo))
                for job, (report, error) in results:
                    finished(job, report, error)
                    progress.advance(task)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            results.close()  # ends the worker processes if the loop did not run to the end
    failed = sum(1 for r in this_run.values() if r["status"] == "error")
    scored = sum(1 for r in this_run.values() if r["status"] == "ok")
    if interrupted:
        write_summary(list(rows.values()), options.out_dir)
        print(f"monitor: interrupted: {scored} scored ({already} already done), {failed} failed, "
              f"{len(jobs) + len(missing) - len(this_run)} not finished; run the same command again to go on",
              file=sys.stderr)  # fmt: skip
        return 130
    print(f"monitor: {scored} scored ({already} already done), {failed} failed; "
          f"reports in {options.out_dir}", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _open_store(url: str):
    from monitor.store import open_store

    return open_store(url)


def _save(report: dict, job: CallJob, out_dir: str, store) -> None:
    write_report(report, out_dir, job.audio)
    if store is not None:
        store.save_report(report, os.path.abspath(job.audio), started_at=recording_time(job))


def _made_from(report: dict, job: CallJob) -> bool:
    """True when an earlier report was made from this recording as it is now.

    A report without ``audio_sha256`` (forged, or older than the field) is not
    trusted. A URL, or a file that this process cannot read (a cluster's
    workers may see paths the client does not), is not checked.
    """
    if is_url(job.audio) or not os.path.isfile(job.audio):
        return True
    try:
        return report.get("audio_sha256") == file_sha256(job.audio)
    except OSError:
        return True


def _earlier_report(job: CallJob, out_dir: str, store) -> dict | None:
    """The report of a call that an earlier run scored from the same audio, from out_dir or the database, or None.

    A report found in only one of the two is copied to the other, so both hold
    every scored call whichever run scored it.
    """
    report_path = os.path.join(out_dir, f"{job.call_id}.json")
    if is_complete_report(report_path) and os.path.exists(os.path.join(out_dir, f"{job.call_id}.html")):
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
        if _made_from(report, job):
            if store is not None and not store.has_report(job.call_id):
                store.save_report(report, os.path.abspath(job.audio), started_at=recording_time(job))
            return report
    report = store.get_report(job.call_id) if store is not None else None
    if report is not None and _made_from(report, job):
        write_report(report, out_dir, job.audio)
        return report
    return None


def _run(todo: list[CallJob], options: BatchOptions):
    """Yield (job, (report, error)) as calls finish, in local worker processes or on a cluster."""
    if options.cluster:
        yield from _score_on_cluster(todo, options)
    else:
        yield from _score_locally(todo, options)


def _score_on_cluster(todo: list[CallJob], options: BatchOptions):
    try:
        from monitor.cluster import run_on_cluster  # Dask is needed for --cluster only
    except ImportError as exc:
        raise MonitorError(
            f"cluster {options.cluster}: needs dask.distributed (pip install 'call-conduct-monitor[cluster]'): {exc}"
        ) from None
    # Workers open the recordings themselves: send absolute paths.
    tasks = {job.call_id: replace(job, audio=job.audio if is_url(job.audio) else os.path.abspath(job.audio)) for job in todo}
    by_id = {job.call_id: job for job in todo}
    results = run_on_cluster(
        options.cluster,
        {call_id: (job, options.score) for call_id, job in tasks.items()},
        task=score_job,
        setup=start_scoring_process,
        setup_args=(options.model,),
    )
    for call_id, result, failure in results:
        job = by_id[call_id]
        yield job, result if failure is None else (None, f"{job.audio}: worker failed: {failure}")


def _score_locally(todo: list[CallJob], options: BatchOptions):
    workers = max(1, min(options.workers or default_workers(), len(todo)))
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # a fresh interpreter: nothing inherited but the environment
        initializer=_start_local_worker,
        initargs=(options.model, os.getpid()),
    )
    completed = False
    try:
        with _environment(SCORING_ENVIRONMENT):  # the workers start at the first submit
            pending = {pool.submit(score_job, job, options.score): job for job in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # a worker that died (killed, out of memory)
                    result = (None, f"{job.audio}: worker failed: {type(exc).__name__}: {exc}")
                yield job, result
        completed = True
    finally:
        if completed:
            pool.shutdown()
        else:  # interrupted: stop now, not after the calls in progress
            # (ProcessPoolExecutor has no public way to stop its workers before Python 3.14.)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(cancel_futures=True)  # quick now the workers are gone


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    """Set environment variables for the processes started inside the block, then restore ours."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
