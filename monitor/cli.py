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
from monitor.errors import MonitorError, UsageError
from monitor.phrasebook import add_phrasebook_argument
from monitor.stream import NODE_MAX_CALLS


def _transcribe(args: argparse.Namespace) -> int:
    from monitor.asr import Transcriber
    from monitor.audio import load_call

    started = time.perf_counter()
    call = load_call(args.audio, args.agent_channel)
    transcriber = Transcriber(args.model)
    asr_started = time.perf_counter()
    segments = transcriber.transcribe_call(call)
    asr_s = time.perf_counter() - asr_started
    stereo = call.customer is not None
    if stereo or not args.no_roles:
        from monitor.phrasebook import load_phrasebook
        from monitor.pipeline import with_roles

        segments = with_roles(call, segments, load_phrasebook(args.phrasebook), separate=True)
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
        for s in segments:
            print(f"[{s.start:7.2f} → {s.end:7.2f}]{_who(s, stereo)} {s.text}")
    return 0


def _who(segment, stereo: bool) -> str:
    """The speaker column of a transcript line: the channel's role on stereo, none
    with ``--no-roles`` on mono, else the role, its confidence and 待复核 when uncertain."""
    from monitor.roles import uncertain

    if stereo:
        return f" {segment.speaker}"
    if segment.speaker_confidence is None:
        return ""
    doubt = " 待复核" if uncertain(segment) else ""
    return f" {segment.speaker} ({segment.speaker_confidence:.2f}{doubt})"


def _match(args: argparse.Namespace) -> int:
    from monitor.match import matcher_for
    from monitor.meaning import model_for
    from monitor.phrasebook import load_phrasebook

    text = sys.stdin.read() if args.text == "-" else args.text
    phrasebook = load_phrasebook(args.phrasebook)
    hits = matcher_for(phrasebook).match_text(text)
    model = model_for(phrasebook)
    by_meaning = model.text_hits(phrasebook, text, hits) if model is not None else []
    found = [h.to_json() for h in hits]
    found += [{**h.to_json(), "held_for_review": not model.deducts(h)} for h in by_meaning]
    print(json.dumps(found, ensure_ascii=False, indent=1))
    return 0


def _score(args: argparse.Namespace) -> int:
    from monitor.batch import BatchOptions, run_batch
    from monitor.pipeline import ScoreOptions

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


def _models(args: argparse.Namespace) -> int:
    from monitor.models import load_catalogue, model_file, verify_model

    catalogue = load_catalogue()
    if args.models_command == "verify":
        if args.name is not None and args.name not in catalogue:
            raise UsageError(f"model {args.name}: not in the catalogue (known: {', '.join(catalogue)})")
        bad = 0
        for entry in [catalogue[args.name]] if args.name else catalogue.values():
            ok, detail = verify_model(entry)
            print(f"{entry.name}: {'ok' if ok else 'MISMATCH' if ok is False else 'unchecked'}: {detail}")
            bad += ok is False
        return 1 if bad else 0
    for entry in catalogue.values():
        source = "embedded (" + ", ".join(entry.embedded) + ")" if entry.embedded else entry.hub or str(entry.directory)
        real = (entry.measured or {}).get("corpus_real") or {}
        measured = f"CER {real['cer']}, RTF {real['rtf']} on {real.get('cores', '?')} cores" if real else "not measured"
        where = model_file(entry)
        print(f"{entry.name:10} {'on disk' if where else 'absent':8} {measured:34} {source}")
        if entry.description:
            print(f"{'':10} {entry.description}")
    return 0


def _sip(args: argparse.Namespace) -> int:
    from monitor.sip import run_sip

    return run_sip(args)


def _live(args: argparse.Namespace) -> int:
    from monitor.live import run_live

    return run_live(args)


def _serve(args: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from monitor.web.app import WebOptions, create_app, uvicorn_config
    from monitor.web.live import LiveOptions

    # Bind first: a busy port fails here, before any URL is printed or the database is opened.
    try:
        family = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        listener = socket.create_server((args.host, args.port), family=family)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise MonitorError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    if args.max_calls < 1:
        raise UsageError(f"--max-calls {args.max_calls}: must be at least 1")
    with listener:
        host, port = listener.getsockname()[:2]
        node = args.node_name or f"{socket.gethostname()}:{port}"
        app = create_app(args.db, WebOptions(secure_cookies=args.secure_cookies, node_id=node,
                                             live=LiveOptions(model=args.model, max_calls=args.max_calls)))
        shown = f"[{host}]" if ":" in host else host
        print(f"monitor serve: http://{shown}:{port}/ (database {app.state.store.url.split('://')[0]})", file=sys.stderr)
        config = uvicorn_config(app, args.host, port, forwarded_allow_ips=args.forwarded_allow_ips,
                                log_level="debug" if args.debug else "warning")
        uvicorn.Server(config).run(sockets=[listener])
    return 0


def _read_password(args: argparse.Namespace) -> str | None:
    """The new password from stdin (``--password-stdin``) or asked twice on the terminal; None when neither is possible."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        if not sys.stdin.isatty():
            return None
        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            raise MonitorError("the passwords differ")
    if len(password) < 8:
        raise MonitorError("the password must be at least 8 characters")
    return password


def _users(args: argparse.Namespace) -> int:
    from monitor.store import open_store
    from monitor.web import auth

    store = open_store(args.db)
    try:
        if args.users_command == "token":
            token = auth.issue_api_token(store, args.name)
            if token is None:
                raise MonitorError(f"no user named {args.name!r}")
            print(token)
            return 0
        if args.users_command == "list":
            rows = [("NAME", "ROLE", "AGENT", "STATUS", "TOKEN", "SESSIONS", "CREATED")]
            for u in store.list_users():
                rows.append((u["name"], u["role"], u["agent_id"] or "-", "disabled" if u["disabled_at"] else "active",
                             "yes" if u["has_token"] else "no", str(u["sessions"]), f"{u['created_at']:%Y-%m-%d %H:%M}"))
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
            return 0
        if args.users_command in ("disable", "enable"):
            if not store.update_user(args.name, disabled=args.users_command == "disable"):
                raise MonitorError(f"no user named {args.name!r}")
            print(f"user {args.name} {args.users_command}d" + (", logged out" if args.users_command == "disable" else ""),
                  file=sys.stderr)
            return 0
        if args.users_command == "add" and args.role == "agent" and not args.agent_id:
            raise MonitorError("an agent needs --agent-id (the agent id their calls carry)")
        if args.users_command == "passwd" and store.get_user(name=args.name) is None:
            raise MonitorError(f"no user named {args.name!r}")
        password = _read_password(args)
        if password is None:
            print("monitor: error: no terminal to ask the password on; pipe it in with --password-stdin", file=sys.stderr)
            return 2
        if args.users_command == "passwd":
            store.update_user(args.name, password_hash=auth.hash_password(password))
            print(f"password of {args.name} changed; their sessions ended", file=sys.stderr)
            return 0
        store.add_user(args.name, args.role, args.agent_id, auth.hash_password(password))
        print(f"user {args.name} ({args.role}{', agent ' + args.agent_id if args.agent_id else ''}) saved", file=sys.stderr)
        return 0
    finally:
        store.close()


DEFAULT_DB = "monitor.db"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


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
    transcribe.add_argument("--model", help="Whisper model: a name from `monitor models`, a directory or a hub name (default base)")
    transcribe.add_argument("--json", action="store_true", help="JSON with segments, word timestamps and timing")
    transcribe.add_argument("--agent-channel", choices=AGENT_CHANNELS, default="left",
                            help="stereo: the agent's side (default left); mono mixes both")
    transcribe.add_argument("--no-roles", action="store_true",
                            help="mono: do not tell the agent's sentences from the customer's")
    add_phrasebook_argument(transcribe, "broadband",
                            "mono: the code whose phrases mark the agent (bundled name or YAML path; default broadband)")
    transcribe.set_defaults(run=_transcribe)

    match = commands.add_parser("match", help="find phrasebook phrases in a text")
    match.add_argument("text", metavar="TEXT", help="the text, or - to read it from stdin")
    add_phrasebook_argument(match, "broadband",
                            "bundled name (broadband, office, hospital, investment, customer_service) or YAML path (default broadband)")
    match.set_defaults(run=_match)

    score = commands.add_parser("score", help="score recorded calls and write reports")
    score.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or directories")
    score.add_argument("--out", "-o", required=True, metavar="DIR", help="where reports and summary.csv go")
    add_phrasebook_argument(score, None,
                            "phrasebook for every call (default: each call's manifest row or STEM.labels.json, else broadband)")
    score.add_argument("--agent-channel", choices=AGENT_CHANNELS, default="left")
    score.add_argument("--no-roles", action="store_true",
                       help="mono recordings hold the agent's side only: all their speech is the agent's (no role separation)")
    score.add_argument("--agent-id", metavar="ID")
    score.add_argument("--manifest", metavar="CSV", help="CSV with columns path, agent_id, call_id [, phrasebook]")
    score.add_argument("--workers", type=_positive_int, metavar="N",
                       help="calls scored at once, one process of one thread each (default: one per core)")
    score.add_argument("--model", help="Whisper model: a name from `monitor models`, a directory or a hub name (default base)")
    score.add_argument("--no-redact", action="store_true", help="keep phone and ID numbers in reports")
    score.add_argument("--hotwords", action="store_true", help="bias decoding towards the phrasebook's vocabulary")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.add_argument("--db", metavar="URL",
                       help="also save reports in this database (sqlite:///FILE or postgresql://…); calls already there are skipped")
    score.add_argument("--cluster", metavar="URL",
                       help="score on this Dask scheduler (tcp://HOST:8786), one task per call (see docs/cluster.md)")
    score.set_defaults(run=_score)

    models = commands.add_parser("models", help="the Whisper models we know (models/catalogue.yaml) and whether they are here")
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION")
    model_commands.add_parser("list", help="list the models (the default)")
    verify = model_commands.add_parser("verify", help="check the sha256 of the models on disk against the catalogue")
    verify.add_argument("name", nargs="?", metavar="NAME", help="one model (default: all)")
    models.set_defaults(run=_models)

    from monitor.live import add_live_arguments

    live = commands.add_parser("live", help="transcribe a call as it happens and alert on forbidden phrases")
    add_live_arguments(live)
    live.set_defaults(run=_live)

    from monitor.sip import add_sip_arguments

    sip = commands.add_parser("sip", help="answer SIP calls from the phone system (G.711 RTP, SIPREC) and monitor them live")
    add_sip_arguments(sip)
    sip.set_defaults(run=_sip)

    serve = commands.add_parser("serve", help="the web app: live dashboard, call browser, agent portal")
    serve.add_argument("--db", default=DEFAULT_DB, metavar="URL",
                       help=f"results database: sqlite:///FILE, a file path or postgresql://… (default {DEFAULT_DB})")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", help="Whisper model for live streams (default: embedded base, loaded on the first stream)")
    serve.add_argument("--max-calls", type=int, default=NODE_MAX_CALLS,
                       help=f"live calls this node streams at once (default {NODE_MAX_CALLS}, what a 2-core node holds: docs/deploy.md)")
    serve.add_argument("--node-name", metavar="NAME",
                       help="this node's name among the nodes sharing a PostgreSQL database (default HOST:PORT)")
    serve.add_argument("--secure-cookies", action="store_true",
                       help="mark cookies Secure: the app is reached over HTTPS (through a TLS proxy)")
    serve.add_argument("--forwarded-allow-ips", metavar="IPS",
                       help="trust X-Forwarded-For/-Proto from these proxy addresses (comma-separated, or *); "
                            "by default they are ignored")
    serve.set_defaults(run=_serve)

    users = commands.add_parser("users", help="web app users and API tokens")
    users.add_argument("--db", default=DEFAULT_DB, metavar="URL", help=f"results database (default {DEFAULT_DB})")
    # --db may also follow the action (`users add NAME --db URL`); there it overrides the one before.
    db_after = argparse.ArgumentParser(add_help=False)
    db_after.add_argument("--db", default=argparse.SUPPRESS, metavar="URL", help="results database")
    user_commands = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = user_commands.add_parser("add", parents=[db_after], help="create a user, or change their role and password (and enable them again)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=["supervisor", "qa", "agent"],
                     help="supervisor: everything, live included; qa: reviewer (all calls, appeals), no live "
                          "administration; agent: their own calls (--agent-id)")
    add.add_argument("--agent-id", metavar="ID", help="for an agent: the agent id on their calls (e.g. A1001)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    passwd = user_commands.add_parser("passwd", parents=[db_after], help="change NAME's password (ends their sessions)")
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    user_commands.add_parser("list", parents=[db_after], help="list users, their role, status and sessions")
    disable = user_commands.add_parser("disable", parents=[db_after],
                                       help="stop NAME logging in or using their API token (ends their sessions)")
    disable.add_argument("name", metavar="NAME")
    enable = user_commands.add_parser("enable", parents=[db_after], help="let a disabled user in again")
    enable.add_argument("name", metavar="NAME")
    token = user_commands.add_parser("token", parents=[db_after], help="print a new API token for NAME (replaces the old one)")
    token.add_argument("name", metavar="NAME")
    users.set_defaults(run=_users)

    # --debug is accepted after the command too (`monitor score x --debug`).
    # SUPPRESS: a subcommand without it keeps the value given before the command.
    for command in commands.choices.values():
        for sub in [command, *_subcommands(command)]:
            if "--debug" not in sub._option_string_actions:
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]


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
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        print("monitor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
