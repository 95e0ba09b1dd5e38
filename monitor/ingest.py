"""WebSocket ingest speaking WhisperLive's protocol, so its clients stream to us unchanged.

The conversation, as WhisperLive's server and client have it:

1. The client sends one JSON text message of options:
   ``{"uid", "language", "task", "model", "use_vad", ...}``. WhisperLive's own
   ``audio_format`` (``float32``, ``int16``) is honoured; our extra options are
   ``call_id``, ``agent_id``, ``phrasebook``, ``channels`` (1, or 2 interleaved),
   ``sample_rate`` (Hz, resampled to 16 kHz) and ``agent_channel``.
2. We answer ``{"uid", "message": "SERVER_READY", "backend": "faster_whisper"}``
   (``faster_whisper`` is what we run, and what makes the client keep a transcript).
3. The client sends binary frames of audio (float32 16 kHz mono by default),
   then ``END_OF_AUDIO``.
4. We send ``{"uid", "segments": [{"start", "end", "text", "completed"}]}`` (the
   last committed segments, then the utterance in progress as not completed),
   and, as an extra WhisperLive clients ignore, ``{"uid", "alert": {...}}`` with
   the alert line of CONTRACT.md. When the second pass refines a stretch of
   speech, its segments replace the first pass's in the completed segments
   sent next (``{"uid", "segments", "revised": {...}}``), and an alert it no
   longer supports is withdrawn by ``{"uid", "retracted": {...}}``. Problems are ``{"uid", "status": "ERROR" |
   "WAIT", "message"}``, as WhisperLive reports them.

Each connection is one call; all calls share the process's model through one
``DecodeScheduler``. The server names each call (``callid.new_call_id``); the
client's ``call_id`` (or ``uid``) is kept as the call's ``external_ref``. A
client that vanishes, falls silent for ``idle_timeout_s`` or passes
``max_call_s`` has the audio it sent finished and scored, in a report marked
``"status": "interrupted"``; every connection frees its slot whatever happens,
and a bad client never disturbs the others. With a ``token``, a client must
present it (``?token=`` or ``Authorization: Bearer``) before it is heard at all.
See SECURITY.md.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import math
import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from monitor.alerts import publisher
from monitor.audio import AGENT_CHANNELS, SAMPLE_RATE
from monitor.callid import call_id_problem, new_call_id, shown
from monitor.errors import MonitorError
from monitor.livecall import MAX_BACKLOG_S, LiveCall, finish_call
from monitor.sources import to_16k
from monitor.stream import NODE_MAX_CALLS, DecodeScheduler

log = logging.getLogger(__name__)

END_OF_AUDIO = b"END_OF_AUDIO"
SEND_LAST_N_SEGMENTS = 10
"""Completed segments repeated in every segments message, as WhisperLive does."""
OPTIONS_TIMEOUT_S = 10.0
"""How long a new connection may take to send its options."""
MAX_OPTIONS_BYTES = 64 * 1024
"""The options message is a few hundred bytes; anything near this is not a client of ours."""
MAX_MESSAGE_BYTES = 2**20
"""Largest WebSocket message: 16 s of float32 audio at 16 kHz (WhisperLive sends 0.26 s)."""
PHRASEBOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
"""What a client may ask for: a name, never a path."""


@dataclass
class IngestOptions:
    """Limits and credentials of a WebSocket ingest."""

    max_calls: int = NODE_MAX_CALLS
    """Calls served at once (one per connection); more are told to WAIT."""
    token: str | None = None
    """The secret every client must present; None only where the caller authenticates
    connections itself (``monitor serve``'s ``/ws/ingest``)."""
    idle_timeout_s: float = 60.0
    """A call whose client sends nothing for this long is finished as interrupted."""
    max_call_s: float = 7200.0
    """Seconds of audio one call may send; the call is then finished, with a message to the client."""
    max_backlog_s: float = MAX_BACKLOG_S
    """While a call has more undecoded audio than this, its socket is not read (backpressure)."""
    shutdown_grace_s: float = 5.0
    """When the server stops, how long calls in progress may go on decoding what they were sent."""
    phrasebook_dir: str | None = None
    """Besides the bundled phrasebooks, clients may name ``<name>.yaml`` files in this directory."""


class BadOptions(ValueError):
    """The options message cannot be used; the message says why."""


def parse_options(raw, default_phrasebook: str) -> dict:
    """Validate the first message of a connection; returns the options we use."""
    if isinstance(raw, bytes):
        raise BadOptions("the first message must be JSON text options, not binary audio")
    if len(raw) > MAX_OPTIONS_BYTES:
        raise BadOptions(f"options of {len(raw)} characters: at most {MAX_OPTIONS_BYTES} are accepted")
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadOptions(f"options are not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise BadOptions("options nest too deeply") from None
    if not isinstance(options, dict):
        raise BadOptions("options must be a JSON object")
    uid = _name(options, "uid", required=True)
    language = options.get("language")
    if language not in (None, "zh"):
        raise BadOptions(f"language {shown(language)}: this server transcribes Mandarin only ('zh')")
    audio_format = options.get("audio_format", "int16" if options.get("int16") is True else "float32")
    if audio_format not in ("float32", "int16"):
        raise BadOptions(f"audio_format {shown(audio_format)}: must be 'float32' or 'int16'")
    agent_channel = options.get("agent_channel", "left")
    if agent_channel not in AGENT_CHANNELS:
        raise BadOptions(f"agent_channel {shown(agent_channel)}: must be one of {', '.join(AGENT_CHANNELS)}")
    phrasebook = options.get("phrasebook") or default_phrasebook
    if not isinstance(phrasebook, str):
        raise BadOptions(f"phrasebook {shown(phrasebook)}: must be a phrasebook name")
    return {
        "uid": uid,
        "external_ref": _name(options, "call_id") or uid,
        "agent_id": _name(options, "agent_id"),
        "phrasebook": phrasebook,
        "audio_format": audio_format,
        "sample_rate": _integer(options, "sample_rate", SAMPLE_RATE, 4000, 192000, "Hz"),
        "channels": _integer(options, "channels", 1, 1, 2, "(1, or 2 interleaved)"),
        "agent_channel": agent_channel,
    }


def _name(options: dict, key: str, required: bool = False) -> str | None:
    """A client's name for something (uid, call id, agent id): printable, short, no path separators."""
    value = options.get(key)
    if value is None and not required:
        return None
    problem = call_id_problem(value)
    if problem:
        raise BadOptions(f"{key} {shown(value)}: {problem}")
    return value


def _integer(options: dict, key: str, default: int, low: int, high: int, unit: str) -> int:
    value = options.get(key, default)
    # JSON true is a Python int and 2.0 == 2; only a real integer in range will do.
    if type(value) is not int or not low <= value <= high:
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        raise BadOptions(f"{key} {shown(value)}: must be an integer from {low} to {high} {unit}")
    return value


def decode_frame(data: bytes, options: dict) -> np.ndarray:
    """One binary message to 16 kHz float32 audio shaped (frames, channels)."""
    channels = options["channels"]
    width = 4 if options["audio_format"] == "float32" else 2
    if len(data) % (width * channels):
        raise BadOptions(
            f"a {len(data)}-byte audio frame is not whole {options['audio_format']} samples"
            f" for {channels} channel(s)"
        )
    if width == 4:
        frames = np.frombuffer(data, dtype="<f4").reshape(-1, channels)
    else:
        frames = np.frombuffer(data, dtype="<i2").astype(np.float32).reshape(-1, channels) / 32768.0
    return to_16k(frames, options["sample_rate"])


class WebSocketSink:
    """Turns a call's events into WhisperLive messages on its connection.

    ``send`` runs on a decoding thread; it hands the message to the event loop,
    which sends it, so decoding never waits for a slow client.
    """

    def __init__(self, uid: str, websocket, loop: asyncio.AbstractEventLoop):
        self.uid = uid
        self.websocket = websocket
        self.loop = loop
        self.completed: list[dict] = []
        self.gone = False

    def send(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "alert":
            message = {"uid": self.uid, "alert": event}
        elif kind == "segment":
            self.completed.append(_whisper_live_segment(event, completed=True))
            message = {"uid": self.uid, "segments": self.completed[-SEND_LAST_N_SEGMENTS:]}
        elif kind == "partial":
            current = _whisper_live_segment(event, completed=False)
            message = {"uid": self.uid, "segments": self.completed[-SEND_LAST_N_SEGMENTS:] + [current]}
        elif kind == "revised":  # the second pass: its segments replace the first pass's in the span
            kept = [s for s in self.completed if not _revised_away(s, event)]
            refined = [_whisper_live_segment(s, completed=True) for s in event["segments"]]
            self.completed = sorted(kept + refined, key=lambda s: float(s["start"]))
            message = {"uid": self.uid, "segments": self.completed[-SEND_LAST_N_SEGMENTS:], "revised": event}
        elif kind == "retracted":
            message = {"uid": self.uid, "retracted": event}
        else:
            return
        if not self.gone:
            asyncio.run_coroutine_threadsafe(self._send(json.dumps(message, ensure_ascii=False)), self.loop)

    async def _send(self, text: str) -> None:
        try:
            await self.websocket.send(text)
        except Exception:  # closed: the call still finishes, its alerts still reach the other sinks
            self.gone = True

    def close(self) -> None:
        pass


def _revised_away(segment: dict, revised: dict) -> bool:
    return segment.get("speaker", revised["speaker"]) == revised["speaker"] and (
        revised["start"] <= float(segment["start"]) < revised["end"])


def _whisper_live_segment(event: dict, completed: bool) -> dict:
    segment = {"start": f"{event['start']:.3f}", "end": f"{event['end']:.3f}", "text": event["text"], "completed": completed}
    if event.get("speaker"):
        segment["speaker"] = event["speaker"]
    return segment


class IngestServer:
    """Accepts WhisperLive connections; each one is a ``LiveCall`` on the shared scheduler."""

    def __init__(self, scheduler: DecodeScheduler, phrasebook, matcher, default_phrasebook: str,
                 options: IngestOptions | None = None, extra_sinks: list | None = None,
                 report_dir: str | None = None, on_start=None, on_finish=None):
        """``on_start(call)`` runs before the call's first audio is fed; ``on_finish(call)``
        runs (in a worker thread) once it is decoded, e.g. to save its report."""
        self.scheduler = scheduler
        self.phrasebook = phrasebook
        self.matcher = matcher
        self.default_phrasebook = default_phrasebook
        self.options = options or IngestOptions()
        self.extra_sinks = extra_sinks or []
        self.report_dir = report_dir
        self.on_start = on_start
        self.on_finish = on_finish
        self.calls: dict[str, LiveCall] = {}
        """Calls in progress by (server) call id: one per connection."""
        self.finished: collections.deque[LiveCall] = collections.deque(maxlen=100)
        """The latest finished calls (tests, diagnostics)."""
        self.cut_by_shutdown = 0
        """Calls the server's stopping interrupted."""
        self._stopping: asyncio.Event | None = None

    # --- who may talk to us ------------------------------------------------------------
    def authorized(self, path: str, authorization: str | None) -> bool:
        """Whether a connection presents the token (``?token=`` or ``Authorization: Bearer``)."""
        if self.options.token is None:
            return True
        given = parse_qs(urlsplit(path).query).get("token", [""])[0]
        if authorization and authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        return hmac.compare_digest(given.encode("utf-8"), self.options.token.encode("utf-8"))

    def _check_request(self, connection, request):
        """``websockets``' ``process_request`` hook: refuse before the handshake completes."""
        if self.authorized(request.path, request.headers.get("Authorization")):
            return None
        log.warning("ingest %s: refused: no valid token", getattr(connection, "remote_address", None))
        return connection.respond(HTTPStatus.UNAUTHORIZED, "a token is required (?token=... or Authorization: Bearer ...)\n")

    def _phrasebook_for(self, name: str):
        """A bundled phrasebook or one of ``phrasebook_dir``; never any other path."""
        if name == self.default_phrasebook:
            return self.phrasebook, self.matcher
        from monitor.match import matcher_for
        from monitor.phrasebook import bundled_phrasebooks, load_phrasebook

        if not PHRASEBOOK_NAME.fullmatch(name):
            raise BadOptions(f"phrasebook {shown(name)}: must be a name (letters, digits, '_', '-'), not a path")
        candidate = Path(self.options.phrasebook_dir or "", f"{name}.yaml")
        if self.options.phrasebook_dir and candidate.is_file():
            source = str(candidate)
        elif name in bundled_phrasebooks():
            source = name
        else:
            raise BadOptions(f"phrasebook {name!r}: this server has no phrasebook of that name")
        try:
            phrasebook = load_phrasebook(source)
        except MonitorError as exc:  # the reason names server paths and file contents: log it, don't send it
            log.error("ingest: phrasebook %s asked for by a client: %s", name, exc)
            raise BadOptions(f"phrasebook {name!r} cannot be loaded; see the server log") from None
        return phrasebook, matcher_for(phrasebook)

    # --- one connection ---------------------------------------------------------------
    async def handle(self, websocket) -> None:
        peer = getattr(websocket, "remote_address", None)
        loop = asyncio.get_running_loop()
        if self._stopping is None:
            self._stopping = asyncio.Event()
        try:
            raw = await asyncio.wait_for(websocket.recv(), OPTIONS_TIMEOUT_S)
        except Exception as exc:
            log.warning("ingest %s: no options message (%s); connection closed", peer, type(exc).__name__)
            await _close_quietly(websocket, 1008, "no options")
            return
        try:
            options = parse_options(raw, self.default_phrasebook)
            phrasebook, matcher = await loop.run_in_executor(None, self._phrasebook_for, options["phrasebook"])
        except BadOptions as exc:
            log.error("ingest %s: rejected: %s", peer, exc)
            await _send_quietly(websocket, {"uid": _uid_of(raw), "status": "ERROR", "message": str(exc)})
            await _close_quietly(websocket, 1008, "bad options")
            return
        uid = options["uid"]
        if len(self.calls) >= self.options.max_calls or self._stopping.is_set():
            log.warning("ingest %s: call %s refused, %d calls already running", peer, options["external_ref"], len(self.calls))
            await _send_quietly(websocket, {"uid": uid, "status": "WAIT", "message": 1.0})
            await _close_quietly(websocket, 1013, "busy")
            return
        sink = WebSocketSink(uid, websocket, loop)
        call = LiveCall(
            new_call_id(), phrasebook, matcher, [sink, publisher, *self.extra_sinks],
            stereo=options["channels"] == 2, agent_channel=options["agent_channel"],
            agent_id=options["agent_id"], audio_path=f"ws:{uid}", external_ref=options["external_ref"],
        )
        call.scheduler = self.scheduler
        self.calls[call.call_id] = call  # the slot is this connection's until _finish frees it
        interrupted: str | None = "the server failed while serving the call"
        try:
            if self.on_start is not None:
                self.on_start(call)
            self.scheduler.add(call)
            log.info("ingest %s: call %s (%s) started (%s, %d Hz, %d channel(s))", peer, call.call_id,
                     call.external_ref, options["audio_format"], options["sample_rate"], options["channels"])
            await websocket.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "faster_whisper",
                                             "call_id": call.call_id}))
            interrupted = await self._receive(websocket, call, options)
        except Exception as exc:  # the connection broke while we were talking (reset, protocol error)
            interrupted = f"connection lost ({type(exc).__name__})"
        finally:
            await self._finish(websocket, call, peer, interrupted)

    async def _receive(self, websocket, call: LiveCall, options: dict) -> str | None:
        """Feed the call until END_OF_AUDIO; returns None then, else why the call was cut short."""
        uid = options["uid"]
        max_samples = int(self.options.max_call_s * SAMPLE_RATE)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                receiving = asyncio.ensure_future(websocket.recv())
                done, _ = await asyncio.wait({receiving, stopping}, timeout=self.options.idle_timeout_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if receiving not in done:
                    receiving.cancel()
                    if stopping in done:
                        return "the server stopped"
                    return f"the client sent nothing for {self.options.idle_timeout_s:g} s"
                try:
                    message = receiving.result()
                except Exception as exc:  # closed or broken without END_OF_AUDIO
                    return f"the connection closed before END_OF_AUDIO ({type(exc).__name__})"
                if message == END_OF_AUDIO or message == END_OF_AUDIO.decode():
                    return None
                if isinstance(message, str):
                    continue  # WhisperLive clients send nothing else as text; ignore rather than fail
                try:
                    frames = decode_frame(message, options)
                except BadOptions as exc:
                    await _send_quietly(websocket, {"uid": uid, "status": "ERROR", "message": str(exc)})
                    return f"bad audio ({exc})"
                room = max_samples - round(call.duration_s * SAMPLE_RATE)
                call.feed(frames[:room])
                if len(frames) >= room:
                    message = f"the call reached the longest this server takes ({self.options.max_call_s:g} s of audio)"
                    await _send_quietly(websocket, {"uid": uid, "status": "WARNING", "message": message})
                    return message
                # Backpressure: while decoding lags, stop reading; the socket's buffers fill and the client waits.
                while call.backlog_s() > self.options.max_backlog_s and not call.failed and not self._stopping.is_set():
                    await asyncio.sleep(0.05)
        finally:
            stopping.cancel()

    async def _finish(self, websocket, call: LiveCall, peer, interrupted: str | None) -> None:
        """Decode what was received, write and hand on the report, free the slot: on every path."""
        loop = asyncio.get_running_loop()
        try:
            call.end(interrupted)
            if interrupted:
                log.warning("ingest %s: call %s: %s, after %.1fs of audio; finishing what was received",
                            peer, call.call_id, interrupted, call.duration_s)
            deadline = None
            while not call.done:
                if self._stopping.is_set():
                    deadline = deadline or loop.time() + self.options.shutdown_grace_s
                    if loop.time() > deadline:
                        call.end(f"the server stopped before {call.backlog_s():.1f}s of its audio was decoded")
                        call.close()
                        break
                await asyncio.sleep(0.05)
            if self._stopping.is_set() and call.interrupted:
                self.cut_by_shutdown += 1
            await loop.run_in_executor(None, finish_call, call, None, self.report_dir)
            if self.on_finish is not None:
                await loop.run_in_executor(None, self.on_finish, call)
            log.info("ingest %s: call %s done: %.1fs of audio, %d alert(s)", peer, call.call_id, call.duration_s,
                     len(call.alerts))
        except Exception:
            log.exception("ingest %s: call %s: finishing failed", peer, call.call_id)
        finally:
            call.close()
            self.calls.pop(call.call_id, None)
            self.finished.append(call)
            await _close_quietly(websocket, 1000, "")

    def stop(self) -> None:
        """Stop taking audio: calls in progress are finished as interrupted (see ``shutdown_grace_s``)."""
        if self._stopping is None:
            self._stopping = asyncio.Event()
        self._stopping.set()

    async def drained(self) -> None:
        """Wait until no call is in progress."""
        while self.calls:
            await asyncio.sleep(0.05)


def _uid_of(raw) -> str | None:
    try:
        uid = json.loads(raw).get("uid")
        return uid if isinstance(uid, str) and not call_id_problem(uid) else None
    except Exception:
        return None


async def _send_quietly(websocket, message: dict) -> None:
    try:
        await websocket.send(json.dumps(message, ensure_ascii=False))
    except Exception:
        pass


async def _close_quietly(websocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code, reason)
    except Exception:
        pass


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise MonitorError(f"--listen {value}: expected [HOST:]PORT")
    return host or "127.0.0.1", int(port)


async def serve(server: IngestServer, host: str, port: int, started: asyncio.Future | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or cancelled); ``started`` gets the bound port (0 picks a free one).

    On ``stop``, new connections are refused and calls in progress are finished
    (within ``shutdown_grace_s``) before the listening socket closes.
    """
    from websockets.asyncio.server import serve as ws_serve

    stop = stop or asyncio.Event()
    # No keepalive pings: while backpressure holds a fast client, its pongs sit unread behind
    # its audio and the ping would time out a healthy call; the idle timeout finds dead clients.
    # max_queue: at most 4 unread messages (4 MiB) per connection are held in this process.
    async with ws_serve(server.handle, host, port, max_size=MAX_MESSAGE_BYTES, max_queue=4, ping_interval=None,
                        process_request=server._check_request) as ws_server:
        bound = ws_server.sockets[0].getsockname()[1]
        log.info("ingest: listening on ws://%s:%d", host, bound)
        if started is not None:
            started.set_result(bound)
        await stop.wait()
        server.stop()
        try:
            await asyncio.wait_for(server.drained(), server.options.shutdown_grace_s + 5)
        except asyncio.TimeoutError:
            log.error("ingest: %d call(s) still finishing at shutdown", len(server.calls))
