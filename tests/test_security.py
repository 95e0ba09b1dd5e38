"""Attacks on the live ingest and on call identity, each against a real server on loopback.

The server is the in-process ``IngestServer`` on an ephemeral 127.0.0.1 port with
the real embedded model, or a real ``monitor live --listen`` process where the
attack is about the process (tokens at start-up, SIGTERM). See SECURITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from monitor.audio import load_call
from monitor.errors import MonitorError
from monitor.ingest import IngestOptions, IngestServer, serve
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.stream import DecodeScheduler
from processes import default_sigint

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TOKEN = "security-test-token-0123456789"
MAX_CALLS = 2
IDLE_TIMEOUT_S = 3.0
SECRET = "root:$6$s3cr3t-hash-never-shown:19000:0:99999:7:::"


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return load_call(str(SAMPLES / "d06_no_greeting_rude.wav")).agent


@pytest.fixture(scope="module")
def ingest(tmp_path_factory, transcriber):
    """An ingest with a token, a report directory and a phrasebook directory, on an ephemeral port."""
    root = tmp_path_factory.mktemp("ingest")
    reports, phrasebooks = root / "reports", root / "phrasebooks"
    phrasebooks.mkdir()
    (phrasebooks / "house.yaml").write_text((SAMPLES.parent / "phrasebooks" / "investment.yaml").read_text("utf-8"), "utf-8")
    (phrasebooks / "leaky.yaml").write_text(f"id: {SECRET}\n", "utf-8")
    phrasebook = load_phrasebook("broadband")
    scheduler = DecodeScheduler(transcriber)
    options = IngestOptions(max_calls=MAX_CALLS, token=TOKEN, idle_timeout_s=IDLE_TIMEOUT_S, phrasebook_dir=str(phrasebooks))
    server = IngestServer(scheduler, phrasebook, matcher_for(phrasebook), "broadband", options, report_dir=str(reports))
    loop = asyncio.new_event_loop()
    started = loop.create_future()
    stop = asyncio.Event()
    task = loop.create_task(serve(server, "127.0.0.1", 0, started, stop))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(started), 10), loop).result(15)
    server.url, server.reports, server.root = f"ws://127.0.0.1:{port}", reports, root
    yield server
    loop.call_soon_threadsafe(stop.set)
    asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(task), 20), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    scheduler.close()


@contextlib.contextmanager
def _open(server, options: dict | None = None, token: str | None = TOKEN, header: bool = False):
    """Connect with the token (in the query, or a Bearer header) and send ``options``."""
    url = server.url + (f"/?token={token}" if token and not header else "")
    headers = {"Authorization": f"Bearer {token}"} if header else None
    with connect(url, additional_headers=headers, max_size=2**24, open_timeout=10) as ws:
        if options is not None:
            ws.send(json.dumps({"language": "zh", **options}))
        yield ws


def _reply(ws) -> dict:
    return json.loads(ws.recv(timeout=10))


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _report_of(server, call_id: str) -> dict:
    path = server.reports / f"{call_id}.json"
    assert _wait_for(path.exists, 30), f"no report {path}"
    return json.loads(path.read_text("utf-8"))


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# --- 1. authentication ------------------------------------------------------------------------
def test_listen_refuses_to_start_without_a_good_token():
    env = {k: v for k, v in os.environ.items() if k != "MONITOR_LIVE_TOKEN"}
    base = [sys.executable, "-m", "monitor.live", "--phrasebook", "broadband", "--listen", "127.0.0.1:0"]
    for extra in ([], ["--token", "short"]):
        done = subprocess.run(base + extra, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and "token" in done.stderr


def test_clients_without_the_token_are_refused_before_they_are_heard(ingest):
    for token in (None, "wrong-token-of-the-same-length-x", TOKEN + "x", ""):
        with pytest.raises(InvalidStatus) as refused, _open(ingest, token=token):
            pass
        assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus), _open(ingest, token="not-it", header=True):
        pass
    for header in (False, True):  # the right token, in the query or a Bearer header
        with _open(ingest, {"uid": f"auth-{header}"}, header=header) as ws:
            assert _reply(ws)["message"] == "SERVER_READY"
            ws.send("END_OF_AUDIO")
    assert _wait_for(lambda: not ingest.calls)


# --- 1. call ids never leave the report directory --------------------------------------------
@pytest.mark.parametrize("bad", ["../../escaped", "/tmp/absolute-escape", "..", ".", "a/b", "a\\b", "nul\x00", "x" * 201, "tab\there"])
def test_a_clients_call_id_never_becomes_a_path(ingest, bad):
    before = _files_under(ingest.root.parent)
    for key in ("call_id", "uid"):
        options = {"uid": "ok-uid", key: bad}
        with _open(ingest, options) as ws:
            reply = _reply(ws)
        assert reply["status"] == "ERROR" and key in reply["message"] and "\n" not in reply["message"]
    assert _files_under(ingest.root.parent) == before


def test_a_server_named_call_keeps_the_clients_id_as_external_ref(ingest, audio):
    with _open(ingest, {"uid": "u-ref", "call_id": "crm-4711", "agent_id": "A1006"}) as ws:
        ready = _reply(ws)
        ws.send(audio[: 16000 * 4].astype("<f4").tobytes())
        ws.send("END_OF_AUDIO")
        assert _wait_for(lambda: not ingest.calls, 60)
    report = _report_of(ingest, ready["call_id"])
    assert ready["call_id"].startswith("live-") and report["call_id"] == ready["call_id"]
    assert report["external_ref"] == "crm-4711" and report["status"] == "complete" and report["agent_id"] == "A1006"


def test_cli_and_manifest_call_ids_are_checked_at_the_source(tmp_path):
    outside = tmp_path / "outside"
    live = subprocess.run(
        [sys.executable, "-m", "monitor", "live", "--phrasebook", "broadband", "--file", str(SAMPLES / "d06_no_greeting_rude.wav"),
         "--call-id", f"../{outside.name}", "--report", str(tmp_path / "reports")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert live.returncode == 2 and "--call-id" in live.stderr and live.stderr.count("error") == 1
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,agent_id,call_id\n{SAMPLES / 'd06_no_greeting_rude.wav'},A1,../{outside.name}\n", "utf-8")
    score = subprocess.run(
        [sys.executable, "-m", "monitor", "score", str(SAMPLES / "d06_no_greeting_rude.wav"), "--manifest", str(manifest),
         "--out", str(tmp_path / "reports"), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert score.returncode != 0 and "line 2: call_id" in score.stderr and score.stderr.strip().count("\n") == 0
    assert not list(tmp_path.glob("outside*"))


def test_report_writing_refuses_a_path_outside_its_directory(tmp_path):
    from monitor.pipeline import write_report

    report = {"call_id": "../escaped", "schema": "monitor.report/1"}
    with pytest.raises(MonitorError, match="outside"):
        write_report(report, str(tmp_path / "reports"), None)
    (tmp_path / "reports").mkdir(exist_ok=True)
    os.symlink(tmp_path / "target.json", tmp_path / "reports" / "linked.json")  # a planted link out of the directory
    with pytest.raises(MonitorError, match="outside"):
        write_report({**report, "call_id": "linked"}, str(tmp_path / "reports"), None)
    assert not (tmp_path / "escaped.json").exists() and not (tmp_path / "target.json").exists()


# --- 2. every call finishes and frees its slot ------------------------------------------------
def test_calls_that_end_without_audio_free_their_slots(ingest, audio):
    oversize = np.zeros(2**20 // 4 + 16, dtype="<f4").tobytes()  # just over the 1 MiB message limit

    def end_at_once(ws):
        ws.send("END_OF_AUDIO")

    def bad_first_frame(ws):
        ws.send(b"\x01\x02\x03")  # not whole float32 samples

    def oversize_frame(ws):
        ws.send(oversize)

    def drop(ws):
        ws.close()

    for round_ in range(2):  # twice as many no-audio calls as there are slots
        for attack in (end_at_once, bad_first_frame, oversize_frame, drop):
            with _open(ingest, {"uid": f"{attack.__name__}-{round_}"}) as ws:
                assert _reply(ws)["message"] == "SERVER_READY"
                attack(ws)
                assert _wait_for(lambda: not ingest.calls, 5), f"{attack.__name__}: the call never finished"
    with _open(ingest, {"uid": "after"}) as ws:  # a real call is still served
        assert _reply(ws)["message"] == "SERVER_READY"
        ws.send(audio[: 16000 * 3].astype("<f4").tobytes())
        ws.send("END_OF_AUDIO")
        assert _wait_for(lambda: not ingest.calls, 60)
    finished = list(ingest.finished)[-9:]
    assert [c.interrupted is None for c in finished] == [True, False, False, False] * 2 + [True]


def test_an_idle_client_is_timed_out(ingest):
    with _open(ingest, {"uid": "sleeper"}) as ws:
        assert _reply(ws)["message"] == "SERVER_READY"
        started = time.monotonic()
        assert _wait_for(lambda: not ingest.calls, IDLE_TIMEOUT_S + 5)
        assert time.monotonic() - started >= IDLE_TIMEOUT_S - 0.5
    assert "sent nothing" in ingest.finished[-1].interrupted


# --- 3. call identity: one owner per id, slots per connection --------------------------------
def test_the_same_client_ids_make_separate_calls_and_cannot_pass_the_limit(ingest, audio):
    same = {"uid": "reused", "call_id": "reused"}
    with _open(ingest, same) as first, _open(ingest, same) as second:
        ids = [_reply(first)["call_id"], _reply(second)["call_id"]]
        with _open(ingest, same) as third:  # a third connection, same uid: the limit holds
            assert _reply(third)["status"] == "WAIT"
        for ws in (first, second):
            ws.send(audio[: 16000 * 3].astype("<f4").tobytes())
            ws.send("END_OF_AUDIO")
        assert _wait_for(lambda: not ingest.calls, 60)
    reports = [_report_of(ingest, call_id) for call_id in ids]
    assert ids[0] != ids[1] and [r["external_ref"] for r in reports] == ["reused", "reused"]


def test_local_live_calls_get_distinct_default_ids():
    from monitor.callid import new_call_id

    ids = {new_call_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("live-") for i in ids)


# --- 4. the phrasebook option names a phrasebook, never a server path -------------------------
def test_the_phrasebook_option_cannot_read_server_files(ingest):
    for name in ("/etc/passwd", "../phrasebooks/house", "/etc/shadow", "leaky.yaml", "nosuch"):
        with _open(ingest, {"uid": "pb", "phrasebook": name}) as ws:
            reply = _reply(ws)
        assert reply["status"] == "ERROR" and "root:" not in reply["message"]
    with _open(ingest, {"uid": "pb", "phrasebook": "leaky"}) as ws:  # in the directory, but broken
        reply = _reply(ws)
    assert reply["status"] == "ERROR" and "see the server log" in reply["message"]
    assert "s3cr3t" not in reply["message"] and str(ingest.root) not in reply["message"]
    for name in ("house", "customer_service"):  # the configured directory, and a bundled name
        with _open(ingest, {"uid": "pb", "phrasebook": name}) as ws:
            assert _reply(ws)["message"] == "SERVER_READY"
            ws.send("END_OF_AUDIO")
    assert _wait_for(lambda: not ingest.calls)


# --- 5. YAML alias bombs ----------------------------------------------------------------------
def test_a_yaml_alias_bomb_is_refused_at_once_in_little_memory(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{b}: &{b} [{','.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n", "utf-8")
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(MonitorError, match="alias") as refused:
        load_phrasebook(str(bomb))
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20 * 2**20 and len(str(refused.value)) < 400
    huge = tmp_path / "huge.yaml"
    huge.write_text("id: x\n" + "#" * 2**21 + "\n", "utf-8")
    with pytest.raises(MonitorError, match="larger than"):
        load_phrasebook(str(huge))
    wide = tmp_path / "wide.yaml"  # a schema error about a long value is told in one short line
    wide.write_text("id: [" + ",".join(["x" * 50] * 2000) + "]\nversion: '1'\ntitle: t\nchecks: []\nphrases: []\n", "utf-8")
    with pytest.raises(MonitorError) as schema:
        load_phrasebook(str(wide))
    assert len(str(schema.value)) < 400 + len(str(wide))


# --- 6. backpressure and the longest call -----------------------------------------------------
def test_a_flood_of_audio_is_read_no_faster_than_it_is_decoded(ingest, audio):
    ingest.options.max_backlog_s = 3.0
    seen: list[float] = []
    try:
        with _open(ingest, {"uid": "flood"}) as ws:
            assert _reply(ws)["message"] == "SERVER_READY"
            block = audio[: 16000 * 12].astype("<f4")
            for offset in range(0, len(block), 4096):  # as fast as the socket takes it
                ws.send(block[offset : offset + 4096].tobytes())
                seen += [c.backlog_s() for c in list(ingest.calls.values())]
            ws.send("END_OF_AUDIO")
            assert _wait_for(lambda: not ingest.calls, 60)
    finally:
        ingest.options.max_backlog_s = IngestOptions.max_backlog_s
    assert seen and max(seen) <= 3.0 + 4096 / 16000 + 0.01


def test_a_call_past_the_longest_allowed_is_finished_with_a_message(ingest, audio):
    ingest.options.max_call_s = 4.0
    try:
        with _open(ingest, {"uid": "long"}) as ws:
            ready = _reply(ws)
            block = audio[: 16000 * 8].astype("<f4")
            messages = []
            try:
                for offset in range(0, len(block), 4096):
                    ws.send(block[offset : offset + 4096].tobytes())
                ws.send("END_OF_AUDIO")
                while True:
                    messages.append(_reply(ws))
            except Exception:  # closed by the server
                pass
    finally:
        ingest.options.max_call_s = IngestOptions.max_call_s
    assert any(m.get("status") == "WARNING" and "4 s" in m["message"] for m in messages)
    report = _report_of(ingest, ready["call_id"])
    assert report["duration_s"] == pytest.approx(4.0, abs=0.01) and report["status"] == "interrupted"


# --- 7. malformed options ---------------------------------------------------------------------
def test_malformed_options_are_one_line_errors(ingest):
    cases = [
        ('{"uid": "n", "x": ' + "[" * 30_000 + "]" * 30_000 + "}", "nest"),
        ('{"uid": "n", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "at most"),
        ("x" * 70_000, "at most"),
        ({"uid": "n", "sample_rate": 0}, "sample_rate"),
        ({"uid": "n", "sample_rate": -16000}, "sample_rate"),
        ({"uid": "n", "sample_rate": 16000.5}, "sample_rate"),
        ({"uid": "n", "sample_rate": 10**30}, "sample_rate"),
        ({"uid": "n", "sample_rate": True}, "sample_rate"),
        ('{"uid": "n", "sample_rate": NaN}', "sample_rate"),
        ('{"uid": "n", "sample_rate": Infinity}', "sample_rate"),
        ({"uid": "n", "channels": 0}, "channels"),
        ({"uid": "n", "channels": 9}, "channels"),
        ({"uid": "n", "channels": 2.0}, "channels"),
        ({"uid": "n", "agent_id": {"x": 1}}, "agent_id"),
        ({"uid": ["n"]}, "uid"),
        ({"uid": "n", "phrasebook": ["broadband"]}, "phrasebook"),
    ]
    for options, says in cases:
        with _open(ingest) as ws:
            ws.send(options if isinstance(options, str) else json.dumps(options))
            reply = _reply(ws)
        assert reply["status"] == "ERROR" and says in reply["message"], (options if len(str(options)) < 80 else says)
        assert "\n" not in reply["message"] and len(reply["message"]) < 300
    assert not ingest.calls


def _sigterm_mid_call(server: subprocess.Popen, url: str, token: str, options: dict, audio) -> tuple[dict, int, float]:
    """Start a call on ``server``, send 5 s of audio, SIGTERM the server mid-call;
    return SERVER_READY, the exit code and how long the server took to stop."""
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30) as ws:
        ws.send(json.dumps(options))
        ready = json.loads(ws.recv(timeout=60))
        ws.send(audio[: 16000 * 5].astype("<f4").tobytes())
        time.sleep(1.0)
        stopped = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=20)
    return ready, code, time.monotonic() - stopped


# --- 2. SIGTERM stops a real `monitor live --listen` -------------------------------------------
def test_sigterm_stops_listen_and_marks_the_call_in_progress_interrupted(tmp_path, audio):
    env = {**os.environ, "MONITOR_LIVE_TOKEN": TOKEN}
    server = subprocess.Popen(
        [sys.executable, "-m", "monitor", "live", "--phrasebook", "broadband", "--listen", "127.0.0.1:0",
         "--report", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = server.stderr.readline()
        assert "listening on ws://" in line, line
        url = line.split("listening on ")[1].strip()
        ready, code, took = _sigterm_mid_call(server, url, TOKEN, {"uid": "in-progress", "call_id": "crm-1"}, audio)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert took < 10, f"SIGTERM took {took:.1f}s"
    assert code == 1  # a call was cut short: not a clean exit
    report = json.loads((tmp_path / f"{ready['call_id']}.json").read_text("utf-8"))
    assert report["status"] == "interrupted" and "stopped" in report["interrupted"] and report["external_ref"] == "crm-1"
    assert "Traceback" not in server.stderr.read()


def test_ctrl_c_with_stdout_piped_to_a_closed_reader_is_quiet():
    reader_gone = subprocess.Popen(
        [sys.executable, "-m", "monitor", "live", "--phrasebook", "broadband", "--file", str(SAMPLES / "d06_no_greeting_rude.wav"),
         "--realtime", "--time-scale", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint,
    )  # fmt: skip
    first = reader_gone.stdout.readline()  # the first segment: decoding is under way
    assert json.loads(first)["type"] in ("segment", "alert")
    reader_gone.stdout.close()  # the reader goes away (as `| head -1` does) ...
    reader_gone.send_signal(signal.SIGINT)  # ... and Ctrl-C reaches the monitor
    reader_gone.wait(timeout=60)
    stderr = reader_gone.stderr.read().decode()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr[-2000:]
    assert reader_gone.returncode == 130


# --- 2. the same through `monitor serve`'s /ws/ingest --------------------------------------------
def test_the_web_apps_ingest_frees_its_slot_and_marks_a_cut_call(tmp_path, transcriber, audio):
    from web_helpers import LiveServer

    from monitor.store import open_store
    from monitor.web import auth
    from monitor.web.app import WebOptions, create_app
    from monitor.web.live import LiveOptions

    db = tmp_path / "monitor.db"
    store = open_store(str(db))
    store.add_user("sup", "supervisor", None, auth.hash_password("correct horse battery"))
    token = auth.issue_api_token(store, "sup")
    app = create_app(f"sqlite:///{db}", WebOptions(live=LiveOptions(max_calls=1)), transcriber)
    with LiveServer(app) as server:
        url = f"ws://127.0.0.1:{server.port}/ws/ingest?token={token}"

        def start(stack: contextlib.ExitStack, options: dict):
            """Connect and send options until the one slot is free (it frees as the last call finishes)."""
            deadline = time.monotonic() + 10
            while True:
                ws = stack.enter_context(connect(url))
                ws.send(json.dumps({"language": "zh", **options}))
                reply = json.loads(ws.recv(timeout=10))
                if reply.get("status") != "WAIT" or time.monotonic() > deadline:
                    return ws, reply
                time.sleep(0.2)

        for attack in ("END_OF_AUDIO", b"\x01\x02\x03", None, "END_OF_AUDIO", b"\x01", None):  # None: hang up
            with contextlib.ExitStack() as stack:
                ws, reply = start(stack, {"uid": "nothing"})
                assert reply["message"] == "SERVER_READY", f"after {attack!r}: {reply}"
                if attack is not None:
                    ws.send(attack)
        with contextlib.ExitStack() as stack:
            _, reply = start(stack, {"uid": "cut", "phrasebook": "/etc/passwd"})
            assert reply["status"] == "ERROR" and "not a path" in reply["message"]
        with contextlib.ExitStack() as stack:
            ws, started = start(stack, {"uid": "cut", "call_id": "crm-9", "agent_id": "A1002"})
            assert started["message"] == "SERVER_READY" and started["call_id"] != "crm-9"
            ws.send(audio[: 16000 * 3].astype("<f4").tobytes())
        # ... hung up without END_OF_AUDIO: scored on what was heard, and marked
        assert _wait_for(lambda: store.has_report(started["call_id"]), 60)
    report = store.get_report(started["call_id"])
    assert report["status"] == "interrupted" and report["external_ref"] == "crm-9" and report["agent_id"] == "A1002"


def test_sigterm_stops_serve_with_a_stream_in_progress(tmp_path, audio):
    db = str(tmp_path / "monitor.db")
    users = [sys.executable, "-m", "monitor", "users", "--db", db]
    subprocess.run(users + ["add", "sup", "--role", "supervisor", "--password-stdin"], input="correct horse battery\n",
                   text=True, check=True, capture_output=True, timeout=60)
    token = subprocess.run(users + ["token", "sup"], text=True, check=True, capture_output=True, timeout=60).stdout.strip()
    with socket.socket() as probe:  # a free port for uvicorn (it prints no bound port)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--db", db, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "monitor serve: http://" in server.stderr.readline()
        assert _wait_for(lambda: _port_open(port), 20)
        options = {"uid": "u", "call_id": "crm-2", "language": "zh"}
        ready, _, took = _sigterm_mid_call(server, f"ws://127.0.0.1:{port}/ws/ingest", token, options, audio)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert took < 10, f"SIGTERM took {took:.1f}s"
    from monitor.store import open_store

    report = open_store(db).get_report(ready["call_id"])
    assert report["status"] == "interrupted" and report["external_ref"] == "crm-2" and report["duration_s"] == 5.0
