"""``monitor live --server URL``: stream a call to a monitor server instead of decoding here.

The server (``monitor serve`` or ``monitor live --listen``) does the work; this
side is a WhisperLive-protocol client that feeds the source and prints what
comes back as the same JSON lines a local ``monitor live`` prints. With
``monitor serve``, the call, its alerts and its report land in the server's
database and on the supervisors' dashboard.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from urllib.parse import urlsplit, urlunsplit

from monitor.alerts import StdoutSink
from monitor.audio import SAMPLE_RATE
from monitor.errors import MonitorError

log = logging.getLogger(__name__)

INGEST_PATH = "/ws/ingest"


def ingest_url(server: str) -> str:
    """``http(s)://host:port`` of a ``monitor serve`` becomes its ingest WebSocket;
    a ``ws(s)://`` URL (e.g. ``monitor live --listen``) is used as given."""
    parts = urlsplit(server)
    if parts.scheme in ("http", "https"):
        parts = parts._replace(scheme="ws" if parts.scheme == "http" else "wss", path=parts.path.rstrip("/") + INGEST_PATH)
    elif parts.scheme not in ("ws", "wss"):
        raise MonitorError(f"--server {server}: must be an http(s):// or ws(s):// URL")
    return urlunsplit(parts)


def stream_to_server(source, server: str, token: str | None, call_id: str, phrasebook: str,
                     agent_id: str | None, agent_channel: str) -> int:
    """Send ``source``'s audio to the server; print its segments and alerts. Returns the exit code.

    The token goes in an ``Authorization: Bearer`` header, not the URL (which servers log).
    The server names the call; ``call_id`` is sent as the client's reference, and alerts carry both.
    """
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    url = ingest_url(server)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        # No keepalive pings: a server holding back a file sent faster than speech (backpressure)
        # reads our pongs only after the audio queued before them, and the ping would time out.
        connection = connect(url, open_timeout=10, max_size=2**24, additional_headers=headers, ping_interval=None)
    except InvalidStatus as exc:
        why = " (a valid --token is needed)" if exc.response.status_code in (401, 403) else ""
        raise MonitorError(f"server {server}: refused the stream (HTTP {exc.response.status_code}){why}") from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise MonitorError(f"server {server}: cannot connect ({exc or type(exc).__name__})") from None
    relay = _Relay(connection, StdoutSink())
    with connection:
        connection.send(json.dumps({
            "uid": uuid.uuid4().hex, "language": "zh", "task": "transcribe", "use_vad": True,
            "call_id": call_id, "agent_id": agent_id, "phrasebook": phrasebook,
            "channels": source.channels, "sample_rate": SAMPLE_RATE, "agent_channel": agent_channel,
        }))  # fmt: skip
        reader = threading.Thread(target=relay.run, name="server-replies", daemon=True)
        reader.start()
        try:
            for frames in source:
                connection.send(frames.astype("<f4").tobytes())
            connection.send("END_OF_AUDIO")
        except WebSocketException as exc:
            log.error("server %s: connection lost while streaming (%s)", server, exc)
            relay.failed = relay.failed or f"connection lost ({exc})"
        reader.join()
    if relay.failed:
        log.error("server %s: call %s: %s", server, call_id, relay.failed)
        return 1
    return 0


class _Relay:
    """Reads the server's replies: completed segments and alerts become our JSON lines."""

    def __init__(self, connection, sink: StdoutSink):
        self.connection = connection
        self.sink = sink
        self.printed: set[tuple[float, float]] = set()
        self.failed: str | None = None

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for raw in self.connection:
                self._handle(json.loads(raw))
        except ConnectionClosed as exc:
            if exc.rcvd and exc.rcvd.code not in (1000, 1001):
                self.failed = f"closed by the server ({exc.rcvd.code} {exc.rcvd.reason})"

    def _handle(self, message: dict) -> None:
        if "alert" in message:
            self.sink.send({"type": "alert", **message["alert"]})
        elif message.get("status") == "ERROR":
            self.failed = str(message.get("message"))
        elif message.get("status") == "WARNING":
            log.warning("server: %s", message.get("message"))
        elif message.get("status") == "WAIT":
            self.failed = "the server is busy with other calls; try again shortly"
        elif message.get("message") == "SERVER_READY" and message.get("call_id"):
            log.info("server: the call is %s", message["call_id"])
        for segment in message.get("segments", []):
            key = (segment.get("start"), segment.get("end"))
            # WhisperLive resends the whole recent transcript; print each finished piece once.
            if segment.get("completed") and key not in self.printed:
                self.printed.add(key)
                self.sink.send({"type": "segment", "start": float(segment["start"]), "end": float(segment["end"]),
                                "text": segment["text"]})  # fmt: skip
