"""What the web app's tests share: a store filled by the real pipeline, users, a real server on loopback."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SCORED = ("d02_fault_rude", "d06_no_greeting_rude", "d09_service_condescending")  # A1002, A1002, B2002
PASSWORD = "correct horse battery"
USERS = {  # name: (role, agent id)
    "sup": ("supervisor", None),
    "quinn": ("qa", None),
    "alice": ("agent", "A1002"),
    "bob": ("agent", "B2002"),
}


@lru_cache(maxsize=1)
def _scored_db(transcriber) -> Path:
    """Score the sample calls once per test run into a SQLite file, with the test users."""
    from monitor.phrasebook import load_phrasebook
    from monitor.pipeline import ScoreOptions, score_call
    from monitor.store import open_store
    from monitor.web import auth

    path = Path(tempfile.mkdtemp(prefix="monitor-web-")) / "scored.db"
    store = open_store(str(path))
    for call_id in SCORED:
        labels = json.loads((SAMPLES / f"{call_id}.labels.json").read_text(encoding="utf-8"))
        report = score_call(str(SAMPLES / f"{call_id}.wav"), transcriber, load_phrasebook(labels["phrasebook"]),
                            ScoreOptions(), agent_id=labels["agent_id"])
        store.save_report(report)
    for name, (role, agent_id) in USERS.items():
        store.add_user(name, role, agent_id, auth.hash_password(PASSWORD))
    store.close()
    return path


def scored_db_copy(transcriber, directory: Path) -> str:
    """A private copy of the scored database (tests may add alerts and calls to it)."""
    target = directory / "monitor.db"
    shutil.copy(_scored_db(transcriber), target)
    return f"sqlite:///{target}"


def undo_schema_5(conn) -> None:
    """Take a new PostgreSQL database back to schema version 4 (to test the upgrade; SQLite tests start from
    ``data/schema_v3.sqlite.sql`` instead, as SQLite cannot drop a constraint)."""
    for column in ("phrasebook", "speaker", "speaker_confidence", "uncertain_speaker", "decode_pass",
                   "retracted_at", "retracted_heard", "retracted_reason"):  # version 6
        conn.exec_driver_sql(f"ALTER TABLE alerts DROP COLUMN {column}")
    for table in ("appeals", "added_deductions", "audit_log"):
        conn.exec_driver_sql(f"DROP TABLE {table}")
    for table, column in (("calls", "phrasebook_title"), ("calls", "transcript"), ("calls", "reviewed_score"),
                          ("checks", "description"), ("alerts", "false_alarm_at"), ("alerts", "false_alarm_by"),
                          ("alerts", "false_alarm_note")):
        conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.exec_driver_sql("ALTER TABLE users DROP CONSTRAINT users_role")
    conn.exec_driver_sql("ALTER TABLE users ADD CONSTRAINT users_role CHECK (role IN ('supervisor', 'agent'))")
    conn.exec_driver_sql("UPDATE schema_migrations SET version = 4")


def login(client, name: str, password: str = PASSWORD):
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token, "next": "/"},
                       follow_redirects=False)


class LiveServer:
    """The app served by uvicorn on 127.0.0.1 in a thread, configured as `monitor serve` does, for streams and browsers."""

    def __init__(self, app, forwarded_allow_ips: str | None = None):
        import uvicorn

        from monitor.web.app import uvicorn_config

        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, forwarded_allow_ips=forwarded_allow_ips))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not (self.server.started and self.server.servers):
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def stream_call(port: int, token: str, wav: str, call_id: str, agent_id: str, phrasebook: str,
                time_scale: float = 4.0) -> list[dict]:
    """Stream a recording to /ws/ingest as a WhisperLive client does; returns the messages received."""
    from websockets.sync.client import connect

    from monitor.audio import load_call

    audio = load_call(wav, "mono").agent
    received: list[dict] = []
    with connect(f"ws://127.0.0.1:{port}/ws/ingest?token={token}", max_size=2**24) as ws:
        ws.send(json.dumps({"uid": call_id, "language": "zh", "call_id": call_id, "agent_id": agent_id,
                            "phrasebook": phrasebook}))
        received.append(json.loads(ws.recv(timeout=60)))
        block = 4096
        started = time.monotonic()
        for offset in range(0, len(audio), block):
            ws.send(audio[offset : offset + block].astype(np.float32).tobytes())
            delay = started + (offset + block) / 16000 / time_scale - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ws.send("END_OF_AUDIO")
        try:
            while True:
                received.append(json.loads(ws.recv(timeout=120)))
        except Exception:  # the server closes the connection once the call is scored
            pass
    return received
