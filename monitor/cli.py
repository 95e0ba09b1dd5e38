"""The ``monitor`` command line (see CONTRACT.md)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from monitor import __version__
from monitor.audio import AGENT_CHANNELS
from monitor.errors import MonitorError


def _transcribe(args: argparse.Namespace) -> int:
    from monitor.asr import Transcriber
    from monitor.audio import load_call

    started = time.perf_counter()
    call = load_call(args.audio, args.agent_channel)
    transcriber = Transcriber(args.model)
    asr_started = time.perf_counter()
    segments = transcriber.transcribe_call(call)
    asr_s = time.perf_counter() - asr_started
    if args.json:
        total_s = time.perf_counter() - started
        result = {
            "duration_s": round(call.duration_s, 3),
            "segments": [
                {**s.to_json(), "words": [{"start": round(w.start, 2), "end": round(w.end, 2), "text": w.text} for w in s.words]}
                for s in segments
            ],
            "timing": {
                "asr_s": round(asr_s, 3),
                "total_s": round(total_s, 3),
                "rtf": round(asr_s / call.duration_s, 4),
                "model": transcriber.model_name,
            },
        }
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        stereo = call.customer is not None
        for s in segments:
            who = f" {s.speaker}" if stereo else ""
            print(f"[{s.start:7.2f} → {s.end:7.2f}]{who} {s.text}")
    return 0


def _match(args: argparse.Namespace) -> int:
    from monitor.match import matcher_for
    from monitor.phrasebook import load_phrasebook

    text = sys.stdin.read() if args.text == "-" else args.text
    hits = matcher_for(load_phrasebook(args.phrasebook)).match_text(text)
    print(json.dumps([h.to_json() for h in hits], ensure_ascii=False, indent=1))
    return 0


def _score(args: argparse.Namespace) -> int:
    from monitor.batch import BatchOptions, run_batch
    from monitor.pipeline import ScoreOptions

    if args.workers < 1:
        raise MonitorError(f"--workers {args.workers}: must be at least 1")
    options = BatchOptions(
        out_dir=args.out,
        phrasebook=args.phrasebook,
        agent_id=args.agent_id,
        manifest=args.manifest,
        workers=args.workers,
        model=args.model,
        progress=not args.no_progress and sys.stderr.isatty(),
        score=ScoreOptions(
            agent_channel=args.agent_channel,
            separate_roles=not args.no_roles,
            redact=not args.no_redact,
            use_hotwords=args.hotwords,
        ),
        db=args.db,
        cluster=args.cluster,
    )
    return run_batch(args.inputs, options)


def _live(args: argparse.Namespace) -> int:
    from monitor.live import run_live

    return run_live(args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from monitor.web.app import WebOptions, create_app
    from monitor.web.live import LiveOptions

    app = create_app(args.db, WebOptions(live=LiveOptions(model=args.model)))
    print(f"monitor serve: http://{args.host}:{args.port}/ (database {app.state.store.url.split('://')[0]})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="debug" if args.debug else "warning",
                ws="websockets-sansio")
    return 0


def _users(args: argparse.Namespace) -> int:
    from monitor.store import open_store
    from monitor.web import auth

    store = open_store(args.db)
    if args.users_command == "token":
        token = auth.issue_api_token(store, args.name)
        if token is None:
            raise MonitorError(f"no user named {args.name!r}")
        print(token)
        return 0
    if args.role == "agent" and not args.agent_id:
        raise MonitorError("an agent needs --agent-id (the agent id their calls carry)")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            raise MonitorError("the passwords differ")
    if len(password) < 8:
        raise MonitorError("the password must be at least 8 characters")
    store.add_user(args.name, args.role, args.agent_id, auth.hash_password(password))
    print(f"user {args.name} ({args.role}{', agent ' + args.agent_id if args.agent_id else ''}) saved", file=sys.stderr)
    return 0


DEFAULT_DB = "monitor.db"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor",
        description="Call Conduct Monitor: offline speech quality monitoring for Chinese service calls.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    transcribe = commands.add_parser("transcribe", help="print the transcript of a recording")
    transcribe.add_argument("audio", metavar="AUDIO")
    transcribe.add_argument("--model", help="Whisper model: a CTranslate2 directory or a hub name (default: embedded base)")
    transcribe.add_argument("--json", action="store_true", help="JSON with segments, word timestamps and timing")
    transcribe.add_argument("--agent-channel", choices=AGENT_CHANNELS, default="left",
                            help="stereo: the agent's side (default left); mono mixes both")
    transcribe.set_defaults(run=_transcribe)

    match = commands.add_parser("match", help="find phrasebook phrases in a text")
    match.add_argument("text", metavar="TEXT", help="the text, or - to read it from stdin")
    match.add_argument("--phrasebook", "-p", required=True, metavar="PB", help="bundled name (broadband, customer_service, investment) or YAML path")
    match.set_defaults(run=_match)

    score = commands.add_parser("score", help="score recorded calls and write reports")
    score.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or directories")
    score.add_argument("--out", "-o", required=True, metavar="DIR", help="where reports and summary.csv go")
    score.add_argument("--phrasebook", "-p", metavar="PB",
                       help="phrasebook for every call (default: each call's manifest row or STEM.labels.json, else broadband)")
    score.add_argument("--agent-channel", choices=AGENT_CHANNELS, default="left")
    score.add_argument("--no-roles", action="store_true",
                       help="mono recordings hold the agent's side only: all their speech is the agent's (no role separation)")
    score.add_argument("--agent-id", metavar="ID")
    score.add_argument("--manifest", metavar="CSV", help="CSV with columns path, agent_id, call_id [, phrasebook]")
    score.add_argument("--workers", type=int, default=1, help="calls scored at once (processes sharing the cores)")
    score.add_argument("--model", help="Whisper model (default: embedded base)")
    score.add_argument("--no-redact", action="store_true", help="keep phone and ID numbers in reports")
    score.add_argument("--hotwords", action="store_true", help="bias decoding towards the phrasebook's vocabulary")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.add_argument("--db", metavar="URL",
                       help="also save reports in this database (sqlite:///FILE or postgresql://…); calls already there are skipped")
    score.add_argument("--cluster", metavar="URL",
                       help="score on this Dask scheduler (tcp://HOST:8786), one task per call (see docs/cluster.md)")
    score.set_defaults(run=_score)

    from monitor.live import add_live_arguments

    live = commands.add_parser("live", help="transcribe a call as it happens and alert on forbidden phrases")
    add_live_arguments(live)
    live.set_defaults(run=_live)

    serve = commands.add_parser("serve", help="the web app: live dashboard, call browser, agent portal")
    serve.add_argument("--db", default=DEFAULT_DB, metavar="URL",
                       help=f"results database: sqlite:///FILE, a file path or postgresql://… (default {DEFAULT_DB})")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", help="Whisper model for live streams (default: embedded base, loaded on the first stream)")
    serve.set_defaults(run=_serve)

    users = commands.add_parser("users", help="web app users and API tokens")
    users.add_argument("--db", default=DEFAULT_DB, metavar="URL", help=f"results database (default {DEFAULT_DB})")
    user_commands = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = user_commands.add_parser("add", help="create a user or change their role and password")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=["supervisor", "agent"])
    add.add_argument("--agent-id", metavar="ID", help="for an agent: the agent id on their calls (e.g. A1001)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    token = user_commands.add_parser("token", help="print a new API token for NAME (replaces the old one)")
    token.add_argument("name", metavar="NAME")
    users.set_defaults(run=_users)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="monitor: %(levelname)s: %(message)s",
    )
    if not args.debug:
        # faster-whisper and ctranslate2 chatter on stderr; users want our lines only.
        os.environ.setdefault("CT2_VERBOSE", "-1")
        logging.getLogger("faster_whisper").setLevel(logging.ERROR)
    try:
        return args.run(args)
    except MonitorError as exc:
        if args.debug:
            raise
        print(f"monitor: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("monitor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
