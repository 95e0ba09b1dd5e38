"""Live calls inside the web app: WhisperLive ingest in, dashboard events out.

Streams arrive on the ``/ws/ingest`` route and are handed, through a small
adapter, to ``monitor.ingest.IngestServer``: the same protocol handling as
``monitor live --listen``, with one model loaded on the first stream and one
``DecodeScheduler`` for every call. Each alert is written to the ``alerts``
table first and pushed to the dashboards after, carrying its row id, so a
dashboard that missed it can ask for it again by id. When a stream ends, its
report is saved to the store like a batch-scored call's.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass

from fastapi import WebSocket, WebSocketDisconnect

from monitor.store import Store
from monitor.stream import NODE_DECODE_WORKERS, NODE_MAX_CALLS

log = logging.getLogger(__name__)


@dataclass
class LiveOptions:
    """How the web app serves live streams."""

    default_phrasebook: str = "broadband"
    """Phrasebook of a stream whose options name none."""
    max_calls: int = NODE_MAX_CALLS
    """Streams served at once; more are told to wait. A loaded 2-core node spends
    0.16-0.24 CPU seconds per second of a call's audio (``bench/capacity.py``,
    docs/deploy.md): six calls take 50-70% of its cores."""
    decode_workers: int = NODE_DECODE_WORKERS
    """Decoders shared by every live call (``stream.NODE_DECODE_WORKERS``)."""
    model: str | None = None
    """Whisper model (None: the embedded base model)."""
    transcript_lines: int = 12
    """Completed segments kept per live call for a dashboard that opens mid-call."""
    phrasebook_dir: str | None = None
    """Besides the bundled phrasebooks, streams may name ``<name>.yaml`` files in this directory."""


class Hub:
    """Fans live events out to the dashboards connected to this process.

    ``publish`` may be called from any thread; each subscriber is an asyncio
    queue drained by its own SSE response on the event loop.
    """

    def __init__(self, store: Store, options: LiveOptions):
        self.store = store
        self.options = options
        self.calls: dict[str, dict] = {}  # call_id -> what a dashboard shows of a live call
        self._live: dict[str, object] = {}  # call_id -> LiveCall, for its agent and phrasebook
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._lock = threading.Lock()
        self.fleet = None
        """With a fleet (``fleet.py``), the calls and events of every node; None on a single node."""

    # --- dashboards ----------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers = [(loop, q) for loop, q in self._subscribers if q is not queue]

    def publish(self, event: dict) -> None:
        """An event of this node: to its dashboards, and to the other nodes' through the fleet."""
        self._track(event)
        self.deliver(event)
        if self.fleet is not None:
            self.fleet.announce(event)

    def receive(self, event: dict) -> None:
        """An event of another node's call."""
        self._track(event)
        self.deliver(event)

    def _track(self, event: dict) -> None:
        """Keep a live call's entry (what a dashboard draws of it) as its events describe it,
        the same for this node's calls and the other nodes'."""
        kind, call_id = event.get("type"), event.get("call_id")
        with self._lock:
            if kind == "call_started":
                entry = {k: v for k, v in event.items() if k != "type"}
                entry["lines"] = collections.deque(entry.get("lines", []), maxlen=self.options.transcript_lines)
                self.calls[call_id] = entry
            elif kind == "call_ended":
                self.calls.pop(call_id, None)
            elif call_id in self.calls:
                entry = self.calls[call_id]
                line = {k: event.get(k) for k in LINE_FIELDS}
                if kind == "segment":
                    entry["lines"].append(line)
                    entry["partial"] = None
                elif kind == "partial":
                    entry["partial"] = line
                elif kind == "alert":
                    entry["alerts"] += 1
                elif kind == "revised" and "call" in event:  # (a revision too big to announce comes without it)
                    entry["lines"].clear()
                    entry["lines"].extend(event["call"]["lines"])
                elif kind == "speakers":
                    for line in entry["lines"]:
                        relabelled = _same_line(line, event["segments"])
                        if relabelled is not None:
                            line["speaker"] = relabelled["speaker"]

    def deliver(self, event: dict) -> None:
        """To the dashboards connected to this process."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that dashboard's loop is gone
                self.unsubscribe(queue)

    def snapshot(self) -> list[dict]:
        """The live calls as a dashboard that has just (re)connected should draw them."""
        with self._lock:
            known = {call_id: {**c, "lines": list(c["lines"])} for call_id, c in self.calls.items()}
        if self.fleet is None:
            return list(known.values())
        # The database knows every node's calls, also those that began before this node listened.
        return [known.get(row["call_id"]) or {
            "call_id": row["call_id"], "external_ref": row["external_ref"], "agent_id": row["agent_id"],
            "phrasebook": row["phrasebook"], "node": row["node_id"], "started": row["started_at"].timestamp(),
            "lines": [], "partial": None, "alerts": 0,
        } for row in self.store.live_call_rows()]

    # --- calls (IngestServer hooks and sink) -------------------------------------
    def call_started(self, call) -> None:
        if self.fleet is not None:
            self.store.start_live_call(call.call_id, self.fleet.node_id, call.phrasebook.id, call.agent_id,
                                       call.external_ref)
        with self._lock:
            self._live[call.call_id] = call
        self.publish({"type": "call_started", "call_id": call.call_id, "external_ref": call.external_ref,
                      "agent_id": call.agent_id, "phrasebook": call.phrasebook.id, "started": time.time(),
                      "lines": [], "partial": None, "alerts": 0, "node": self.fleet.node_id if self.fleet else None})

    def call_finished(self, call) -> None:
        """Save the call's report (what was heard live), then tell the dashboards."""
        score = None
        if call.failed is None and call.duration_s > 0:
            report = call.report()
            self.store.save_report(report, started_at=call.started_at)
            score = report["score"]["total"]
        if self.fleet is not None:
            self.store.end_live_call(call.call_id, "interrupted" if call.interrupted else "complete", call.interrupted)
        with self._lock:
            self._live.pop(call.call_id, None)
        self.publish({"type": "call_ended", "call_id": call.call_id, "score": score, "saved": score is not None or call.failed is None})

    def send(self, event: dict) -> None:
        """A sink of every live call (runs on a decoding thread)."""
        kind = event.get("type")
        call_id = event.get("call_id")
        with self._lock:
            call = self._live.get(call_id)
            entry = self.calls.get(call_id)
        if kind == "alert":
            phrase = call.phrasebook.by_id(event["phrase_id"]) if call is not None else None
            severity = getattr(phrase, "severity", None)
            agent_id = call.agent_id if call is not None else None
            # Persisted first: a dashboard that misses the push gets it back by id.
            alert_id = self.store.save_alert(event, agent_id=agent_id, severity=severity,
                                             phrasebook=call.phrasebook.id if call is not None else None)
            self.publish({**event, "id": alert_id, "agent_id": agent_id, "severity": severity, "acknowledged": False})
        elif kind == "segment":
            line = {k: event.get(k) for k in LINE_FIELDS}
            if self.fleet is not None:  # kept where any node can find it, should this one die
                self.store.add_live_segment(call_id, line["start"], line["end"], line["speaker"], line["text"])
            self.publish({"type": "segment", "call_id": call_id, **line})
        elif kind == "partial":
            line = {k: event.get(k) for k in LINE_FIELDS}
            self.publish({"type": "partial", "call_id": call_id, **line})
        elif kind == "revised" and entry is not None:
            # The second pass's text in place of the first's: the call is drawn again from its lines.
            refined = [{k: seg.get(k) for k in LINE_FIELDS} for seg in event["segments"]]
            with self._lock:
                kept = [line for line in entry["lines"] if not _in_span(line, event)]
                lines = sorted(kept + refined, key=lambda line: line["start"])[-self.options.transcript_lines:]
                call_entry = {**entry, "lines": lines}
            if self.fleet is not None:  # the kept transcript takes the refined text too
                self.store.replace_live_segments(call_id, event["speaker"], event["start"], event["end"], refined)
            self.publish({"type": "revised", "call_id": call_id, "call": call_entry})
        elif kind == "speakers":
            # Later speech changed who said earlier sentences (mono): the dashboards relabel those lines.
            relabelled = [{k: seg.get(k) for k in (*LINE_FIELDS, "speaker_confidence")} for seg in event["segments"]]
            if self.fleet is not None:
                self.store.relabel_live_segments(call_id, relabelled)
            self.publish({"type": "speakers", "call_id": call_id, "segments": relabelled})
        elif kind == "retracted":
            # Stored first, so a dashboard opened later shows the alert withdrawn too.
            self.publish({**event, "id": self.store.retract_alert(event)})

    def close(self) -> None:
        pass

    def end_dead_call(self, row: dict, reason: str) -> None:
        """Save the report of a call whose node died, from the transcript it had kept, and tell the dashboards."""
        from monitor.asr import Segment
        from monitor.errors import MonitorError
        from monitor.phrasebook import load_phrasebook
        from monitor.pipeline import report_for_segments

        try:
            phrasebook = load_phrasebook(row["phrasebook"])
        except MonitorError:  # a phrasebook of the dead node's --phrasebook-dir
            phrasebook = load_phrasebook(self.options.default_phrasebook)
        segments = [Segment(s["start"], s["end"], s["text"], speaker=s["speaker"])
                    for s in self.store.live_call_segments(row["call_id"])]
        stereo = any(s.speaker == "customer" for s in segments)
        duration = max((s.end for s in segments), default=0.0)
        report = report_for_segments(row["call_id"], f"live:{row['node_id']}", row["agent_id"], round(duration, 2),
                                     phrasebook, segments, stereo, {})
        report.update({"status": "interrupted", "interrupted": reason})
        if row["external_ref"] is not None:
            report["external_ref"] = row["external_ref"]
        self.store.save_report(report, started_at=row["started_at"])
        self.publish({"type": "call_ended", "call_id": row["call_id"], "score": report["score"]["total"],
                      "saved": True, "interrupted": reason})


LINE_FIELDS = ("start", "end", "speaker", "text")
"""What a dashboard's transcript line holds."""


def _same_line(line: dict, segments: list[dict]) -> dict | None:
    """The segment of a ``speakers`` event that relabels ``line`` (the same sentence: same start), if any."""
    return next((seg for seg in segments if abs(seg["start"] - line["start"]) < 0.01), None)


def _in_span(line: dict, revised: dict) -> bool:
    """A transcript line the ``revised`` event replaces: its speaker's, starting in its span."""
    return line.get("speaker") == revised["speaker"] and revised["start"] <= line["start"] < revised["end"]


class Ingest:
    """The WhisperLive ingest, built on the first stream (loading the model takes seconds)."""

    def __init__(self, hub: Hub, options: LiveOptions, transcriber=None):
        self.hub = hub
        self.options = options
        self._transcriber = transcriber
        self._server = None
        self._scheduler = None
        self._lock = asyncio.Lock()

    async def server(self):
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.get_running_loop().run_in_executor(None, self._build)
        return self._server

    def _build(self):
        from monitor.ingest import IngestOptions, IngestServer
        from monitor.livecall import load_transcriber
        from monitor.match import matcher_for
        from monitor.phrasebook import load_phrasebook
        from monitor.stream import DecodeScheduler

        transcriber = self._transcriber or load_transcriber(self.options.model, self.options.decode_workers)
        self._scheduler = DecodeScheduler(transcriber, workers=self.options.decode_workers)
        phrasebook = load_phrasebook(self.options.default_phrasebook)
        return IngestServer(
            self._scheduler, phrasebook, matcher_for(phrasebook), self.options.default_phrasebook,
            # No token here: app.py authenticates /ws/ingest (a supervisor's API token) before handing it over.
            IngestOptions(max_calls=self.options.max_calls, phrasebook_dir=self.options.phrasebook_dir),
            extra_sinks=[self.hub], on_start=self.hub.call_started, on_finish=self.hub.call_finished,
        )

    def slots(self) -> tuple[int, int]:
        """(calls this node takes at once, slots free now)."""
        busy = len(self._server.calls) if self._server is not None else 0
        return self.options.max_calls, max(0, self.options.max_calls - busy)

    async def handle(self, websocket: WebSocket) -> None:
        server = await self.server()
        await server.handle(StarletteSocket(websocket))

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()  # a stream still open is finished as interrupted
        if self._scheduler is not None:
            self._scheduler.close()


class StarletteSocket:
    """A FastAPI WebSocket dressed as the ``websockets`` connection IngestServer talks to."""

    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        client = websocket.client
        self.remote_address = (client.host, client.port) if client else None

    async def recv(self) -> str | bytes:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message["bytes"] if message.get("bytes") is not None else message["text"]

    async def send(self, text: str) -> None:
        await self.websocket.send_text(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self.websocket.close(code, reason)
        except RuntimeError:  # already closed by the client
            pass

    def __aiter__(self):
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None
