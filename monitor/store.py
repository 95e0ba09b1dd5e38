"""The results database: scored calls, and what the web app needs around them.

SQLite by default (one file, no set-up) or PostgreSQL (``postgresql://…``),
written with SQLAlchemy Core; there is no ORM layer. A call's report is saved
whole (the ``monitor.report/1`` JSON, so the HTML page can be re-rendered from
the database alone) and also spread over tables that can be queried: its
transcript segments, events, checks and score deductions.

Saving is idempotent per ``call_id``: one transaction upserts the call
(``INSERT … ON CONFLICT (call_id) DO UPDATE``) and replaces its rows in the
other tables, so two batches that score the same call at the same time leave
one copy of it.

Schema versions: ``schema_migrations`` records which versions a database has.
A new database gets the current tables at once; an older one is brought up to
date by the steps in ``MIGRATIONS``. To change the schema, edit the tables
below and append a step that makes the same change to an existing database.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from monitor.errors import MonitorError
from monitor.report import is_violation

metadata = sa.MetaData()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _part_of_call(name: str, *columns: sa.Column) -> sa.Table:
    """A table whose rows belong to one scored call, and go when the call does."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("call_id", sa.ForeignKey("calls.call_id", ondelete="CASCADE"), nullable=False, index=True),
        *columns,
    )


def _heard_phrase() -> list[sa.Column]:
    """A phrasebook phrase heard in a call: the columns events (scored calls) and alerts (live calls) share."""
    return [
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("phrase_id", sa.String(255), nullable=False),
        sa.Column("canonical", sa.Text, nullable=False),
        sa.Column("heard", sa.Text, nullable=False),
        sa.Column("start", sa.Float),
        sa.Column("end", sa.Float),
        sa.Column("article", sa.String(64)),
    ]


Timestamp = sa.DateTime(timezone=True)

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", Timestamp, nullable=False),
)

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_id", sa.String(255), nullable=False, unique=True),
    sa.Column("agent_id", sa.String(255), index=True),
    sa.Column("phrasebook", sa.String(255), nullable=False),
    sa.Column("phrasebook_version", sa.String(64)),
    sa.Column("audio", sa.Text, nullable=False),
    sa.Column("duration_s", sa.Float),
    sa.Column("score", sa.Integer),  # null when the agent said nothing
    sa.Column("score_max", sa.Integer),
    sa.Column("started_at", Timestamp),  # when the call took place, if known (a file alone does not say)
    sa.Column("scored_at", Timestamp, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
)

segments = _part_of_call(
    "segments",
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("speaker", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)

events = _part_of_call(
    "events",
    *_heard_phrase(),
    sa.Column("speaker", sa.String(16)),
    sa.Column("confidence", sa.Float),
    sa.Column("severity", sa.String(16)),
)

checks = _part_of_call(
    "checks",
    sa.Column("check_id", sa.String(255), nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("article", sa.String(64)),
)

deductions = _part_of_call(
    "deductions",
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("points", sa.Integer, nullable=False),
    sa.Column("source", sa.String(255)),
    sa.Column("severity", sa.String(16)),
    sa.Column("article", sa.String(64)),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_id", sa.String(255), nullable=False, index=True),  # a live call has no calls row until it is scored
    *_heard_phrase(),
    sa.Column("latency_s", sa.Float),
    sa.Column("created_at", Timestamp, nullable=False, default=_utc_now),
    sa.Column("acknowledged_at", Timestamp),
    sa.Column("acknowledged_by", sa.String(255)),
    sa.Column("agent_id", sa.String(255), index=True),  # version 2: whose call it is, for the agents' portal
    sa.Column("severity", sa.String(16)),  # version 2: the phrase's severity, for the dashboard's emphasis
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("agent_id", sa.String(255)),  # the agent whose calls an agent user may see
    sa.Column("password_hash", sa.Text),
    sa.Column("api_token_hash", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False, default=_utc_now),
    sa.Column("disabled_at", Timestamp),  # version 3: a disabled user can neither log in nor use their API token
    sa.CheckConstraint("role IN ('supervisor', 'agent')", name="users_role"),
)

sessions = sa.Table(  # version 2: web app log-ins
    "sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 of the cookie; the cookie itself is never stored
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False, default=_utc_now),
    sa.Column("expires_at", Timestamp, nullable=False),
)

nodes = sa.Table(  # version 4: the `monitor serve` processes sharing this database (a fleet)
    "nodes",
    metadata,
    sa.Column("node_id", sa.String(255), primary_key=True),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("heartbeat_at", Timestamp, nullable=False),
    sa.Column("max_calls", sa.Integer, nullable=False),
    sa.Column("free_slots", sa.Integer, nullable=False),
)

live_calls = sa.Table(  # version 4: calls being streamed into some node, and how they ended
    "live_calls",
    metadata,
    sa.Column("call_id", sa.String(255), primary_key=True),
    sa.Column("node_id", sa.String(255), nullable=False, index=True),
    sa.Column("agent_id", sa.String(255)),
    sa.Column("phrasebook", sa.String(255), nullable=False),
    sa.Column("external_ref", sa.String(255)),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp),
    sa.Column("status", sa.String(16), nullable=False),  # live, complete, interrupted
    sa.Column("reason", sa.Text),
    sa.CheckConstraint("status IN ('live', 'complete', 'interrupted')", name="live_calls_status"),
)

live_segments = sa.Table(  # version 4: a live call's transcript so far, so a call whose node dies keeps it
    "live_segments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_id", sa.ForeignKey("live_calls.call_id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("speaker", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)

# Version N's step takes a database at version N-1 to N. Version 1 is the
# first schema, which a database only ever gets whole, so it has no step.
def _add_web_app_tables(conn: sa.Connection) -> None:
    """Version 2: alerts know their agent and severity; web sessions."""
    for column in ("agent_id", "severity"):
        width = 255 if column == "agent_id" else 16
        conn.exec_driver_sql(f"ALTER TABLE alerts ADD COLUMN {column} VARCHAR({width})")
    conn.exec_driver_sql("CREATE INDEX ix_alerts_agent_id ON alerts (agent_id)")
    sessions.create(conn)


def _add_user_disabling(conn: sa.Connection) -> None:
    """Version 3: users can be disabled."""
    column_type = users.c.disabled_at.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE users ADD COLUMN disabled_at {column_type}")


def _add_fleet_tables(conn: sa.Connection) -> None:
    """Version 4: nodes, and the live calls they serve."""
    for table in (nodes, live_calls, live_segments):
        table.create(conn)


MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {2: _add_web_app_tables, 3: _add_user_disabling,
                                                          4: _add_fleet_tables}
SCHEMA_VERSION = max(MIGRATIONS, default=1)

_CHILD_TABLES = (segments, events, checks, deductions)
_INSERT_FOR_DIALECT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
# Any fixed number: it names the lock that keeps two processes from creating
# or migrating the same PostgreSQL database at once.
_MIGRATION_LOCK = 7_204_611


@dataclass
class CallFilter:
    """Which calls ``Store.list_calls`` returns."""

    agent_id: str | None = None
    """Only this agent's calls."""
    since: dt.datetime | None = None
    """Only calls that took place (or, when unknown, were scored) at or after this time."""
    until: dt.datetime | None = None
    """Only calls before this time."""
    min_score: int | None = None
    """Only calls scoring at least this."""
    max_score: int | None = None
    """Only calls scoring at most this."""
    violation: str | None = None
    """Only calls where this forbidden phrase (``phrase_id``) was heard."""
    limit: int = 500
    """At most this many calls."""


class Store:
    """A results database. Build it with ``open_store``."""

    def __init__(self, engine: sa.Engine, url: str):
        self.engine = engine
        self.url = url
        self._insert = _INSERT_FOR_DIALECT[engine.dialect.name]

    def save_report(self, report: dict, audio_path: str | None = None, started_at: dt.datetime | None = None) -> None:
        """Save a call's report, replacing any earlier one with the same call_id.

        ``audio_path`` is where the recording can be found (defaults to the
        report's ``audio``); ``started_at`` is when the call took place.
        """
        call_id = report["call_id"]
        row = {
            "call_id": call_id,
            "agent_id": report.get("agent_id"),
            "phrasebook": report["phrasebook"]["id"],
            "phrasebook_version": report["phrasebook"].get("version"),
            "audio": str(audio_path or report["audio"]),
            "duration_s": report.get("duration_s"),
            "score": report["score"]["total"],
            "score_max": report["score"]["max"],
            "started_at": started_at,
            "scored_at": _utc_now(),
            "report": report,
        }
        upsert = self._insert(calls).values(row)
        upsert = upsert.on_conflict_do_update(
            index_elements=[calls.c.call_id], set_={k: upsert.excluded[k] for k in row if k != "call_id"}
        )
        with self._writing() as conn:
            # The upsert comes first: it locks the call's row, so a concurrent
            # save of the same call waits here and then replaces these rows.
            conn.execute(upsert)
            for table in _CHILD_TABLES:
                conn.execute(table.delete().where(table.c.call_id == call_id))
            for table, rows in _child_rows(report).items():
                if rows:
                    conn.execute(table.insert(), [{**r, "call_id": call_id} for r in rows])

    def has_report(self, call_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(calls.c.id).where(calls.c.call_id == call_id)).first() is not None

    def get_report(self, call_id: str) -> dict | None:
        """The saved report JSON of a call, or None."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(calls.c.report).where(calls.c.call_id == call_id)).scalar_one_or_none()

    # --- what the web app reads and writes ---------------------------------------
    def call_row(self, call_id: str) -> dict | None:
        """A call's summary columns (no report JSON), or None."""
        columns = [c for c in calls.c if c.name != "report"]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*columns).where(calls.c.call_id == call_id)).mappings().first()
        return dict(row) if row else None

    def list_calls(self, filters: CallFilter | None = None) -> list[dict]:
        """Scored calls, newest first, with how many forbidden phrases each had."""
        f = filters or CallFilter()
        forbidden = (
            sa.select(sa.func.count())
            .where(events.c.call_id == calls.c.call_id, events.c.kind == "forbidden")
            .scalar_subquery()
        )
        when = sa.func.coalesce(calls.c.started_at, calls.c.scored_at)
        query = sa.select(*[c for c in calls.c if c.name != "report"], forbidden.label("violations"), when.label("when"))
        if f.agent_id:
            query = query.where(calls.c.agent_id == f.agent_id)
        if f.since:
            query = query.where(when >= f.since)
        if f.until:
            query = query.where(when < f.until)
        if f.min_score is not None:
            query = query.where(calls.c.score >= f.min_score)
        if f.max_score is not None:
            query = query.where(calls.c.score <= f.max_score)
        if f.violation:
            query = query.where(
                sa.exists().where(events.c.call_id == calls.c.call_id, events.c.kind == "forbidden",
                                  events.c.phrase_id == f.violation)
            )
        query = query.order_by(when.desc(), calls.c.id.desc()).limit(f.limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def violation_types(self, agent_id: str | None = None) -> list[dict]:
        """The forbidden phrases heard in scored calls: ``phrase_id``, ``canonical``, ``count``."""
        query = (
            sa.select(events.c.phrase_id, sa.func.min(events.c.canonical).label("canonical"), sa.func.count().label("count"))
            .where(events.c.kind == "forbidden")
            .group_by(events.c.phrase_id)
            .order_by(sa.func.count().desc(), events.c.phrase_id)
        )
        if agent_id:
            query = query.join(calls, calls.c.call_id == events.c.call_id).where(calls.c.agent_id == agent_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def agent_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            query = sa.select(calls.c.agent_id).where(calls.c.agent_id.is_not(None)).distinct().order_by(calls.c.agent_id)
            return list(conn.execute(query).scalars())

    def save_alert(self, alert: dict, agent_id: str | None = None, severity: str | None = None) -> int:
        """Persist a live alert (the CONTRACT's alert line); returns its id, which only grows."""
        row = {key: alert.get(key) for key in ("call_id", "kind", "phrase_id", "canonical", "heard", "start", "end",
                                               "article", "latency_s")}  # fmt: skip
        with self._writing() as conn:
            return conn.execute(
                alerts.insert().values(**row, agent_id=agent_id, severity=severity, created_at=_utc_now())
            ).inserted_primary_key[0]

    def alerts_after(self, after_id: int = 0, agent_id: str | None = None, call_id: str | None = None,
                     limit: int = 500) -> list[dict]:
        """Alerts with an id above ``after_id``, oldest first (a reconnecting dashboard's replay)."""
        query = sa.select(alerts).where(alerts.c.id > after_id).order_by(alerts.c.id).limit(limit)
        if agent_id:
            query = query.where(alerts.c.agent_id == agent_id)
        if call_id:
            query = query.where(alerts.c.call_id == call_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def recent_alerts(self, limit: int = 50) -> list[dict]:
        """The newest alerts, newest first."""
        with self.engine.connect() as conn:
            query = sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit)
            return [dict(r) for r in conn.execute(query).mappings()]

    def acknowledge_alert(self, alert_id: int, by: str) -> bool:
        """Mark an alert seen; False when there is no such alert. A second acknowledgement keeps the first."""
        with self._writing() as conn:
            found = conn.execute(sa.select(alerts.c.id).where(alerts.c.id == alert_id)).first()
            conn.execute(
                alerts.update()
                .where(alerts.c.id == alert_id, alerts.c.acknowledged_at.is_(None))
                .values(acknowledged_at=_utc_now(), acknowledged_by=by)
            )
        return found is not None

    def add_user(self, name: str, role: str, agent_id: str | None, password_hash: str | None) -> None:
        """Create a user, or replace the role, agent and password of an existing one (and enable them again).

        An existing user's sessions end: whoever was logged in must log in with the new password.
        """
        row = {"name": name, "role": role, "agent_id": agent_id, "password_hash": password_hash, "created_at": _utc_now(),
               "disabled_at": None}
        upsert = self._insert(users).values(row)
        upsert = upsert.on_conflict_do_update(
            index_elements=[users.c.name],
            set_={k: upsert.excluded[k] for k in ("role", "agent_id", "password_hash", "disabled_at")},
        )
        with self._writing() as conn:
            conn.execute(upsert)
            self._end_sessions(conn, name)

    def update_user(self, name: str, password_hash: str | None = None, disabled: bool | None = None) -> bool:
        """Change a user's password and/or disable or enable them, ending their sessions; False when there is no such user."""
        values = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if disabled is not None:
            values["disabled_at"] = _utc_now() if disabled else None
        with self._writing() as conn:
            found = conn.execute(users.update().where(users.c.name == name).values(**values)).rowcount > 0
            self._end_sessions(conn, name)
        return found

    def list_users(self) -> list[dict]:
        """Every user with ``name``, ``role``, ``agent_id``, ``created_at``, ``disabled_at``, ``has_token`` and ``sessions``
        (how many unexpired log-ins), by name."""
        live_sessions = (
            sa.select(sa.func.count())
            .where(sessions.c.user_id == users.c.id, sessions.c.expires_at > _utc_now())
            .scalar_subquery()
        )
        query = sa.select(users.c.name, users.c.role, users.c.agent_id, users.c.created_at, users.c.disabled_at,
                          users.c.api_token_hash.is_not(None).label("has_token"),
                          live_sessions.label("sessions")).order_by(users.c.name)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def get_user(self, name: str | None = None, user_id: int | None = None, api_token_hash: str | None = None) -> dict | None:
        """A user found by exactly one of name, id or API token hash (disabled ones too: see ``disabled_at``)."""
        column, value = next((c, v) for c, v in ((users.c.name, name), (users.c.id, user_id),
                                                 (users.c.api_token_hash, api_token_hash)) if v is not None)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(column == value)).mappings().first()
        return dict(row) if row else None

    def set_api_token_hash(self, name: str, token_hash: str) -> bool:
        """Replace a user's API token; False when there is no such user."""
        with self._writing() as conn:
            return conn.execute(users.update().where(users.c.name == name).values(api_token_hash=token_hash)).rowcount > 0

    def create_session(self, token_hash: str, user_id: int, csrf_token: str, expires_at: dt.datetime) -> None:
        """Save a new session; expired ones go at the same time, so the table does not grow with every log-in."""
        with self._writing() as conn:
            conn.execute(sessions.delete().where(sessions.c.expires_at <= _utc_now()))
            conn.execute(sessions.insert().values(token_hash=token_hash, user_id=user_id, csrf_token=csrf_token,
                                                  created_at=_utc_now(), expires_at=expires_at))

    def session(self, token_hash: str) -> dict | None:
        """The unexpired session with this token hash of an enabled user, joined with the user (``csrf_token``, ``name``, ``role``…)."""
        query = (
            sa.select(sessions.c.csrf_token, sessions.c.expires_at, users)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.token_hash == token_hash, users.c.disabled_at.is_(None))
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        expires = row["expires_at"]
        if expires.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
            expires = expires.replace(tzinfo=dt.timezone.utc)
        return dict(row) if expires > _utc_now() else None

    def delete_session(self, token_hash: str) -> None:
        with self._writing() as conn:
            conn.execute(sessions.delete().where(sessions.c.token_hash == token_hash))

    @staticmethod
    def _end_sessions(conn: sa.Connection, name: str) -> None:
        conn.execute(sessions.delete().where(sessions.c.user_id.in_(sa.select(users.c.id).where(users.c.name == name))))

    # --- a fleet of nodes (live calls on several `monitor serve` processes) ------------
    def heartbeat(self, node_id: str, max_calls: int, free_slots: int) -> None:
        """Say this node is alive and how many more calls it takes."""
        now = _utc_now()
        row = {"node_id": node_id, "started_at": now, "heartbeat_at": now, "max_calls": max_calls, "free_slots": free_slots}
        upsert = self._insert(nodes).values(row)
        upsert = upsert.on_conflict_do_update(
            index_elements=[nodes.c.node_id],
            set_={"heartbeat_at": now, "max_calls": max_calls, "free_slots": free_slots})
        with self._writing() as conn:
            conn.execute(upsert)

    def list_nodes(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(nodes).order_by(nodes.c.node_id)).mappings()]

    def silent_nodes(self, silent_for: dt.timedelta) -> list[str]:
        """Nodes that have not said they are alive for ``silent_for``."""
        cutoff = _utc_now() - silent_for
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(nodes.c.node_id).where(nodes.c.heartbeat_at < cutoff)).scalars())

    def forget_node(self, node_id: str) -> None:
        with self._writing() as conn:
            conn.execute(nodes.delete().where(nodes.c.node_id == node_id))

    def start_live_call(self, call_id: str, node_id: str, phrasebook: str, agent_id: str | None,
                        external_ref: str | None) -> None:
        with self._writing() as conn:
            conn.execute(live_calls.insert().values(
                call_id=call_id, node_id=node_id, phrasebook=phrasebook, agent_id=agent_id,
                external_ref=external_ref, started_at=_utc_now(), status="live"))

    def add_live_segment(self, call_id: str, start: float, end: float, speaker: str, text: str) -> None:
        with self._writing() as conn:
            conn.execute(live_segments.insert().values(call_id=call_id, start=start, end=end, speaker=speaker, text=text))

    def end_live_call(self, call_id: str, status: str, reason: str | None = None) -> bool:
        """Mark a live call ended; False when it had already ended (another node got there first)."""
        with self._writing() as conn:
            ended = conn.execute(
                live_calls.update().where(live_calls.c.call_id == call_id, live_calls.c.status == "live")
                .values(status=status, reason=reason, ended_at=_utc_now()))
            if ended.rowcount and status == "complete":  # its report holds the transcript now
                conn.execute(live_segments.delete().where(live_segments.c.call_id == call_id))
            return bool(ended.rowcount)

    def live_call_rows(self, node_id: str | None = None, status: str | None = "live") -> list[dict]:
        """Live calls (of one node, or all), oldest first."""
        query = sa.select(live_calls).order_by(live_calls.c.started_at)
        if node_id is not None:
            query = query.where(live_calls.c.node_id == node_id)
        if status is not None:
            query = query.where(live_calls.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def live_call_segments(self, call_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            query = sa.select(live_segments).where(live_segments.c.call_id == call_id).order_by(live_segments.c.start)
            return [dict(r) for r in conn.execute(query).mappings()]

    def notify(self, channel: str, payload: str) -> None:
        """PostgreSQL NOTIFY: every node LISTENing on ``channel`` gets ``payload`` (at most 8000 bytes)."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def libpq_url(self) -> str:
        """The database URL as libpq (and psycopg.connect) spell it."""
        return sa.make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar_one()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A transaction that may write; on SQLite it takes the write lock at once."""
        with self.engine.connect() as conn:
            with conn.execution_options(sqlite_immediate=True).begin():
                yield conn


def open_store(url: str) -> Store:
    """Open (and create or bring up to date) the database at ``url``.

    ``url`` is a SQLAlchemy URL (``sqlite:///reports.db``, ``postgresql://user@host/db``)
    or the path of a SQLite file.
    """
    if "://" not in url:
        url = f"sqlite:///{os.path.abspath(url)}"
    try:
        engine = _engine(url)
        store = Store(engine, url)
        _migrate(store)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError):
        raise MonitorError(f"database {_safe(url)}: not a sqlite:// or postgresql:// URL") from None
    except sa.exc.OperationalError as exc:
        raise MonitorError(f"database {_safe(url)}: cannot open ({_first_line(exc.orig)})") from None
    return store


def _engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not the psycopg2 default
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        # Wait for another process's write rather than fail at once.
        engine = sa.create_engine(parsed, connect_args={"timeout": 60})
        _sqlite_transactions(engine)
        return engine
    if parsed.get_backend_name() not in _INSERT_FOR_DIALECT:
        raise sa.exc.ArgumentError(parsed.get_backend_name())
    return sa.create_engine(parsed, pool_pre_ping=True)


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, begin transactions.

    Python's sqlite3 begins a transaction lazily and lets DDL run outside it;
    writers here begin with BEGIN IMMEDIATE instead, so two processes saving or
    creating tables at once queue on the lock rather than fail with "database
    is locked". WAL lets readers (the web app) read while a batch writes.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN")


def _use_wal(cursor, wait_s: float = 60.0) -> None:
    """Switch a SQLite file to WAL once; the mode is stored in the file.

    The switch needs the file to itself and, unlike ordinary writes, fails at
    once ("database is locked") instead of waiting when a second process is
    creating the same database, so it is retried here.
    """
    deadline = time.monotonic() + wait_s
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _migrate(store: Store) -> None:
    with store._writing() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        if not sa.inspect(conn).has_table(schema_migrations.name):
            metadata.create_all(conn)
            conn.execute(schema_migrations.insert(), [{"version": SCHEMA_VERSION, "applied_at": _utc_now()}])
            return
        current = conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar_one() or 0
        if current > SCHEMA_VERSION:
            raise MonitorError(
                f"database {_safe(store.url)}: schema version {current} is newer than this monitor's ({SCHEMA_VERSION}); upgrade it"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](conn)
            conn.execute(schema_migrations.insert().values(version=version, applied_at=_utc_now()))


def _child_rows(report: dict) -> dict[sa.Table, list[dict]]:
    """A report's rows for the tables other than ``calls``."""
    return {
        segments: [
            {"position": i, "start": s["start"], "end": s["end"], "speaker": s["speaker"], "text": s["text"]}
            for i, s in enumerate(report["transcript"])
        ],
        events: [
            {key: e.get(key) for key in ("kind", "phrase_id", "canonical", "heard", "start", "end", "speaker",
                                         "confidence", "article", "severity")}  # fmt: skip
            for e in report["events"]
            if e["kind"] != "forbidden" or is_violation(e)  # held for review: in the report, not counted
        ],
        checks: [
            {"check_id": c["id"], "passed": c["passed"], "detail": c.get("detail"), "article": c.get("article")}
            for c in report["checks"] or []
        ],
        deductions: [
            {key: d.get(key) for key in ("reason", "points", "source", "severity", "article")}
            for d in report["score"]["deductions"]
        ],
    }


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error and str(error).strip() else type(error).__name__
