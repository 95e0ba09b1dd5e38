"""The web app (`monitor serve`) over a store filled by the real pipeline: access, safety, live ingest."""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from web_helpers import PASSWORD, SAMPLES, LiveServer, login, scored_db_copy, stream_call

from monitor.store import SCHEMA_VERSION, open_store
from monitor.web import auth
from monitor.web.app import create_app


@pytest.fixture(scope="module")
def db_url(transcriber, tmp_path_factory):
    return scored_db_copy(transcriber, tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def app(db_url, transcriber):
    return create_app(db_url, transcriber=transcriber)


def client_for(app, name: str | None) -> TestClient:
    client = TestClient(app, base_url="http://127.0.0.1")
    if name:
        assert login(client, name).status_code == 303
    return client


def test_logged_out_visitor_gets_nothing(app):
    client = client_for(app, None)
    for page in ("/", "/dashboard", "/calls", "/calls/d02_fault_rude", "/me"):
        response = client.get(page, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), page
    for resource in ("/calls/d02_fault_rude/audio", "/calls/d02_fault_rude/report.json", "/calls/d02_fault_rude/alerts",
                     "/api/alerts", "/api/live", "/events"):
        assert client.get(resource).status_code == 401, resource
    assert client.post("/alerts/1/ack").status_code == 401


def test_agent_sees_only_own_calls(app):
    alice = client_for(app, "alice")  # A1002: d02 and d06
    listing = alice.get("/calls").text
    assert "d02_fault_rude" in listing and "d06_no_greeting_rude" in listing
    assert "d09_service_condescending" not in listing
    # Bob's call (B2002) is not there for Alice, however she asks, and it looks the same as a missing call.
    for resource in ("/calls/d09_service_condescending", "/calls/d09_service_condescending/audio",
                     "/calls/d09_service_condescending/report.json", "/calls/d09_service_condescending/alerts"):
        assert alice.get(resource).status_code == 404, resource
    assert alice.get("/calls?agent=B2002").text.count("d09_service_condescending") == 0
    assert alice.get("/calls/d02_fault_rude").status_code == 200
    assert alice.get("/calls/d02_fault_rude/audio").content[:4] == b"RIFF"
    assert alice.get("/calls/d02_fault_rude/report.json").json()["agent_id"] == "A1002"
    # Supervisor-only pages and actions.
    assert alice.get("/dashboard").status_code == 403
    assert alice.get("/events").status_code == 403
    assert alice.post("/alerts/1/ack", headers={"X-CSRF-Token": "x"}).status_code == 403


def test_supervisor_sees_all_and_filters(app):
    sup = client_for(app, "sup")
    listing = sup.get("/calls").text
    assert all(call in listing for call in ("d02_fault_rude", "d06_no_greeting_rude", "d09_service_condescending"))
    assert sup.get("/calls/d09_service_condescending/audio").headers["content-type"] == "audio/x-wav"
    only_b = sup.get("/calls?agent=B2002").text
    assert "d09_service_condescending" in only_b and "d02_fault_rude" not in only_b
    report = sup.get("/calls/d02_fault_rude/report.json").json()
    forbidden = [e["phrase_id"] for e in report["events"] if e["kind"] == "forbidden"]
    assert forbidden
    by_violation = sup.get(f"/calls?violation={forbidden[0]}").text
    assert "d02_fault_rude" in by_violation and "d09_service_condescending" not in by_violation
    low = sup.get(f"/calls?max_score={report['score']['total'] - 1}").text
    assert "d02_fault_rude" not in low
    assert "d02_fault_rude" not in sup.get("/calls?since=2000-01-01&until=2000-01-02").text


def test_call_page_is_the_report_with_highlights_and_audio(app):
    page = client_for(app, "sup").get("/calls/d02_fault_rude").text
    assert '<audio id="player"' in page and 'src="/calls/d02_fault_rude/audio"' in page
    assert "<mark" in page  # the heard forbidden phrase is highlighted in the transcript
    assert "退出登录" in page  # with the app's bar on top


def test_agent_portal_trend_and_frequent_violations(app):
    page = client_for(app, "alice").get("/me").text
    assert page.count("<circle") == 2  # one dot per scored call of A1002
    assert "应改说" in page  # the prescribed phrasing for a frequent violation
    assert "d09_service_condescending" not in page


def test_transcript_script_renders_inert(db_url, app, transcriber):
    store = open_store(db_url)
    report = store.get_report("d02_fault_rude")
    report = {**report, "call_id": "xss_call", "transcript": [
        {**report["transcript"][0], "text": '<script>alert("x")</script><img src=x onerror=alert(1)>'}]}
    store.save_report(report)
    page = client_for(app, "sup").get("/calls/xss_call").text
    assert '<script>alert("x")</script>' not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(" in page


def test_audio_is_served_by_call_id_only(app):
    sup = client_for(app, "sup")
    for attempt in ("/calls/..%2F..%2F..%2Fetc%2Fpasswd/audio", "/calls/../../etc/passwd/audio",
                    "/calls/nonexistent/audio"):
        response = sup.get(attempt)
        assert response.status_code == 404 and b"root:" not in response.content, attempt
    # A path in the query is ignored: it is still d02's recording.
    response = sup.get("/calls/d02_fault_rude/audio?path=/etc/passwd")
    assert response.content == (SAMPLES / "d02_fault_rude.wav").read_bytes()


def test_wrong_password_does_not_reveal_whether_user_exists(app):
    client = client_for(app, None)
    wrong_password = login(client, "alice", "not the password")
    no_such_user = login(client, "mallory", "not the password")
    assert wrong_password.status_code == no_such_user.status_code == 401
    assert "用户名或密码错误" in wrong_password.text
    strip = lambda html: html.split('name="csrf_token" value="')[0]  # noqa: E731 (the token differs)
    assert strip(wrong_password.text) == strip(no_such_user.text)
    assert auth.SESSION_COOKIE not in client.cookies


def test_session_cookie_flags_csrf_and_logout(app):
    client = TestClient(app, base_url="http://127.0.0.1")
    # A login form posted without its token (as from another site) is refused.
    assert client.post("/login", data={"name": "sup", "password": PASSWORD}).status_code == 403
    response = login(client, "sup")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert client.post("/logout", follow_redirects=False).status_code == 403  # no CSRF token
    token = client.get("/dashboard").text.split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set(auth.SESSION_COOKIE, cookie.split(";")[0].split("=", 1)[1])
    assert client.get("/dashboard", follow_redirects=False).status_code == 303  # the old cookie is dead


def test_cli_users_and_token(tmp_path, monkeypatch, capsys):
    import io

    from monitor.cli import main

    db = str(tmp_path / "cli.db")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "--db", db, "add", "carol", "--role", "agent", "--agent-id", "A1001", "--password-stdin"]) == 0
    assert main(["users", "--db", db, "token", "carol"]) == 0
    token = capsys.readouterr().out.strip()
    store = open_store(db)
    row = store.get_user(name="carol")
    assert row["agent_id"] == "A1001" and row["password_hash"].startswith("$argon2")
    assert token not in json.dumps(row, default=str) and row["api_token_hash"] == auth.digest(token)
    assert auth.check_password(store, "carol", PASSWORD).agent_id == "A1001"
    assert main(["users", "--db", db, "token", "nobody"]) == 1


def test_live_stream_alerts_are_persisted_pushed_replayed_and_scored(db_url, app):
    store = open_store(db_url)
    token = auth.issue_api_token(store, "sup")
    agent_token = auth.issue_api_token(store, "alice")
    with LiveServer(app) as server:
        # An agent's token cannot stream, and nor can no token.
        from websockets.sync.client import connect

        for bad in ("", agent_token):
            with pytest.raises(Exception):
                with connect(f"ws://127.0.0.1:{server.port}/ws/ingest?token={bad}") as ws:
                    ws.send(json.dumps({"uid": "x"}))
                    ws.recv(timeout=5)
        before = max((a["id"] for a in store.alerts_after(0)), default=0)
        messages = stream_call(server.port, token, str(SAMPLES / "d06_no_greeting_rude.wav"), "live-d06", "A1002",
                               "broadband")
        assert messages[0]["message"] == "SERVER_READY"
        call_id = messages[0]["call_id"]  # the server names the call; the client's id is its external_ref
        pushed = [m["alert"] for m in messages if "alert" in m]
        assert pushed, "the stream raised no alert"
        saved = store.alerts_after(before)
        assert [a["phrase_id"] for a in saved] == [a["phrase_id"] for a in pushed]
        assert all(a["agent_id"] == "A1002" and a["severity"] for a in saved)
        for _ in range(100):  # the report is saved just after the connection closes
            if store.has_report(call_id):
                break
            time.sleep(0.1)
        assert store.call_row(call_id)["agent_id"] == "A1002"
        assert store.get_report(call_id)["external_ref"] == "live-d06"

        # A dashboard reconnecting with Last-Event-ID gets exactly the alerts after it, from the database.
        with httpx.Client(base_url=server.url) as http:
            assert login(http, "sup").status_code == 303
            replayed = []
            with http.stream("GET", "/events", headers={"Last-Event-ID": str(before)}, timeout=10) as events:
                for line in events.iter_lines():
                    if line.startswith("data: "):
                        replayed.append(json.loads(line[6:]))
                    if len(replayed) == len(saved):
                        break
            assert [e["id"] for e in replayed] == [a["id"] for a in saved]

    # The agent sees the alerts of their own live call; another agent does not.
    alice, bob = client_for(app, "alice"), client_for(app, "bob")
    assert {a["id"] for a in alice.get("/api/alerts").json()} >= {a["id"] for a in saved}
    assert alice.get(f"/calls/{call_id}/alerts").status_code == 200
    assert bob.get("/api/alerts").json() == []
    assert bob.get(f"/calls/{call_id}/alerts").status_code == 404
    # Acknowledging needs the session's CSRF token.
    sup = client_for(app, "sup")
    assert sup.post(f"/alerts/{saved[0]['id']}/ack").status_code == 403
    csrf = sup.get("/dashboard").text.split('name="csrf-token" content="')[1].split('"')[0]
    assert sup.post(f"/alerts/{saved[0]['id']}/ack", headers={"X-CSRF-Token": csrf}).json()["acknowledged"]
    assert store.alerts_after(saved[0]["id"] - 1)[0]["acknowledged_by"] == "sup"


def test_serve_starts_on_an_empty_sqlite_database(tmp_path):
    app = create_app(str(tmp_path / "fresh.db"))
    client = TestClient(app)
    assert client.get("/healthz").json() == {"ok": True, "schema": SCHEMA_VERSION}
    assert client.get("/login").status_code == 200


def test_a_version_1_database_is_migrated_for_the_web_app(tmp_path):
    import sqlalchemy as sa

    path = tmp_path / "v1.db"
    open_store(str(path)).close()
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # take it back to version 1's schema
        for statement in ("DROP TABLE live_segments", "DROP TABLE live_calls", "DROP TABLE nodes", "DROP TABLE sessions", "DROP INDEX ix_alerts_agent_id", "ALTER TABLE alerts DROP COLUMN agent_id",
                          "ALTER TABLE alerts DROP COLUMN severity", "ALTER TABLE users DROP COLUMN disabled_at",
                          "DELETE FROM schema_migrations",
                          "INSERT INTO schema_migrations VALUES (1, '2024-01-01 00:00:00')"):
            conn.exec_driver_sql(statement)
    engine.dispose()
    store = open_store(str(path))
    assert store.schema_version() == SCHEMA_VERSION
    alert_id = store.save_alert({"call_id": "c1", "kind": "forbidden", "phrase_id": "p", "canonical": "x", "heard": "x"},
                                agent_id="A1", severity="major")
    assert store.alerts_after(0, agent_id="A1")[0]["id"] == alert_id
    store.add_user("u", "supervisor", None, auth.hash_password(PASSWORD))
    user = auth.check_password(store, "u", PASSWORD)
    assert auth.user_for_session(store, auth.start_session(store, user, dt.timedelta(hours=1))).name == "u"
    assert store.update_user("u", disabled=True) and auth.check_password(store, "u", PASSWORD) is None  # version 3
