"""Who is asking: a signed session cookie (the pages) or an API token (``Authorization: Bearer``),
CSRF tokens for every form, roles (:class:`node.audit.users.Role`).

The session cookie is signed with the node's key (``<data_dir>/web-session.key``, made on first
use, mode 0600) and holds the user's id, the time their password was last set (a new password
ends every session) and the session's CSRF token; it is HttpOnly, SameSite=Strict, Secure under
TLS, and lasts ``[web] session_lifetime_s``. The login form has its own short-lived signed
cookie carrying its CSRF token. Nothing but the login page and ``/healthz`` answers without one
or the other (issue 13 item 2).
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from node.audit.models import User
from node.audit.users import Role, user_for_token

SESSION_COOKIE = "sro_session"
LOGIN_COOKIE = "sro_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGIN_FORM_LIFETIME_S = 3600


class NotAuthenticated(Exception):
    """No valid session or API token: the login page for a page, 401 for the API."""


class Forbidden(Exception):
    """Logged in, but the role does not allow it, or the CSRF token is missing or wrong."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True, slots=True)
class Principal:
    """The logged-in user of one request."""

    user_id: int
    name: str
    role: Role
    csrf: str | None  # the session's CSRF token; None for an API token (no cookie, no CSRF)

    @property
    def may_acknowledge(self) -> bool:
        return self.role.may_acknowledge


def session_key(data_dir: Path) -> bytes:
    """The key the cookies are signed with, made (0600) on first use."""
    path = data_dir / "web-session.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return key


class Sessions:
    """Making and reading the signed cookies (module docstring)."""

    def __init__(self, key: bytes, lifetime_s: float, secure: bool) -> None:
        self._session = URLSafeTimedSerializer(key, salt="sro-decoder-session")
        self._login = URLSafeTimedSerializer(key, salt="sro-decoder-login-form")
        self.lifetime_s = lifetime_s
        self.secure = secure

    def cookie_options(self, max_age: float) -> dict[str, Any]:
        return {"max_age": int(max_age), "httponly": True, "samesite": "strict",
                "secure": self.secure, "path": "/"}

    def new_session(self, user: User) -> tuple[str, str]:
        """The cookie value of a new session of ``user`` and its CSRF token."""
        csrf = secrets.token_urlsafe(24)
        value = self._session.dumps(
            {"u": user.id, "p": user.password_changed_at.timestamp(), "c": csrf})
        return str(value), csrf

    def read_session(self, value: str | None) -> dict[str, Any] | None:
        if not value:
            return None
        try:
            data = self._session.loads(value, max_age=int(self.lifetime_s))
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None

    def login_form(self, value: str | None) -> tuple[str, str | None]:
        """The login form's CSRF token: the cookie's if it is valid, else a new one with the
        cookie value to set."""
        if value:
            try:
                data = self._login.loads(value, max_age=LOGIN_FORM_LIFETIME_S)
                if isinstance(data, str):
                    return data, None
            except BadSignature:
                pass
        csrf = secrets.token_urlsafe(24)
        return csrf, str(self._login.dumps(csrf))

    def login_csrf(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            data = self._login.loads(value, max_age=LOGIN_FORM_LIFETIME_S)
        except BadSignature:
            return None
        return data if isinstance(data, str) else None


def same_token(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given), str(expected))


def authenticate(request: Request, session: Session, sessions: Sessions) -> Principal:
    """The principal of ``request`` (bearer token first, then the session cookie), or
    :class:`NotAuthenticated`."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise NotAuthenticated()
        user = user_for_token(session, token.strip())
        if user is None:
            raise NotAuthenticated()
        return Principal(user.id, user.name, Role(user.role), None)
    data = sessions.read_session(request.cookies.get(SESSION_COOKIE))
    if data is None:
        raise NotAuthenticated()
    user = session.get(User, data.get("u"))
    if user is None or user.disabled or data.get("p") != user.password_changed_at.timestamp():
        raise NotAuthenticated()
    return Principal(user.id, user.name, Role(user.role), str(data.get("c")))


def check_csrf(principal: Principal, given: str | None) -> None:
    """A state-changing request by session must carry the session's CSRF token (a form field
    or the ``X-CSRF-Token`` header); a bearer token needs none (no cookie is involved)."""
    if principal.csrf is None:
        return
    if not same_token(given, principal.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page")
