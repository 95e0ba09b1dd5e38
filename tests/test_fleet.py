"""Two `monitor serve` nodes on one PostgreSQL: each node's dashboards see the other's calls, and a dead node's
calls end as interrupted with their alerts kept. Real processes, a real PostgreSQL, a real call streamed in."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from monitor.store import open_store
from pg import postgres_server, postgres_url  # noqa: F401 (fixtures)
from processes import default_sigint

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _monitor(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "monitor", *args], input=stdin, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Node:
    """`monitor serve` in a child process."""

    def __init__(self, db: str, name: str):
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "serve", "--db", db, "--port", str(self.port), "--node-name", name],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/api/capacity", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and self.process.poll() is None, f"node {name} did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Dashboard:
    """A supervisor's event stream (`/events`) on one node, each event noted with when it arrived."""

    def __init__(self, node: Node, token: str):
        self.events: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._read, args=(node, token), daemon=True).start()

    def _read(self, node: Node, token: str) -> None:
        try:
            with httpx.stream("GET", f"{node.url}/events", headers={"Authorization": f"Bearer {token}"},
                              timeout=httpx.Timeout(5, read=None)) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append((time.monotonic(), json.loads(line[6:])))
                    if self._stop.is_set():
                        return
        except httpx.HTTPError:
            pass  # the node went away

    def first(self, condition, timeout_s: float) -> tuple[float, dict] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for arrived, event in list(self.events):
                if condition(event):
                    return arrived, event
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self._stop.set()


@pytest.fixture
def fleet(postgres_url):  # noqa: F811 (the fixture of pg.py)
    _monitor("users", "add", "sup", "--role", "supervisor", "--password-stdin", "--db", postgres_url,
             stdin="a long enough password\n")
    token = _monitor("users", "token", "sup", "--db", postgres_url).strip()
    nodes = [Node(postgres_url, "node-a"), Node(postgres_url, "node-b")]
    yield nodes, token, postgres_url
    for node in nodes:
        node.stop()


def test_an_alert_on_one_node_reaches_the_other_and_a_dead_nodes_call_is_interrupted(fleet):
    (a, b), token, db = fleet
    on_a, on_b = Dashboard(a, token), Dashboard(b, token)
    time.sleep(1.0)  # both event streams connected
    nodes = httpx.get(f"{b.url}/api/nodes", headers={"Authorization": f"Bearer {token}"}).json()
    assert {n["node_id"] for n in nodes} == {"node-a", "node-b"} and all(n["free_slots"] == n["max_calls"] for n in nodes)

    caller = subprocess.Popen(
        [sys.executable, "-m", "monitor", "live", "--server", a.url, "--token", token, "-p", "broadband",
         "--file", str(SAMPLES / "d02_fault_rude.wav"), "--realtime", "--call-id", "fleet-call"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Node A loads its model on its first stream: allow for a busy machine.
        started = on_b.first(lambda e: e.get("type") == "call_started", timeout_s=120)
        assert started is not None and started[1]["node"] == "node-a", "node B's dashboard sees node A's call begin"
        call_id = started[1]["call_id"]
        listed = httpx.get(f"{b.url}/api/live", headers={"Authorization": f"Bearer {token}"}).json()
        assert [(c["call_id"], c["node"]) for c in listed] == [(call_id, "node-a")], "B's /api/live lists A's call"
        capacity = httpx.get(f"{a.url}/api/capacity").json()
        assert capacity["free_slots"] == capacity["max_calls"] - 1

        is_alert = lambda e: e.get("type") == "alert" and e.get("call_id") == call_id  # noqa: E731
        raised = on_a.first(is_alert, timeout_s=60)
        assert raised is not None, "the call's forbidden phrase raised an alert on node A"
        seen = on_b.first(lambda e: is_alert(e) and e["id"] == raised[1]["id"], timeout_s=5)
        assert seen is not None and seen[0] - raised[0] < 2.0, "the same alert (same id) reached B within 2 s"

        a.process.kill()  # node A dies in the middle of the call
        ended = on_b.first(lambda e: e.get("type") == "call_ended" and e.get("call_id") == call_id, timeout_s=40)
        assert ended is not None and "node-a" in ended[1]["interrupted"]
    finally:
        caller.kill()
        caller.wait()
        on_a.close()
        on_b.close()
    store = open_store(db)
    try:
        report = store.get_report(call_id)
        assert report["status"] == "interrupted" and report["transcript"], "saved from the transcript it kept"
        assert any(a["id"] == raised[1]["id"] for a in store.alerts_after(0, call_id=call_id)), "its alerts remain"
        assert [n["node_id"] for n in store.list_nodes()] == ["node-b"], "the dead node left the roll"
    finally:
        store.close()
    assert httpx.get(f"{b.url}/api/live", headers={"Authorization": f"Bearer {token}"}).json() == []
