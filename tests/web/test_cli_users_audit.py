"""`sro-decoder users` and the fixed `audit` command line (issue 13 items 2 and 7)."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.cli.main import build_parser
from tests.node.conftest import cli, export, make_settings, needs_dcmtk, sro_files, storescu


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def test_users_add_list_token_disable_passwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             web_factory: Any) -> None:
    w = web_factory()
    data = str(w.data_dir)
    _stdin(monkeypatch, "a long password\n")
    rc, out = cli("users", "add", "alice", "--role", "physicist", "--password-stdin",
                  "--data-dir", data)  # --data-dir after the action
    assert rc == 0 and "added alice" in out
    _stdin(monkeypatch, "short\n")
    assert cli("users", "--data-dir", data, "add", "bob", "--role", "viewer",
               "--password-stdin")[0] == 2  # too short a password
    _stdin(monkeypatch, "another long one\n")
    assert cli("users", "--data-dir", data, "add", "alice", "--role", "viewer",
               "--password-stdin")[0] == 1  # exists
    assert cli("users", "--data-dir", data, "add", "<b>", "--role", "viewer")[0] == 2
    rc, token = cli("users", "token", "alice", "--data-dir", data)
    token = token.strip()
    assert rc == 0 and token.startswith("sro_")
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(w.url + "/api/v1/records", headers=auth).status_code == 200
    rc, out = cli("users", "list", "--data-dir", data)
    assert rc == 0 and "alice" in out and "physicist" in out and "active" in out
    assert token not in out
    _stdin(monkeypatch, "a new password!\n")
    assert cli("users", "passwd", "alice", "--password-stdin", "--data-dir", data)[0] == 0
    assert cli("users", "disable", "alice", "--data-dir", data)[0] == 0
    assert httpx.get(w.url + "/api/v1/records", headers=auth).status_code == 401
    assert "disabled" in cli("users", "list", "--data-dir", data)[1]
    assert cli("users", "disable", "nobody", "--data-dir", data)[0] == 1


def test_every_option_has_help() -> None:
    missing = []

    def walk(parser: Any, path: str) -> None:
        for action in parser._actions:
            if action.option_strings and not action.help and action.dest != "help":
                missing.append(f"{path} {action.option_strings[0]}")
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")

    walk(build_parser(), "sro-decoder")
    assert [m for m in missing if m.split()[1] in ("audit", "users", "web")] == []


@needs_dcmtk
def test_audit_options_after_the_action_unacknowledged_and_120_columns(
        tmp_path: Path, sro_dir: Path, node_factory: Any) -> None:
    data = tmp_path / "data"
    node = node_factory(make_settings(data))
    assert storescu(node.address[1], sro_files(sro_dir), "CONSOLE_WITH_16C").returncode == 0
    node.stop()
    rows = export(data)
    flagged = [u for u, r in rows.items() if r["flagged"]]
    rc, out = cli("audit", "list", "--data-dir", str(data))
    assert rc == 0 and f"{len(rows)} decision(s)" in out
    assert max(len(line) for line in out.splitlines()) <= 120
    header = next(line for line in out.splitlines() if "received (UTC)" in line)
    assert header.split()[:4] == ["received", "(UTC)", "console", "decision"]
    consoles = {r["console"] for r in rows.values()}  # the offset's console text
    assert all(c and c in out for c in consoles)
    assert cli("audit", "ack", flagged[0], "--by", "J. P.", "--data-dir", str(data))[0] == 0
    rc, out = cli("audit", "list", "--flagged", "--unacknowledged", "--data-dir", str(data))
    assert rc == 0 and f"{len(flagged) - 1} decision(s)" in out
    rc, out = cli("audit", "--data-dir", str(data), "export", "--unacknowledged")
    assert rc == 0 and len(out.splitlines()) == len(rows) - 1
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli("audit", "list", "--data-dir", str(tmp_path / "absent"))[0] == 1
