"""A fleet: several ``monitor serve`` nodes on one PostgreSQL database, seen as one.

Each node streams its own calls; the dashboards of every node see every call.
PostgreSQL carries what the nodes tell each other, so there is no broker to run:

- live events (alerts, transcript lines, calls starting and ending) go out by
  ``NOTIFY`` on one channel and come in by ``LISTEN`` on a connection of their
  own; alerts are rows in the ``alerts`` table before they are announced, so a
  dashboard's ``Last-Event-ID`` replay works whichever node it reconnects to;
- every node writes a heartbeat with its free call slots (``nodes``), which a
  load balancer or a client reads to pick a node (``/api/capacity``);
- the calls in progress are rows in ``live_calls`` with their transcript so far
  (``live_segments``). A node silent for ``node_timeout_s`` is dead: the first
  node to notice ends its calls as interrupted and saves their reports from
  what was heard, so their alerts and transcripts stay.

SQLite stays the single-node default: there, no fleet is started.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

CHANNEL = "monitor_live"
"""The NOTIFY channel every node listens on."""
MAX_PAYLOAD_BYTES = 7900
"""PostgreSQL's NOTIFY payload limit is 8000 bytes; a bigger event is cut to what a dashboard needs."""


@dataclass
class FleetOptions:
    """How a node takes part in the fleet."""

    node_id: str
    """This node's name, unique in the fleet (``monitor serve --node-name``; default host:port)."""
    heartbeat_s: float = 2.0
    """How often the node says it is alive (and how many slots it has free)."""
    node_timeout_s: float = 10.0
    """A node silent this long is taken for dead, and its calls are ended as interrupted."""


class Fleet:
    """This node's link to the others: announce events, hear theirs, keep the roll of nodes."""

    def __init__(self, store, options: FleetOptions, deliver: Callable[[dict], None],
                 slots: Callable[[], tuple[int, int]], end_dead_call: Callable[[dict, str], None]):
        """``deliver(event)`` hands another node's event to this node's dashboards; ``slots()`` is
        (max calls, free slots); ``end_dead_call(row, reason)`` saves the report of a dead node's call."""
        self.store = store
        self.options = options
        self.deliver = deliver
        self.slots = slots
        self.end_dead_call = end_dead_call
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._listen, name="fleet-listen", daemon=True),
                         threading.Thread(target=self._beat, name="fleet-heartbeat", daemon=True)]
        self.listening = threading.Event()
        """Set once this node hears the others."""

    @property
    def node_id(self) -> str:
        return self.options.node_id

    def start(self) -> None:
        # A node restarted under its old name: the calls it had when it went down are over.
        self._end_calls_of(self.node_id, "its node restarted")
        self._heartbeat()
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            self.store.forget_node(self.node_id)
        except Exception:
            log.exception("fleet: could not take node %s off the roll", self.node_id)

    # --- events between nodes -------------------------------------------------------------
    def announce(self, event: dict) -> None:
        """Tell the other nodes (called for this node's own events)."""
        payload = json.dumps({"node": self.node_id, "event": event}, ensure_ascii=False)
        if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            # Too big: the other nodes get the event without the transcript lines it carries.
            event = {**{k: v for k, v in event.items() if k not in ("call", "lines")}, "text": (event.get("text") or "")[:500]}
            payload = json.dumps({"node": self.node_id, "event": event}, ensure_ascii=False)
        try:
            self.store.notify(CHANNEL, payload)
        except Exception as exc:  # the database is away: this node's own dashboards still get the event
            log.warning("fleet: event not announced to other nodes (%s)", type(exc).__name__)

    def _listen(self) -> None:
        import psycopg

        wait_s = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.store.libpq_url(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    wait_s = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._heard(note.payload)
            except Exception as exc:
                self.listening.clear()
                log.warning("fleet: listening for other nodes failed (%s); again in %.1f s", exc, wait_s)
                self._stop.wait(wait_s)
                wait_s = min(wait_s * 2, 10.0)

    def _heard(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message["node"] == self.node_id:
                return  # our own event, already delivered here
            self.deliver({**message["event"], "node": message["node"]})
        except Exception:
            log.exception("fleet: an event from another node could not be delivered")

    # --- the roll of nodes ----------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.options.heartbeat_s):
            try:
                self._heartbeat()
                for node in self.store.silent_nodes(dt.timedelta(seconds=self.options.node_timeout_s)):
                    if node != self.node_id:
                        self._end_calls_of(node, f"its node ({node}) stopped answering")
                        self.store.forget_node(node)
            except Exception as exc:
                log.warning("fleet: heartbeat failed (%s)", type(exc).__name__)

    def _heartbeat(self) -> None:
        max_calls, free = self.slots()
        self.store.heartbeat(self.node_id, max_calls, free)

    def _end_calls_of(self, node: str, reason: str) -> None:
        for row in self.store.live_call_rows(node_id=node):
            # Several nodes may notice at once; the one whose update ends the call saves its report.
            if self.store.end_live_call(row["call_id"], "interrupted", reason):
                log.warning("fleet: call %s interrupted: %s", row["call_id"], reason)
                try:
                    self.end_dead_call(row, reason)
                except Exception:
                    log.exception("fleet: the report of call %s could not be saved", row["call_id"])
