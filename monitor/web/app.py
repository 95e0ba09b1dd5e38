"""The web app: routes, access rules and page rendering.

Who sees what: a supervisor sees every call, alert and live stream; an agent
sees only calls and alerts carrying their own agent id, and gets 404 for any
other (the same answer as for a call that does not exist, so ids cannot be
probed). A visitor who is not logged in is sent to the login page (HTML) or
gets 401 (JSON, audio, events). Machine clients (the live ingest) use an API
token instead of a session.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Depends, FastAPI, Form, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from monitor.report import SEVERITY_LABELS, render_html
from monitor.store import CallFilter, Store, open_store
from monitor.web import auth
from monitor.web.auth import User
from monitor.web.live import Hub, Ingest, LiveOptions
from monitor.web.trend import trend_chart

log = logging.getLogger(__name__)


@dataclass
class WebOptions:
    """How ``monitor serve`` behaves."""

    session_hours: float = 12.0
    """A login lasts this long."""
    secure_cookies: bool = False
    """Mark cookies Secure (set when the app is served over HTTPS by a proxy)."""
    heartbeat_s: float = 15.0
    """An idle event stream sends a comment this often, so proxies keep it open and a dead client is noticed."""
    live: LiveOptions = field(default_factory=LiveOptions)
    """Live ingest."""


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

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        ingest.close()
        store.close()

    app = FastAPI(title="Call Conduct Monitor", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store, app.state.hub, app.state.ingest = store, hub, ingest

    # --- who is asking -------------------------------------------------------------
    def current_user(request: Request) -> User | None:
        user = auth.user_for_session(store, request.cookies.get(auth.SESSION_COOKIE))
        if user is None:
            header = request.headers.get("authorization", "")
            if header.lower().startswith("bearer "):
                user = auth.user_for_token(store, header[7:].strip())
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

    async def check_csrf(request: Request, user: User) -> None:
        given = request.headers.get("x-csrf-token")
        if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            given = (await request.form()).get("csrf_token")
        if not auth.same_secret(given, user.csrf_token):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page")

    def visible_call(user: User, call_id: str) -> dict:
        row = store.call_row(call_id)
        if row is None or not user.may_see(row["agent_id"]):
            raise HTTPException(404, "no such call")
        return row

    def page(name: str, request: Request, user: User | None, status: int = 200, **context) -> HTMLResponse:
        html = _templates().get_template(name).render(user=user, path=request.url.path, **context)
        return HTMLResponse(html, status_code=status)

    # --- errors ----------------------------------------------------------------------
    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired):
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)

    @app.exception_handler(HTTPException)
    async def _error(request: Request, exc: HTTPException):
        wants_html = "text/html" in request.headers.get("accept", "")
        if not wants_html:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        user = current_user(request)
        return page("error.html.j2", request, user, status=exc.status_code, status_code=exc.status_code, detail=exc.detail)

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # --- logging in and out ----------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/"):
        token = auth.new_secret()
        response = page("login.html.j2", request, None, next=_local(next), csrf_token=token, error=None)
        _set_cookie(response, auth.LOGIN_CSRF_COOKIE, token, options, max_age=3600)
        return response

    @app.post("/login")
    def login(request: Request, name: str = Form(""), password: str = Form(""), next: str = Form("/"),
              csrf_token: str = Form("")):
        if not auth.same_secret(csrf_token, request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")):
            raise HTTPException(403, "the login form expired; reload it")
        user = auth.check_password(store, name, password)
        if user is None:
            # One message for an unknown name and a wrong password.
            response = page("login.html.j2", request, None, status=401, next=_local(next), csrf_token=csrf_token,
                            error="用户名或密码错误")
            return response
        cookie = auth.start_session(store, user, dt.timedelta(hours=options.session_hours))
        response = RedirectResponse(_local(next), status_code=303)
        _set_cookie(response, auth.SESSION_COOKIE, cookie, options, max_age=int(options.session_hours * 3600))
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
        return RedirectResponse("/dashboard" if user.is_supervisor else "/me", status_code=303)

    # --- supervisor: live dashboard ---------------------------------------------------
    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard(request: Request, user: User = Depends(supervisor_page)):
        recent = store.recent_alerts(limit=50)
        return page("dashboard.html.j2", request, user, alerts=[_alert_json(a) for a in recent],
                    last_alert_id=max((a["id"] for a in recent), default=0), live_calls=hub.snapshot(),
                    severity_labels=SEVERITY_LABELS)

    @app.get("/api/live")
    def live_calls(user: User = Depends(supervisor_api)):
        return hub.snapshot()

    @app.get("/events")
    async def events(request: Request, after: int = 0, user: User = Depends(supervisor_api)):
        """Server-sent events: alerts (with ``id:`` = alert id) and live transcript lines.

        A reconnecting EventSource sends ``Last-Event-ID``; the alerts it
        missed are replayed from the database before live ones follow.
        """
        last_id = request.headers.get("last-event-id", "")
        since = int(last_id) if last_id.isdigit() else max(after, 0)
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
    async def acknowledge(alert_id: int, request: Request, user: User = Depends(supervisor_api)):
        await check_csrf(request, user)
        if not store.acknowledge_alert(alert_id, user.name):
            raise HTTPException(404, "no such alert")
        hub.publish({"type": "ack", "id": alert_id, "by": user.name})
        return {"id": alert_id, "acknowledged": True}

    @app.get("/api/alerts")
    def alerts_api(after: int = 0, user: User = Depends(api_user)):
        """Alerts the user may see: all for a supervisor, an agent's own otherwise."""
        rows = store.alerts_after(after, agent_id=None if user.is_supervisor else (user.agent_id or "\0"))
        return [_alert_json(a) for a in rows]

    # --- calls ------------------------------------------------------------------------
    @app.get("/calls", response_class=HTMLResponse)
    def call_browser(request: Request, agent: str = "", since: str = "", until: str = "", min_score: str = "",
                     max_score: str = "", violation: str = "", user: User = Depends(page_user)):
        own = None if user.is_supervisor else (user.agent_id or "\0")
        filters = CallFilter(
            agent_id=own or agent or None, since=_date(since), until=_date(until, next_day=True),
            min_score=_int(min_score), max_score=_int(max_score), violation=violation or None,
        )
        return page("calls.html.j2", request, user, calls=store.list_calls(filters),
                    agents=store.agent_ids() if user.is_supervisor else [],
                    violations=store.violation_types(agent_id=own),
                    form={"agent": agent, "since": since, "until": until, "min_score": min_score,
                          "max_score": max_score, "violation": violation})

    @app.get("/calls/{call_id}", response_class=HTMLResponse)
    def call_page(call_id: str, request: Request, user: User = Depends(page_user)):
        row = visible_call(user, call_id)
        report = store.get_report(call_id)
        audio = f"/calls/{quote(call_id, safe='')}/audio" if _recording(row) else None
        html = render_html(report, audio)
        bar = _templates().get_template("_bar.html.j2").render(user=user, path="/calls")
        # The report page is self-contained (it is also written to disk by
        # `monitor score`); here it gets the app's navigation bar on top.
        return HTMLResponse(html.replace("<body>", "<body>\n" + bar, 1))

    @app.get("/calls/{call_id}/report.json")
    def call_json(call_id: str, user: User = Depends(api_user)):
        visible_call(user, call_id)
        return JSONResponse(store.get_report(call_id))

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
        if user.is_supervisor:
            return RedirectResponse("/dashboard", status_code=303)
        own = user.agent_id or "\0"
        calls = store.list_calls(CallFilter(agent_id=own))
        return page("agent.html.j2", request, user, calls=calls, chart=trend_chart(calls),
                    top=_frequent_violations(store, calls), severity_labels=SEVERITY_LABELS)

    # --- live ingest --------------------------------------------------------------------
    @app.websocket("/ws/ingest")
    async def ingest_stream(websocket: WebSocket):
        token = websocket.query_params.get("token") or websocket.headers.get("authorization", "")[7:]
        user = auth.user_for_token(store, token)
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
    environment.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M") if t else "—"
    environment.filters["tojson_attr"] = lambda v: json.dumps(v, ensure_ascii=False, default=str)
    return environment


def _set_cookie(response: Response, name: str, value: str, options: WebOptions, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=options.secure_cookies)


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
    }


def _recording(row: dict) -> str | None:
    path = row["audio"]
    return path if path and os.path.isfile(path) else None


def _date(value: str, next_day: bool = False) -> dt.datetime | None:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return None
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return start + dt.timedelta(days=1) if next_day else start


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _frequent_violations(store: Store, calls: list[dict], limit: int = 5) -> list[dict]:
    """An agent's most frequent forbidden phrases, with what the code says to say instead."""
    seen: dict[str, dict] = {}
    for call in calls:
        for event in (store.get_report(call["call_id"]) or {}).get("events", []):
            if event["kind"] != "forbidden":
                continue
            entry = seen.setdefault(event["phrase_id"], {**event, "count": 0, "calls": []})
            entry["count"] += 1
            if call["call_id"] not in entry["calls"]:
                entry["calls"].append(call["call_id"])
    return sorted(seen.values(), key=lambda e: (-e["count"], e["phrase_id"]))[:limit]
