"""``monitor live``: transcribe a call while it happens and alert on forbidden phrases.

A ``LiveCall`` is one call being listened to: one ``UtteranceStream`` per
speaker, the phrase watch, and the sinks its events go to. Sources (and the
WebSocket ingest) feed it from their own threads; a ``DecodeScheduler`` shared
by every call in the process does the decoding.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import os
import threading
import time

import numpy as np

from monitor.alerts import StdoutSink, WebhookSink, publisher
from monitor.asr import Segment
from monitor.audio import AGENT_CHANNELS
from monitor.errors import MonitorError
from monitor.sources import speaker_channels
from monitor.stream import Committed, DecodeScheduler, Hypothesis, PhraseWatch, StreamingOptions, UtteranceStream

log = logging.getLogger(__name__)

MAX_BACKLOG_S = 20.0
"""A file fed faster than real time waits while this much audio is undecoded,
so the VAD and decode windows stay small."""


class LiveCall:
    """One call being transcribed live; events go to ``sinks`` as they happen."""

    def __init__(
        self,
        call_id: str,
        phrasebook,
        matcher,
        sinks: list,
        stereo: bool,
        agent_channel: str = "left",
        agent_id: str | None = None,
        options: StreamingOptions | None = None,
        audio_path: str | None = None,
    ):
        self.call_id = call_id
        self.phrasebook = phrasebook
        self.agent_channel = agent_channel
        self.agent_id = agent_id
        self.audio_path = audio_path
        self.sinks = sinks
        self.stereo = stereo and agent_channel != "mono"
        speakers = ["agent", "customer"] if self.stereo else ["agent"]
        self.streams = [UtteranceStream(speaker, options) for speaker in speakers]
        self.watch = PhraseWatch(matcher)
        self.segments: list[Segment] = []
        self.alerts: list[dict] = []
        self.started = time.monotonic()
        self.asr_s = 0.0
        self.failed: str | None = None
        self._fed_audio: list[float] = []  # call seconds fed so far, one entry per block
        self._fed_wall: list[float] = []  # monotonic time each block arrived
        self._lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._done = threading.Event()
        self.scheduler: DecodeScheduler | None = None

    # --- feeding (source threads) ------------------------------------------------
    def feed(self, frames: np.ndarray) -> None:
        """Add 16 kHz float32 audio shaped (frames, channels), channels as captured."""
        if self.failed or not len(frames):
            return
        for stream, samples in zip(self.streams, self._split(frames)):
            stream.feed(samples)
        with self._lock:
            self._fed_audio.append(self.streams[0].fed_until)
            self._fed_wall.append(time.monotonic())
        if self.scheduler:
            self.scheduler.wake()

    def _split(self, frames: np.ndarray) -> list[np.ndarray]:
        by_speaker = speaker_channels(frames, self.agent_channel)
        if not self.stereo and "customer" in by_speaker:  # stereo source, mono call: mix
            return [frames.mean(axis=1, dtype=np.float32)]
        return [by_speaker.get(stream.speaker, np.zeros(len(frames), np.float32)) for stream in self.streams]

    def backlog_s(self) -> float:
        return max(stream.pending_s() for stream in self.streams)

    def end(self) -> None:
        """No more audio will come; decoding finishes what was fed."""
        for stream in self.streams:
            stream.end()
        if self.scheduler:
            self.scheduler.wake()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every stream is decoded to its end (after ``end()``)."""
        return self._done.wait(timeout)

    @property
    def duration_s(self) -> float:
        return self.streams[0].fed_until

    # --- decoding (scheduler threads) -------------------------------------------
    def waiting_since(self, stream: UtteranceStream) -> float:
        """When the oldest audio this stream has not looked at yet arrived."""
        with self._lock:
            index = bisect.bisect_right(self._fed_audio, stream.checked_until + 1e-6)
            return self._fed_wall[min(index, len(self._fed_wall) - 1)] if self._fed_wall else time.monotonic()

    def fed_at(self, call_time: float) -> float:
        """Wall time (monotonic) at which the audio at ``call_time`` had been fed."""
        with self._lock:
            index = bisect.bisect_left(self._fed_audio, call_time - 1e-6)
            return self._fed_wall[min(index, len(self._fed_wall) - 1)]

    def step(self, stream: UtteranceStream, transcriber) -> None:
        started = time.perf_counter()
        for event in stream.step(transcriber):
            if isinstance(event, Committed):
                self.segments.append(event.segment)
                self._emit({"type": "segment", "call_id": self.call_id, **event.segment.to_json(), "final": event.final})
                with self._watch_lock:
                    self._alert(self.watch.check(event.segment.words, stream.speaker, commit=True))
            elif isinstance(event, Hypothesis):
                text = "".join(w.text for w in event.words)
                self._emit({"type": "partial", "call_id": self.call_id, "speaker": stream.speaker,
                            "start": round(event.words[0].start, 2), "end": round(event.words[-1].end, 2), "text": text})
                with self._watch_lock:
                    self._alert(self.watch.check(event.words, stream.speaker, commit=False, heard_until=event.heard_until))
        self.asr_s += time.perf_counter() - started
        if all(s.drained() for s in self.streams):
            self._finish()

    def _alert(self, hits) -> None:
        for hit in hits:  # (under _watch_lock: two workers may decode a call's two speakers at once)
            event = {
                "type": "alert",
                "kind": hit.kind,
                "phrase_id": hit.phrase_id,
                "canonical": hit.canonical,
                "heard": hit.heard,
                "start": round(hit.start, 2),
                "end": round(hit.end, 2),
                "article": hit.article,
                "call_id": self.call_id,
                "speaker": hit.speaker,
                "category": hit.category,
                "confidence": round(hit.confidence, 3),
            }
            # Latency is measured last, just before the event is handed to the sinks.
            event["latency_s"] = round(time.monotonic() - self.fed_at(hit.end), 3)
            self.alerts.append(event)
            self._emit(event)

    def _emit(self, event: dict) -> None:
        for sink in self.sinks:
            try:
                sink.send(event)
            except Exception:  # a broken sink must not cost the other sinks their events
                log.exception("call %s: event sink %r failed", self.call_id, sink)

    def fail(self, reason: str) -> None:
        self.failed = reason
        self._finish()

    def _finish(self) -> None:
        if not self._done.is_set():
            self._done.set()
            if self.scheduler:
                self.scheduler.remove(self)

    # --- the end -----------------------------------------------------------------
    def report(self, redact: bool = True) -> dict:
        """The batch scorer's report for what was heard."""
        from monitor.asr import Coverage
        from monitor.pipeline import report_for_segments

        total_s = time.monotonic() - self.started
        timing = {"asr_s": round(self.asr_s, 2), "total_s": round(total_s, 2),
                  "rtf": round(self.asr_s / self.duration_s, 3) if self.duration_s else None}
        segments = sorted(self.segments, key=lambda s: (s.start, s.end))
        coverage = sum((stream.coverage(segments) for stream in self.streams), Coverage(0.0))
        return report_for_segments(
            self.call_id, self.audio_path, self.agent_id, round(self.duration_s, 2), self.phrasebook,
            segments, self.stereo, timing, redact=redact, coverage=coverage,
        )


class PartialFilter:
    """Keeps ``partial`` events (provisional text) away from sinks that only want segments and alerts."""

    def __init__(self, sink):
        self.sink = sink

    def send(self, event: dict) -> None:
        if event.get("type") != "partial":
            self.sink.send(event)

    def close(self) -> None:
        self.sink.close()


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``monitor live`` options (CONTRACT.md), for cli.py's subparser."""
    parser.add_argument("--phrasebook", required=True, help="bundled phrasebook name or YAML path")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mic", nargs="?", const="", metavar="DEVICE",
                        help="microphone or line-in (device index or name; default input when omitted)")
    source.add_argument("--file", metavar="AUDIO", help="an audio file")
    source.add_argument("--stdin-pcm", type=int, metavar="RATE", help="raw 16-bit little-endian PCM on stdin at RATE Hz")
    source.add_argument("--listen", metavar="[HOST:]PORT",
                        help="WebSocket ingest speaking WhisperLive's protocol (several calls at once)")
    parser.add_argument("--realtime", action="store_true", help="feed --file at the speed of speech")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="with --realtime: play this many times faster than speech (tests, demos)")
    parser.add_argument("--channels", type=int, default=1, help="channels of --stdin-pcm or --mic audio (1 or 2)")
    parser.add_argument("--agent-channel", choices=AGENT_CHANNELS, default="left")
    parser.add_argument("--agent-id", default=None)
    parser.add_argument("--call-id", default=None, help="call id in events and the report (default: file stem)")
    parser.add_argument("--webhook", metavar="URL", help="POST every alert as JSON to URL (retried with backoff)")
    parser.add_argument("--report", metavar="DIR", help="write the call's report (JSON + HTML) to DIR at the end")
    parser.add_argument("--server", metavar="URL",
                        help="stream to a monitor server (http://HOST:PORT of `monitor serve`, or ws:// of --listen) "
                             "and print what it hears, instead of decoding here")
    parser.add_argument("--token", help="with --server: an API token (`monitor users token NAME`)")
    parser.add_argument("--model", default=None, help="Whisper model (default: the embedded base model)")
    parser.add_argument("--max-calls", type=int, default=4, help="with --listen: calls served at once")
    parser.add_argument("--decode-workers", type=int, default=1,
                        help="threads decoding for all calls (each gets a share of the cores)")


def _open_source(args):
    from monitor.sources import FileSource, MicSource, StdinPcmSource

    if args.file:
        return FileSource(args.file, realtime=args.realtime, time_scale=args.time_scale)
    if args.stdin_pcm is not None:
        return StdinPcmSource(args.stdin_pcm, channels=args.channels)
    return MicSource(args.mic or None, channels=args.channels)


def load_transcriber(model: str | None, decode_workers: int):
    from monitor.asr import Transcriber

    threads = max(1, (os.cpu_count() or 2) // decode_workers)
    return Transcriber(model, cpu_threads=threads, num_workers=decode_workers)


def run_live(args: argparse.Namespace) -> int:
    """Run ``monitor live``. Returns 0, or 1 when some alerts could not be delivered to the webhook."""
    from monitor.match import matcher_for
    from monitor.phrasebook import load_phrasebook

    if args.realtime and not args.file:
        raise MonitorError("--realtime: only applies to --file")
    if args.decode_workers < 1:
        raise MonitorError(f"--decode-workers {args.decode_workers}: must be at least 1")
    if args.server and (args.webhook or args.report or args.listen):
        raise MonitorError("--server: the server delivers alerts and keeps the report; drop --webhook/--report/--listen")
    phrasebook = load_phrasebook(args.phrasebook)
    matcher = matcher_for(phrasebook)
    webhook = WebhookSink(args.webhook) if args.webhook else None
    if args.listen:
        from monitor.ingest import serve_forever

        transcriber = load_transcriber(args.model, args.decode_workers)
        return serve_forever(args, transcriber, phrasebook, matcher, webhook)

    source = _open_source(args)
    call_id = args.call_id or (os.path.splitext(os.path.basename(args.file))[0] if args.file else "live")
    if args.server:
        from monitor.remote import stream_to_server

        return stream_to_server(source, args.server, args.token, call_id, args.phrasebook, args.agent_id,
                                args.agent_channel)
    transcriber = load_transcriber(args.model, args.decode_workers)
    sinks = [PartialFilter(StdoutSink()), publisher] + ([webhook] if webhook else [])
    call = LiveCall(call_id, phrasebook, matcher, sinks, stereo=source.channels > 1,
                    agent_channel=args.agent_channel, agent_id=args.agent_id, audio_path=source.path)
    scheduler = DecodeScheduler(transcriber, workers=args.decode_workers)
    call.scheduler = scheduler
    scheduler.add(call)
    try:
        for frames in source:
            call.feed(frames)
            while not args.realtime and args.file and call.backlog_s() > MAX_BACKLOG_S and not call.failed:
                time.sleep(0.05)  # a file may wait for the decoder; a live source never does
    except KeyboardInterrupt:
        log.warning("call %s: interrupted after %.1fs of audio; finishing what was heard", call_id, call.duration_s)
    call.end()
    call.wait()
    scheduler.close()
    return finish_call(call, webhook, args.report)


def finish_call(call: LiveCall, webhook: WebhookSink | None, report_dir: str | None) -> int:
    """Deliver what is pending, write the report, and say what went wrong."""
    status = 0
    if webhook is not None:
        undelivered = webhook.close()
        if undelivered:
            log.error("webhook %s: %d alert(s) of call %s not delivered", webhook.url, len(undelivered), call.call_id)
            status = 1
    if report_dir and call.failed is None:
        from monitor.pipeline import write_report

        recording = call.audio_path if call.audio_path and os.path.isfile(call.audio_path) else None
        write_report(call.report(), report_dir, recording)
    if call.failed:
        log.error("call %s: %s", call.call_id, call.failed)
        status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    """``python -m monitor.live``: the same as ``monitor live``."""
    import sys

    parser = argparse.ArgumentParser(prog="monitor live", description=__doc__.splitlines()[0])
    add_live_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("MONITOR_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per decode otherwise
    try:
        return run_live(args)
    except MonitorError as exc:
        print(f"monitor live: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
