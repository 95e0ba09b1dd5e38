"""The results store on SQLite and on a real PostgreSQL server; ``monitor score --db``."""

from __future__ import annotations

import copy
import csv
import random
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest
import sqlalchemy as sa
from call_fixtures import d02_fault_rude, phrasebook
from conftest import SAMPLES
from pg import postgres_server, postgres_url  # noqa: F401 (fixtures)

from monitor.errors import MonitorError
from monitor.report import build_report, is_violation
from monitor.rules import judge
from monitor.store import SCHEMA_VERSION, open_store


def make_report(call_id: str = "d02_fault_rude") -> dict:
    segments, hits = d02_fault_rude()
    book = phrasebook()
    judgement = judge(segments, hits, book, duration_s=23.3, stereo=True)
    return build_report(call_id, "calls/d02.wav", "A1002", 23.3, book, segments, judgement, {"asr_s": 1.0})


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")


def counts(store, call_id: str) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            table: conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE call_id = :c"), {"c": call_id}).scalar_one()
            for table in ("calls", "segments", "events", "checks", "deductions")
        }


def test_saved_report_reads_back_whole_and_as_rows(db_url):
    store = open_store(db_url)
    report = make_report()
    assert not store.has_report("d02_fault_rude") and store.get_report("d02_fault_rude") is None
    store.save_report(report, "/calls/d02.wav")
    assert store.has_report("d02_fault_rude")
    assert store.get_report("d02_fault_rude") == report
    assert counts(store, "d02_fault_rude") == {
        "calls": 1, "segments": 5, "events": len(report["events"]), "checks": len(report["checks"]),
        "deductions": len(report["score"]["deductions"]),
    }  # fmt: skip
    with store.engine.connect() as conn:
        call = conn.execute(sa.text("SELECT agent_id, phrasebook, audio, score, score_max FROM calls")).one()
        forbidden = conn.execute(sa.text("SELECT canonical FROM events WHERE kind = 'forbidden' ORDER BY start")).scalars()
        failed = conn.execute(sa.text("SELECT check_id FROM checks WHERE NOT passed")).scalars().all()
    assert tuple(call) == ("A1002", "broadband", "/calls/d02.wav", report["score"]["total"], 100)
    assert list(forbidden) == ["刚才不是跟你说了，怎么又问？", "不知道，这事不归我管。"]
    assert "farewell" in failed


def test_saving_a_call_again_replaces_it(db_url):
    store = open_store(db_url)
    report = make_report()
    store.save_report(report)
    rescored = copy.deepcopy(report)
    rescored["events"] = rescored["events"][:1]
    rescored["score"]["total"] = 42
    store.save_report(rescored)
    assert counts(store, "d02_fault_rude")["calls"] == 1 and counts(store, "d02_fault_rude")["events"] == 1
    assert store.get_report("d02_fault_rude")["score"]["total"] == 42


def _open_and_save_all(url: str, call_ids: list[str], seed: int) -> None:
    store = open_store(url)
    order = random.Random(seed).sample(call_ids * 3, len(call_ids) * 3)
    for call_id in order:
        store.save_report(make_report(call_id))
    store.close()


def test_two_processes_creating_and_filling_one_database_leave_no_duplicates(db_url):
    call_ids = [f"call{i:02d}" for i in range(12)]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_open_and_save_all, [db_url, db_url], [call_ids, call_ids], [1, 2]))
    store = open_store(db_url)
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schema_migrations")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM calls")).scalar_one() == 12
        assert conn.execute(sa.text("SELECT count(*) FROM segments")).scalar_one() == 12 * 5


def test_every_table_the_web_app_needs_exists(tmp_path):
    store = open_store(str(tmp_path / "results.db"))  # a plain path means a SQLite file
    tables = set(sa.inspect(store.engine).get_table_names())
    assert tables >= {"calls", "segments", "events", "checks", "deductions", "alerts", "users", "schema_migrations"}
    with store.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(sa.text("INSERT INTO users (name, role, created_at) VALUES ('x', 'admin', CURRENT_TIMESTAMP)"))


def test_database_newer_than_the_code_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    with open_store(url).engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_migrations VALUES (99, CURRENT_TIMESTAMP)"))
    with pytest.raises(MonitorError, match="schema version 99 is newer"):
        open_store(url)


def test_unreachable_database_is_one_line_without_the_password():
    with pytest.raises(MonitorError) as error:
        open_store("postgresql://monitor:s3cret@127.0.0.1:1/results")
    message = str(error.value)
    assert message.startswith("database postgresql://monitor:***@127.0.0.1:1/results: cannot open (")
    assert "s3cret" not in message and "\n" not in message


def monitor_score(out, db_url: str, *calls: str) -> subprocess.Popen:
    inputs = [str(SAMPLES / f"{c}.wav") for c in calls]
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "score", *inputs, "--out", str(out), "--db", db_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_concurrent_batches_share_postgresql_and_resume_from_it(postgres_url, tmp_path):
    calls = ("d06_no_greeting_rude", "d09_service_condescending")
    runs = [monitor_score(tmp_path / "a", postgres_url, *calls), monitor_score(tmp_path / "b", postgres_url, *calls)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    store = open_store(postgres_url)
    for call_id in calls:
        report = store.get_report(call_id)
        assert counts(store, call_id) == {
            "calls": 1, "segments": len(report["transcript"]),
            # events held for review (uncertain speaker) stay in the report only
            "events": sum(1 for e in report["events"] if e["kind"] != "forbidden" or is_violation(e)),
            "checks": len(report["checks"]), "deductions": len(report["score"]["deductions"]),
        }  # fmt: skip
    assert store.get_report("d09_service_condescending")["phrasebook"]["id"] == "customer_service"

    # A third run into a new directory scores nothing: the database has both calls.
    third = monitor_score(tmp_path / "c", postgres_url, *calls)
    _, stderr = third.communicate(timeout=300)
    assert third.returncode == 0 and "0 failed" in stderr and "(2 already done)" in stderr, stderr
    assert (tmp_path / "c" / "d06_no_greeting_rude.html").exists()
    rows = list(csv.DictReader(open(tmp_path / "c" / "summary.csv", encoding="utf-8")))
    assert [r["status"] for r in rows] == ["ok", "ok"]
