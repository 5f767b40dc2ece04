"""Local users of the web console and the REST API: Argon2 password hashes, roles, API tokens
(kept as SHA-256 only) and the login trail (docs/contract.md section 5; issue 13 item 2).

Everything here is a plain function on a :class:`~sqlalchemy.orm.Session`; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
from enum import Enum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.audit.models import ApiToken, LoginEvent, User, utcnow

#: a user name: 1-64 letters, digits, ``.``, ``_``, ``-``, ``@`` (no spaces, no markup)
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
#: API tokens start with this, so that a leaked one is recognisable
TOKEN_PREFIX = "sro_"

_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash verified when the name is unknown, so an unknown name costs as long as a known
    one."""
    return _HASHER.hash(secrets.token_urlsafe(16))


class Role(str, Enum):
    """What a user may do: ``viewer`` reads; ``physicist`` also acknowledges and commissions
    consoles."""

    VIEWER = "viewer"
    PHYSICIST = "physicist"

    @property
    def may_acknowledge(self) -> bool:
        return self is Role.PHYSICIST


class UserError(ValueError):
    """A user name, password or role that cannot be used; the message says why."""


def check_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise UserError(f"user name {name!r}: 1-64 letters, digits, '.', '_', '-' or '@'")
    return name


def check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise UserError(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(check_password(password))


def find_user(session: Session, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).first()


def add_user(session: Session, name: str, role: Role, password: str) -> User:
    check_name(name)
    if find_user(session, name) is not None:
        raise UserError(f"user {name!r} exists already")
    now = utcnow()
    user = User(name=name, role=role.value, password_hash=hash_password(password), disabled=False,
                created_at=now, password_changed_at=now)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    """A new password; every session of the user ends (its cookie names the old one's time)."""
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()


def disable(session: Session, user: User) -> None:
    """The user can no longer log in, and their sessions and API tokens stop working."""
    user.disabled = True
    for token in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)):
        token.revoked = True


def verify_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s (always as slow as a real check)."""
    try:
        return _HASHER.verify(user.password_hash if user is not None else _dummy_hash(), password) \
            and user is not None
    except (VerificationError, InvalidHashError):
        return False


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token(session: Session, user: User) -> str:
    """A new API token of ``user``; only its SHA-256 is stored, so this is its only showing."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_sha256=_token_sha256(token), created_at=utcnow(),
                         revoked=False))
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """The enabled user an unrevoked API token belongs to."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.execute(
        select(User, ApiToken).join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_sha256 == _token_sha256(token))).first()
    if row is None or row[1].revoked or row[0].disabled:
        return None
    return row[0]


def record_login(session: Session, name: str, user: User | None, success: bool,
                 peer_address: str | None, detail: str | None = None) -> None:
    session.add(LoginEvent(at=utcnow(), name=name[:64], user_id=None if user is None else user.id,
                           success=success, peer_address=peer_address, detail=detail))


def recent_failures(session: Session, name: str, window: dt.timedelta) -> int:
    """Failed logins of ``name`` since its last success, within ``window``."""
    since = utcnow() - window
    last_ok = session.scalar(select(func.max(LoginEvent.at)).where(
        LoginEvent.name == name[:64], LoginEvent.success.is_(True)))
    if last_ok is not None and last_ok > since:
        since = last_ok
    return int(session.scalar(select(func.count()).select_from(LoginEvent).where(
        LoginEvent.name == name[:64], LoginEvent.success.is_(False), LoginEvent.at > since)) or 0)
