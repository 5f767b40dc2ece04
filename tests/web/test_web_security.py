"""Login, roles, CSRF and escaping of sender text on the web console (issue 13 item 2)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from model.dicom.sro import write
from model.geometry import forward
from model.offset import CouchOffset
from node.audit.models import LoginEvent
from node.audit.users import Role
from tests.node.conftest import export, needs_dcmtk, sro_files, storescu
from tests.web.conftest import PASSWORD, csrf_of, login

FLAGGED = {"ambiguous", "out_of_distribution", "invalid"}


def test_nothing_but_login_and_healthz_answers_without_a_session(web_factory: Any) -> None:
    w = web_factory()
    with w.client() as c:
        assert c.get("/healthz").json() == {"status": "up"}
        assert c.get("/login").status_code == 200
        for path in ("/", "/records", "/records/1", "/decode", "/consoles"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
        for path in ("/api/v1/records", "/api/v1/records/1", "/api/v1/consoles", "/metrics",
                     "/readyz", "/api/v1/openapi.json"):
            assert c.get(path).status_code == 401, path
        assert c.post("/api/v1/records/1/acknowledge", json={}).status_code == 401
        assert c.post("/dicomweb/studies", content=b"x").status_code == 401
        assert c.get("/api/v1/records", headers={"Authorization": "Bearer sro_nope"}
                     ).status_code == 401
        # a forged cookie is no session
        c.cookies.set("sro_session", "eyJ1IjoxfQ.forged.sig")
        assert c.get("/").status_code == 303


def test_login_sets_a_strict_httponly_cookie_and_failures_are_slowed_and_recorded(
        web_factory: Any) -> None:
    w = web_factory()
    w.user("phys", Role.PHYSICIST)
    with w.client() as c:
        page = c.get("/login")
        # a login form without its CSRF token is refused
        r = c.post("/login", data={"name": "phys", "password": PASSWORD, "csrf_token": "x"})
        assert r.status_code == 403
        took = []
        for _ in range(3):
            started = time.monotonic()
            r = login(c, "phys", "wrong password!")
            took.append(time.monotonic() - started)
            assert r.status_code == 401 and "sro_session" not in r.cookies
        # 0.2 s, then doubled for each failure before it
        assert took[0] >= 0.2 and took[1] >= 0.4 and took[2] >= 0.8, took
        r = login(c, "phys")
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        assert "Secure" not in cookie  # no TLS here
        assert c.get("/").status_code == 200
        assert page.status_code == 200
    assert w.node.engine is not None
    with Session(w.node.engine) as session:
        events = list(session.scalars(select(LoginEvent).order_by(LoginEvent.id)))
    assert [e.success for e in events] == [False, False, False, True]
    assert events[0].detail == "wrong password" and events[0].peer_address


@needs_dcmtk
def test_viewer_cannot_acknowledge_and_a_form_without_csrf_is_refused(
        web_factory: Any, sro_dir: Path) -> None:
    w = web_factory()
    viewer_token = w.user("view", Role.VIEWER)
    w.user("phys", Role.PHYSICIST)
    assert storescu(w.dicom_port, sro_files(sro_dir)[:12]).returncode == 0
    with w.client() as c:
        assert login(c, "view").status_code == 303
        rows = c.get("/api/v1/records", params={"flagged": "true"}).json()["records"]
        assert rows
        ident = rows[0]["id"]
        page = c.get(f"/records/{ident}")
        assert page.status_code == 200 and 'id="ack-refused"' in page.text
        r = c.post(f"/records/{ident}/acknowledge",
                   data={"csrf_token": csrf_of(page.text), "note": "seen"})
        assert r.status_code == 403
        r = c.post(f"/api/v1/records/{ident}/acknowledge", json={"note": "x"},
                   headers={"x-csrf-token": csrf_of(page.text)})
        assert r.status_code == 403
    with w.client() as api:
        r = api.post(f"/api/v1/records/{ident}/acknowledge", json={"note": "x"},
                     headers={"Authorization": f"Bearer {viewer_token}"})
        assert r.status_code == 403
    with w.client() as c:
        assert login(c, "phys").status_code == 303
        # a forged form (no CSRF token, or another's) is refused; nothing is recorded
        assert c.post(f"/records/{ident}/acknowledge", data={"note": "forged"}
                      ).status_code == 403
        assert c.post(f"/records/{ident}/acknowledge",
                      data={"note": "forged", "csrf_token": "A" * 32}).status_code == 403
        assert c.post(f"/api/v1/records/{ident}/acknowledge", json={"note": "forged"}
                      ).status_code == 403
        page = c.get(f"/records/{ident}")
        r = c.post(f"/records/{ident}/acknowledge",
                   data={"csrf_token": csrf_of(page.text), "note": "checked: console in cm"})
        assert r.status_code == 303
    uid = rows[0]["sop_instance_uid"]
    acks = export(w.data_dir)[uid]["acknowledgements"]
    assert [(a["by"], a["note"]) for a in acks] == [("phys", "checked: console in cm")]


HOSTILE = '<script>alert("x")</script>\r\nX-Injected: 1'


def _hostile_sro(folder: Path) -> Path:
    offset = CouchOffset((1.0, -2.0, 0.5), (0.5, -0.3, 1.2), (0.0, -100.0, 10.0), HOSTILE)
    m = forward([offset.translation_mm], [offset.rotation_deg], [offset.isocenter_mm])[0, 0]
    ds: Dataset = write(m, offset)
    ds.PatientName = "<b>Bold</b>^<i>x</i>"
    ds.PatientID = "<img src=x onerror=alert(1)>"
    path = folder / "hostile.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@needs_dcmtk
def test_hostile_sender_text_renders_escaped(web_factory: Any, tmp_path: Path) -> None:
    w = web_factory()
    token = w.user("phys", Role.PHYSICIST)
    path = _hostile_sro(tmp_path)
    proc = storescu(w.dicom_port, [path], "<b>AE</b>&\"'")
    assert proc.returncode == 0, proc.stderr
    with w.client() as c:
        assert login(c, "phys").status_code == 303
        rows = c.get("/api/v1/records", headers={"Authorization": f"Bearer {token}"}
                     ).json()["records"]
        assert len(rows) == 1 and rows[0]["calling_ae_title"] == "<b>AE</b>&\"'"
        pages = [c.get("/records").text, c.get(f"/records/{rows[0]['id']}").text,
                 c.get("/consoles").text, c.get("/").text]
    for html in pages:
        assert "<script>" not in html and "<b>AE</b>" not in html and "<img" not in html
        assert "\r\nX-Injected" not in html
    record, listing = pages[1], pages[0]
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;\\r\\nX-Injected: 1" in record
    assert "&lt;b&gt;AE&lt;/b&gt;&amp;&#34;&#39;" in listing
