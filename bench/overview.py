"""Server time of the supervisor's overview (``/dashboard``), the call list and search over N scored calls.

Fills a fresh database (SQLite, or ``--db postgresql://…``) with ``--calls``
reports made by the rules over a fixed transcript (no model: the bench measures
the web app and the database, not ASR), spread over 30 days and 20 agents, with
a few appeals; then times each page in-process (FastAPI's TestClient, so the
time is the server's, without a network) and prints the median and worst of
``--repeat`` requests, in ms, and against the 300 ms target.

    python bench/overview.py [--calls 1000] [--repeat 15] [--db URL]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from call_fixtures import d02_fault_rude, phrasebook  # noqa: E402

from monitor.report import build_report  # noqa: E402
from monitor.rules import judge  # noqa: E402
from monitor.store import open_store  # noqa: E402
from monitor.web import auth  # noqa: E402
from monitor.web.app import create_app  # noqa: E402

TARGET_MS = 300


def fill(url: str, calls: int, seed: int = 7) -> None:
    segments, hits = d02_fault_rude()
    book = phrasebook()
    base = build_report("x", "/calls/x.wav", None, 23.3, book, segments, judge(segments, hits, book, 23.3, True),
                        {"asr_s": 1.0})
    rng = random.Random(seed)
    store = open_store(url)
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(calls):
        report = copy.deepcopy(base)
        report["call_id"], report["agent_id"] = f"call{i:05d}", f"A{rng.randrange(20):03d}"
        kept = rng.randrange(len(report["score"]["deductions"]) + 1)
        report["score"]["deductions"] = report["score"]["deductions"][:kept]
        report["score"]["total"] = max(0, 100 - sum(d["points"] for d in report["score"]["deductions"]))
        store.save_report(report, started_at=now - dt.timedelta(minutes=rng.randrange(30 * 24 * 60)))
        if kept and rng.random() < 0.05:
            store.file_appeal(report["call_id"], 0, "申诉", "agent", "agent")
    store.add_user("sup", "supervisor", None, auth.hash_password("bench password"))
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    args = parser.parse_args()
    url = args.db or f"sqlite:///{tempfile.mkdtemp(prefix='bench-overview-')}/bench.db"
    started = time.perf_counter()
    fill(url, args.calls)
    print(f"filled {args.calls} calls in {time.perf_counter() - started:.1f} s ({url.split(':')[0]})")
    client = TestClient(create_app(url), base_url="http://127.0.0.1")
    token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    client.post("/login", data={"name": "sup", "password": "bench password", "csrf_token": token, "next": "/"})
    pages = ["/dashboard", "/calls", "/api/calls?q=不归我管", "/api/calls?q=宽带&sort=score", "/calls.csv", "/rules",
             "/reviews"]
    print(f"{'page':<32} {'median ms':>10} {'worst ms':>10}  target {TARGET_MS} ms")
    for page in pages:
        assert client.get(page).status_code == 200, page  # warm
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            response = client.get(page)
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        median = statistics.median(times)
        mark = "ok" if median < TARGET_MS else "SLOW"
        print(f"{page:<32} {median:>10.1f} {max(times):>10.1f}  {mark} ({median / TARGET_MS:.2f} of the target)")


if __name__ == "__main__":
    main()
