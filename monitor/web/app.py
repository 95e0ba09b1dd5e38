"""The web app: routes, access rules and page rendering.

Who sees what: a supervisor sees every call, alert and live stream and runs
the live side (acknowledges alerts, feeds streams); a qa reviewer (质检员) sees
every call, alert and live stream too and reviews (decides appeals, adds missed
deductions, marks false alarms) but administers nothing live; an agent sees
only calls and alerts carrying their own agent id, and gets 404 for any other
(the same answer as for a call that does not exist, so ids cannot be probed),
and appeals deductions of those calls only. A visitor who is not logged in is sent to the login page (HTML) or
gets 401 (JSON, audio, events). Machine clients (the live ingest) use an API
token instead of a session.

Every response carries a strict Content-Security-Policy (scripts and styles
only from ``/static``; the call report, which is one self-contained page, gets
a per-response nonce for its own script and style). Failed log-ins and wrong
API tokens are throttled (``monitor.web.throttle``). Error pages are in
Chinese and never show internals.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import logging
import math
import os
import secrets
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path as FilePath
from typing import Annotated
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Depends, FastAPI, Form, HTTPException, Path, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitor.report import SEVERITY_LABELS, is_violation, render_html
from monitor.review import appeal_json, counted_deductions
from monitor.store import SORTS, CallFilter, ReviewRefused, Store, open_store
from monitor.web import auth
from monitor.web.auth import User
from monitor.web.fleet import Fleet, FleetOptions
from monitor.web.live import Hub, Ingest, LiveOptions
from monitor.web.throttle import LoginThrottle, ThrottleOptions
from monitor.web.trend import daily_chart, trend_chart

log = logging.getLogger(__name__)

STATIC = FilePath(__file__).resolve().parent / "static"
MAX_ID = 2**63 - 1
"""The largest id a database integer holds; larger ones in a request are refused (422), not passed on."""
MAX_FILTER = 10**9
"""Score filters are clamped to ±this."""
AlertId = Annotated[int, Path(ge=0, le=MAX_ID)]
AppealId = Annotated[int, Path(ge=0, le=MAX_ID)]
PAGE_SIZE = 50
"""Calls per page in the call list (``GET /api/calls`` takes ``per_page`` up to ``MAX_PAGE_SIZE``)."""
MAX_PAGE_SIZE = 500
MAX_TEXT = 2000
"""The longest appeal reason, review note or deduction reason, in characters."""
DECISIONS = {"upheld": "维持扣分", "overturned": "撤销扣分"}
REFUSED_STATUS = {"missing": 404, "invalid": 422, "conflict": 409}
AfterId = Annotated[int, Query(ge=0, le=MAX_ID)]


@dataclass
class WebOptions:
    """How ``monitor serve`` behaves."""

    session_hours: float = 12.0
    """A login lasts this long."""
    secure_cookies: bool = False
    """Always mark cookies Secure (``--secure-cookies``, for HTTPS at a proxy). Without it they are Secure only on
    requests that arrived over HTTPS, which behind a proxy the app learns only from a trusted ``X-Forwarded-Proto``."""
    throttle: ThrottleOptions = field(default_factory=ThrottleOptions)
    """Limits on failed log-ins and wrong API tokens."""
    heartbeat_s: float = 15.0
    """An idle event stream sends a comment this often, so proxies keep it open and a dead client is noticed."""
    live: LiveOptions = field(default_factory=LiveOptions)
    """Live ingest."""
    node_id: str | None = None
    """This node's name in a fleet of nodes sharing a PostgreSQL database (``fleet.py``);
    None: the host name and a random suffix. A SQLite database has a single node, and no fleet."""


class LoginRequired(Exception):
    """A page was asked for without a session: send the browser to the login form."""

    def __init__(self, next_url: str):
        self.next_url = next_url


def create_app(store_url: str, options: WebOptions | None = None, transcriber=None) -> FastAPI:
    """The app over the database at ``store_url`` (created if missing).

    ``transcriber`` is the model for live streams; None loads it on the first stream.
    """
    options = options or WebOptions()
    store = open_store(store_url)
    hub = Hub(store, options.live)
    ingest = Ingest(hub, options.live, transcriber)
    if store.is_postgresql:
        node_id = options.node_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"
        hub.fleet = Fleet(store, FleetOptions(node_id), deliver=hub.receive, slots=ingest.slots,
                          end_dead_call=hub.end_dead_call)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if hub.fleet is not None:
            await asyncio.to_thread(hub.fleet.start)
        yield
        ingest.close()
        if hub.fleet is not None:
            await asyncio.to_thread(hub.fleet.close)
        store.close()

    app = FastAPI(title="Call Conduct Monitor", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store, app.state.hub, app.state.ingest = store, hub, ingest

    throttle = LoginThrottle(options.throttle)

    # --- who is asking -------------------------------------------------------------
    def session_user(request: Request) -> User | None:
        return auth.user_for_session(store, request.cookies.get(auth.SESSION_COOKIE))

    def token_user(token: str, address: str) -> User | None:
        """The user of an API token; wrong tokens are counted per address, and too many get 429."""
        wait = throttle.token_wait(address)
        if wait:
            raise HTTPException(429, "too many wrong API tokens", headers={"Retry-After": str(wait)})
        user = auth.user_for_token(store, token)
        if user is None:
            throttle.token_failed(address)
        return user

    def current_user(request: Request) -> User | None:
        user = session_user(request)
        if user is None:
            header = request.headers.get("authorization", "")
            if header.lower().startswith("bearer "):
                user = token_user(header[7:].strip(), _address(request))
        return user

    def page_user(request: Request) -> User:
        user = current_user(request)
        if user is None:
            raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return user

    def api_user(request: Request) -> User:
        user = current_user(request)
        if user is None:
            raise HTTPException(401, "log in first", headers={"WWW-Authenticate": "Bearer"})
        return user

    def supervisor_page(user: User = Depends(page_user)) -> User:
        if not user.is_supervisor:
            raise HTTPException(403, "supervisors only")
        return user

    def supervisor_api(user: User = Depends(api_user)) -> User:
        if not user.is_supervisor:
            raise HTTPException(403, "supervisors only")
        return user

    def reviewer_page(user: User = Depends(page_user)) -> User:
        if not user.is_reviewer:
            raise HTTPException(403, "reviewers only")
        return user

    def reviewer_api(user: User = Depends(api_user)) -> User:
        if not user.is_reviewer:
            raise HTTPException(403, "reviewers only")
        return user

    async def check_csrf(request: Request, user: User) -> None:
        """A session's state-changing request must echo its CSRF token. API-token clients send no cookies, so
        another site cannot make their browser act for them: they have none to check."""
        if user.by_token:
            return
        given = request.headers.get("x-csrf-token")
        if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            given = (await request.form()).get("csrf_token")
        if not auth.same_secret(given, user.csrf_token):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page")

    def visible_call(user: User, call_id: str) -> dict:
        row = store.call_row(call_id) if "\x00" not in call_id else None  # PostgreSQL refuses NUL in text
        if row is None or not user.may_see(row["agent_id"]):
            raise HTTPException(404, "no such call")
        return row

    def page(name: str, request: Request, user: User | None, status: int = 200, headers: dict | None = None,
             **context) -> HTMLResponse:
        html = _templates().get_template(name).render(user=user, path=request.url.path, **context)
        return HTMLResponse(html, status_code=status, headers=headers)

    def error_response(request: Request, status: int, detail: str, headers: dict | None = None) -> Response:
        """JSON for programs, a Chinese page for browsers; neither shows more than ``detail``."""
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": detail}, status_code=status, headers=headers)
        try:
            user = session_user(request)
        except Exception:  # the database may be what failed
            user = None
        return page("error.html.j2", request, user, status=status, headers=headers, status_code=status)

    # --- errors ----------------------------------------------------------------------
    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired):
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)

    @app.exception_handler(StarletteHTTPException)  # also the router's own 404 and 405
    async def _error(request: Request, exc: StarletteHTTPException):
        return error_response(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        fields = ", ".join(str(e["loc"][-1]) for e in exc.errors() if e.get("loc"))
        return error_response(request, 422, f"invalid value for {fields or 'the request'}")

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        try:
            response = await call_next(request)
        except Exception:
            # Logged in full here; the visitor learns only that it failed.
            log.exception("%s %s failed", request.method, request.url.path)
            response = error_response(request, 500, "internal error")
        response.headers.setdefault("Content-Security-Policy", content_security_policy())
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # --- logging in and out ----------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/"):
        token = auth.new_secret()
        response = page("login.html.j2", request, None, next=_local(next), csrf_token=token, error=None)
        _set_cookie(response, request, auth.LOGIN_CSRF_COOKIE, token, options, max_age=3600)
        return response

    @app.post("/login")
    def login(request: Request, name: str = Form(""), password: str = Form(""), next: str = Form("/"),
              csrf_token: str = Form("")):
        if not auth.same_secret(csrf_token, request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")):
            raise HTTPException(403, "the login form expired; reload it")
        address = _address(request)
        wait = throttle.login_wait(name, address)
        if wait:  # refused before the password is checked: guessing costs the server nothing more
            return page("login.html.j2", request, None, status=429, headers={"Retry-After": str(wait)},
                        next=_local(next), csrf_token=csrf_token,
                        error=f"登录失败次数过多，请 {math.ceil(wait / 60)} 分钟后再试")
        user = auth.check_password(store, name, password)
        if user is None:
            throttle.login_failed(name, address)
            # One message for an unknown name and a wrong password.
            return page("login.html.j2", request, None, status=401, next=_local(next), csrf_token=csrf_token,
                        error="用户名或密码错误")
        throttle.login_succeeded(name, address)
        cookie = auth.start_session(store, user, dt.timedelta(hours=options.session_hours))
        response = RedirectResponse(_local(next), status_code=303)
        _set_cookie(response, request, auth.SESSION_COOKIE, cookie, options, max_age=int(options.session_hours * 3600))
        response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/")
        return response

    @app.post("/logout")
    async def logout(request: Request, user: User = Depends(page_user)):
        await check_csrf(request, user)
        store.delete_session(auth.digest(request.cookies.get(auth.SESSION_COOKIE, "")))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return response

    @app.get("/")
    def home(user: User = Depends(page_user)):
        return RedirectResponse("/dashboard" if user.is_reviewer else "/me", status_code=303)

    # --- supervisor and qa: live dashboard over the overview ----------------------------
    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard(request: Request, user: User = Depends(reviewer_page)):
        recent = store.recent_alerts(limit=50)
        overview = store.overview()
        return page("dashboard.html.j2", request, user, alerts=[_alert_json(a) for a in recent],
                    last_alert_id=max((a["id"] for a in recent), default=0), live_calls=hub.snapshot(),
                    severity_labels=SEVERITY_LABELS, overview=overview, names=store.agent_names(),
                    chart=daily_chart(overview["trend"]),
                    open_appeals=[appeal_json(a) for a in store.list_appeals(open_only=True, limit=10)])

    @app.get("/api/overview")
    def overview_api(user: User = Depends(reviewer_api)):
        """The dashboard's figures as JSON (see ``Store.overview``), for reports and scripts."""
        return store.overview()

    @app.get("/api/live")
    def live_calls(user: User = Depends(reviewer_api)):
        return hub.snapshot()

    @app.get("/api/capacity")
    def capacity():
        """For load balancers and clients picking a node: 200 while this node takes another call, else 503."""
        max_calls, free = ingest.slots()
        body = {"node": hub.fleet.node_id if hub.fleet else None, "max_calls": max_calls, "free_slots": free}
        return JSONResponse(body, status_code=200 if free else 503)

    @app.get("/api/nodes")
    def fleet_nodes(user: User = Depends(supervisor_api)):
        """The nodes serving live calls, with their free slots (one node without a fleet)."""
        if hub.fleet is None:
            max_calls, free = ingest.slots()
            return [{"node_id": None, "max_calls": max_calls, "free_slots": free}]
        return [{**row, "started_at": row["started_at"].isoformat(), "heartbeat_at": row["heartbeat_at"].isoformat()}
                for row in store.list_nodes()]

    @app.get("/events")
    async def events(request: Request, after: AfterId = 0, user: User = Depends(reviewer_api)):
        """Server-sent events: alerts (with ``id:`` = alert id) and live transcript lines.

        A reconnecting EventSource sends ``Last-Event-ID``; the alerts it
        missed are replayed from the database before live ones follow.
        """
        last_id = request.headers.get("last-event-id", "")
        # Ascii digits only (str.isdigit() also takes "²"), and short enough to convert.
        valid = last_id.isascii() and last_id.isdigit() and len(last_id) <= len(str(MAX_ID)) and int(last_id) <= MAX_ID
        since = int(last_id) if valid else after
        queue = hub.subscribe()  # subscribed before the replay, so nothing falls between the two

        async def stream():
            sent = since
            try:
                yield "retry: 2000\n\n"
                for alert in await asyncio.to_thread(store.alerts_after, since):
                    sent = alert["id"]
                    yield _sse(_alert_json(alert), alert["id"])
                while not await request.is_disconnected():
                    try:
                        event = await asyncio.wait_for(queue.get(), options.heartbeat_s)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event.get("type") == "alert":
                        if event["id"] <= sent:
                            continue  # already replayed
                        sent = event["id"]
                        yield _sse(event, event["id"])
                    else:
                        yield _sse(event)
            finally:
                hub.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post("/alerts/{alert_id}/ack")
    async def acknowledge(alert_id: AlertId, request: Request, user: User = Depends(supervisor_api)):
        await check_csrf(request, user)
        if not store.acknowledge_alert(alert_id, user.name):
            raise HTTPException(404, "no such alert")
        hub.publish({"type": "ack", "id": alert_id, "by": user.name})
        return {"id": alert_id, "acknowledged": True}

    @app.post("/api/alerts/{alert_id}/false-alarm")
    async def false_alarm(alert_id: AlertId, request: Request, user: User = Depends(reviewer_api)):
        """A reviewer marks a live alert a false alarm, with why (``{"note"}``); counted against its phrase."""
        await check_csrf(request, user)
        note = _text((await _json_body(request)).get("note"), "note", required=False)
        alert = store.mark_false_alarm(alert_id, note, user.name, user.role)
        if alert is None:
            raise HTTPException(404, "no such alert")
        hub.publish({"type": "false_alarm", "id": alert_id, "by": alert["false_alarm_by"]})
        return _alert_json(alert)

    @app.get("/api/alerts")
    def alerts_api(after: AfterId = 0, user: User = Depends(api_user)):
        """Alerts the user may see: all for a reviewer, an agent's own otherwise."""
        rows = store.alerts_after(after, agent_id=user.own_agent())
        return [_alert_json(a) for a in rows]

    # --- calls ------------------------------------------------------------------------
    def call_filters(user: User, params: dict, limit: int = PAGE_SIZE) -> CallFilter:
        """The call list's query parameters as a filter. Unreadable values count as empty, as in the form."""
        params = {k: v.replace("\x00", "") for k, v in params.items()}  # no NUL reaches the database
        page_number = max(1, min(_int(params.get("page", "")) or 1, MAX_FILTER))
        sort = params.get("sort", "")
        return CallFilter(
            agent_id=user.own_agent() or params.get("agent") or None,
            since=_date(params.get("since", "")), until=_date(params.get("until", ""), next_day=True),
            min_score=_int(params.get("min_score", "")), max_score=_int(params.get("max_score", "")),
            violation=params.get("violation") or None, q=(params.get("q") or "")[:200] or None,
            sort=sort if sort in SORTS else "-when", offset=(page_number - 1) * limit, limit=limit,
        )

    @app.get("/calls", response_class=HTMLResponse)
    def call_browser(request: Request, user: User = Depends(page_user)):
        params = dict(request.query_params)
        filters = call_filters(user, params)
        total = store.count_calls(filters)
        page_number = filters.offset // PAGE_SIZE + 1
        form = {k: params.get(k, "") for k in ("q", "agent", "since", "until", "min_score", "max_score", "violation",
                                               "sort")}
        link = {k: v for k, v in form.items() if v}
        return page("calls.html.j2", request, user, calls=store.list_calls(filters), total=total,
                    page_number=page_number, pages=max(1, math.ceil(total / PAGE_SIZE)), link=link,
                    agents=store.agent_ids() if user.is_reviewer else [], names=store.agent_names(),
                    violations=store.violation_types(agent_id=user.own_agent()), form=form)

    @app.get("/api/calls")
    def calls_api(request: Request, user: User = Depends(api_user)):
        """The call list as JSON: ``{"calls": [...], "total", "page", "per_page"}`` (see CONTRACT.md)."""
        params = dict(request.query_params)
        per_page = max(1, min(_int(params.get("per_page", "")) or PAGE_SIZE, MAX_PAGE_SIZE))
        filters = call_filters(user, params, limit=per_page)
        return {"calls": [_call_json(c) for c in store.list_calls(filters)], "total": store.count_calls(filters),
                "page": filters.offset // per_page + 1, "per_page": per_page}

    def export_rows(user: User, params) -> list[list]:
        """The filtered call list with its violations (every page, not one), one row per call, as ``CSV_COLUMNS``."""
        filters = call_filters(user, {**params, "page": "1"}, limit=EXPORT_LIMIT)
        rows = store.list_calls(filters)
        found = store.violations_of([r["call_id"] for r in rows])
        names = store.agent_names()
        exported = []
        for row in rows:
            call = _call_json(row)
            exported.append([_cell(v) for v in (
                call["call_id"], call["agent_id"] or "", names.get(call["agent_id"], ""), call["started_at"] or "",
                call["duration_s"], call["phrasebook_title"] or call["phrasebook"], _blank(call["score"]),
                _blank(call["machine_score"]), call["violations"], call["checks_failed"],
                "；".join(found.get(call["call_id"], [])),
            )])
        return exported

    def download(content: bytes | str, media_type: str, extension: str) -> Response:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
        return Response(content, media_type=media_type,
                        headers={"Content-Disposition": f'attachment; filename="calls-{stamp}.{extension}"'})

    @app.get("/calls.csv")
    def calls_csv(request: Request, user: User = Depends(api_user)):
        """The filtered call list with its violations, for a spreadsheet or a script."""
        out = io.StringIO()
        out.write("\ufeff")  # Excel reads UTF-8 only with the byte-order mark
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(export_rows(user, request.query_params))
        return download(out.getvalue(), "text/csv; charset=utf-8", "csv")

    @app.get("/calls.xlsx")
    def calls_xlsx(request: Request, user: User = Depends(api_user)):
        """The same as ``/calls.csv`` as an Excel workbook, with Chinese column titles."""
        import openpyxl

        book = openpyxl.Workbook(write_only=True)
        sheet = book.create_sheet("通话")
        sheet.append(list(EXPORT_TITLES))
        for row in export_rows(user, request.query_params):
            sheet.append(row)
        out = io.BytesIO()
        book.save(out)
        return download(out.getvalue(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx")

    @app.get("/calls/{call_id}", response_class=HTMLResponse)
    def call_page(call_id: str, request: Request, user: User = Depends(page_user)):
        row = visible_call(user, call_id)
        reviewed = store.reviewed_report(call_id)
        audio = f"/calls/{quote(call_id, safe='')}/audio" if _recording(row) else None
        shown = {**reviewed, "score": {**reviewed["score"], "deductions": counted_deductions(reviewed)}}
        html = render_html(shown, audio)
        templates = _templates()
        bar = templates.get_template("_bar.html.j2").render(user=user, path="/calls")
        panel = templates.get_template("_review.html.j2").render(
            user=user, report=reviewed, call=row, may_appeal=_may_appeal(user, row), decisions=DECISIONS,
            names=store.agent_names())
        # The report page is self-contained (it is also written to disk by
        # `monitor score`); here it gets the app's navigation bar on top and the
        # review panel (appeals, decisions, history) under its score card,
        # and its own inline script and style run under a nonce. Text from the
        # call is escaped, so every literal <script> or <style> is the template's.
        nonce = secrets.token_urlsafe(18)
        html = html.replace("<body>", "<body>\n" + bar, 1)
        html = html.replace("<script>", f'<script nonce="{nonce}">').replace("<style>", f'<style nonce="{nonce}">')
        head_end = html.find("</section>", html.find("<main>")) + len("</section>")  # the score card
        html = html[:head_end] + "\n" + panel + html[head_end:]  # after the nonce: the panel has no inline script
        return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(nonce)})

    @app.get("/calls/{call_id}/report.json")
    def call_json(call_id: str, user: User = Depends(api_user)):
        """The report after review: ``score.total`` reviewed, ``score.machine_total``, and ``reviewed``."""
        visible_call(user, call_id)
        return JSONResponse(store.reviewed_report(call_id))

    # --- appeals and reviews (申诉与复核) ----------------------------------------------------
    def file_appeal(user: User, call_id: str, deduction, reason) -> int:
        row = visible_call(user, call_id)
        if not _may_appeal(user, row):
            raise HTTPException(403, "only the call's own agent appeals its deductions")
        if not isinstance(deduction, int) or isinstance(deduction, bool):
            raise HTTPException(422, "deduction must be an index into score.deductions")
        return refused_as_http(store.file_appeal, call_id, deduction, _text(reason, "reason"), user.name, user.role)

    def decide(user: User, appeal_id: int, decision, note) -> dict:
        if decision not in DECISIONS:
            raise HTTPException(422, "decision must be upheld or overturned")
        return refused_as_http(store.decide_appeal, appeal_id, decision, _text(note, "note"), user.name, user.role)

    def add_deduction(user: User, call_id: str, body: dict) -> int:
        visible_call(user, call_id)
        points = body.get("points")
        if not isinstance(points, int) or isinstance(points, bool) or not 1 <= points <= 100:
            raise HTTPException(422, "points must be a whole number from 1 to 100")
        start = body.get("start")
        if start is not None and (not isinstance(start, (int, float)) or isinstance(start, bool)
                                  or not 0 <= start <= 86400):
            raise HTTPException(422, "start must be seconds into the recording")
        source = _text(body.get("source"), "source", required=False, limit=255) or None
        article = _text(body.get("article"), "article", required=False, limit=64) or None
        return refused_as_http(store.add_deduction, call_id, _text(body.get("reason"), "reason"), points, user.name,
                               user.role, source=source, article=article, start=start)

    @app.post("/api/calls/{call_id}/appeals", status_code=201)
    async def appeal_api(call_id: str, request: Request, user: User = Depends(api_user)):
        """The call's own agent appeals one deduction: ``{"deduction": INDEX, "reason"}`` → 201 ``{"appeal_id"}``."""
        await check_csrf(request, user)
        body = await _json_body(request)
        return {"appeal_id": file_appeal(user, call_id, body.get("deduction"), body.get("reason"))}

    @app.post("/calls/{call_id}/appeals")
    async def appeal_form(call_id: str, request: Request, user: User = Depends(page_user)):
        await check_csrf(request, user)
        form = await request.form()
        file_appeal(user, call_id, _int(str(form.get("deduction", ""))), form.get("reason"))
        return RedirectResponse(f"/calls/{quote(call_id, safe='')}#review", status_code=303)

    @app.get("/api/appeals")
    def appeals_api(status: str = "", user: User = Depends(api_user)):
        """Appeals the user may see (all for reviewers, an agent's own): ``status`` open, decided, or all."""
        rows = store.list_appeals(open_only={"open": True, "decided": False}.get(status), agent_id=user.own_agent())
        return [appeal_json(r) | {"agent_id": r["agent_id"]} for r in rows]

    @app.post("/api/appeals/{appeal_id}/decision")
    async def decision_api(appeal_id: AppealId, request: Request, user: User = Depends(reviewer_api)):
        """A reviewer decides: ``{"decision": "upheld"|"overturned", "note"}`` → the appeal as decided."""
        await check_csrf(request, user)
        body = await _json_body(request)
        return appeal_json(decide(user, appeal_id, body.get("decision"), body.get("note")))

    @app.post("/appeals/{appeal_id}/decision")
    async def decision_form(appeal_id: AppealId, request: Request, user: User = Depends(reviewer_page)):
        await check_csrf(request, user)
        form = await request.form()
        decide(user, appeal_id, form.get("decision"), form.get("note"))
        return RedirectResponse(_local(str(form.get("next") or "/reviews")), status_code=303)

    @app.post("/api/calls/{call_id}/deductions", status_code=201)
    async def deduction_api(call_id: str, request: Request, user: User = Depends(reviewer_api)):
        """A reviewer adds a deduction the machine missed: ``{"reason", "points", "source"?, "article"?, "start"?}``."""
        await check_csrf(request, user)
        return {"deduction_id": add_deduction(user, call_id, await _json_body(request))}

    @app.post("/calls/{call_id}/deductions")
    async def deduction_form(call_id: str, request: Request, user: User = Depends(reviewer_page)):
        await check_csrf(request, user)
        form = await request.form()
        body = {"reason": form.get("reason"), "points": _int(str(form.get("points", ""))),
                "source": form.get("source") or None, "article": form.get("article") or None,
                "start": _seconds(str(form.get("start", "")))}
        add_deduction(user, call_id, body)
        return RedirectResponse(f"/calls/{quote(call_id, safe='')}#review", status_code=303)

    @app.get("/reviews", response_class=HTMLResponse)
    def review_queue(request: Request, user: User = Depends(page_user)):
        """The reviewers' queue (open appeals first, then decided ones); an agent sees their own appeals."""
        own = user.own_agent()
        pending = [appeal_json(a) | {"agent_id": a["agent_id"]} for a in store.list_appeals(True, agent_id=own)]
        decided = [appeal_json(a) | {"agent_id": a["agent_id"]} for a in store.list_appeals(False, agent_id=own, limit=100)]
        return page("reviews.html.j2", request, user, pending=pending, decided=decided, decisions=DECISIONS,
                    names=store.agent_names())

    @app.get("/rules", response_class=HTMLResponse)
    def rule_health_page(request: Request, user: User = Depends(reviewer_page)):
        return page("rules.html.j2", request, user, rules=store.rule_health())

    @app.get("/api/rules")
    def rule_health_api(user: User = Depends(reviewer_api)):
        """Per phrase or check: events, confirmed, overturned, missed, measured precision; worst first."""
        return store.rule_health()

    def refused_as_http(action, *args, **kwargs):
        try:
            return action(*args, **kwargs)
        except ReviewRefused as refused:
            raise HTTPException(REFUSED_STATUS[refused.reason], str(refused)) from None

    @app.get("/calls/{call_id}/alerts")
    def call_alerts(call_id: str, user: User = Depends(api_user)):
        alerts = store.alerts_after(0, call_id=call_id)
        row = store.call_row(call_id)  # a live call's alerts come before its row
        owner = row["agent_id"] if row else next((a["agent_id"] for a in alerts), None)
        if (row is None and not alerts) or not user.may_see(owner):
            raise HTTPException(404, "no such call")
        return [_alert_json(a) for a in alerts]

    @app.get("/calls/{call_id}/audio")
    def call_audio(call_id: str, user: User = Depends(api_user)):
        """The recording of a call, found by the call's id: the path comes from the database, never the request."""
        row = visible_call(user, call_id)
        path = _recording(row)
        if path is None:
            raise HTTPException(404, "no recording for this call")
        return FileResponse(path, filename=os.path.basename(path), content_disposition_type="inline")

    # --- agent portal -----------------------------------------------------------------
    @app.get("/me", response_class=HTMLResponse)
    def agent_portal(request: Request, user: User = Depends(page_user)):
        if user.is_reviewer:
            return RedirectResponse("/dashboard", status_code=303)
        calls = store.list_calls(CallFilter(agent_id=user.own_agent()))
        return page("agent.html.j2", request, user, calls=calls, chart=trend_chart(calls),
                    top=_frequent_violations(store, calls), severity_labels=SEVERITY_LABELS, names=store.agent_names(),
                    appeals=[appeal_json(a) for a in store.list_appeals(agent_id=user.own_agent(), limit=20)],
                    decisions=DECISIONS)

    # --- live ingest --------------------------------------------------------------------
    @app.websocket("/ws/ingest")
    async def ingest_stream(websocket: WebSocket):
        token = websocket.query_params.get("token") or websocket.headers.get("authorization", "")[7:]
        try:
            user = token_user(token, websocket.client.host if websocket.client else "")
        except HTTPException:  # too many wrong tokens from this address
            await websocket.close(code=1013, reason="too many wrong API tokens; try again later")
            return
        if user is None or not user.is_supervisor:
            await websocket.close(code=1008, reason="a supervisor's API token is required")
            return
        await websocket.accept()
        await ingest.handle(websocket)

    @app.get("/healthz")
    def health():
        return {"ok": True, "schema": store.schema_version()}

    return app


# --- helpers ----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("monitor.web", "templates"),
        autoescape=True,  # every template, whatever its file name
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["clock"] = lambda s: "—" if s is None else f"{int(s // 60):02d}:{s % 60:04.1f}"
    environment.filters["when"] = _local_time
    environment.filters["tojson_attr"] = lambda v: json.dumps(v, ensure_ascii=False, default=str)
    return environment


def content_security_policy(nonce: str | None = None) -> str:
    """The app's CSP: everything from the app itself, nothing inline, no framing.

    With a nonce (the call report page), the page's own ``<script>`` and
    ``<style>`` run too, and its ``style`` attributes (the timeline's computed
    positions) are allowed; a ``style`` attribute cannot run code.
    """
    inline = f" 'nonce-{nonce}'" if nonce else ""
    policy = [
        "default-src 'self'",
        f"script-src 'self'{inline}",
        f"style-src 'self'{inline}",
        *(["style-src-attr 'unsafe-inline'"] if nonce else []),
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(policy)


def uvicorn_config(app: FastAPI, host: str, port: int, forwarded_allow_ips: str | None = None,
                   log_level: str = "warning"):
    """How ``monitor serve`` (and the tests' live server) runs the app.

    ``X-Forwarded-For``/``X-Forwarded-Proto`` are believed only from
    ``forwarded_allow_ips`` (a proxy's addresses); without it they are ignored,
    so a client cannot pose as another address to escape login throttling, or
    as HTTPS. (Uvicorn alone would trust them from 127.0.0.1.)
    """
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, ws="websockets-sansio",
                          proxy_headers=forwarded_allow_ips is not None, forwarded_allow_ips=forwarded_allow_ips,
                          server_header=False)


def _local_time(value: dt.datetime | str | None) -> str:
    """A stored time (a datetime, naive meaning UTC as SQLite hands it back, or an ISO string) in the server's
    time zone, to the minute."""
    if not value:
        return "—"
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).astimezone().strftime("%Y-%m-%d %H:%M")


def _address(request: Request) -> str:
    """The client's address: the peer's, or a trusted proxy's X-Forwarded-For (see ``uvicorn_config``)."""
    return request.client.host if request.client else ""


def _set_cookie(response: Response, request: Request, name: str, value: str, options: WebOptions, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=options.secure_cookies or request.url.scheme == "https")


def _local(url: str) -> str:
    """Only same-site paths are followed after login (no open redirect)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//"):
        return "/"
    return url


def _sse(event: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {json.dumps(event, ensure_ascii=False, default=str)}\n\n"


def _alert_json(row: dict) -> dict:
    return {
        "type": "alert", "id": row["id"], "call_id": row["call_id"], "agent_id": row["agent_id"],
        "kind": row["kind"], "phrase_id": row["phrase_id"], "canonical": row["canonical"], "heard": row["heard"],
        "start": row["start"], "end": row["end"], "article": row["article"], "severity": row["severity"],
        "latency_s": row["latency_s"], "created_at": row["created_at"].isoformat() if row["created_at"] else None,
        "acknowledged": row["acknowledged_at"] is not None, "acknowledged_by": row["acknowledged_by"],
        "false_alarm": row.get("false_alarm_at") is not None, "false_alarm_by": row.get("false_alarm_by"),
        "false_alarm_note": row.get("false_alarm_note"), "phrasebook": row.get("phrasebook"),
        "speaker": row.get("speaker"), "speaker_confidence": row.get("speaker_confidence"),
        "uncertain_speaker": bool(row.get("uncertain_speaker")), "pass": row.get("decode_pass") or 1,
        "retracted": row.get("retracted_at") is not None, "retracted_heard": row.get("retracted_heard"),
        "retracted_reason": row.get("retracted_reason"),
    }


def _recording(row: dict) -> str | None:
    path = row["audio"]
    return path if path and os.path.isfile(path) else None


def _date(value: str, next_day: bool = False) -> dt.datetime | None:
    """A filter's day (YYYY-MM-DD, UTC; ``next_day`` for an inclusive end) or ISO time (without a zone: UTC);
    None, like an empty field, when it is neither."""
    try:
        day = dt.date.fromisoformat(value)
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
        return start + dt.timedelta(days=1) if next_day else start
    except (ValueError, OverflowError):  # not a date, or the day after 9999-12-31
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _int(value: str) -> int | None:
    """A filter's whole number, clamped to ±MAX_FILTER; None, like an empty field, when it is not one."""
    try:
        return max(-MAX_FILTER, min(MAX_FILTER, int(value)))
    except ValueError:  # also "nan", "1e5" and a number too long to convert
        return None


EXPORT_LIMIT = 100_000
"""The most calls one export (CSV or XLSX) holds."""
CSV_COLUMNS = ("call_id", "agent_id", "agent_name", "started_at", "duration_s", "phrasebook", "score", "machine_score",
               "violations", "checks_failed", "violation_details")
EXPORT_TITLES = ("通话", "工号", "坐席", "通话时间", "时长（秒）", "规范", "得分（复核后）", "机器评分", "禁语数",
                 "未通过检查数", "违规明细")
"""The XLSX export's column titles, in the order of ``CSV_COLUMNS``."""


def _call_json(row: dict) -> dict:
    """A call-list row for ``GET /api/calls``."""
    def iso(value):
        return None if value is None else (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()

    return {
        "call_id": row["call_id"], "agent_id": row["agent_id"], "started_at": iso(row["when"]),
        "time_from": "recording" if row["started_at"] is not None else "scoring", "score": row["score"],
        "machine_score": row["machine_score"], "score_max": row["score_max"], "duration_s": row["duration_s"],
        "phrasebook": row["phrasebook"], "phrasebook_title": row["phrasebook_title"],
        "violations": row["violations"], "checks_failed": row["checks_failed"], "scored_at": iso(row["scored_at"]),
    }


def _cell(value) -> object:
    """An export cell that a spreadsheet will not run as a formula (text from calls may start with = + - @;
    openpyxl itself would store a text starting with = as a formula)."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _blank(value) -> object:
    return "" if value is None else value


def _may_appeal(user: User, call: dict) -> bool:
    """Only the call's own agent appeals its deductions (reviewers decide, they do not appeal)."""
    return user.role == "agent" and user.agent_id is not None and call["agent_id"] == user.agent_id


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(422, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "the body must be a JSON object")
    return body


def _text(value, name: str, required: bool = True, limit: int = MAX_TEXT) -> str:
    """A text field of a request, stripped; 422 when it is missing (if required), not text, or too long."""
    if value is None and not required:
        return ""
    if isinstance(value, str):
        value = value.replace("\x00", "")  # PostgreSQL refuses NUL in text
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise HTTPException(422, f"{name} must be a text of 1 to {limit} characters" if required
                            else f"{name} must be a text of at most {limit} characters")
    return value.strip()


def _seconds(value: str) -> float | None:
    """A form's time in the recording: seconds (``75.5``) or minutes:seconds (``01:15.5``); None when empty or unreadable."""
    try:
        minutes, _, seconds = value.strip().rpartition(":")
        total = (int(minutes) * 60 if minutes else 0) + float(seconds)
        return total if math.isfinite(total) and total >= 0 else None
    except ValueError:
        return None


def _frequent_violations(store: Store, calls: list[dict], limit: int = 5) -> list[dict]:
    """An agent's most frequent forbidden phrases, with what the code says to say instead."""
    seen: dict[str, dict] = {}
    for call in calls:
        for event in (store.get_report(call["call_id"]) or {}).get("events", []):
            if not is_violation(event):
                continue
            entry = seen.setdefault(event["phrase_id"], {**event, "count": 0, "calls": []})
            entry["count"] += 1
            if call["call_id"] not in entry["calls"]:
                entry["calls"].append(call["call_id"])
    return sorted(seen.values(), key=lambda e: (-e["count"], e["phrase_id"]))[:limit]
