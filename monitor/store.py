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
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from monitor.errors import MonitorError
from monitor.report import is_violation
from monitor.review import reviewed_report, reviewed_total

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
    sa.Column("started_at", Timestamp),  # when the call took place: the manifest's started_at, else the file's mtime
    sa.Column("scored_at", Timestamp, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("phrasebook_title", sa.Text),  # version 5: shown instead of the phrasebook's id
    sa.Column("transcript", sa.Text),  # version 5: every sentence, one a line, for search
    sa.Column("reviewed_score", sa.Integer),  # version 5: the score after review (= score until a review changes it)
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
    sa.Column("description", sa.Text),  # version 5: what the check asks, for filters and rule health
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
    sa.Column("false_alarm_at", Timestamp),  # version 5: a reviewer marked the alert a false alarm…
    sa.Column("false_alarm_by", sa.String(255)),  # …who…
    sa.Column("false_alarm_note", sa.Text),  # …and why
    sa.Column("phrasebook", sa.String(64)),  # version 6: the phrasebook that raised it, for rule health
    sa.Column("speaker", sa.String(16)),  # version 6: who said it, as judged when it was raised…
    sa.Column("speaker_confidence", sa.Float),  # …how sure that was (None: stereo, the channel says)…
    sa.Column("uncertain_speaker", sa.Boolean),  # …and whether the speaker was still uncertain (mono)
    sa.Column("decode_pass", sa.Integer),  # version 6: 1 for the first pass, 2 for a phrase only the refined text holds
    sa.Column("retracted_at", Timestamp),  # version 6: the second pass no longer heard the phrase…
    sa.Column("retracted_heard", sa.Text),  # …what was heard there in the end…
    sa.Column("retracted_reason", sa.String(32)),  # …and why: "customer" when the sentence was the customer's
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
    sa.CheckConstraint("role IN ('supervisor', 'qa', 'agent')", name="users_role"),  # version 5: qa
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

appeals = sa.Table(  # version 5: an agent contests one deduction of their call (申诉); a reviewer decides (复核)
    "appeals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("call_id", sa.ForeignKey("calls.call_id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("deduction_index", sa.Integer, nullable=False),  # into the machine report's score.deductions
    sa.Column("source", sa.String(255)),  # the deduction's phrase or check id when appealed: a re-scored call
    sa.Column("points", sa.Integer, nullable=False),  # whose deduction at that index differs leaves the appeal aside
    sa.Column("article", sa.String(64)),
    sa.Column("start", sa.Float),  # the evidence's time in the recording, for the reviewer's player
    sa.Column("deduction_reason", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),  # the agent's
    sa.Column("appealed_by", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decided_by", sa.String(255)),
    sa.Column("decided_at", Timestamp),
    sa.Column("note", sa.Text),  # the reviewer's
    sa.UniqueConstraint("call_id", "deduction_index", name="appeals_once"),
    sa.CheckConstraint("status IN ('open', 'upheld', 'overturned')", name="appeals_status"),
)

added_deductions = _part_of_call(  # version 5: a deduction the machine missed, added by a reviewer
    "added_deductions",
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("points", sa.Integer, nullable=False),
    sa.Column("source", sa.String(255)),  # the phrase or check the machine should have caught, if any
    sa.Column("article", sa.String(64)),
    sa.Column("start", sa.Float),  # where in the recording
    sa.Column("added_by", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

audit_log = sa.Table(  # version 5: every review action, who did it, when and why; rows are never changed
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # appeal, upheld, overturned, added_deduction, false_alarm
    sa.Column("call_id", sa.String(255), index=True),  # no foreign key: the trail outlives the call
    sa.Column("subject_id", sa.Integer),  # the appeal, added deduction or alert
    sa.Column("why", sa.Text),
    sa.Column("detail", sa.JSON),
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


def _add_reviews(conn: sa.Connection) -> None:
    """Version 5: the qa role; appeals, added deductions and their audit trail; false alarms; transcript search;
    phrasebook titles and check descriptions. Existing calls get their new columns from their saved reports."""

    for column in (calls.c.phrasebook_title, calls.c.transcript, calls.c.reviewed_score, checks.c.description,
                   alerts.c.false_alarm_at, alerts.c.false_alarm_by, alerts.c.false_alarm_note):
        _add_column(conn, column)
    _allow_qa_role(conn)
    for table in (appeals, added_deductions, audit_log):
        table.create(conn)
    _create_search_index(conn)
    for call_id, report in conn.execute(sa.select(calls.c.call_id, calls.c.report)).all():
        conn.execute(calls.update().where(calls.c.call_id == call_id).values(
            phrasebook_title=report["phrasebook"].get("title"), transcript=_transcript_text(report),
            reviewed_score=report["score"]["total"]))
        _index_transcript(conn, call_id, _transcript_text(report))
        for check in report["checks"] or []:
            conn.execute(checks.update().where(checks.c.call_id == call_id, checks.c.check_id == check["id"])
                         .values(description=check.get("description")))


def _allow_qa_role(conn: sa.Connection) -> None:
    """Widen the users' role constraint. SQLite cannot alter a constraint, so its table is rebuilt (sessions kept)."""
    allowed = next(c for c in users.constraints if isinstance(c, sa.CheckConstraint) and c.name == "users_role").sqltext
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE users DROP CONSTRAINT users_role")
        conn.exec_driver_sql(f"ALTER TABLE users ADD CONSTRAINT users_role CHECK ({allowed})")
        return
    kept = [dict(r) for r in conn.execute(sa.select(sessions)).mappings()]
    ddl = str(sa.schema.CreateTable(users).compile(dialect=conn.dialect)).replace("CREATE TABLE users", "CREATE TABLE users_new", 1)
    conn.exec_driver_sql(ddl)
    names = ", ".join(c.name for c in users.c if c.name != "disabled_at") + ", disabled_at"
    conn.exec_driver_sql(f"INSERT INTO users_new ({names}) SELECT {names} FROM users")
    conn.exec_driver_sql("DROP TABLE users")  # its sessions go with it (ON DELETE CASCADE) and come back below
    conn.exec_driver_sql("ALTER TABLE users_new RENAME TO users")
    if kept:
        conn.execute(sessions.insert(), kept)


def _create_search_index(conn: sa.Connection) -> None:
    """Transcript search that works for Chinese, which has no spaces between words.

    SQLite: an FTS5 table with the trigram tokenizer (any substring of three
    characters or more is found through the index; shorter ones are scanned
    with LIKE). PostgreSQL: a pg_trgm GIN index on ``calls.transcript`` that
    serves ILIKE; when the extension cannot be created (not installed, or no
    right to), ILIKE still works, scanning.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("CREATE VIRTUAL TABLE calls_fts USING fts5(call_id UNINDEXED, text, tokenize='trigram')")
        return
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            conn.exec_driver_sql("CREATE INDEX ix_calls_transcript_trgm ON calls USING gin (transcript gin_trgm_ops)")
    except sa.exc.DBAPIError as exc:
        print(f"monitor: note: no trigram index for transcript search ({_first_line(exc.orig)}); search scans instead",
              file=sys.stderr)


def _add_alert_details(conn: sa.Connection) -> None:
    """Version 6: an alert keeps its phrasebook, its speaker as judged live, its decoding pass, and its retraction."""
    for column in (alerts.c.phrasebook, alerts.c.speaker, alerts.c.speaker_confidence, alerts.c.uncertain_speaker,
                   alerts.c.decode_pass, alerts.c.retracted_at, alerts.c.retracted_heard, alerts.c.retracted_reason):
        _add_column(conn, column)


def _add_column(conn: sa.Connection, column: sa.Column) -> None:
    column_type = column.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {column.table.name} ADD COLUMN {column.name} {column_type}")


MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {2: _add_web_app_tables, 3: _add_user_disabling,
                                                          4: _add_fleet_tables, 5: _add_reviews,
                                                          6: _add_alert_details}
SCHEMA_VERSION = max(MIGRATIONS, default=1)

_CHILD_TABLES = (segments, events, checks, deductions)
_INSERT_FOR_DIALECT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
# Any fixed number: it names the lock that keeps two processes from creating
# or migrating the same PostgreSQL database at once.
_MIGRATION_LOCK = 7_204_611


SORTS = ("-when", "when", "score", "-score", "agent", "-agent")
"""How ``Store.list_calls`` may order calls: a column, descending with ``-``."""


@dataclass
class CallFilter:
    """Which calls ``Store.list_calls`` returns, in which order."""

    agent_id: str | None = None
    """Only this agent's calls."""
    since: dt.datetime | None = None
    """Only calls that took place (or, when unknown, were scored) at or after this time."""
    until: dt.datetime | None = None
    """Only calls before this time."""
    min_score: int | None = None
    """Only calls scoring (after review) at least this."""
    max_score: int | None = None
    """Only calls scoring (after review) at most this."""
    violation: str | None = None
    """Only calls where this forbidden phrase (``phrase_id``) was heard or this check (``check_id``) failed."""
    q: str | None = None
    """Only calls whose transcript (or call id) contains this text."""
    sort: str = "-when"
    """One of ``SORTS``."""
    offset: int = 0
    """Skip this many calls (pagination)."""
    limit: int = 500
    """At most this many calls."""


class ReviewRefused(Exception):
    """A review action that cannot be done; ``reason`` is ``missing`` (no such thing), ``invalid`` or ``conflict``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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
            "phrasebook_title": report["phrasebook"].get("title"),
            "transcript": _transcript_text(report),
            "reviewed_score": report["score"]["total"],
        }
        upsert = self._insert(calls).values(row)
        replaced = {k: upsert.excluded[k] for k in row if k != "call_id"}
        replaced["started_at"] = sa.func.coalesce(upsert.excluded.started_at, calls.c.started_at)  # a re-score may not know it
        upsert = upsert.on_conflict_do_update(index_elements=[calls.c.call_id], set_=replaced)
        with self._writing() as conn:
            # The upsert comes first: it locks the call's row, so a concurrent
            # save of the same call waits here and then replaces these rows.
            conn.execute(upsert)
            for table in _CHILD_TABLES:
                conn.execute(table.delete().where(table.c.call_id == call_id))
            for table, rows in _child_rows(report).items():
                if rows:
                    conn.execute(table.insert(), [{**r, "call_id": call_id} for r in rows])
            _index_transcript(conn, call_id, row["transcript"])
            self._rescore(conn, call_id)  # reviews of an earlier score of this call still apply where they fit

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
        """Scored calls (newest first unless ``filters.sort`` says otherwise), without their report JSON.

        Each row has the ``calls`` columns, ``score`` after review and ``machine_score``, ``when`` (the call's
        time, else its scoring time), ``violations`` (forbidden phrases heard) and ``checks_failed``.
        """
        f = filters or CallFilter()
        when = _when()
        score = _score()
        order = {"when": when, "score": score, "agent": calls.c.agent_id}[f.sort.lstrip("-")]
        order = order.desc() if f.sort.startswith("-") else order.asc()
        query = (
            sa.select(*[c for c in calls.c if c.name not in ("report", "transcript", "score", "reviewed_score")],
                      score.label("score"), calls.c.score.label("machine_score"), _count_forbidden().label("violations"),
                      _count_failed_checks().label("checks_failed"), when.label("when"))
            .where(*self._conditions(f))
            .order_by(order.nulls_last(), calls.c.id.desc())
            .offset(f.offset)
            .limit(f.limit)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def count_calls(self, filters: CallFilter | None = None) -> int:
        """How many calls ``list_calls`` would find without its offset and limit."""
        query = sa.select(sa.func.count()).select_from(calls).where(*self._conditions(filters or CallFilter()))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def _conditions(self, f: CallFilter) -> list:
        when, score = _when(), _score()
        conditions = []
        if f.agent_id:
            conditions.append(calls.c.agent_id == f.agent_id)
        if f.since:
            conditions.append(when >= f.since)
        if f.until:
            conditions.append(when < f.until)
        if f.min_score is not None:
            conditions.append(score >= f.min_score)
        if f.max_score is not None:
            conditions.append(score <= f.max_score)
        if f.violation:
            conditions.append(sa.or_(
                sa.exists().where(events.c.call_id == calls.c.call_id, events.c.kind == "forbidden",
                                  events.c.phrase_id == f.violation),
                sa.exists().where(checks.c.call_id == calls.c.call_id, checks.c.passed.is_(False),
                                  checks.c.check_id == f.violation),
            ))
        if f.q and f.q.strip():
            conditions.append(self._transcript_has(f.q.strip()))
        return conditions

    def _transcript_has(self, text: str):
        """Calls whose transcript or call id contains ``text`` (see ``_create_search_index``)."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        in_call_id = calls.c.call_id.ilike(pattern, escape="\\")
        if self.engine.dialect.name == "sqlite" and len(text) >= 3:
            phrase = '"' + text.replace('"', '""') + '"'
            matched = sa.text("SELECT call_id FROM calls_fts WHERE calls_fts MATCH :phrase").bindparams(phrase=phrase)
            return sa.or_(calls.c.call_id.in_(matched.columns(sa.column("call_id"))), in_call_id)
        return sa.or_(calls.c.transcript.ilike(pattern, escape="\\"), in_call_id)

    def violation_types(self, agent_id: str | None = None) -> list[dict]:
        """What calls can be filtered by: forbidden phrases heard and checks failed, most frequent first.

        Each is ``phrase_id`` (a phrase or check id), ``canonical`` (its words or the check's description),
        ``kind`` (``forbidden`` or ``check``) and ``count``; only in ``agent_id``'s calls when it is given.
        """
        chosen = sa.select(calls.c.call_id).where(calls.c.agent_id == agent_id)
        phrases = (sa.select(events.c.phrase_id, sa.func.min(events.c.canonical).label("canonical"),
                             sa.literal("forbidden").label("kind"), sa.func.count().label("count"))
                   .where(events.c.kind == "forbidden").group_by(events.c.phrase_id))
        failed = (sa.select(checks.c.check_id.label("phrase_id"),
                            sa.func.coalesce(sa.func.min(checks.c.description), checks.c.check_id).label("canonical"),
                            sa.literal("check").label("kind"), sa.func.count().label("count"))
                  .where(checks.c.passed.is_(False)).group_by(checks.c.check_id))
        if agent_id:
            phrases = phrases.where(events.c.call_id.in_(chosen))
            failed = failed.where(checks.c.call_id.in_(chosen))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(phrases).mappings()] + [dict(r) for r in conn.execute(failed).mappings()]
        return sorted(rows, key=lambda r: (-r["count"], r["kind"], r["phrase_id"]))

    def agent_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            query = sa.select(calls.c.agent_id).where(calls.c.agent_id.is_not(None)).distinct().order_by(calls.c.agent_id)
            return list(conn.execute(query).scalars())

    def save_alert(self, alert: dict, agent_id: str | None = None, severity: str | None = None,
                   phrasebook: str | None = None) -> int:
        """Persist a live alert (the CONTRACT's alert line); returns its id, which only grows."""
        row = {key: alert.get(key) for key in ("call_id", "kind", "phrase_id", "canonical", "heard", "start", "end",
                                               "article", "latency_s", "speaker", "speaker_confidence")}  # fmt: skip
        row["uncertain_speaker"] = bool(alert.get("uncertain_speaker"))
        row["decode_pass"] = alert.get("pass", 1)
        with self._writing() as conn:
            return conn.execute(
                alerts.insert().values(**row, agent_id=agent_id, severity=severity, phrasebook=phrasebook,
                                       created_at=_utc_now())
            ).inserted_primary_key[0]

    def retract_alert(self, retraction: dict) -> int | None:
        """Mark withdrawn the alert a ``retracted`` line names (its call, phrase and start; ``reason`` "customer"
        when the sentence turned out to be the customer's, else the second pass no longer heard it); returns its id,
        None when no such alert is stored (raised before a restart, or never stored)."""
        with self._writing() as conn:
            alert_id = conn.execute(
                sa.select(alerts.c.id).where(alerts.c.call_id == retraction["call_id"],
                                             alerts.c.phrase_id == retraction["phrase_id"],
                                             sa.func.abs(alerts.c.start - retraction["start"]) < 0.001,
                                             alerts.c.retracted_at.is_(None))
                .order_by(alerts.c.id).limit(1)).scalar_one_or_none()
            if alert_id is not None:
                conn.execute(alerts.update().where(alerts.c.id == alert_id)
                             .values(retracted_at=_utc_now(), retracted_heard=retraction.get("heard_again"),
                                     retracted_reason=retraction.get("reason")))
        return alert_id

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

    # --- reviews (复核): appeals, added deductions, false alarms, all in the audit log ------------
    def file_appeal(self, call_id: str, deduction_index: int, reason: str, by: str, role: str) -> int:
        """Appeal one deduction of a call's machine report; returns the appeal's id.

        ``ReviewRefused``: ``missing`` call, ``invalid`` index, ``conflict`` when that deduction was appealed already.
        Who may appeal which call is the caller's to check.
        """
        try:
            return self._file_appeal(call_id, deduction_index, reason, by, role)
        except sa.exc.IntegrityError:  # a concurrent appeal of the same deduction won (PostgreSQL)
            raise ReviewRefused("conflict", "this deduction has been appealed already") from None

    def _file_appeal(self, call_id: str, deduction_index: int, reason: str, by: str, role: str) -> int:
        with self._writing() as conn:
            report = conn.execute(sa.select(calls.c.report).where(calls.c.call_id == call_id)).scalar_one_or_none()
            if report is None:
                raise ReviewRefused("missing", "no such call")
            deductions = report["score"]["deductions"]
            if not 0 <= deduction_index < len(deductions):
                raise ReviewRefused("invalid", f"deduction must be an index into score.deductions (0–{len(deductions) - 1})")
            taken = sa.select(appeals.c.id).where(appeals.c.call_id == call_id, appeals.c.deduction_index == deduction_index)
            if conn.execute(taken).first() is not None:
                raise ReviewRefused("conflict", "this deduction has been appealed already")
            deduction = deductions[deduction_index]
            appeal_id = conn.execute(appeals.insert().values(
                call_id=call_id, deduction_index=deduction_index, source=deduction.get("source"),
                points=deduction["points"], article=deduction.get("article"),
                start=(deduction.get("evidence") or {}).get("start"), deduction_reason=deduction["reason"],
                reason=reason, appealed_by=by, created_at=_utc_now(), status="open",
            )).inserted_primary_key[0]
            _audit(conn, by, role, "appeal", call_id, appeal_id, reason,
                   {"deduction": deduction_index, "source": deduction.get("source"), "points": deduction["points"]})
        return appeal_id

    def decide_appeal(self, appeal_id: int, decision: str, note: str, by: str, role: str) -> dict:
        """Uphold or overturn an open appeal; an overturn re-scores the call. Returns the appeal as decided.

        ``ReviewRefused``: ``missing`` appeal, ``invalid`` decision, ``conflict`` when it was decided already
        (a decision stands).
        """
        if decision not in ("upheld", "overturned"):
            raise ReviewRefused("invalid", "decision must be upheld or overturned")
        with self._writing() as conn:
            row = conn.execute(sa.select(appeals).where(appeals.c.id == appeal_id)).mappings().first()
            if row is None:
                raise ReviewRefused("missing", "no such appeal")
            decided = conn.execute(
                appeals.update().where(appeals.c.id == appeal_id, appeals.c.status == "open")
                .values(status=decision, decided_by=by, decided_at=_utc_now(), note=note)
            ).rowcount
            if not decided:
                raise ReviewRefused("conflict", "this appeal has been decided already")
            _audit(conn, by, role, decision, row["call_id"], appeal_id, note,
                   {"deduction": row["deduction_index"], "source": row["source"], "points": row["points"]})
            self._rescore(conn, row["call_id"])
            return dict(conn.execute(sa.select(appeals).where(appeals.c.id == appeal_id)).mappings().one())

    def add_deduction(self, call_id: str, reason: str, points: int, by: str, role: str, source: str | None = None,
                      article: str | None = None, start: float | None = None) -> int:
        """A deduction the machine missed, added by a reviewer; re-scores the call. ``ReviewRefused`` (``missing``)."""
        with self._writing() as conn:
            if conn.execute(sa.select(calls.c.id).where(calls.c.call_id == call_id)).first() is None:
                raise ReviewRefused("missing", "no such call")
            added_id = conn.execute(added_deductions.insert().values(
                call_id=call_id, reason=reason, points=points, source=source, article=article, start=start,
                added_by=by, created_at=_utc_now(),
            )).inserted_primary_key[0]
            _audit(conn, by, role, "added_deduction", call_id, added_id, reason,
                   {"points": points, "source": source, "article": article, "start": start})
            self._rescore(conn, call_id)
        return added_id

    def mark_false_alarm(self, alert_id: int, note: str, by: str, role: str) -> dict | None:
        """Mark a live alert a false alarm (the first mark stands); the alert, or None when there is none."""
        with self._writing() as conn:
            alert = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().first()
            if alert is None:
                return None
            if alert["false_alarm_at"] is None:
                conn.execute(alerts.update().where(alerts.c.id == alert_id)
                             .values(false_alarm_at=_utc_now(), false_alarm_by=by, false_alarm_note=note))
                _audit(conn, by, role, "false_alarm", alert["call_id"], alert_id, note,
                       {"phrase_id": alert["phrase_id"], "start": alert["start"]})
            return dict(conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().one())

    def get_appeal(self, appeal_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(appeals).where(appeals.c.id == appeal_id)).mappings().first()
        return dict(row) if row else None

    def list_appeals(self, open_only: bool | None = None, agent_id: str | None = None, limit: int = 200) -> list[dict]:
        """Appeals with their call's ``agent_id``: open ones (oldest first), decided ones (newest first), or all."""
        query = sa.select(appeals, calls.c.agent_id).join(calls, calls.c.call_id == appeals.c.call_id)
        if open_only is True:
            query = query.where(appeals.c.status == "open").order_by(appeals.c.id)
        elif open_only is False:
            query = query.where(appeals.c.status != "open").order_by(appeals.c.decided_at.desc(), appeals.c.id.desc())
        else:
            query = query.order_by(appeals.c.id.desc())
        if agent_id:
            query = query.where(calls.c.agent_id == agent_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.limit(limit)).mappings()]

    def reviewed_report(self, call_id: str) -> dict | None:
        """The call's report with its reviews applied (``monitor.review.reviewed_report``), or None."""
        with self.engine.connect() as conn:
            report = conn.execute(sa.select(calls.c.report).where(calls.c.call_id == call_id)).scalar_one_or_none()
            if report is None:
                return None
            appealed, added = self._reviews(conn, call_id)
            history = conn.execute(sa.select(audit_log).where(audit_log.c.call_id == call_id)
                                   .order_by(audit_log.c.id)).mappings().all()
        return reviewed_report(report, appealed, added, [dict(h) for h in history])

    def _reviews(self, conn: sa.Connection, call_id: str) -> tuple[list[dict], list[dict]]:
        appealed = conn.execute(sa.select(appeals).where(appeals.c.call_id == call_id).order_by(appeals.c.id)).mappings()
        added = conn.execute(sa.select(added_deductions).where(added_deductions.c.call_id == call_id)
                             .order_by(added_deductions.c.id)).mappings()
        return [dict(a) for a in appealed], [dict(a) for a in added]

    def _rescore(self, conn: sa.Connection, call_id: str) -> None:
        report = conn.execute(sa.select(calls.c.report).where(calls.c.call_id == call_id)).scalar_one()
        total = reviewed_total(report, *self._reviews(conn, call_id))
        conn.execute(calls.update().where(calls.c.call_id == call_id).values(reviewed_score=total))

    def rule_health(self) -> list[dict]:
        """Each phrase or check's record under review, per phrasebook, worst measured precision first.

        ``phrasebook``, ``phrasebook_title``, ``source`` (phrase or check id), ``label``, ``kind``;
        ``events``: forbidden phrases heard / checks failed in scored calls; ``confirmed``: appeals upheld;
        ``overturned``: appeals overturned plus live alerts marked false alarms (``false_alarms``); ``missed``:
        deductions reviewers added naming it; ``precision``: confirmed / (confirmed + overturned), None before
        any review. A check id (``farewell``) names a different rule in each phrasebook, hence the pair; an alert
        stored before schema version 6 has no phrasebook, so its false alarm counts wherever its phrase was heard.
        """
        rules: dict[tuple[str | None, str], dict] = {}

        def rule(phrasebook: str | None, source: str, label: str | None = None, kind: str | None = None) -> dict:
            entry = rules.setdefault((phrasebook, source), {
                "phrasebook": phrasebook, "source": source, "label": label or source, "kind": kind, "events": 0,
                "confirmed": 0, "overturned": 0, "missed": 0, "false_alarms": 0})
            if label and entry["label"] == source:
                entry["label"] = label
            entry["kind"] = entry["kind"] or kind
            return entry

        book = calls.c.phrasebook
        heard = (sa.select(book, events.c.phrase_id, sa.func.min(events.c.canonical), sa.literal("forbidden"),
                           sa.func.count())
                 .join(calls, calls.c.call_id == events.c.call_id).where(events.c.kind == "forbidden")
                 .group_by(book, events.c.phrase_id))
        failed = (sa.select(book, checks.c.check_id, sa.func.coalesce(sa.func.min(checks.c.description), checks.c.check_id),
                            sa.literal("check"), sa.func.count())
                  .join(calls, calls.c.call_id == checks.c.call_id).where(checks.c.passed.is_(False))
                  .group_by(book, checks.c.check_id))
        decided = (sa.select(book, appeals.c.source, appeals.c.status, sa.func.count())
                   .join(calls, calls.c.call_id == appeals.c.call_id)
                   .where(appeals.c.status != "open", appeals.c.source.is_not(None))
                   .group_by(book, appeals.c.source, appeals.c.status))
        missed = (sa.select(book, added_deductions.c.source, sa.func.count())
                  .join(calls, calls.c.call_id == added_deductions.c.call_id)
                  .where(added_deductions.c.source.is_not(None)).group_by(book, added_deductions.c.source))
        false_alarms = (sa.select(alerts.c.phrasebook, alerts.c.phrase_id, sa.func.min(alerts.c.canonical), sa.func.count())
                        .where(alerts.c.false_alarm_at.is_not(None)).group_by(alerts.c.phrasebook, alerts.c.phrase_id))
        with self.engine.connect() as conn:
            for phrasebook, source, label, kind, n in conn.execute(heard).all() + conn.execute(failed).all():
                rule(phrasebook, source, label, kind)["events"] += n
            for phrasebook, source, status, n in conn.execute(decided):
                rule(phrasebook, source)["confirmed" if status == "upheld" else "overturned"] += n
            for phrasebook, source, n in conn.execute(missed):
                rule(phrasebook, source)["missed"] += n
            for phrasebook, phrase_id, canonical, n in conn.execute(false_alarms):
                if phrasebook is not None:
                    where = [(phrasebook, phrase_id)]
                else:  # an alert stored before version 6: wherever that phrase was heard
                    where = [key for key in rules if key[1] == phrase_id] or [(None, phrase_id)]
                for phrasebook, source in where:
                    entry = rule(phrasebook, source, canonical, "forbidden")
                    entry["overturned"] += n
                    entry["false_alarms"] += n
            titles = dict(conn.execute(sa.select(book, sa.func.max(calls.c.phrasebook_title)).group_by(book)).all())
        for entry in rules.values():
            reviewed = entry["confirmed"] + entry["overturned"]
            entry["precision"] = round(entry["confirmed"] / reviewed, 3) if reviewed else None
            entry["phrasebook_title"] = titles.get(entry["phrasebook"]) or entry["phrasebook"]
        return sorted(rules.values(), key=lambda e: (e["precision"] is None, e["precision"] or 0, -e["overturned"],
                                                      -e["missed"], -e["events"], e["source"], e["phrasebook"] or ""))

    def overview(self, now: dt.datetime | None = None, days: int = 30, worst: int = 8) -> dict:
        """The supervisor's overview, in the server's time zone: calls today and this week, the average score
        (after review), violations by type and by agent, a daily trend, the worst calls and the open appeals."""
        now = (now or _utc_now()).astimezone()
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        week = today - dt.timedelta(days=today.weekday())
        first = today - dt.timedelta(days=days - 1)
        when, score = _when(), _score()
        in_period = sa.select(calls.c.call_id, calls.c.agent_id).where(when >= first).subquery()
        heard = (sa.select(in_period.c.agent_id, events.c.phrase_id, sa.func.min(events.c.canonical), sa.literal("forbidden"),
                           sa.func.count())
                 .join(in_period, in_period.c.call_id == events.c.call_id).where(events.c.kind == "forbidden")
                 .group_by(in_period.c.agent_id, events.c.phrase_id))
        failed = (sa.select(in_period.c.agent_id, checks.c.check_id,
                            sa.func.coalesce(sa.func.min(checks.c.description), checks.c.check_id), sa.literal("check"),
                            sa.func.count())
                  .join(in_period, in_period.c.call_id == checks.c.call_id).where(checks.c.passed.is_(False))
                  .group_by(in_period.c.agent_id, checks.c.check_id))
        with self.engine.connect() as conn:
            recent = conn.execute(sa.select(when, score, calls.c.agent_id).where(when >= first)).all()
            violations = conn.execute(heard).all() + conn.execute(failed).all()
            lowest = conn.execute(
                sa.select(calls.c.call_id, calls.c.agent_id, score.label("score"), when.label("when"),
                          _count_forbidden().label("violations"))
                .where(when >= first, score.is_not(None)).order_by(score, when.desc()).limit(worst)
            ).mappings().all()
            open_appeals = conn.execute(sa.select(sa.func.count()).where(appeals.c.status == "open")).scalar_one()

        def average(scores: list) -> float | None:
            scored = [s for s in scores if s is not None]
            return round(sum(scored) / len(scored), 1) if scored else None

        def summary(since: dt.datetime) -> dict:
            scores = [s for w, s, _ in recent if _aware(w) >= since]
            return {"calls": len(scores), "average": average(scores)}

        daily: dict[dt.date, list] = {}
        agents: dict[str | None, dict] = {}
        for when_, score_, agent_id in recent:
            daily.setdefault(_aware(when_).astimezone(now.tzinfo).date(), []).append(score_)
            agents.setdefault(agent_id, {"agent_id": agent_id, "scores": [], "violations": 0, "checks_failed": 0})
            agents[agent_id]["scores"].append(score_)
        by_type: dict[str, dict] = {}
        for agent_id, source, label, kind, count in violations:
            entry = by_type.setdefault(source, {"phrase_id": source, "canonical": label, "kind": kind, "count": 0})
            entry["count"] += count
            if agent_id in agents:
                agents[agent_id]["violations" if kind == "forbidden" else "checks_failed"] += count
        trend = []
        for offset in range(days):
            day = (first + dt.timedelta(days=offset)).date()
            trend.append({"day": day, "calls": len(daily.get(day, [])), "average": average(daily.get(day, []))})
        return {
            "today": summary(today), "week": summary(week), "period": summary(first), "days": days,
            "violations": sorted(by_type.values(), key=lambda r: (-r["count"], r["kind"], r["phrase_id"])),
            "agents": sorted(({"agent_id": a["agent_id"], "calls": len(a["scores"]), "average": average(a["scores"]),
                               "violations": a["violations"], "checks_failed": a["checks_failed"]} for a in agents.values()),
                             key=lambda a: (-(a["violations"] + a["checks_failed"]), a["agent_id"] or "")),
            "trend": trend, "worst": [dict(r) for r in lowest], "open_appeals": open_appeals,
        }

    def violations_of(self, call_ids: list[str]) -> dict[str, list[str]]:
        """Call id → its forbidden phrases heard (``canonical@mm:ss``) and checks failed, for the CSV export."""
        found: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for chunk in range(0, len(call_ids), 500):
                ids = call_ids[chunk : chunk + 500]
                heard = conn.execute(sa.select(events.c.call_id, events.c.canonical, events.c.start)
                                     .where(events.c.kind == "forbidden", events.c.call_id.in_(ids))
                                     .order_by(events.c.call_id, events.c.start))
                for call_id, canonical, start in heard:
                    at = "" if start is None else f"@{int(start // 60):02d}:{start % 60:04.1f}"
                    found.setdefault(call_id, []).append(f"禁语：{canonical}{at}")
                failed = conn.execute(sa.select(checks.c.call_id, checks.c.check_id, checks.c.description)
                                      .where(checks.c.passed.is_(False), checks.c.call_id.in_(ids)))
                for call_id, check_id, description in failed:
                    found.setdefault(call_id, []).append(f"未通过：{description or check_id}")
        return found

    def agent_names(self) -> dict[str, str]:
        """Agent id → the name of the agent user who has it (for showing agents by name)."""
        query = sa.select(users.c.agent_id, users.c.name).where(users.c.agent_id.is_not(None)).order_by(users.c.id)
        with self.engine.connect() as conn:
            return {agent_id: name for agent_id, name in conn.execute(query)}

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

    def replace_live_segments(self, call_id: str, speaker: str, start: float, end: float, segments: list[dict]) -> None:
        """The second pass's text in place of the first's: ``speaker``'s segments starting in ``start``-``end``."""
        with self._writing() as conn:
            conn.execute(live_segments.delete().where(
                live_segments.c.call_id == call_id, live_segments.c.speaker == speaker,
                live_segments.c.start >= start, live_segments.c.start < end))
            if segments:
                conn.execute(live_segments.insert(), [
                    {"call_id": call_id, **{k: s[k] for k in ("start", "end", "speaker", "text")}} for s in segments])

    def relabel_live_segments(self, call_id: str, segments: list[dict]) -> None:
        """New speakers for kept sentences of a mono call (a ``speakers`` event): each found by its start."""
        with self._writing() as conn:
            for segment in segments:
                conn.execute(live_segments.update().where(
                    live_segments.c.call_id == call_id, sa.func.abs(live_segments.c.start - segment["start"]) < 0.01,
                ).values(speaker=segment["speaker"]))

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
            _create_search_index(conn)
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
            {"check_id": c["id"], "passed": c["passed"], "detail": c.get("detail"), "article": c.get("article"),
             "description": c.get("description")}
            for c in report["checks"] or []
        ],
        deductions: [
            {key: d.get(key) for key in ("reason", "points", "source", "severity", "article")}
            for d in report["score"]["deductions"]
        ],
    }


def _audit(conn: sa.Connection, actor: str, role: str, action: str, call_id: str | None, subject_id: int | None,
           why: str | None, detail: dict | None = None) -> None:
    conn.execute(audit_log.insert().values(at=_utc_now(), actor=actor, role=role, action=action, call_id=call_id,
                                           subject_id=subject_id, why=why, detail=detail))


def _when() -> sa.ColumnElement:
    """When a call took place; its scoring time when that is not known."""
    return sa.func.coalesce(calls.c.started_at, calls.c.scored_at)


def _score() -> sa.ColumnElement:
    """A call's score after review."""
    return sa.func.coalesce(calls.c.reviewed_score, calls.c.score)


def _count_forbidden() -> sa.ScalarSelect:
    return (sa.select(sa.func.count()).where(events.c.call_id == calls.c.call_id, events.c.kind == "forbidden")
            .scalar_subquery())


def _count_failed_checks() -> sa.ScalarSelect:
    return (sa.select(sa.func.count()).where(checks.c.call_id == calls.c.call_id, checks.c.passed.is_(False))
            .scalar_subquery())


def _transcript_text(report: dict) -> str:
    return "\n".join(s["text"] for s in report["transcript"])


def _index_transcript(conn: sa.Connection, call_id: str, text: str) -> None:
    """Keep SQLite's FTS table in step with ``calls.transcript`` (PostgreSQL indexes the column itself)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("DELETE FROM calls_fts WHERE call_id = ?", (call_id,))
        conn.exec_driver_sql("INSERT INTO calls_fts (call_id, text) VALUES (?, ?)", (call_id, text))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value is not None and value.tzinfo is None else value


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error and str(error).strip() else type(error).__name__
