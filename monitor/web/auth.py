"""Who is asking: passwords, API tokens, session cookies and CSRF tokens.

Passwords are hashed with argon2id. API tokens and session cookies are long
random strings, so a fast hash (sha256) is enough to store them: the database
never holds a usable credential. Each session carries its own CSRF token, which
every state-changing request must echo (form field or ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from monitor.store import Store

ROLES = ("supervisor", "qa", "agent")
SESSION_COOKIE = "monitor_session"
LOGIN_CSRF_COOKIE = "monitor_login_csrf"

_hasher = PasswordHasher()
# Verified when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass
class User:
    """A logged-in person or machine client."""

    id: int
    """Row id in ``users``."""
    name: str
    """Login name."""
    role: str
    """``supervisor`` (sees everything, runs the live side), ``qa`` (a reviewer, 质检员: sees every call and
    reviews, no live administration) or ``agent`` (sees only ``agent_id``'s calls)."""
    agent_id: str | None
    """For an agent: the agent id their calls carry."""
    csrf_token: str = ""
    """The session's CSRF token (empty for API-token clients, which send no cookies)."""

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"

    @property
    def is_reviewer(self) -> bool:
        """Sees every call and alert, decides appeals, adds deductions, marks false alarms: qa and supervisors."""
        return self.role in ("supervisor", "qa")

    @property
    def by_token(self) -> bool:
        """Authenticated by an API token rather than a session cookie (no CSRF token to check)."""
        return not self.csrf_token

    def may_see(self, agent_id: str | None) -> bool:
        """Whether this user may see a call or alert of ``agent_id``."""
        return self.is_reviewer or (self.agent_id is not None and agent_id == self.agent_id)

    def own_agent(self) -> str | None:
        """The agent id a listing is limited to: None for reviewers, the agent's own (never empty) otherwise."""
        return None if self.is_reviewer else (self.agent_id or "\0")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(store: Store, name: str, password: str) -> User | None:
    """The enabled user when name and password match; None otherwise, taking as long either way."""
    row = store.get_user(name=name)
    if row is not None and row["disabled_at"] is not None:
        row = None
    stored = row["password_hash"] if row and row["password_hash"] else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    return _user(row) if row else None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def issue_api_token(store: Store, name: str) -> str | None:
    """A new API token for ``name`` (replacing the old one); None when there is no such user."""
    token = new_secret()
    return token if store.set_api_token_hash(name, digest(token)) else None


def user_for_token(store: Store, token: str | None) -> User | None:
    if not token:
        return None
    row = store.get_user(api_token_hash=digest(token))
    return _user(row) if row and row["disabled_at"] is None else None


def start_session(store: Store, user: User, lifetime: dt.timedelta) -> str:
    """Create a session for ``user``; returns the cookie value."""
    cookie = new_secret()
    expires = dt.datetime.now(dt.timezone.utc) + lifetime
    store.create_session(digest(cookie), user.id, new_secret(), expires)
    return cookie


def user_for_session(store: Store, cookie: str | None) -> User | None:
    if not cookie:
        return None
    row = store.session(digest(cookie))
    return _user(row, row["csrf_token"]) if row else None


def same_secret(given: str | None, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _user(row: dict, csrf_token: str = "") -> User:
    return User(id=row["id"], name=row["name"], role=row["role"], agent_id=row["agent_id"], csrf_token=csrf_token)
