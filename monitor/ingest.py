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
   the alert line of CONTRACT.md. Problems are ``{"uid", "status": "ERROR" |
   "WAIT", "message"}``, as WhisperLive reports them.

Each connection is one call; all calls share the process's model through one
``DecodeScheduler``. A client that vanishes mid-call has the audio it sent
finished and scored; a bad client never disturbs the others.
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np

from monitor.alerts import WebhookSink, publisher
from monitor.audio import AGENT_CHANNELS, SAMPLE_RATE
from monitor.errors import MonitorError
from monitor.live import LiveCall, finish_call
from monitor.sources import to_16k
from monitor.stream import DecodeScheduler

log = logging.getLogger(__name__)

END_OF_AUDIO = b"END_OF_AUDIO"
SEND_LAST_N_SEGMENTS = 10
"""Completed segments repeated in every segments message, as WhisperLive does."""
OPTIONS_TIMEOUT_S = 10.0
"""How long a new connection may take to send its options."""


class BadOptions(ValueError):
    """The options message cannot be used; the message says why."""


def parse_options(raw, default_phrasebook: str) -> dict:
    """Validate the first message of a connection; returns the options we use."""
    if isinstance(raw, bytes):
        raise BadOptions("the first message must be JSON text options, not binary audio")
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadOptions(f"options are not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(options, dict):
        raise BadOptions("options must be a JSON object")
    uid = options.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadOptions("options lack a string 'uid'")
    language = options.get("language")
    if language not in (None, "zh"):
        raise BadOptions(f"language {language!r}: this server transcribes Mandarin only ('zh')")
    audio_format = options.get("audio_format", "int16" if options.get("int16") else "float32")
    if audio_format not in ("float32", "int16"):
        raise BadOptions(f"audio_format {audio_format!r}: must be 'float32' or 'int16'")
    rate = options.get("sample_rate", SAMPLE_RATE)
    if not isinstance(rate, int) or not 4000 <= rate <= 192000:
        raise BadOptions(f"sample_rate {rate!r}: must be an integer number of Hz between 4000 and 192000")
    channels = options.get("channels", 1)
    if channels not in (1, 2):
        raise BadOptions(f"channels {channels!r}: must be 1 or 2 (interleaved)")
    agent_channel = options.get("agent_channel", "left")
    if agent_channel not in AGENT_CHANNELS:
        raise BadOptions(f"agent_channel {agent_channel!r}: must be one of {', '.join(AGENT_CHANNELS)}")
    return {
        "uid": uid,
        "call_id": str(options.get("call_id") or uid),
        "agent_id": options.get("agent_id"),
        "phrasebook": options.get("phrasebook") or default_phrasebook,
        "audio_format": audio_format,
        "sample_rate": rate,
        "channels": channels,
        "agent_channel": agent_channel,
    }


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


def _whisper_live_segment(event: dict, completed: bool) -> dict:
    segment = {"start": f"{event['start']:.3f}", "end": f"{event['end']:.3f}", "text": event["text"], "completed": completed}
    if event.get("speaker"):
        segment["speaker"] = event["speaker"]
    return segment


class IngestServer:
    """Accepts WhisperLive connections; each one is a ``LiveCall`` on the shared scheduler."""

    def __init__(self, scheduler: DecodeScheduler, phrasebook, matcher, default_phrasebook: str,
                 extra_sinks: list | None = None, report_dir: str | None = None, max_calls: int = 4,
                 on_start=None, on_finish=None):
        """``on_start(call)`` runs before the call's first audio is fed; ``on_finish(call)``
        runs (in a worker thread) once it is decoded, e.g. to save its report."""
        self.on_start = on_start
        self.on_finish = on_finish
        self.scheduler = scheduler
        self.phrasebook = phrasebook
        self.matcher = matcher
        self.default_phrasebook = default_phrasebook
        self.extra_sinks = extra_sinks or []
        self.report_dir = report_dir
        self.max_calls = max_calls
        self.calls: dict[str, LiveCall] = {}
        self.finished: list[LiveCall] = []

    def _matcher_for(self, name: str):
        if name == self.default_phrasebook:
            return self.phrasebook, self.matcher
        from monitor.match import matcher_for
        from monitor.phrasebook import load_phrasebook

        phrasebook = load_phrasebook(name)
        return phrasebook, matcher_for(phrasebook)

    async def handle(self, websocket) -> None:
        peer = getattr(websocket, "remote_address", None)
        try:
            raw = await asyncio.wait_for(websocket.recv(), OPTIONS_TIMEOUT_S)
        except (asyncio.TimeoutError, Exception) as exc:
            log.warning("ingest %s: no options message (%s); connection closed", peer, type(exc).__name__)
            return
        try:
            options = parse_options(raw, self.default_phrasebook)
            phrasebook, matcher = await asyncio.get_running_loop().run_in_executor(
                None, self._matcher_for, options["phrasebook"]
            )
        except (BadOptions, MonitorError) as exc:
            uid = _uid_of(raw)
            log.error("ingest %s: rejected: %s", peer, exc)
            await _send_quietly(websocket, {"uid": uid, "status": "ERROR", "message": str(exc)})
            await websocket.close(1008, "bad options")
            return
        uid = options["uid"]
        if len(self.calls) >= self.max_calls:
            log.warning("ingest %s: call %s refused, %d calls already running", peer, options["call_id"], len(self.calls))
            await _send_quietly(websocket, {"uid": uid, "status": "WAIT", "message": 1.0})
            await websocket.close()
            return
        sink = WebSocketSink(uid, websocket, asyncio.get_running_loop())
        call = LiveCall(
            options["call_id"], phrasebook, matcher, [sink, publisher, *self.extra_sinks],
            stereo=options["channels"] == 2, agent_channel=options["agent_channel"],
            agent_id=options["agent_id"], audio_path=f"ws:{uid}",
        )
        call.scheduler = self.scheduler
        if self.on_start is not None:
            self.on_start(call)
        self.calls[uid] = call
        self.scheduler.add(call)
        log.info("ingest %s: call %s started (%s, %d Hz, %d channel(s))", peer, call.call_id,
                 options["audio_format"], options["sample_rate"], options["channels"])
        await websocket.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "faster_whisper"}))
        how = "ended"
        try:
            async for message in websocket:
                if message == END_OF_AUDIO or message == END_OF_AUDIO.decode():
                    break
                if isinstance(message, str):
                    continue  # WhisperLive clients send nothing else as text; ignore rather than fail
                call.feed(decode_frame(message, options))
            else:
                how = "disconnected mid-call"
        except BadOptions as exc:
            how = f"sent bad audio ({exc})"
            await _send_quietly(websocket, {"uid": uid, "status": "ERROR", "message": str(exc)})
        except Exception as exc:  # the connection broke (reset, protocol error)
            how = f"disconnected mid-call ({type(exc).__name__})"
        if how != "ended":
            log.warning("ingest %s: call %s %s after %.1fs of audio; finishing what was received",
                        peer, call.call_id, how, call.duration_s)
        call.end()
        await asyncio.get_running_loop().run_in_executor(None, call.wait)
        del self.calls[uid]
        self.finished.append(call)
        await asyncio.get_running_loop().run_in_executor(None, finish_call, call, None, self.report_dir)
        if self.on_finish is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.on_finish, call)
        log.info("ingest %s: call %s done: %.1fs of audio, %d alert(s)", peer, call.call_id, call.duration_s, len(call.alerts))
        await websocket.close()


def _uid_of(raw) -> str | None:
    try:
        uid = json.loads(raw).get("uid")
        return uid if isinstance(uid, str) else None
    except Exception:
        return None


async def _send_quietly(websocket, message: dict) -> None:
    try:
        await websocket.send(json.dumps(message, ensure_ascii=False))
    except Exception:
        pass


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise MonitorError(f"--listen {value}: expected [HOST:]PORT")
    return host or "127.0.0.1", int(port)


async def serve(server: IngestServer, host: str, port: int, started: asyncio.Future | None = None) -> None:
    """Serve until cancelled; ``started`` gets the bound port (0 picks a free one)."""
    from websockets.asyncio.server import serve as ws_serve

    async with ws_serve(server.handle, host, port, max_size=2**24) as ws_server:
        bound = ws_server.sockets[0].getsockname()[1]
        log.info("ingest: listening on ws://%s:%d", host, bound)
        if started is not None:
            started.set_result(bound)
        await asyncio.Future()


def serve_forever(args, transcriber, phrasebook, matcher, webhook: WebhookSink | None) -> int:
    """``monitor live --listen``: serve WhisperLive clients until interrupted."""
    host, port = parse_listen(args.listen)
    scheduler = DecodeScheduler(transcriber, workers=args.decode_workers)
    from monitor.alerts import StdoutSink
    from monitor.live import PartialFilter

    sinks = [PartialFilter(StdoutSink())] + ([webhook] if webhook else [])
    server = IngestServer(scheduler, phrasebook, matcher, args.phrasebook, sinks, args.report, args.max_calls)
    try:
        asyncio.run(serve(server, host, port))
    except KeyboardInterrupt:
        log.info("ingest: stopped")
    scheduler.close()
    status = 0
    if webhook is not None and webhook.close():
        log.error("webhook %s: %d alert(s) not delivered", webhook.url, len(webhook.undelivered))
        status = 1
    return status
