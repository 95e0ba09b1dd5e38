"""The QA loop in the web app: the qa role, appeals and reviews, search, export, rule health, the overview.

Reports come from the rules over a fixed transcript (``call_fixtures``), not from
the model, so these tests are fast; the pages they render are the real ones.
The API and permission tests run on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pg import postgres_server, postgres_url  # noqa: F401 (fixtures)
from test_store import make_report
from web_helpers import PASSWORD, login, undo_schema_5

from monitor.store import SCHEMA_VERSION, CallFilter, open_store
from monitor.web import auth
from monitor.web.app import create_app

USERS = {"sup": ("supervisor", None), "qa": ("qa", None), "alice": ("agent", "A1002"), "bob": ("agent", "B2002")}
MONDAY = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def password_hash() -> str:
    return auth.hash_password(PASSWORD)  # argon2 is slow on purpose: once per module


def bobs_report() -> dict:
    report = copy.deepcopy(make_report("b01_bob"))
    report["agent_id"] = "B2002"
    return report


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitor.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def site(db_url, password_hash):
    """The app over a store with Alice's call (d02_fault_rude, started MONDAY) and Bob's (b01_bob), the four
    users, and API tokens for each of them."""
    store = open_store(db_url)
    store.save_report(make_report(), "/nonexistent/d02.wav", started_at=MONDAY)
    store.save_report(bobs_report(), "/nonexistent/b01.wav", started_at=MONDAY + dt.timedelta(days=2))
    tokens = {}
    for name, (role, agent_id) in USERS.items():
        store.add_user(name, role, agent_id, password_hash)
        tokens[name] = {"Authorization": f"Bearer {auth.issue_api_token(store, name)}"}
    app = create_app(db_url)
    app.state.tokens = tokens
    yield app
    store.close()


def api(app) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1")


def session(app, name: str) -> tuple[TestClient, str]:
    """A logged-in browser session and its CSRF token (from the page's forms)."""
    client = api(app)
    assert login(client, name).status_code == 303
    page = client.get("/reviews").text
    return client, page.split('name="csrf_token" value="')[1].split('"')[0]


def test_qa_role_from_the_users_command(tmp_path):
    db = f"sqlite:///{tmp_path / 'users.db'}"
    added = subprocess.run([sys.executable, "-m", "monitor", "users", "--db", db, "add", "quinn", "--role", "qa",
                            "--password-stdin"], input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([sys.executable, "-m", "monitor", "users", "--db", db, "list"], capture_output=True,
                            text=True, timeout=120)
    assert "quinn" in listed.stdout and "qa" in listed.stdout.split("quinn", 1)[1].splitlines()[0]
    wrong = subprocess.run([sys.executable, "-m", "monitor", "users", "--db", db, "add", "x", "--role", "admin",
                            "--password-stdin"], input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2


def test_qa_sees_every_call_and_reviews_but_runs_nothing_live(site):
    qa, csrf = session(site, "qa")
    assert qa.get("/", follow_redirects=False).headers["location"] == "/dashboard"
    for page in ("/dashboard", "/calls", "/reviews", "/rules", "/calls/b01_bob", "/calls/d02_fault_rude"):
        assert qa.get(page).status_code == 200, page
    assert {c["call_id"] for c in qa.get("/api/calls").json()["calls"]} == {"d02_fault_rude", "b01_bob"}
    assert qa.get("/api/live").status_code == 200
    # No live administration: acknowledging alerts and feeding live streams stay the supervisor's.
    alert_id = site.state.store.save_alert({"call_id": "live-1", "kind": "forbidden", "phrase_id": "p", "canonical": "c",
                                            "heard": "c", "start": 1.0, "end": 2.0}, agent_id="A1002")
    assert qa.post(f"/alerts/{alert_id}/ack", headers={"X-CSRF-Token": csrf}).status_code == 403
    from starlette.websockets import WebSocketDisconnect

    token = site.state.tokens["qa"]["Authorization"][7:]
    with pytest.raises(WebSocketDisconnect) as closed, qa.websocket_connect(f"/ws/ingest?token={token}") as ws:
        ws.receive_text()
    assert closed.value.code == 1008


def test_appeal_overturned_rescores_and_the_report_keeps_the_history(site):
    client, tokens = api(site), site.state.tokens
    before = client.get("/calls/d02_fault_rude/report.json", headers=tokens["alice"]).json()
    machine = before["score"]["total"]
    appealed = next(i for i, d in enumerate(before["score"]["deductions"]) if d["source"].startswith("bb.forbidden"))
    points = before["score"]["deductions"][appealed]["points"]

    filed = client.post("/api/calls/d02_fault_rude/appeals", headers=tokens["alice"],
                        json={"deduction": appealed, "reason": "这句是客户说的，不是我"})
    assert filed.status_code == 201
    appeal_id = filed.json()["appeal_id"]
    queue = client.get("/api/appeals?status=open", headers=tokens["qa"]).json()
    assert [a["appeal_id"] for a in queue] == [appeal_id] and queue[0]["agent_id"] == "A1002"

    decided = client.post(f"/api/appeals/{appeal_id}/decision", headers=tokens["qa"],
                          json={"decision": "overturned", "note": "录音确认是客户的话"})
    assert decided.status_code == 200 and decided.json()["status"] == "overturned"

    after = client.get("/calls/d02_fault_rude/report.json", headers=tokens["alice"]).json()
    assert after["score"]["machine_total"] == machine == after["reviewed"]["machine_score"]
    assert after["score"]["total"] == after["reviewed"]["score"] == min(100, machine + points)
    assert after["score"]["deductions"][appealed]["overturned"] is True
    assert sum(d["points"] for d in after["score"]["deductions"] if not d["overturned"]) == 100 - after["score"]["total"]
    history = after["reviewed"]["history"]
    assert [(h["action"], h["by"], h["role"], h["why"]) for h in history] == [
        ("appeal", "alice", "agent", "这句是客户说的，不是我"), ("overturned", "qa", "qa", "录音确认是客户的话")]
    assert all(dt.datetime.fromisoformat(h["at"]).tzinfo for h in history)
    # The list, the filters and the export use the score after review.
    listed = client.get("/api/calls?agent=A1002", headers=tokens["qa"]).json()["calls"][0]
    assert (listed["score"], listed["machine_score"]) == (after["score"]["total"], machine)
    assert client.get(f"/api/calls?max_score={machine}", headers=tokens["qa"]).json()["total"] == (
        1 if bobs_report()["score"]["total"] <= machine else 0)
    # The agent sees the new score and the note on their call's page.
    alice, _ = session(site, "alice")
    page = alice.get("/calls/d02_fault_rude").text
    assert "录音确认是客户的话" in page and f"复核后 {after['score']['total']} 分" in page


def test_upheld_keeps_the_score_and_reviewers_add_missed_deductions(site):
    client, tokens = api(site), site.state.tokens
    machine = client.get("/calls/b01_bob/report.json", headers=tokens["bob"]).json()["score"]["total"]
    appeal_id = client.post("/api/calls/b01_bob/appeals", headers=tokens["bob"],
                            json={"deduction": 0, "reason": "我说了再见"}).json()["appeal_id"]
    assert client.post(f"/api/appeals/{appeal_id}/decision", headers=tokens["sup"],
                       json={"decision": "upheld", "note": "结束语不在最后20秒内"}).status_code == 200
    assert client.get("/calls/b01_bob/report.json", headers=tokens["bob"]).json()["score"]["total"] == machine
    added = client.post("/api/calls/b01_bob/deductions", headers=tokens["qa"],
                        json={"reason": "服务禁语：“你自己看”", "points": 5, "start": 12.5, "source": "bb.forbidden.x"})
    assert added.status_code == 201
    report = client.get("/calls/b01_bob/report.json", headers=tokens["bob"]).json()
    assert report["score"]["total"] == max(0, machine - 5)
    assert report["score"]["deductions"][-1]["added_by"] == "qa"
    assert [h["action"] for h in report["reviewed"]["history"]] == ["appeal", "upheld", "added_deduction"]
    assert client.post("/api/calls/b01_bob/deductions", headers=tokens["bob"],
                       json={"reason": "x", "points": 5}).status_code == 403


def test_agents_appeal_only_their_own_calls_and_never_decide(site):
    client, tokens = api(site), site.state.tokens
    alice = tokens["alice"]
    url = "/api/calls/d02_fault_rude/appeals"
    # Another agent's call, or one that does not exist: the same 404.
    assert client.post("/api/calls/b01_bob/appeals", headers=alice, json={"deduction": 0, "reason": "x"}).status_code == 404
    assert client.post("/api/calls/nope/appeals", headers=alice, json={"deduction": 0, "reason": "x"}).status_code == 404
    # Forged and out-of-range indexes, empty or oversized reasons, bodies that are not objects.
    deductions = len(client.get("/calls/d02_fault_rude/report.json", headers=alice).json()["score"]["deductions"])
    for forged in ("0", 0.0, 1.5, True, None, -1, deductions, 2**64, [0], {"i": 0}):
        assert client.post(url, headers=alice, json={"deduction": forged, "reason": "x"}).status_code == 422, forged
    for reason in ("", "   ", None, 5, "长" * 2001):
        assert client.post(url, headers=alice, json={"deduction": 0, "reason": reason}).status_code == 422, reason
    for body in (b"[0]", b"not json", b""):
        assert client.post(url, headers={**alice, "Content-Type": "application/json"}, content=body).status_code == 422
    # Reviewers decide; they do not appeal.
    assert client.post(url, headers=tokens["qa"], json={"deduction": 0, "reason": "x"}).status_code == 403
    appeal_id = client.post(url, headers=alice, json={"deduction": 0, "reason": "第一次"}).json()["appeal_id"]
    assert client.post(url, headers=alice, json={"deduction": 0, "reason": "再一次"}).status_code == 409
    # Agents never decide, not even their own appeal; Bob cannot see Alice's appeals.
    decision = f"/api/appeals/{appeal_id}/decision"
    for agent in ("alice", "bob"):
        assert client.post(decision, headers=tokens[agent], json={"decision": "overturned", "note": "x"}).status_code == 403
    assert client.get("/api/appeals", headers=tokens["bob"]).json() == []
    assert [a["appeal_id"] for a in client.get("/api/appeals", headers=alice).json()] == [appeal_id]
    for body in ({"decision": "maybe", "note": "x"}, {"decision": "overturned", "note": ""}, {"decision": "overturned"}):
        assert client.post(decision, headers=tokens["qa"], json=body).status_code == 422, body
    assert client.post("/api/appeals/999999/decision", headers=tokens["qa"],
                       json={"decision": "upheld", "note": "x"}).status_code == 404
    assert client.post(f"/api/appeals/{2**63}/decision", headers=tokens["qa"],
                       json={"decision": "upheld", "note": "x"}).status_code == 422
    assert client.post(decision, headers=tokens["qa"], json={"decision": "upheld", "note": "维持"}).status_code == 200
    # A decision stands.
    assert client.post(decision, headers=tokens["sup"], json={"decision": "overturned", "note": "改"}).status_code == 409
    assert client.get("/calls/d02_fault_rude/report.json", headers=alice).json()["reviewed"]["changed"] is False
    # Not logged in at all.
    assert client.post(url, json={"deduction": 0, "reason": "x"}).status_code == 401


def test_session_requests_need_the_csrf_token(site):
    alice, csrf = session(site, "alice")
    url = "/api/calls/d02_fault_rude/appeals"
    assert alice.post(url, json={"deduction": 1, "reason": "x"}).status_code == 403
    assert alice.post(url, json={"deduction": 1, "reason": "x"}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert alice.post("/calls/d02_fault_rude/appeals", data={"deduction": "1", "reason": "x"}).status_code == 403
    assert alice.post("/calls/b01_bob/appeals", data={"deduction": "1", "reason": "x", "csrf_token": csrf}).status_code == 404
    assert alice.post("/calls/d02_fault_rude/deductions", data={"reason": "x", "points": "5", "csrf_token": csrf}
                      ).status_code == 403
    assert alice.get("/calls/b01_bob").status_code == 404 and "b01_bob" not in alice.get("/reviews").text
    filed = alice.post("/calls/d02_fault_rude/appeals", data={"deduction": "1", "reason": "表单申诉", "csrf_token": csrf},
                       follow_redirects=False)
    assert filed.status_code == 303 and filed.headers["location"].startswith("/calls/d02_fault_rude")
    qa, qa_csrf = session(site, "qa")
    appeal_id = qa.get("/api/appeals?status=open").json()[0]["appeal_id"]
    assert qa.post(f"/appeals/{appeal_id}/decision", data={"decision": "overturned", "note": "x"}).status_code == 403
    decided = qa.post(f"/appeals/{appeal_id}/decision", follow_redirects=False,
                      data={"decision": "overturned", "note": "表单复核", "csrf_token": qa_csrf, "next": "//evil.example"})
    assert decided.status_code == 303 and decided.headers["location"] == "/"  # no open redirect
    assert qa.get("/api/appeals?status=decided").json()[0]["note"] == "表单复核"
    assert alice.post(f"/appeals/{appeal_id}/decision", data={"decision": "upheld", "note": "x", "csrf_token": csrf}
                      ).status_code == 403


def test_false_alarms_and_rule_health(site):
    client, tokens = api(site), site.state.tokens
    store = site.state.store
    report = client.get("/calls/d02_fault_rude/report.json", headers=tokens["alice"]).json()
    forbidden = [i for i, d in enumerate(report["score"]["deductions"]) if d["source"].startswith("bb.forbidden")]
    overturned_source = report["score"]["deductions"][forbidden[0]]["source"]
    for index, decision in ((forbidden[0], "overturned"), (forbidden[1], "upheld")):
        appeal_id = client.post("/api/calls/d02_fault_rude/appeals", headers=tokens["alice"],
                                json={"deduction": index, "reason": "x"}).json()["appeal_id"]
        client.post(f"/api/appeals/{appeal_id}/decision", headers=tokens["qa"], json={"decision": decision, "note": "y"})
    alert_id = store.save_alert({"call_id": "live-1", "kind": "forbidden", "phrase_id": overturned_source,
                                 "canonical": "c", "heard": "c", "start": 1.0, "end": 2.0}, agent_id="A1002")
    assert client.post(f"/api/alerts/{alert_id}/false-alarm", headers=tokens["alice"], json={"note": "x"}).status_code == 403
    marked = client.post(f"/api/alerts/{alert_id}/false-alarm", headers=tokens["qa"], json={"note": "客户的话"})
    assert marked.status_code == 200 and marked.json()["false_alarm_by"] == "qa"
    assert client.post("/api/alerts/999999/false-alarm", headers=tokens["qa"], json={}).status_code == 404
    health = client.get("/api/rules", headers=tokens["qa"]).json()
    assert health[0]["source"] == overturned_source  # the worst measured precision comes first
    assert (health[0]["confirmed"], health[0]["overturned"], health[0]["false_alarms"], health[0]["precision"]) == (0, 2, 1, 0.0)
    upheld = next(r for r in health if r["source"] == report["score"]["deductions"][forbidden[1]]["source"])
    assert (upheld["confirmed"], upheld["overturned"], upheld["precision"]) == (1, 0, 1.0)
    assert client.get("/api/rules", headers=tokens["alice"]).status_code == 403
    # A check id names a different rule in each phrasebook.
    other = {**bobs_report(), "call_id": "cs01", "phrasebook": {"id": "customer_service", "version": "1", "title": "客服"}}
    store.save_report(other)
    farewells = [(r["phrasebook"], r["phrasebook_title"], r["events"]) for r in client.get("/api/rules", headers=tokens["qa"]).json()
                 if r["source"] == "farewell"]
    assert sorted(farewells) == [("broadband", report["phrasebook"]["title"], 2), ("customer_service", "客服", 1)]
    with store.engine.connect() as conn:
        trail = conn.execute(sa.text("SELECT actor, action, why FROM audit_log ORDER BY id")).all()
    assert [tuple(t) for t in trail] == [("alice", "appeal", "x"), ("qa", "overturned", "y"), ("alice", "appeal", "x"),
                                         ("qa", "upheld", "y"), ("qa", "false_alarm", "客户的话")]


def test_search_filters_paging_and_sorting(site):
    client, tokens = api(site), site.state.tokens
    qa = tokens["qa"]

    def ids(query: str, who: str = "qa") -> list[str]:
        return [c["call_id"] for c in client.get(f"/api/calls?{query}", headers=tokens[who]).json()["calls"]]

    # Chinese full text: long phrases through the trigram index, two characters and one by scanning.
    assert sorted(ids("q=不归我管")) == ["b01_bob", "d02_fault_rude"]
    assert sorted(ids("q=宽带")) == ["b01_bob", "d02_fault_rude"]
    assert ids("q=从没说过的一句话") == [] and ids("q=%25") == [] and ids("q=_bo_") == []
    assert ids("q=不归我管", who="alice") == ["d02_fault_rude"]
    assert ids("q=b01") == ["b01_bob"]  # a call id is found too
    # The call's own time, not the import time.
    calls = client.get("/api/calls", headers=qa).json()["calls"]
    assert [c["call_id"] for c in calls] == ["b01_bob", "d02_fault_rude"]
    assert dt.datetime.fromisoformat(calls[1]["started_at"]) == MONDAY and calls[1]["time_from"] == "recording"
    assert ids("since=2026-11-24") == ["b01_bob"] and ids("until=2026-11-23") == ["d02_fault_rude"]
    assert ids("since=2026-11-23T10:00:00%2B00:00") == ["b01_bob"]
    assert ids("sort=when") == ["d02_fault_rude", "b01_bob"]
    # Failed checks are violations too.
    assert sorted(ids("violation=farewell")) == ["b01_bob", "d02_fault_rude"] and ids("violation=greeting") == []
    # Paging.
    first = client.get("/api/calls?per_page=1", headers=qa).json()
    second = client.get("/api/calls?per_page=1&page=2", headers=qa).json()
    assert first["total"] == second["total"] == 2 and first["calls"][0]["call_id"] != second["calls"][0]["call_id"]
    assert client.get("/api/calls?per_page=1&page=3", headers=qa).json()["calls"] == []
    # An agent never sees another agent's calls, whatever they ask for.
    assert ids("agent=B2002", who="alice") == ["d02_fault_rude"]
    assert client.get("/api/calls").status_code == 401


def test_csv_export_takes_the_same_filters(site):
    client, tokens = api(site), site.state.tokens
    site.state.store.save_report({**bobs_report(), "call_id": "=cmd|' /C calc'!A0"}, "/x.wav")
    exported = client.get("/calls.csv?q=不归我管", headers=tokens["qa"])
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert sorted(r["call_id"] for r in rows) == sorted(["b01_bob", "d02_fault_rude", "'=cmd|' /C calc'!A0"])
    alice_row = next(r for r in rows if r["call_id"] == "d02_fault_rude")
    assert alice_row["agent_name"] == "alice" and "不归我管" in alice_row["violation_details"]
    assert "未通过" in alice_row["violation_details"] and alice_row["phrasebook"] != "broadband"  # the title
    mine = client.get("/calls.csv", headers=tokens["alice"]).content.decode("utf-8-sig")
    assert "d02_fault_rude" in mine and "b01_bob" not in mine
    import openpyxl

    workbook = client.get("/calls.xlsx?q=不归我管", headers=tokens["qa"])
    sheet = openpyxl.load_workbook(io.BytesIO(workbook.content)).active
    table = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert table[0][0] == "通话" and sorted(r[0] for r in table[1:]) == sorted(r["call_id"] for r in rows)
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)  # no formula from a call id
    assert next(r for r in table if r[0] == "d02_fault_rude")[10] == alice_row["violation_details"]
    own = openpyxl.load_workbook(io.BytesIO(client.get("/calls.xlsx", headers=tokens["alice"]).content)).active
    assert [cell.value for cell in own["A"]] == ["通话", "d02_fault_rude"]


def test_pages_show_names_titles_and_the_queue(site):
    qa, _ = session(site, "qa")
    client, tokens = api(site), site.state.tokens
    client.post("/api/calls/d02_fault_rude/appeals", headers=tokens["alice"], json={"deduction": 1, "reason": "申诉理由甲"})
    queue = qa.get("/reviews").text
    assert "申诉理由甲" in queue and "/calls/d02_fault_rude/audio#t=" in queue  # the player starts at the event
    listing = qa.get("/calls?q=不归我管&sort=score").text
    assert "家庭宽带维护人员行为规范" in listing and ">alice<" in listing and ">bob<" in listing
    overview = qa.get("/dashboard").text
    assert "待复核申诉" in overview and "申诉理由甲" in overview and "最差通话" in overview
    login_page = client.get("/login").text
    assert "monitor users add" in login_page and "--role supervisor" in login_page
    for status_page in (qa.get("/calls/nope", headers={"Accept": "text/html"}),):
        assert status_page.status_code == 404 and "找不到" in status_page.text


def test_schema_4_migration_keeps_data_and_sessions(db_url, tmp_path):
    """An older database (SQLite: version 3's tables as they were; PostgreSQL: version 4) is brought up to date
    with its calls searchable and its sessions kept."""
    if db_url.startswith("sqlite"):
        path = tmp_path / "old.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            for statement in (Path(__file__).parent / "data" / "schema_v3.sqlite.sql").read_text().split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
            conn.exec_driver_sql("INSERT INTO schema_migrations VALUES (3, CURRENT_TIMESTAMP)")
        db_url = f"sqlite:///{path}"
    else:
        open_store(db_url).close()
        engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:
            undo_schema_5(conn)
    report = make_report()
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO calls (call_id, agent_id, phrasebook, audio, score, score_max, scored_at, report) "
                             "VALUES ('old', 'A1002', 'broadband', '/x.wav', :score, 100, CURRENT_TIMESTAMP, :report)"),
                     {"score": report["score"]["total"], "report": __import__("json").dumps(report, ensure_ascii=False)})
        conn.execute(sa.text("INSERT INTO checks (call_id, check_id, passed) VALUES ('old', 'farewell', false)"))
        conn.execute(sa.text("INSERT INTO users (name, role, agent_id, password_hash, created_at) "
                             "VALUES ('alice', 'agent', 'A1002', :h, CURRENT_TIMESTAMP)"), {"h": auth.hash_password(PASSWORD)})
        conn.execute(sa.text("INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) "
                             "SELECT :t, id, 'csrf', :now, :later FROM users WHERE name = 'alice'"),
                     {"t": auth.digest("old cookie"), "now": dt.datetime.now(dt.timezone.utc),
                      "later": dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)})
    engine.dispose()
    store = open_store(db_url)
    assert store.schema_version() == SCHEMA_VERSION == 6
    assert auth.user_for_session(store, "old cookie").name == "alice"  # logged in before the upgrade, still in
    user = auth.check_password(store, "alice", PASSWORD)
    cookie = auth.start_session(store, user, dt.timedelta(hours=1))
    store.close()
    store = open_store(db_url)  # opening again migrates nothing and keeps the session
    assert auth.user_for_session(store, cookie).name == "alice"
    store.add_user("quinn", "qa", None, auth.hash_password(PASSWORD))
    with pytest.raises(sa.exc.IntegrityError):
        store.add_user("mallory", "admin", None, None)
    assert [c["call_id"] for c in store.list_calls(CallFilter(q="不归我管"))] == ["old"]
    if store.engine.dialect.name == "postgresql":  # the trigram index, wherever the server has the extension
        with store.engine.connect() as conn:
            available = conn.execute(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")).scalar()
            indexed = conn.execute(sa.text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_calls_transcript_trgm'")
                                   ).scalar()
        assert indexed == available
    row = store.list_calls()[0]
    assert row["phrasebook_title"] == report["phrasebook"]["title"] and row["score"] == report["score"]["total"]
    farewell = next(c for c in report["checks"] if c["id"] == "farewell")
    assert next(v for v in store.violation_types() if v["phrase_id"] == "farewell")["canonical"] == farewell["description"]
    assert store.file_appeal("old", 0, "x", "alice", "agent") == 1
    store.close()


def test_overview_counts_today_this_week_and_the_trend(site):
    store = site.state.store
    now = MONDAY + dt.timedelta(days=2, hours=3)
    overview = store.overview(now=now)
    assert overview["week"]["calls"] == 2 and overview["period"]["calls"] == 2
    assert overview["today"]["calls"] == 1  # Bob's call, started two days after Monday
    assert {w["call_id"] for w in overview["worst"]} == {"d02_fault_rude", "b01_bob"}
    assert {a["agent_id"] for a in overview["agents"]} == {"A1002", "B2002"}
    assert sum(d["calls"] for d in overview["trend"]) == 2 and len(overview["trend"]) == overview["days"]
    assert overview["violations"] and all(v["count"] >= 1 for v in overview["violations"])
    client = api(site)
    assert client.get("/api/overview", headers=site.state.tokens["alice"]).status_code == 403
    served = client.get("/api/overview", headers=site.state.tokens["qa"]).json()
    assert set(served) == set(overview) and len(served["trend"]) == 30


def test_call_time_comes_from_the_manifest_else_the_file(tmp_path):
    """``monitor score --db`` saves when the call took place: the manifest's started_at, else the file's mtime."""
    import os
    import shutil

    from monitor.batch import BatchOptions, plan_jobs, recording_time
    from monitor.errors import UsageError

    wavs = []
    for name in ("a.wav", "b.wav"):
        shutil.copy(Path(__file__).parent.parent / "samples" / "d02_fault_rude.wav", tmp_path / name)
        wavs.append(str(tmp_path / name))
    os.utime(wavs[1], (1_700_000_000, 1_700_000_000))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,agent_id,started_at\na.wav,A1,2026-11-20T09:30:00+08:00\nb.wav,A2,\n", encoding="utf-8")
    jobs, _ = plan_jobs(wavs, BatchOptions(out_dir=str(tmp_path / "out"), manifest=str(manifest)))
    assert recording_time(jobs[0]) == dt.datetime(2026, 11, 20, 1, 30, tzinfo=dt.timezone.utc)
    assert recording_time(jobs[1]) == dt.datetime.fromtimestamp(1_700_000_000, dt.timezone.utc)
    manifest.write_text("path,started_at\na.wav,last tuesday\n", encoding="utf-8")
    with pytest.raises(UsageError, match="line 2: started_at"):
        plan_jobs(wavs, BatchOptions(out_dir=str(tmp_path / "out"), manifest=str(manifest)))


def test_odd_values_never_give_a_server_error(site):
    """NUL bytes (PostgreSQL refuses them in text), huge numbers, other types: 4xx or ignored, never 500."""
    client = TestClient(site, base_url="http://127.0.0.1", raise_server_exceptions=False)
    tokens = site.state.tokens
    odd = ["\x00", "a\x00b", "9" * 30, "-1", "1e309", "nan", "%", "_", '"', "'", "\\", "长" * 300]
    failures = []
    for value in odd:
        for name in ("q", "agent", "violation", "since", "sort", "page", "per_page", "min_score"):
            for path in ("/api/calls", "/calls.csv", "/calls"):
                response = client.get(path, params={name: value}, headers=tokens["qa"])
                if response.status_code >= 500:
                    failures.append((path, name, value[:10], response.status_code))
        for who, path, body in (
            ("alice", "/api/calls/d02_fault_rude/appeals", {"deduction": 0, "reason": value}),
            ("qa", "/api/calls/d02_fault_rude/deductions", {"reason": value, "points": 5, "source": value,
                                                           "article": value}),
            ("qa", "/api/appeals/1/decision", {"decision": "upheld", "note": value}),
            ("qa", "/api/alerts/1/false-alarm", {"note": value}),
        ):
            response = client.post(path, json=body, headers=tokens[who])
            if response.status_code >= 500:
                failures.append((path, value[:10], response.status_code))
    assert failures == []


def test_concurrent_appeals_and_decisions_leave_one_winner(db_url):
    """Eight processes' worth of racing requests: one appeal per deduction, one decision per appeal."""
    from concurrent.futures import ThreadPoolExecutor

    from monitor.store import ReviewRefused

    store = open_store(db_url)
    store.save_report(make_report())

    def attempt(action, *args) -> str:
        try:
            action(*args)
            return "ok"
        except ReviewRefused as refused:
            return refused.reason

    with ThreadPoolExecutor(8) as pool:
        appeals = list(pool.map(lambda i: attempt(store.file_appeal, "d02_fault_rude", 1, f"r{i}", "alice", "agent"),
                                range(8)))
        assert sorted(appeals) == ["conflict"] * 7 + ["ok"]
        appeal_id = store.list_appeals()[0]["id"]
        decisions = list(pool.map(lambda i: attempt(store.decide_appeal, appeal_id, ("upheld", "overturned")[i % 2],
                                                    f"n{i}", "qa", "qa"), range(8)))
    assert sorted(decisions) == ["conflict"] * 7 + ["ok"]
    with store.engine.connect() as conn:
        actions = conn.execute(sa.select(sa.column("action")).select_from(sa.table("audit_log"))).scalars().all()
    assert sorted(actions)[:1] == ["appeal"] and len(actions) == 2
    store.close()
