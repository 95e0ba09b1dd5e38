"""Call identity: what a call id may look like, new ids for live calls, and report paths.

A call id names the call's report files (``DIR/<call_id>.json``) and its row in
the results database, so an id from outside (a manifest row, ``--call-id``, a
WebSocket client) is checked where it comes in, and every report path is
checked again where it is written: no id can place a file outside its directory.
Live calls served to clients get an id from the server (``new_call_id``); the
client's own name for the call is kept beside it as ``external_ref``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets

from monitor.errors import MonitorError

MAX_CALL_ID_BYTES = 200
"""UTF-8 bytes of a call id: with ``.json`` or ``.html`` it stays within a file name's 255."""
_PATH_CHARACTERS = re.compile(r"[/\\\x00-\x1f\x7f\ud800-\udfff]")
"""Path separators, control characters (NUL, newlines) and lone surrogates: never in a call id."""


def call_id_problem(value) -> str | None:
    """Why ``value`` cannot be a call id, or None when it can."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if _PATH_CHARACTERS.search(value) or value in (".", ".."):
        return "may not contain '/', '\\' or control characters, nor be '.' or '..'"
    if len(value.encode("utf-8")) > MAX_CALL_ID_BYTES:
        return f"is longer than {MAX_CALL_ID_BYTES} bytes"
    return None


def check_call_id(value, source: str) -> str:
    """``value`` if it is a valid call id; else ``MonitorError`` naming ``source`` (e.g. ``--call-id``)."""
    problem = call_id_problem(value)
    if problem:
        raise MonitorError(f"{source} {shown(value)}: a call id {problem}")
    return value


def new_call_id(prefix: str = "live") -> str:
    """A fresh id no other call has: ``live-20261127T235800Z-9f3a1c2b``."""
    return f"{prefix}-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def report_path(out_dir: str, call_id: str, suffix: str) -> str:
    """``out_dir/<call_id><suffix>``, refused unless it lies directly inside ``out_dir``."""
    directory = os.path.realpath(out_dir)
    path = os.path.realpath(os.path.join(directory, call_id + suffix))
    if call_id_problem(call_id) or os.path.dirname(path) != directory:
        raise MonitorError(f"call id {shown(call_id)}: its report would be written outside {out_dir}")
    return path


def shown(value, limit: int = 60) -> str:
    """``repr`` of a value from outside, cut short so an error line stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
