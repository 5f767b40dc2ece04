"""Commissioning a console on the web console and through the API: a physicist only, CSRF on
the form, an added record under the logged-in user (issue 13 item 2, docs/contract.md section 6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from model.consoles import ConsoleState, pairs_text
from node.audit.models import Console
from node.audit.store import open_database
from node.audit.users import Role
from node.consoles.store import console_history
from tests.node.conftest import needs_dcmtk, sro_files, storescu
from tests.web.conftest import csrf_of, login


def _consoles(data_dir: Path) -> list[tuple[int, ConsoleState, list[tuple[str, str | None]]]]:
    engine = open_database(f"sqlite:///{data_dir / 'audit.db'}", migrate_schema=False)
    try:
        with Session(engine) as session:
            return [(c.id, ConsoleState.from_dict(json.loads(c.state_json)),
                     [(e.kind, e.by) for e in console_history(session, c.id)])
                    for c in session.scalars(select(Console))]
    finally:
        engine.dispose()


@needs_dcmtk
def test_a_physicist_commissions_a_console_a_viewer_cannot(web_factory: Any,
                                                           sro_dir: Path) -> None:
    w = web_factory()
    viewer = w.user("view", Role.VIEWER)
    physicist = w.user("phys", Role.PHYSICIST)
    assert storescu(w.dicom_port, sro_files(sro_dir)[:3]).returncode == 0
    (console_id, _, _), *_ = _consoles(w.data_dir)
    with w.client() as api:
        r = api.post(f"/api/v1/consoles/{console_id}/commission",
                     json={"convention": ["xyz/direct"]},
                     headers={"Authorization": f"Bearer {viewer}"})
        assert r.status_code == 403
        r = api.post(f"/api/v1/consoles/{console_id}/commission",
                     json={"convention": ["not a convention"]},
                     headers={"Authorization": f"Bearer {physicist}"})
        assert r.status_code == 422
        r = api.post(f"/api/v1/consoles/{console_id}/commission",
                     json={"convention": ["xyz/direct", "xzy/direct"], "note": "phantom shift"},
                     headers={"Authorization": f"Bearer {physicist}"})
        assert r.status_code == 201, r.text
        assert r.json()["by"] == "phys"
    state = {i: s for i, s, _ in _consoles(w.data_dir)}[console_id]
    assert state.established is not None
    assert pairs_text(state.established.pairs) == r.json()["established"]
    assert state.established.by == "phys"

    with w.client() as c:
        assert login(c, "phys").status_code == 303
        page = c.get("/consoles")
        assert page.status_code == 200 and "commission-form" in page.text
        # a forged form (no CSRF token) is refused; the real one is an added record
        assert c.post(f"/consoles/{console_id}/commission",
                      data={"convention": "yxz/inverse"}).status_code == 403
        r = c.post(f"/consoles/{console_id}/commission",
                   data={"csrf_token": csrf_of(page.text), "convention": "yxz/inverse",
                         "note": "after the upgrade"})
        assert r.status_code == 303
    with w.client() as c:
        assert login(c, "view").status_code == 303
        page = c.get("/consoles")
        assert page.status_code == 200 and "commission-form" not in page.text
    history = {i: h for i, _, h in _consoles(w.data_dir)}[console_id]
    assert [by for kind, by in history if by is not None] == ["phys", "phys"]
