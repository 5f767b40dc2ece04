"""Fixtures for the web console: a real node with its web application on 127.0.0.1 port 0
(real SQLite file, real Uvicorn), users made through node.audit.users, logins over HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from node.audit.users import Role, add_user, new_token
from node.dimse.service import Node
from node.settings import Settings
from node.web.app import create_app
from node.web.server import WebServer
from tests.node.conftest import (  # noqa: F401 - the fixtures
    make_settings,
    node_factory,
    sro_dir,
)

PASSWORD = "correct horse battery"


@dataclass
class WebNode:
    node: Node
    web: WebServer
    settings: Settings
    data_dir: Path

    @property
    def url(self) -> str:
        return self.web.url

    @property
    def dicom_port(self) -> int:
        return self.node.address[1]

    def user(self, name: str, role: Role, password: str = PASSWORD) -> str:
        """Add a user; return a new API token of theirs."""
        assert self.node.engine is not None
        with Session(self.node.engine) as session, session.begin():
            user = add_user(session, name, role, password)
            return new_token(session, user)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found, "no CSRF field in the page"
    return found[1]


def login(client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/login")
    return client.post("/login", data={"name": name, "password": password,
                                       "csrf_token": csrf_of(page.text), "next": "/"})


@pytest.fixture
def web_factory(tmp_path: Path) -> Iterator[Callable[..., WebNode]]:
    started: list[WebNode] = []

    def start(*, with_web: bool = True, name: str = "data", **sections: dict[str, Any]
              ) -> WebNode:
        web_values = {"enabled": True, "host": "127.0.0.1", "port": 0,
                      "login_failure_delay_s": 0.2, **sections.pop("web", {})}
        settings = make_settings(tmp_path / name, web=web_values, **sections)
        node = Node(settings)
        node.start()
        assert node.engine is not None
        server = WebServer(create_app(settings, node.engine, metrics=node.metrics,
                                      store=node.store), settings.web)
        one = WebNode(node, server, settings, tmp_path / name)
        started.append(one)
        if with_web:
            server.start()
        return one

    yield start
    for one in started:
        one.web.stop()
        one.node.stop(grace_s=2.0)
