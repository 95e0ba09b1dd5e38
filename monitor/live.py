"""``monitor live``: transcribe a call while it happens and alert on forbidden phrases.

The command line of live monitoring: a call from a source (``sources.py``) is
one ``LiveCall`` (``livecall.py``) on a ``DecodeScheduler``; ``--listen``
serves WhisperLive clients instead (``ingest.py``), and ``--server`` streams
the source to a server that does the decoding (``remote.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
import threading

from monitor.alerts import StdoutSink, WebhookSink, publisher
from monitor.audio import AGENT_CHANNELS, SAMPLE_RATE
from monitor.callid import call_id_problem, check_call_id, new_call_id
from monitor.errors import MonitorError
from monitor.phrasebook import add_phrasebook_argument
from monitor.livecall import LiveCall, PartialFilter, finish_call, load_transcriber
from monitor.stream import NODE_DECODE_WORKERS, NODE_MAX_CALLS, DecodeScheduler

log = logging.getLogger(__name__)

TOKEN_ENV = "MONITOR_LIVE_TOKEN"
"""Environment variable holding the ``--token`` (so it stays out of ``ps``)."""
MIN_TOKEN_LEN = 16
"""Shortest token ``--listen`` accepts: long enough not to be guessed over the network."""


def _call_id_argument(value: str) -> str:
    problem = call_id_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{value!r}: a call id {problem}")
    return value


def _positive_seconds(value: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value}: must be a positive number of seconds")
    return seconds


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``monitor live`` options (CONTRACT.md), for cli.py's subparser."""
    add_phrasebook_argument(parser, "broadband", "bundled phrasebook name or YAML path (default broadband)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mic", nargs="?", const="", metavar="DEVICE",
                        help="microphone or line-in (device index or name; default input when omitted)")
    source.add_argument("--file", metavar="AUDIO", help="an audio file")
    source.add_argument("--stdin-pcm", type=int, metavar="RATE", help="raw 16-bit little-endian PCM on stdin at RATE Hz")
    source.add_argument("--listen", metavar="[HOST:]PORT",
                        help="WebSocket ingest speaking WhisperLive's protocol (several calls at once; needs a token)")
    parser.add_argument("--realtime", action="store_true", help="feed --file at the speed of speech")
    parser.add_argument("--time-scale", type=_positive_seconds, default=1.0,
                        help="with --realtime: play this many times faster than speech (tests, demos)")
    parser.add_argument("--channels", type=int, default=1, help="channels of --stdin-pcm or --mic audio (1 or 2)")
    parser.add_argument("--agent-channel", choices=AGENT_CHANNELS, default="left")
    parser.add_argument("--agent-id", default=None)
    parser.add_argument("--call-id", type=_call_id_argument, default=None,
                        help="call id in events and the report (default: the file's stem, else live-TIME-RANDOM); "
                             "with --server, the server names the call and keeps this as external_ref")
    parser.add_argument("--webhook", metavar="URL", help="POST every alert as JSON to URL (retried with backoff)")
    parser.add_argument("--report", metavar="DIR", help="write the call's report (JSON + HTML) to DIR at the end")
    parser.add_argument("--server", metavar="URL",
                        help="stream to a monitor server (http://HOST:PORT of `monitor serve`, or ws:// of --listen) "
                             "and print what it hears, instead of decoding here")
    parser.add_argument("--token", help=f"with --server: the token to present; with --listen: the token every client "
                                        f"must present (at least {MIN_TOKEN_LEN} characters). Default: ${TOKEN_ENV}")
    parser.add_argument("--model", default=None, help="Whisper model (default: the embedded base model)")
    parser.add_argument("--max-calls", type=int, default=NODE_MAX_CALLS,
                        help=f"with --listen: calls served at once (default {NODE_MAX_CALLS})")
    parser.add_argument("--max-call-s", type=_positive_seconds, default=7200.0,
                        help="longest call in seconds of audio; a longer one is finished there (default 7200)")
    parser.add_argument("--idle-timeout", type=_positive_seconds, default=60.0, metavar="S",
                        help="with --listen: finish a call whose client sends nothing for S seconds (default 60)")
    parser.add_argument("--phrasebook-dir", metavar="DIR",
                        help="with --listen: clients may also name the phrasebooks DIR/<name>.yaml")
    parser.add_argument("--decode-workers", type=int, default=None,
                        help=f"decoders shared by all calls, each with a share of the cores (default 1; "
                             f"{NODE_DECODE_WORKERS} with --listen)")


def _open_source(args):
    from monitor.sources import FileSource, MicSource, StdinPcmSource

    if args.file:
        return FileSource(args.file, realtime=args.realtime, time_scale=args.time_scale)
    if args.stdin_pcm is not None:
        return StdinPcmSource(args.stdin_pcm, channels=args.channels)
    return MicSource(args.mic or None, channels=args.channels)


def run_live(args: argparse.Namespace) -> int:
    """Run ``monitor live``. Returns 0; 1 when alerts could not be delivered to the webhook or
    calls were cut short by stopping a server; 130 when Ctrl-C (or SIGTERM) cut a file or stdin call short."""
    from monitor.match import matcher_for
    from monitor.phrasebook import load_phrasebook

    if args.realtime and not args.file:
        raise MonitorError("--realtime: only applies to --file")
    if args.decode_workers is None:
        args.decode_workers = NODE_DECODE_WORKERS if args.listen else 1
    if args.decode_workers < 1:
        raise MonitorError(f"--decode-workers {args.decode_workers}: must be at least 1")
    if args.max_calls < 1:
        raise MonitorError(f"--max-calls {args.max_calls}: must be at least 1")
    if args.server and (args.webhook or args.report or args.listen):
        raise MonitorError("--server: the server delivers alerts and keeps the report; drop --webhook/--report/--listen")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.listen:
        if not token:
            raise MonitorError(f"--listen: clients must present a token; give --token T or set {TOKEN_ENV}")
        if len(token) < MIN_TOKEN_LEN:
            raise MonitorError(f"--token: at least {MIN_TOKEN_LEN} characters for --listen")
    if args.phrasebook_dir and not os.path.isdir(args.phrasebook_dir):
        raise MonitorError(f"--phrasebook-dir {args.phrasebook_dir}: no such directory")
    phrasebook = load_phrasebook(args.phrasebook)
    matcher = matcher_for(phrasebook)
    webhook = WebhookSink(args.webhook) if args.webhook else None
    if args.listen:
        return listen(args, token, phrasebook, matcher, webhook)

    source = _open_source(args)
    if args.call_id:
        call_id = args.call_id
    elif args.file:
        call_id = check_call_id(os.path.splitext(os.path.basename(args.file))[0], f"--file {args.file}: call id")
    else:
        call_id = new_call_id()
    if args.server:
        from monitor.remote import stream_to_server

        return stream_to_server(source, args.server, token, call_id, args.phrasebook, args.agent_id,
                                args.agent_channel)
    transcriber = load_transcriber(args.model, args.decode_workers)
    sinks = [PartialFilter(StdoutSink()), publisher] + ([webhook] if webhook else [])
    call = LiveCall(call_id, phrasebook, matcher, sinks, stereo=source.channels > 1,
                    agent_channel=args.agent_channel, agent_id=args.agent_id, audio_path=source.path)
    # A recording not played in real time is decoded in lockstep with feeding,
    # so its alerts and report are the same on every run; live sources (and
    # --realtime) get decoder threads that keep up with the audio as it comes.
    lockstep = bool(args.file) and not args.realtime
    scheduler = None
    if not lockstep:
        scheduler = DecodeScheduler(transcriber, workers=args.decode_workers)
        call.scheduler = scheduler
        scheduler.add(call)
    interrupted = None
    cut_short = False  # by Ctrl-C or SIGTERM
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends the call like Ctrl-C
    max_samples = int(args.max_call_s * SAMPLE_RATE)
    try:
        for frames in source:
            room = max_samples - round(call.duration_s * SAMPLE_RATE)
            call.feed(frames[:room])
            if len(frames) >= room:
                interrupted = f"the call reached --max-call-s {args.max_call_s:g}"
                break
            if lockstep:
                call.catch_up(transcriber)
    except KeyboardInterrupt:
        # A microphone call ends when the operator stops it; a file or a PCM stream was cut short.
        if args.mic is None:
            interrupted, cut_short = "stopped by Ctrl-C or SIGTERM", True
    call.end(interrupted)
    if lockstep:
        call.catch_up(transcriber)  # at most the last block is still undecoded
    else:
        call.wait()
    if scheduler is not None:
        scheduler.close()
    status = finish_call(call, webhook, args.report)
    return 130 if cut_short else status


def listen(args, token: str, phrasebook, matcher, webhook: WebhookSink | None) -> int:
    """``monitor live --listen``: serve WhisperLive clients until SIGTERM or Ctrl-C."""
    from monitor.ingest import IngestOptions, IngestServer, parse_listen, serve

    host, port = parse_listen(args.listen)
    transcriber = load_transcriber(args.model, args.decode_workers)
    scheduler = DecodeScheduler(transcriber, workers=args.decode_workers)
    sinks = [PartialFilter(StdoutSink())] + ([webhook] if webhook else [])
    options = IngestOptions(max_calls=args.max_calls, token=token, idle_timeout_s=args.idle_timeout,
                            max_call_s=args.max_call_s, phrasebook_dir=args.phrasebook_dir)
    server = IngestServer(scheduler, phrasebook, matcher, args.phrasebook, options, sinks, args.report)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        started = loop.create_future()
        serving = asyncio.ensure_future(serve(server, host, port, started, stop))
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            print(f"monitor live: listening on ws://{host}:{started.result()}", file=sys.stderr, flush=True)
        await serving
        log.info("ingest: stopped")

    try:
        asyncio.run(main())
    except OSError as exc:
        raise MonitorError(f"--listen {args.listen}: {exc.strerror or exc}") from None
    finally:
        scheduler.close()
    status = 0
    if server.cut_by_shutdown:
        log.error("ingest: %d call(s) were interrupted by the shutdown; their reports say so", server.cut_by_shutdown)
        status = 1
    if webhook is not None and webhook.close():
        log.error("webhook %s: %d alert(s) not delivered", webhook.url, len(webhook.undelivered))
        status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    """``python -m monitor.live``: the same as ``monitor live``."""
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
    except KeyboardInterrupt:
        print("monitor live: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
