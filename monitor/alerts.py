"""Where live events go: JSON lines on stdout, a webhook, in-process subscribers.

An event is a plain dict: ``{"type": "segment", ...}`` or ``{"type": "alert", ...}``
(see CONTRACT.md). Sinks never block transcription: the webhook posts from its
own thread, and a subscriber that raises is logged and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, TextIO

log = logging.getLogger(__name__)

Event = dict
Subscriber = Callable[[Event], None]


class StdoutSink:
    """One JSON object per line, flushed at once so a pipe reader sees it now.

    When the reader goes away (``monitor live | head``, or Ctrl-C taking the
    whole pipeline down) the lines stop quietly; the call itself, its report and
    its webhook carry on.
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.closed = False
        """The reader is gone; nothing more is written."""
        self._lock = threading.Lock()

    def send(self, event: Event) -> None:
        line = json.dumps(event, ensure_ascii=False)
        with self._lock:
            if self.closed:
                return
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
                self.closed = True
                log.warning("stdout closed by its reader; events are no longer printed")
                _point_at_devnull(self.stream)

    def close(self) -> None:
        pass


def _point_at_devnull(stream: TextIO) -> None:
    """Send what is left in ``stream``'s buffer, and anything later, to /dev/null, so the
    interpreter's last flush at exit does not raise BrokenPipeError again (see the Python
    docs on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests pass StringIO)
        pass


@dataclass
class WebhookOptions:
    """Delivery of alerts to an HTTP endpoint."""

    attempts: int = 4
    """Tries per alert before it is kept as undelivered."""
    backoff_s: float = 0.5
    """Wait before the second try; doubled before each further one."""
    timeout_s: float = 3.0
    """Per-request timeout."""
    alerts_only: bool = True
    """Post only ``alert`` events and the ``retracted`` lines that withdraw them, not every
    transcribed segment: an endpoint that was told of an alert is told when it is withdrawn
    (a polite continuation, the customer's words, a second pass that did not hear it)."""


class WebhookSink:
    """POSTs each alert as JSON from a background thread, retrying with backoff.

    Alerts whose every attempt failed are kept in ``undelivered`` (and logged),
    so the caller can report them at the end of the stream.
    """

    def __init__(self, url: str, options: WebhookOptions | None = None):
        if not url.startswith(("http://", "https://")):
            from monitor.errors import MonitorError

            raise MonitorError(f"--webhook {url}: not an http:// or https:// URL")
        self.url = url
        self.options = options or WebhookOptions()
        self.delivered = 0
        self.undelivered: list[Event] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._deliver_all, name="webhook", daemon=True)
        self._thread.start()

    def send(self, event: Event) -> None:
        if self.options.alerts_only and event.get("type") not in ("alert", "retracted"):
            return
        self._queue.put(event)

    def close(self, timeout_s: float = 30.0) -> list[Event]:
        """Wait (at most ``timeout_s``) for queued alerts; return those never delivered."""
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)
        while True:  # whatever is still queued after the timeout counts as undelivered
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if event is not None:
                self.undelivered.append(event)
        return self.undelivered

    def _deliver_all(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            if self._deliver(event):
                self.delivered += 1
            else:
                self.undelivered.append(event)

    def _deliver(self, event: Event) -> bool:
        body = json.dumps(event, ensure_ascii=False).encode("utf-8")
        wait = self.options.backoff_s
        for attempt in range(1, self.options.attempts + 1):
            request = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return True
                    reason = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                reason = str(getattr(exc, "reason", exc))
            if attempt < self.options.attempts:
                log.warning("webhook %s: attempt %d failed (%s); retrying in %.1fs", self.url, attempt, reason, wait)
                time.sleep(wait)
                wait *= 2
            else:
                log.error(
                    "webhook %s: alert %s of call %s not delivered after %d attempts (%s); kept",
                    self.url, event.get("phrase_id"), event.get("call_id"), attempt, reason,
                )
        return False


class Publisher:
    """The in-process publish hook: the dashboard subscribes to every live event."""

    def __init__(self):
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` for each event from now on; returns the unsubscribe function.

        Subscribers run on the decoding thread: they must return quickly (hand
        the event to a queue or an event loop, e.g. ``loop.call_soon_threadsafe``).
        """
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def send(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("live event subscriber %r failed; skipped", subscriber)

    def close(self) -> None:
        pass


publisher = Publisher()
"""Every live call in this process publishes its events here."""


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Receive every live event of this process (see ``Publisher.subscribe``)."""
    return publisher.subscribe(subscriber)
