"""Batch scoring on a Dask cluster: ``monitor score INPUT... --out DIR --cluster tcp://SCHEDULER:8786``.

Dask does the distributing: each call is one task; the scheduler hands tasks
to workers and reschedules the calls of a worker that dies (up to
``distributed.scheduler.allowed-failures`` deaths per call). What is ours:

- each worker process loads the Whisper model once, as it starts or restarts
  (``TranscriberPlugin``), not once per call;
- a task never raises for a bad recording (``batch.score_job`` returns the
  error), so a corrupt file is an error row, not a task that Dask retries;
- results come back to this process, which writes each report once, to
  ``--out`` and the database: planning, resume and summary.csv are
  ``batch.run_batch``'s, the same as for a local batch.

Workers read the recordings themselves, so an input must be at the same path on
every worker (a shared or replicated filesystem); paths are sent absolute.
See docs/cluster.md for running a scheduler and workers on several machines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import replace

from distributed import Client, WorkerPlugin, as_completed
from distributed.comm.addressing import get_address_host

from monitor.audio import is_url
from monitor.batch import BatchOptions, CallJob, load_worker_transcriber, score_job
from monitor.errors import MonitorError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
"""How long to keep trying to reach the scheduler before giving up."""


class TranscriberPlugin(WorkerPlugin):
    """Loads the Whisper model into a worker process when the worker starts.

    Dask runs ``setup`` on every worker there is and on every worker that
    joins later, including one that a nanny restarts after a crash; tasks then
    use the process's transcriber (``batch.score_job``).
    """

    name = "call-conduct-monitor.transcriber"
    idempotent = False  # a second batch with another model must replace it

    def __init__(self, model: str | None, workers_per_host: dict[str, int]):
        self.model = model
        # Worker processes on one machine share its cores; without this each
        # would start as many CTranslate2 threads as there are cores.
        self.workers_per_host = workers_per_host

    def setup(self, worker) -> None:
        siblings = self.workers_per_host.get(get_address_host(worker.address), 1)
        load_worker_transcriber(self.model, max(1, (os.cpu_count() or 1) // siblings))


def connect(address: str) -> Client:
    """A client of the scheduler at ``address``, or a one-line error naming it."""
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as exc:  # refused, timed out, bad address: all mean the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MonitorError(f"cluster {address}: cannot connect ({reason})") from None


def score_on_cluster(todo: list[CallJob], options: BatchOptions) -> Iterator[tuple[CallJob, tuple[dict | None, str | None]]]:
    """Yield (job, (report, error)) as the cluster finishes each call, like ``batch._run``."""
    client = connect(options.cluster)
    try:
        hosts = [get_address_host(address) for address in client.scheduler_info(n_workers=-1)["workers"]]
        try:
            client.register_plugin(TranscriberPlugin(options.model, {h: hosts.count(h) for h in hosts}))
        except Exception as exc:
            raise MonitorError(f"cluster {options.cluster}: workers cannot load the model ({exc})") from None
        futures = {
            client.submit(score_job, replace(job, audio=job.audio if is_url(job.audio) else os.path.abspath(job.audio)), options.score, pure=False): job
            for job in todo
        }
        for future in as_completed(futures, loop=client.loop):
            job = futures[future]
            try:
                yield job, future.result()
            except Exception as exc:  # KilledWorker: the call took down one worker too many
                log.debug("task for %s failed", job.audio, exc_info=True)
                yield job, (None, f"{job.audio}: worker failed: {type(exc).__name__}: {exc}")
    finally:
        client.close()
