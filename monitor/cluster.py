"""Running a batch's tasks on a Dask cluster (``monitor score ... --cluster tcp://SCHEDULER:8786``).

Dask does the distributing: each call is one task; the scheduler hands tasks
to workers and reschedules the calls of a worker that dies (up to
``distributed.scheduler.allowed-failures`` deaths per call). What is ours:

- each worker process runs a setup function as it starts or restarts, and at
  the start of each batch (``SetupPlugin``), told how many tasks the worker
  runs at once: batch.py's loads the Whisper model with a replica per task
  thread, and keeps it while the next batch asks for the same model, so a
  model is loaded once per worker, not once per call or per batch;
- results come back to the caller as they finish, with the reason of a task
  that failed (a worker killed too often).

This module knows nothing of calls: batch.py hands it the task function and its
arguments (``batch.score_job``, which never raises for a bad recording, so a
corrupt file is an error row, not a task that Dask retries), and does the
planning, resume, writing and summary, the same as for a local batch.

Workers read the recordings themselves, so an input must be at the same path on
every worker (a shared or replicated filesystem); batch.py sends absolute paths.
See docs/cluster.md for running a scheduler and workers on several machines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator

from distributed import Client, WorkerPlugin, as_completed

from monitor.errors import MonitorError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
"""How long to keep trying to reach the scheduler before giving up."""


class SetupPlugin(WorkerPlugin):
    """Runs ``setup(*args, task_threads)`` in a worker process when the worker starts;
    ``task_threads`` is how many tasks the worker runs at once (``dask worker --nthreads``).

    Dask runs ``setup`` on every worker there is and on every worker that
    joins later, including one that a nanny restarts after a crash.
    """

    name = "call-conduct-monitor.setup"
    idempotent = False  # a second batch with another model must replace it

    def __init__(self, setup: Callable[..., None], args: tuple):
        self.setup_function = setup
        self.args = args

    def setup(self, worker) -> None:
        stop_profiling(worker)
        self.setup_function(*self.args, worker.state.nthreads)


PROFILER_CALLBACKS = ("profile", "profile-cycle")
"""A Dask worker's statistical profiler (``distributed.worker.profile``): every 10 ms,
while a task runs, the worker's event loop takes the GIL and walks the stack of every
task thread into the dashboard's profile."""


def stop_profiling(worker) -> None:
    """Stop ``worker``'s statistical profiler, for as long as the worker process lives.

    A call's task runs for seconds of Python and numpy between CTranslate2's
    decodes (VAD, matching, the speaker encoder), and the profiler's hundred stack
    walks a second take the GIL from it; on one core they also take the core.
    Nobody reads the profile of a scoring worker: a local batch has none.
    (``bench/cluster_throughput.py``.)"""
    for name in PROFILER_CALLBACKS:
        callback = worker.periodic_callbacks.pop(name, None)
        if callback is not None:
            callback.stop()


def connect(address: str) -> Client:
    """A client of the scheduler at ``address``, or a one-line error naming it."""
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as exc:  # refused, timed out, bad address: all mean the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MonitorError(f"cluster {address}: cannot connect ({reason})") from None


def run_on_cluster(
    address: str,
    tasks: dict[Hashable, tuple],
    task: Callable,
    setup: Callable[..., None],
    setup_args: tuple = (),
) -> Iterator[tuple[Hashable, object, str | None]]:
    """Run ``task(*args)`` for each ``key: args`` of ``tasks`` on the cluster, after
    ``setup(*setup_args, task_threads)`` on every worker (see ``SetupPlugin``).

    Yields ``(key, result, None)`` as tasks finish, or ``(key, None, reason)``
    for a task that failed. Closing the iterator early (Ctrl-C) cancels the
    tasks not yet done.
    """
    client = connect(address)
    futures = {}
    try:
        try:
            client.register_plugin(SetupPlugin(setup, setup_args))
        except Exception as exc:
            raise MonitorError(f"cluster {address}: workers cannot be set up ({exc})") from None
        futures = {client.submit(task, *args, pure=False): key for key, args in tasks.items()}
        for future in as_completed(futures, loop=client.loop):
            key = futures[future]
            try:
                yield key, future.result(), None
            except Exception as exc:  # KilledWorker: the task took down one worker too many
                log.debug("task %s failed", key, exc_info=True)
                yield key, None, f"{type(exc).__name__}: {exc}"
    finally:
        unfinished = [f for f in futures if not f.done()]
        if unfinished:
            client.cancel(unfinished)
        client.close()
