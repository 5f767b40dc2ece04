"""``sro-decoder users``: the local users of the web console and the REST API (issue 13
item 2): add, list, disable, passwd, and token (a new API token, printed once).

Takes the same ``--config`` and ``--data-dir`` as ``serve``, before or after the action.
Passwords are read from the terminal (twice) or, with ``--password-stdin``, from the first line
of standard input; they never appear in arguments.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from node.cli.common import UsageError, add_settings_arguments, settings_from_args

ROLES = ("viewer", "physicist")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="web console users: add, list, disable, passwd, token")
    add_settings_arguments(p)
    usub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    add = usub.add_parser("add", help="add a user")
    add_settings_arguments(add, after_action=True)
    add.add_argument("name", metavar="NAME", help="user name (letters, digits, . _ - @)")
    add.add_argument("--role", choices=ROLES, required=True,
                     help="viewer (reads) or physicist (reads, acknowledges)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.set_defaults(func=run_add)

    lst = usub.add_parser("list", help="every user with role and state")
    add_settings_arguments(lst, after_action=True)
    lst.set_defaults(func=run_list)

    off = usub.add_parser("disable", help="disable a user (sessions and API tokens stop)")
    add_settings_arguments(off, after_action=True)
    off.add_argument("name", metavar="NAME", help="user name")
    off.set_defaults(func=run_disable)

    pw = usub.add_parser("passwd", help="set a user's password (ends their sessions)")
    add_settings_arguments(pw, after_action=True)
    pw.add_argument("name", metavar="NAME", help="user name")
    pw.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of standard input")
    pw.set_defaults(func=run_passwd)

    tok = usub.add_parser("token", help="print a new API token of a user (shown only once)")
    add_settings_arguments(tok, after_action=True)
    tok.add_argument("name", metavar="NAME", help="user name")
    tok.set_defaults(func=run_token)


def _engine(args: argparse.Namespace) -> Any:
    from node.audit.store import open_database

    settings = settings_from_args(args)
    return open_database(settings.database_url,
                         sqlite_synchronous=settings.storage.sqlite_synchronous)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ")
    from node.audit.users import UserError, check_password

    try:
        return check_password(password)
    except UserError as exc:
        raise UsageError(str(exc)) from None


def _user(session: Any, name: str) -> Any:
    from node.audit.users import find_user

    user = find_user(session, name)
    if user is None:
        print(f"sro-decoder: no user {name!r}", file=sys.stderr)
    return user


def run_add(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from node.audit.users import Role, UserError, add_user, check_name

    try:
        check_name(args.name)
    except UserError as exc:
        raise UsageError(str(exc)) from None
    password = _password(args)
    engine = _engine(args)
    try:
        with Session(engine) as session, session.begin():
            add_user(session, args.name, Role(args.role), password)
    except UserError as exc:
        print(f"sro-decoder: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"added {args.name} ({args.role})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from node.audit.models import User

    engine = _engine(args)
    with Session(engine) as session:
        users = list(session.scalars(select(User).order_by(User.name)))
        print(f"{'name':<24} {'role':<10} {'state':<9} created (UTC)")
        for u in users:
            state = "disabled" if u.disabled else "active"
            print(f"{u.name:<24} {u.role:<10} {state:<9} {u.created_at:%Y-%m-%d %H:%M}")
    engine.dispose()
    return 0


def _change_user(args: argparse.Namespace, change: Callable[[Any, Any], str | None]) -> int:
    """Run ``change(session, user)`` on the user ``args.name`` in one transaction; print what it
    returns (exit 0), or exit 1 when there is no such user or ``change`` returns ``None``."""
    from sqlalchemy.orm import Session

    engine = _engine(args)
    try:
        with Session(engine) as session, session.begin():
            user = _user(session, args.name)
            if user is None:
                return 1
            out = change(session, user)
    finally:
        engine.dispose()
    if out is None:
        return 1
    print(out)
    return 0


def run_disable(args: argparse.Namespace) -> int:
    from node.audit.users import disable

    def change(session: Any, user: Any) -> str:
        disable(session, user)
        return f"disabled {args.name}"

    return _change_user(args, change)


def run_passwd(args: argparse.Namespace) -> int:
    from node.audit.users import set_password

    password = _password(args)

    def change(session: Any, user: Any) -> str:
        set_password(session, user, password)
        return f"password of {args.name} set"

    return _change_user(args, change)


def run_token(args: argparse.Namespace) -> int:
    from node.audit.users import new_token

    def change(session: Any, user: Any) -> str | None:
        if user.disabled:
            print(f"sro-decoder: {args.name} is disabled", file=sys.stderr)
            return None
        return new_token(session, user)  # shown this once: only its SHA-256 is kept

    return _change_user(args, change)
