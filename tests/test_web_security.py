"""Hardening of the web app and `monitor users`/`monitor serve`, each shown against a real server on loopback.

Login throttling, the Content-Security-Policy, Secure cookies and proxy
headers, sessions ending when a password changes or a user is disabled,
numeric edge values in requests, Chinese error pages, and the CLI's handling
of a missing terminal and a busy port. Different client addresses are real:
Linux routes all of 127.0.0.0/8 to loopback, so a client bound to 127.0.0.2
is another address to the server.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from pg import postgres_server, postgres_url  # noqa: F401 (fixtures)
from web_helpers import PASSWORD, LiveServer, login, scored_db_copy, undo_schema_5

from monitor.cli import main as cli
from monitor.report import render_html
from monitor.store import SCHEMA_VERSION, open_store
from monitor.web import auth
from monitor.web.app import WebOptions, create_app
from monitor.web.throttle import FailureWindow, LoginThrottle, ThrottleOptions

THROTTLE = ThrottleOptions()  # the limits `monitor serve` uses
SMALL = ThrottleOptions(per_account_address=2, per_address=4, per_account=6)  # the same rules in fewer password checks


@pytest.fixture
def db_url(tmp_path) -> str:
    """A fresh database with a supervisor and two agents (no calls: nothing here needs the model)."""
    url = f"sqlite:///{tmp_path / 'users.db'}"
    store = open_store(url)
    password_hash = auth.hash_password(PASSWORD)
    for name, role, agent_id in (("sup", "supervisor", None), ("alice", "agent", "A1002"), ("bob", "agent", "B2002")):
        store.add_user(name, role, agent_id, password_hash)
    store.close()
    return url


def client_from(server: LiveServer, address: str = "127.0.0.1", **headers) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (any 127.x.y.z)."""
    return httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address=address), headers=headers,
                        timeout=30)


def wrong_logins(client: httpx.Client, name: str, count: int) -> list[int]:
    return [login(client, name, "not the password").status_code for _ in range(count)]


# --- 1. throttling ---------------------------------------------------------------------------------------------
def test_hammering_one_account_is_throttled_but_the_real_user_still_logs_in(db_url):
    with LiveServer(create_app(db_url)) as server:
        attacker = client_from(server, "127.0.0.1")
        assert wrong_logins(attacker, "alice", THROTTLE.per_account_address) == [401] * THROTTLE.per_account_address
        refused = login(attacker, "alice", "another guess")
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= THROTTLE.window_s
        assert "登录失败次数过多" in refused.text
        # Even the right password is refused from there (it is not even checked), and a forged
        # X-Forwarded-For does not make the attacker someone else: no proxy is trusted by default.
        assert login(attacker, "alice").status_code == 429
        spoofing = client_from(server, "127.0.0.1", **{"X-Forwarded-For": "203.0.113.9"})
        assert login(spoofing, "alice", "guess").status_code == 429
        # The real user, from another address, logs in: the attacker's refused tries did not count against the account.
        assert login(client_from(server, "127.0.0.2"), "alice").status_code == 303


def test_one_address_cycling_names_is_throttled(db_url):
    with LiveServer(create_app(db_url, WebOptions(throttle=SMALL))) as server:
        attacker = client_from(server, "127.0.0.3")
        statuses = [login(attacker, f"user{i}", "guess").status_code for i in range(SMALL.per_address)]
        assert statuses == [401] * SMALL.per_address
        fresh_name = login(attacker, "sup", PASSWORD)
        assert fresh_name.status_code == 429 and int(fresh_name.headers["retry-after"]) > 0
        assert login(client_from(server, "127.0.0.4"), "sup").status_code == 303


def test_many_addresses_on_one_account_hit_the_account_limit(db_url):
    with LiveServer(create_app(db_url, WebOptions(throttle=SMALL))) as server:
        for i in range(SMALL.per_account // SMALL.per_account_address):
            assert wrong_logins(client_from(server, f"127.0.1.{i + 1}"), "bob", SMALL.per_account_address) == [
                401] * SMALL.per_account_address
        # The account has had its share of guesses in this window, from whatever address.
        assert login(client_from(server, "127.0.2.1"), "bob").status_code == 429
        assert login(client_from(server, "127.0.2.1"), "sup").status_code == 303  # other accounts are untouched


def test_wrong_api_tokens_are_throttled_per_address(db_url):
    token = auth.issue_api_token(open_store(db_url), "sup")
    with LiveServer(create_app(db_url)) as server:
        guesser = client_from(server, "127.0.0.5")
        statuses = [guesser.get("/api/alerts", headers={"Authorization": f"Bearer guess{i}"}).status_code
                    for i in range(THROTTLE.per_address_tokens)]
        assert statuses == [401] * THROTTLE.per_address_tokens
        refused = guesser.get("/api/alerts", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        other = client_from(server, "127.0.0.6")
        assert other.get("/api/alerts", headers={"Authorization": f"Bearer {token}"}).status_code == 200

        # The live ingest counts the same way: the right token is refused from the throttled address.
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        with pytest.raises(InvalidStatus):
            with connect(f"ws://127.0.0.1:{server.port}/ws/ingest?token={token}", source_address=("127.0.0.5", 0)):
                pass


def test_throttle_memory_is_bounded_and_failures_expire():
    now = [0.0]
    window = FailureWindow(limit=3, window_s=60, max_keys=100, clock=lambda: now[0])
    for i in range(10_000):  # an attacker cycling names or addresses
        window.fail(f"name{i}")
    assert len(window) == 100
    assert window.retry_after("name0") == 0  # pushed out: the oldest keys go first
    for _ in range(3):
        window.fail("target")
    assert window.retry_after("target") == 60
    now[0] = 30
    assert window.retry_after("target") == 30
    now[0] = 60.5
    assert window.retry_after("target") == 0  # the failures left the window

    throttle = LoginThrottle(ThrottleOptions(max_keys=50), clock=lambda: now[0])
    for i in range(5_000):
        throttle.login_failed("x" * 100_000, f"10.0.{i // 256}.{i % 256}")
    assert max(len(throttle.pairs), len(throttle.addresses), len(throttle.accounts)) <= 50
    assert all(len(key[0]) <= 255 for key in throttle.pairs._failures)  # a huge name is not kept whole


# --- 2. Content-Security-Policy -------------------------------------------------------------------------------
def csp(response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return {part.split()[0]: part for part in (p.strip() for p in policy.split(";")) if part}


def test_every_page_is_served_under_a_strict_csp(transcriber, tmp_path):
    url = scored_db_copy(transcriber, tmp_path)
    with LiveServer(create_app(url, transcriber=transcriber)) as server:
        sup = client_from(server)
        assert login(sup, "sup").status_code == 303
        pages = {path: sup.get(path) for path in ("/login", "/dashboard", "/calls", "/nope")}
        alice = client_from(server)
        assert login(alice, "alice").status_code == 303
        pages["/me"] = alice.get("/me")
        for path, response in pages.items():
            policy = csp(response)
            assert policy["default-src"] == "default-src 'self'", path
            assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-inline'" not in policy["style-src"], path
            assert policy["frame-ancestors"] == "frame-ancestors 'none'", path
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
            html = response.text
            # No inline code or style: every <script> has a src or is a JSON data block.
            assert all("src=" in tag or 'type="application/json"' in tag for tag in re.findall(r"<script[^>]*>", html)), path
            assert "<style" not in html and " style=" not in html and " onclick=" not in html, path
        scripts = re.findall(r'<script src="([^"]+)"', pages["/dashboard"].text)
        assert scripts == ["/static/dashboard.js"]
        js = sup.get(scripts[0])
        assert js.status_code == 200 and "EventSource" in js.text and "javascript" in js.headers["content-type"]
        assert "text/css" in sup.get("/static/app.css").headers["content-type"]

        # The call report keeps its own script and style, allowed by a fresh nonce per response.
        first, second = sup.get("/calls/d02_fault_rude"), sup.get("/calls/d02_fault_rude")
        nonces = []
        for response in (first, second):
            nonce = re.search(r"'nonce-([^']+)'", csp(response)["script-src"]).group(1)
            assert re.findall(r"<script[^>]*>", response.text) == [f'<script nonce="{nonce}">']
            assert f'<style nonce="{nonce}">' in response.text
            assert "'unsafe-inline'" not in csp(response)["script-src"]
            nonces.append(nonce)
        assert nonces[0] != nonces[1]
    # The file `monitor score` writes stays self-contained: inline script and style, no nonce.
    standalone = render_html(open_store(url).get_report("d02_fault_rude"), None)
    assert "<script>" in standalone and "<style>" in standalone and "/static/" not in standalone


# --- 3. Secure cookies and proxy headers --------------------------------------------------------------------------
def session_cookie_header(response) -> str:
    return next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(auth.SESSION_COOKIE))


def login_via_https_proxy(client: httpx.Client, name: str):
    """Log in as a browser behind an HTTPS proxy would: the login form's cookie is Secure, so httpx (speaking
    plain HTTP to the proxy's side) would not send it back by itself."""
    token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    return client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token, "next": "/"},
                       headers={"Cookie": f"{auth.LOGIN_CSRF_COOKIE}={token}"}, follow_redirects=False)


def test_secure_cookie_flag_and_forwarded_proto_only_from_a_trusted_proxy(db_url):
    https = {"X-Forwarded-Proto": "https"}
    with LiveServer(create_app(db_url)) as direct:  # `monitor serve` without --forwarded-allow-ips
        cookie = session_cookie_header(login_via_https_proxy(client_from(direct, **https), "sup"))
        assert "secure" not in cookie.lower()  # a client cannot claim HTTPS
    with LiveServer(create_app(db_url), forwarded_allow_ips="127.0.0.1") as proxied:
        assert "secure" in session_cookie_header(login_via_https_proxy(client_from(proxied, **https), "sup")).lower()
        assert "secure" not in session_cookie_header(login(client_from(proxied), "sup")).lower()
        # Behind the trusted proxy, throttling counts the address the proxy names, not the proxy's.
        for _ in range(THROTTLE.per_account_address):
            login(client_from(proxied, **{"X-Forwarded-For": "198.51.100.1"}), "bob", "guess")
        assert login(client_from(proxied, **{"X-Forwarded-For": "198.51.100.1"}), "bob").status_code == 429
        assert login(client_from(proxied, **{"X-Forwarded-For": "198.51.100.2"}), "bob").status_code == 303
    with LiveServer(create_app(db_url, WebOptions(secure_cookies=True))) as forced:  # --secure-cookies
        assert "secure" in session_cookie_header(login_via_https_proxy(client_from(forced), "sup")).lower()


# --- 4. sessions end with the password or the user ----------------------------------------------------------------
def test_password_change_and_disabling_end_sessions_and_tokens(db_url, monkeypatch):
    with LiveServer(create_app(db_url)) as server:
        alice = client_from(server)
        assert login(alice, "alice").status_code == 303
        assert alice.get("/me").status_code == 200
        monkeypatch.setattr("sys.stdin", io.StringIO("a brand new password\n"))
        assert cli(["users", "passwd", "alice", "--password-stdin", "--db", db_url]) == 0
        assert alice.get("/me", follow_redirects=False).status_code == 303  # logged out
        assert login(alice, "alice").status_code == 401  # the old password is dead
        assert login(alice, "alice", "a brand new password").status_code == 303

        token = auth.issue_api_token(open_store(db_url), "sup")
        sup = client_from(server, "127.0.0.7")
        assert login(sup, "sup").status_code == 303
        machine = client_from(server, "127.0.0.8", Authorization=f"Bearer {token}")
        assert machine.get("/api/live").status_code == 200
        assert cli(["users", "disable", "sup", "--db", db_url]) == 0
        assert sup.get("/dashboard", follow_redirects=False).status_code == 303
        assert machine.get("/api/live").status_code == 401
        assert login(client_from(server, "127.0.0.9"), "sup").status_code == 401  # same answer as a wrong password
        assert cli(["users", "enable", "sup", "--db", db_url]) == 0
        assert machine.get("/api/live").status_code == 200


def test_user_disabling_migrates_and_works_on_postgresql(postgres_url):
    import datetime as dt

    import sqlalchemy as sa

    open_store(postgres_url).close()
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # back to version 2, the schema before users could be disabled
        undo_schema_5(conn)
        conn.exec_driver_sql("DROP TABLE live_segments, live_calls, nodes")  # versions after 3
        conn.exec_driver_sql("ALTER TABLE users DROP COLUMN disabled_at")
        conn.exec_driver_sql("UPDATE schema_migrations SET version = 2")
    engine.dispose()
    store = open_store(postgres_url)
    assert store.schema_version() == SCHEMA_VERSION
    store.add_user("dora", "agent", "A9", auth.hash_password(PASSWORD))
    user = auth.check_password(store, "dora", PASSWORD)
    cookie = auth.start_session(store, user, dt.timedelta(hours=1))
    token = auth.issue_api_token(store, "dora")
    assert [(u["name"], u["sessions"], u["has_token"], u["disabled_at"]) for u in store.list_users()] == [
        ("dora", 1, True, None)]
    assert store.update_user("dora", disabled=True)
    assert auth.user_for_session(store, cookie) is None and auth.user_for_token(store, token) is None
    assert store.list_users()[0]["disabled_at"] is not None and store.list_users()[0]["sessions"] == 0
    assert store.update_user("dora", disabled=False) and auth.user_for_token(store, token).name == "dora"
    cookie = auth.start_session(store, user, dt.timedelta(hours=1))
    assert store.update_user("dora", password_hash=auth.hash_password("changed password"))
    assert auth.user_for_session(store, cookie) is None
    assert not store.update_user("nobody", disabled=True)


# --- 5. numeric and other edge values in requests -------------------------------------------------------------------
EDGES = ["", "-1", "0", "7", "99999999999999999999999", "-99999999999999999999", "9223372036854775808", "nan", "NaN",
         "inf", "-inf", "1e309", "1.5", "abc", "\x00", "²", "１２", "9999-12-31", "0001-01-01", "2024-02-30", "9" * 5000,
         "x" * 5000, "../../etc/passwd"]


def test_edge_values_never_give_a_server_error(db_url):
    app = create_app(db_url, WebOptions(heartbeat_s=0.2))
    sup = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    assert login(sup, "sup").status_code == 303
    csrf = sup.get("/dashboard").text.split('name="csrf-token" content="')[1].split('"')[0]
    failures = []
    for value in EDGES:
        q = quote(value, safe="")
        filters = ("agent", "since", "until", "min_score", "max_score", "violation", "q", "sort", "page", "per_page")
        requests = [("GET", f"{listing}?{name}={q}") for name in filters for listing in ("/calls", "/api/calls",
                                                                                           "/calls.csv")]
        requests += [("POST", f"/api/appeals/{q}/decision"), ("POST", f"/appeals/{q}/decision"),
                     ("POST", f"/api/calls/{q}/appeals"), ("POST", f"/api/calls/{q}/deductions"),
                     ("POST", f"/api/alerts/{q}/false-alarm"), ("GET", f"/api/appeals?status={q}")]
        requests += [("GET", f"/api/alerts?after={q}"), ("GET", f"/login?next={q}"), ("GET", f"/calls/{q}"),
                     ("GET", f"/calls/{q}/audio"), ("GET", f"/calls/{q}/report.json"), ("GET", f"/calls/{q}/alerts"),
                     ("POST", f"/alerts/{q}/ack")]
        for method, path in requests:
            response = sup.request(method, path, headers={"X-CSRF-Token": csrf})
            if response.status_code >= 500:
                failures.append((method, path[:80], response.status_code))
    assert failures == []
    assert sup.get("/api/alerts?after=9223372036854775808").status_code == 422
    assert sup.get("/calls?min_score=99999999999999999999999").status_code == 200  # clamped: no call scores that

    # The event stream: its query and the Last-Event-ID header a browser sends back.
    with LiveServer(app) as server:
        stream = client_from(server)
        assert login(stream, "sup").status_code == 303
        for value in EDGES:
            for params, headers in (({"after": value}, {}), ({}, {"Last-Event-ID": value.replace("\x00", "").encode()})):
                with stream.stream("GET", "/events", params=params, headers=headers) as response:
                    assert response.status_code in (200, 422), (value, response.status_code)


# --- 8. error pages -------------------------------------------------------------------------------------------------
def test_error_pages_are_chinese_and_leak_nothing(db_url, tmp_path):
    app = create_app(db_url)
    html = {"Accept": "text/html"}
    visitor = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    alice = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    assert login(alice, "alice").status_code == 303
    pages = {
        404: visitor.get("/no/such/page", headers=html),
        401: visitor.get("/api/alerts", headers=html),
        403: alice.get("/dashboard", headers=html),
        405: visitor.delete("/login", headers=html),
        422: alice.get("/api/alerts?after=-5", headers=html),
    }
    for _ in range(THROTTLE.per_address_tokens + 1):
        pages[429] = visitor.get("/api/live", headers={**html, "Authorization": "Bearer wrong"})

    # A broken database: the page says the server failed, not how.
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alerts")
    engine.dispose()
    pages[500] = alice.get("/api/alerts", headers=html)
    titles = {401: "请先登录", 403: "没有权限", 404: "找不到", 405: "不支持", 422: "参数有误", 429: "请求过于频繁",
              500: "服务器出错了"}
    for status, response in pages.items():
        assert response.status_code == status
        text = response.text
        assert '<html lang="zh-CN">' in text and titles[status] in text, status
        for internal in ("Traceback", "sqlite", "alerts", "OperationalError", "log in first", "supervisors only",
                         "Not Found", "Method Not Allowed", "detail", "wrong API tokens"):
            assert internal not in text, (status, internal)
    assert pages[429].headers["retry-after"].isdigit()
    # Programs get JSON, also without internals.
    assert alice.get("/api/alerts").json() == {"detail": "internal error"}


# --- 6. `monitor users` ---------------------------------------------------------------------------------------------
def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_users_commands(tmp_path):
    db = str(tmp_path / "users.db")
    no_terminal = run_cli("users", "add", "carol", "--role", "supervisor", "--db", db)
    assert no_terminal.returncode == 2
    assert no_terminal.stderr.count("\n") == 1 and "--password-stdin" in no_terminal.stderr
    assert "Traceback" not in no_terminal.stderr

    added = run_cli("users", "add", "carol", "--role", "agent", "--agent-id", "A7", "--password-stdin", "--db", db,
                    stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert run_cli("users", "--db", db, "token", "carol").stdout.strip()
    listing = run_cli("users", "list", "--db", db)
    assert listing.returncode == 0
    row = next(line.split() for line in listing.stdout.splitlines() if line.startswith("carol"))
    assert row[:5] == ["carol", "agent", "A7", "active", "yes"]

    assert run_cli("users", "disable", "carol", "--db", db).returncode == 0
    assert "disabled" in run_cli("users", "list", "--db", db).stdout
    store = open_store(db)
    assert auth.check_password(store, "carol", PASSWORD) is None

    changed = run_cli("users", "passwd", "carol", "--password-stdin", "--db", db, stdin="another password\n")
    assert changed.returncode == 0
    assert run_cli("users", "enable", "carol", "--db", db).returncode == 0
    assert auth.check_password(store, "carol", "another password").agent_id == "A7"
    assert run_cli("users", "passwd", "nobody", "--password-stdin", "--db", db, stdin="whatever123\n").returncode == 1
    assert run_cli("users", "passwd", "carol", "--password-stdin", "--db", db, stdin="short\n").returncode == 1


# --- 7. `monitor serve` on a busy port ------------------------------------------------------------------------------
def test_serve_on_a_busy_port_fails_in_one_line_without_a_url(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--db", str(tmp_path / "s.db"), "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in result.stderr
    assert "http://" not in result.stderr and "Traceback" not in result.stderr


def test_serve_prints_its_url_once_it_listens(tmp_path):
    server = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--db", str(tmp_path / "s.db"), "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        assert url.rsplit(":", 1)[1] != "0/"  # the port actually bound, not the one asked for
        assert httpx.get(url + "healthz", timeout=30).json()["ok"]
    finally:
        server.terminate()
        server.wait(30)
