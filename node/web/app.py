"""The web application: pages, the REST API under ``/api/v1``, DICOMweb STOW-RS, health and
metrics (issue 13; docs/contract.md sections 4 and 5).

:func:`create_app` builds it over the node's engine (and, beside a running node, its C-STORE
handler for STOW-RS and its counters). Pages are rendered on the server by Jinja2 with
autoescape on: whatever a sender wrote (AE titles, UIDs, patient fields, reasons) is shown as
text, never markup. Routes that answer without a session or a token: ``/login`` and
``/healthz`` only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
import numpy as np
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.responses import Response as FastAPIResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.responses import Response

from model.consoles import OrderDirection, pairs_text
from model.decision import DecodeRecord
from model.decoder import Decoder
from model.decoders.registry import UnknownModelError, load_decoder
from model.inputs import DEFAULT_REGISTRY, RegistrationInput
from model.pipeline import decode_datasets, decode_options, read_bytes, read_file
from node.audit.models import Console, DecisionRecord, User, utcnow
from node.audit.store import acknowledge, alert_state, duplicates_of, export_record
from node.audit.users import find_user, recent_failures, record_login, verify_password
from node.consoles.store import commission, list_consoles
from node.ingest.receipt import StoreHandler
from node.metrics import Metrics
from node.settings import Settings
from node.text import NOTE_MAX, operator_text, visible
from node.web import stow
from node.web.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Forbidden,
    NotAuthenticated,
    Principal,
    Sessions,
    authenticate,
    check_csrf,
    same_token,
    session_key,
)
from node.web.ops import readiness
from node.web.queries import (
    DECISIONS,
    RecordFilter,
    consoles_seen,
    counts_by_decision,
    flagged_unacknowledged,
    outbox_state,
    page_of_records,
    record_by_id,
)
from node.web.views import record_view

log = logging.getLogger("node.web")

PAGE_SIZE = 50
#: longest failed-login wait, seconds
LOGIN_DELAY_MAX_S = 30.0
LOGIN_FAILURE_WINDOW = dt.timedelta(minutes=15)
_MACHINE_PATHS = ("/api/", "/dicomweb/", "/metrics", "/readyz")


@dataclass
class WebContext:
    """What the routes share: the settings, the engine, the counters, the C-STORE handler
    (``None`` when the web application runs alone) and the decoders ``decode`` loads."""

    settings: Settings
    engine: Engine
    metrics: Metrics
    store: StoreHandler | None
    sessions: Sessions
    templates: jinja2.Environment
    _decoders: dict[str, Decoder] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def decoder(self, name: str | None) -> Decoder:
        """The decoder ``--model`` names (``None``: the shipped model), loaded once."""
        key = name or ""
        with self._lock:
            if key not in self._decoders:
                self._decoders[key] = load_decoder(name or None)
            return self._decoders[key]

    def page(self, name: str, principal: Principal | None, status: int = 200,
             **values: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(
            user=principal, csrf_field=CSRF_FIELD, **values)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def principal(request: Request) -> Principal:
    """The request's user (a dependency of every route but ``/login`` and ``/healthz``)."""
    ctx: WebContext = request.app.state.ctx
    with Session(ctx.engine) as session:
        return authenticate(request, session, ctx.sessions)


def physicist(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.may_acknowledge:
        raise Forbidden(f"{who.name} is a {who.role.value}: only a physicist may do this")
    return who


Who = Annotated[Principal, Depends(principal)]
Physicist = Annotated[Principal, Depends(physicist)]


# ---------------------------------------------------------------------------------------------
# REST models (pydantic): the OpenAPI document describes these


class RecordSummary(BaseModel):
    id: int
    sop_instance_uid: str | None
    decision: str
    reason_code: str | None
    convention: str | None
    probability: float | None
    flagged: bool
    console: str | None
    calling_ae_title: str | None
    received_at: dt.datetime
    alert_state: str
    acknowledgements: int


class RecordPage(BaseModel):
    total: int
    offset: int
    limit: int
    records: list[RecordSummary]


class RecordDetail(BaseModel):
    id: int
    record: dict[str, Any] = Field(
        description="docs/contract.md section 5's record plus the node's fields "
                    "(as `audit export`)")


class AcknowledgeRequest(BaseModel):
    note: str | None = Field(None, max_length=NOTE_MAX)


class AcknowledgementOut(BaseModel):
    id: int
    by: str
    note: str | None
    at: dt.datetime


class ConsoleOut(BaseModel):
    console: str
    objects: int
    flagged: int
    last_received_at: dt.datetime | None


class CommissionRequest(BaseModel):
    """A console's (order, direction) pairs, e.g. ``["xyz/direct"]`` (docs/contract.md
    section 6: the patient position belongs to the patient, not to the console)."""

    convention: list[str] = Field(min_length=1, max_length=12)
    note: str | None = Field(default=None, max_length=NOTE_MAX)


class CommissionedOut(BaseModel):
    console_id: int
    established: str
    by: str


def _summary(d: DecisionRecord) -> RecordSummary:
    obj = d.received_object
    return RecordSummary(
        id=d.id, sop_instance_uid=d.sop_instance_uid, decision=d.decision,
        reason_code=d.reason_code, convention=d.convention, probability=d.probability,
        flagged=d.flagged, console=d.console, calling_ae_title=obj.calling_ae_title,
        received_at=obj.received_at, alert_state=alert_state(d).value,
        acknowledgements=len(d.acknowledgements))


# ---------------------------------------------------------------------------------------------
# Parsing what a user typed


def _floats(text: str | None, count: int, what: str) -> tuple[float, ...] | None:
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: {count} comma-separated finite numbers expected")
    return values


def _when(text: str | None, *, end: bool = False) -> dt.datetime | None:
    """A date (``YYYY-MM-DD``: its start, or with ``end`` the next day's) or an ISO date-time,
    UTC when no offset is given."""
    if not text or not text.strip():
        return None
    text = text.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return start + dt.timedelta(days=1) if end else start
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 date or time: {text!r}") from exc
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _flagged(text: str | None) -> bool | None:
    return {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}.get(
        (text or "").strip().lower())


def _filter(flagged: str | None, unacknowledged: str | None, decision: str | None,
            console: str | None, calling_ae_title: str | None, since: str | None,
            until: str | None, sop_instance_uid: str | None = None) -> RecordFilter:
    if decision and decision not in DECISIONS:
        raise ValueError(f"decision: one of {', '.join(DECISIONS)}")
    return RecordFilter(
        flagged=_flagged(flagged), unacknowledged=_flagged(unacknowledged) is True,
        decision=decision or None, console=(console or "").strip() or None,
        calling_ae_title=(calling_ae_title or "").strip() or None,
        since=_when(since), until=_when(until, end=True),
        sop_instance_uid=(sop_instance_uid or "").strip() or None)


def _decode_upload(ctx: WebContext, data: bytes, filename: str, *, model: str | None = None,
                   offset: tuple[float, ...] | None = None,
                   isocenter: tuple[float, ...] | None = None, **flags: Any) -> DecodeRecord:
    """What ``sro-decoder decode`` says of a file of these bytes and this name, with these flags
    (:func:`model.pipeline.decode_options`; read as :func:`model.pipeline.read_file` reads)."""
    decoder = ctx.decoder(model)
    options = decode_options(offset=offset, isocenter=isocenter, **flags)
    ds, error = read_bytes(data)
    return decode_datasets([(ds, filename, error)], decoder, options)[0]


def _matrix_of(ctx: WebContext, d: DecisionRecord) -> np.ndarray | None:
    """The effective matrix of a recorded object, read back from the archive (``None`` when
    it cannot be read)."""
    obj = d.received_object
    if not obj.archive_path:
        return None
    try:
        ds, _ = read_file(ctx.settings.archive_dir / obj.archive_path)
        if ds is None:
            return None
        read = DEFAULT_REGISTRY.read(ds, ctx.settings.profile_for(obj.calling_ae_title))
    except Exception:
        return None
    return read.registration.matrix if isinstance(read, RegistrationInput) else None


def _matrix_of_bytes(data: bytes) -> np.ndarray | None:
    try:
        ds, _ = read_bytes(data)
        if ds is None:
            return None
        read = DEFAULT_REGISTRY.read(ds, decode_options().profile)
    except Exception:
        return None
    return read.registration.matrix if isinstance(read, RegistrationInput) else None


# ---------------------------------------------------------------------------------------------


def _templates() -> jinja2.Environment:
    folder = Path(str(resources.files("node.web").joinpath("templates")))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["visible"] = visible  # control characters shown as escapes, then HTML-escaped
    env.filters["utc"] = lambda t: "" if t is None else t.astimezone(dt.UTC).strftime(
        "%Y-%m-%d %H:%M:%S")
    env.filters["num"] = lambda v, digits=3: "" if v is None else f"{float(v):.{digits}f}"
    return env


def create_app(settings: Settings, engine: Engine, *, metrics: Metrics | None = None,
               store: StoreHandler | None = None) -> FastAPI:
    """The web application over ``engine`` (module docstring)."""
    web = settings.web
    ctx = WebContext(
        settings=settings, engine=engine, metrics=metrics or Metrics(), store=store,
        sessions=Sessions(session_key(settings.data_dir), web.session_lifetime_s,
                          secure=bool(web.tls_certificate)),
        templates=_templates())

    def outbox(index: int) -> Callable[[], float | None]:
        def read() -> float | None:
            with Session(engine) as session:
                return outbox_state(session, utcnow())[index]
        return read

    ctx.metrics.gauge("outbox_depth", "Alert e-mails not sent yet", outbox(0))
    ctx.metrics.gauge("outbox_oldest_pending_age_seconds",
                      "Age of the oldest alert e-mail not sent yet", outbox(1))

    app = FastAPI(title="SRO Decoder Ring", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Audit review, decode, DICOMweb STOW-RS (PS3.18), health and "
                              "metrics of the SRO decoder node. Send `Authorization: Bearer "
                              "<token>` (`sro-decoder users token NAME`).")
    app.state.ctx = ctx

    # --- errors: a page without a session goes to the login page, the API gets 401
    def machine(request: Request) -> bool:
        return request.url.path.startswith(_MACHINE_PATHS)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if machine(request):
            return JSONResponse({"detail": "a session or an API token is required"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if machine(request):
            return JSONResponse({"detail": exc.why}, 403)
        return ctx.page("error.html", None, 403, title="Refused", message=exc.why)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        return response

    # --- operations -----------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is up (no session needed)."""
        return {"status": "up"}

    @app.get("/readyz", tags=["operations"])
    def readyz(who: Who) -> JSONResponse:
        """Database reachable, archive writable, free disk above the floor, oldest unsent
        alert younger than the limit: each with its state; 503 when one fails."""
        state = readiness(settings, engine)
        return JSONResponse(state, 200 if state["ready"] else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_text(who: Who) -> PlainTextResponse:
        """Prometheus text exposition format (version 0.0.4)."""
        return PlainTextResponse(ctx.metrics.exposition(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/v1/openapi.json", tags=["api"])
    def openapi(who: Who) -> JSONResponse:
        """This API's OpenAPI document."""
        return JSONResponse(app.openapi())

    # --- login ----------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> HTMLResponse:
        csrf, cookie = ctx.sessions.login_form(request.cookies.get(LOGIN_COOKIE))
        response = ctx.page("login.html", None, title="Log in", csrf=csrf, message=None,
                            next=_local(next))
        if cookie:
            response.set_cookie(LOGIN_COOKIE, cookie, **ctx.sessions.cookie_options(3600))
        return response

    @app.post("/login", include_in_schema=False)
    def login(request: Request, name: Annotated[str, Form(max_length=200)] = "",
              password: Annotated[str, Form(max_length=1024)] = "",
              csrf_token: Annotated[str, Form(max_length=200)] = "",
              next: Annotated[str, Form(max_length=500)] = "/") -> Response:
        peer = None if request.client is None else f"{request.client.host}:{request.client.port}"
        expected = ctx.sessions.login_csrf(request.cookies.get(LOGIN_COOKIE))
        if not same_token(csrf_token, expected):
            raise Forbidden("the login form's CSRF token is missing or wrong; reload the page")
        name = name.strip()
        with Session(engine) as session, session.begin():
            failures = recent_failures(session, name, LOGIN_FAILURE_WINDOW)
            user = find_user(session, name)
            ok = verify_password(user, password)
            why = None
            if ok and user is not None and user.disabled:
                ok, why = False, "disabled"
            elif not ok:
                why = "unknown user" if user is None else "wrong password"
            record_login(session, name, user, ok, peer, why)
            if ok and user is not None:
                cookie, _ = ctx.sessions.new_session(user)
                log.info("login", extra={"fields": {"user": name, "peer": peer}})
        if not ok:
            log.warning("login failed", extra={"fields": {"user": name, "peer": peer,
                                                          "failures": failures + 1}})
            # each failure waits longer (doubling), whoever asks: guessing gets slow
            time.sleep(min(LOGIN_DELAY_MAX_S, web.login_failure_delay_s * 2 ** min(failures, 8)))
            csrf, _ = ctx.sessions.login_form(request.cookies.get(LOGIN_COOKIE))
            return ctx.page("login.html", None, 401, title="Log in", csrf=csrf,
                            message="Wrong name or password, or the account is disabled.",
                            next=_local(next))
        response = RedirectResponse(_local(next), 303)
        response.set_cookie(SESSION_COOKIE, cookie,
                            **ctx.sessions.cookie_options(web.session_lifetime_s))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(who: Who, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        check_csrf(who, csrf_token)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- pages ----------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(who: Who) -> HTMLResponse:
        now = utcnow()
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        week = today - dt.timedelta(days=today.weekday())
        with Session(engine) as session:
            values: dict[str, Any] = {
                "today": counts_by_decision(session, today),
                "week": counts_by_decision(session, week),
                "unacknowledged": flagged_unacknowledged(session),
                "consoles": consoles_seen(session, today),
            }
        return ctx.page("dashboard.html", who, title="Dashboard", decisions=DECISIONS,
                        today_start=today.date().isoformat(), week_start=week.date().isoformat(),
                        **values)

    @app.get("/records", response_class=HTMLResponse, include_in_schema=False)
    def records_page(
        who: Who, flagged: str | None = None, unacknowledged: str | None = None,
        decision: str | None = None, console: str | None = None,
        calling_ae_title: str | None = None, since: str | None = None,
        until: str | None = None, page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    ) -> HTMLResponse:
        form = {"flagged": flagged or "", "unacknowledged": unacknowledged or "",
                "decision": decision or "", "console": console or "",
                "calling_ae_title": calling_ae_title or "", "since": since or "",
                "until": until or ""}
        try:
            where = _filter(flagged, unacknowledged, decision, console, calling_ae_title,
                            since, until)
        except ValueError as exc:
            return ctx.page("records.html", who, 400, title="Records", form=form, rows=[],
                            total=0, page=1, pages=1, message=str(exc), decisions=DECISIONS,
                            query="")
        with Session(engine) as session:
            rows, total = page_of_records(session, where, limit=PAGE_SIZE,
                                          offset=(page - 1) * PAGE_SIZE)
            items = [(d, d.received_object, alert_state(d).value) for d in rows]
            query = urlencode({k: v for k, v in form.items() if v})
            return ctx.page("records.html", who, title="Records", form=form, rows=items,
                            total=total, page=page, pages=max(1, -(-total // PAGE_SIZE)),
                            message=None, decisions=DECISIONS, query=query)

    def _record_page(who: Principal, ident: int, status: int = 200,
                     message: str | None = None) -> HTMLResponse:
        with Session(engine) as session:
            d = record_by_id(session, ident)
            if d is None:
                return ctx.page("error.html", who, 404, title="Not found",
                                message=f"no record {ident}")
            dups = duplicates_of(session, d.received_object.id)
            data = export_record(d, len(dups))
            matrix = _matrix_of(ctx, d)
            view = record_view(data, matrix, tolerance_mm=settings.decision.tolerance_mm,
                               radius_mm=settings.decision.radius_mm)
            return ctx.page("record.html", who, status, title="Record", d=data, ident=ident,
                            view=view, stored=True, message=message,
                            alerts=[(a.state, a.attempts, a.sent_at, a.last_error)
                                    for a in d.alerts],
                            patient=None)

    @app.get("/records/{ident}", response_class=HTMLResponse, include_in_schema=False)
    def record_page(who: Who, ident: int) -> HTMLResponse:
        return _record_page(who, ident)

    @app.post("/records/{ident}/acknowledge", include_in_schema=False)
    def acknowledge_form(who: Who, ident: int,
                         csrf_token: Annotated[str, Form(max_length=200)] = "",
                         note: Annotated[str, Form(max_length=NOTE_MAX + 100)] = "") -> Response:
        check_csrf(who, csrf_token)
        if not who.may_acknowledge:
            raise Forbidden(f"{who.name} is a {who.role.value}: only a physicist acknowledges")
        try:
            text = operator_text(note, "the note", NOTE_MAX, multiline=True).strip() or None
        except ValueError as exc:
            return _record_page(who, ident, 400, str(exc))
        if not _acknowledge(ident, who, text):
            return ctx.page("error.html", who, 404, title="Not found",
                            message=f"no record {ident}")
        return RedirectResponse(f"/records/{ident}", 303)

    def _acknowledge(ident: int, who: Principal, note: str | None) -> Any:
        with Session(engine) as session, session.begin():
            d = session.get(DecisionRecord, ident)
            if d is None:
                return None
            ack = acknowledge(session, d, who.name, note, user_id=who.user_id)
            session.flush()
            log.info("acknowledged", extra={"fields": {"user": who.name, "record": ident,
                                                       "sop_instance_uid": d.sop_instance_uid}})
            return AcknowledgementOut(id=ack.id, by=ack.acknowledged_by, note=ack.note,
                                      at=ack.acknowledged_at)

    @app.get("/decode", response_class=HTMLResponse, include_in_schema=False)
    def decode_page(who: Who) -> HTMLResponse:
        return ctx.page("decode.html", who, title="Decode a file", message=None)

    @app.post("/decode", response_class=HTMLResponse, include_in_schema=False)
    async def decode_form(who: Who, file: Annotated[UploadFile, File()],
                          csrf_token: Annotated[str, Form(max_length=200)] = "",
                          offset: Annotated[str, Form(max_length=200)] = "",
                          isocenter: Annotated[str, Form(max_length=200)] = "") -> HTMLResponse:
        check_csrf(who, csrf_token)
        data = await file.read(settings.node.max_dataset_bytes + 1)
        if len(data) > settings.node.max_dataset_bytes:
            return ctx.page("decode.html", who, 413, title="Decode a file",
                            message="the file is larger than [node] max_dataset_bytes")
        try:
            o, iso = _floats(offset, 6, "offset"), _floats(isocenter, 3, "isocenter")
        except ValueError as exc:
            return ctx.page("decode.html", who, 400, title="Decode a file", message=str(exc))
        name = Path(file.filename or "upload.dcm").name
        record = await run_in_threadpool(_decode_upload, ctx, data, name, offset=o, isocenter=iso)
        data_dict = record.as_dict()
        view = record_view(data_dict, _matrix_of_bytes(data),
                           tolerance_mm=record_policy_tolerance(), radius_mm=record_radius())
        return ctx.page("record.html", who, title="Decoded (not stored)", d=data_dict, ident=None,
                        view=view, stored=False, message=None, alerts=[], patient=None)

    def record_policy_tolerance() -> float:
        return decode_options().policy.tolerance_mm

    def record_radius() -> float:
        return decode_options().policy.radius_mm

    @app.get("/consoles", response_class=HTMLResponse, include_in_schema=False)
    def consoles_page(who: Who) -> HTMLResponse:
        return _consoles_page(who)

    def _consoles_page(who: Principal, status_code: int = 200, message: str | None = None
                       ) -> HTMLResponse:
        with Session(engine) as session:
            seen = consoles_seen(session)
            known = list_consoles(session)
        return ctx.page("consoles.html", who, status_code, title="Consoles", consoles=seen,
                        known=known, message=message)

    def _commission(console_id: int, who: Principal, conventions: list[str],
                    note: str | None) -> CommissionedOut | str:
        """Commission a console as ``who`` (an added record); the reason when it cannot be."""
        try:
            pairs = frozenset(OrderDirection.parse(v.strip()) for v in conventions if v.strip())
            text = None if note is None else operator_text(
                note, "the note", NOTE_MAX, multiline=True).strip() or None
        except ValueError as exc:
            return str(exc)
        if not pairs:
            return "no convention given (for example xyz/direct)"
        with Session(engine) as session, session.begin():
            console = session.get(Console, console_id)
            if console is None:
                return f"no console {console_id}"
            state = commission(session, console, pairs, who.name, text)
        log.info("console commissioned", extra={"fields": {
            "user": who.name, "console_id": console_id, "established": pairs_text(pairs)}})
        assert state.established is not None
        return CommissionedOut(console_id=console_id, by=who.name,
                               established=pairs_text(state.established.pairs))

    @app.post("/consoles/{console_id}/commission", include_in_schema=False)
    def commission_form(who: Who, console_id: int,
                        csrf_token: Annotated[str, Form(max_length=200)] = "",
                        convention: Annotated[str, Form(max_length=200)] = "",
                        note: Annotated[str, Form(max_length=NOTE_MAX + 100)] = "") -> Response:
        check_csrf(who, csrf_token)
        if not who.may_acknowledge:
            raise Forbidden(f"{who.name} is a {who.role.value}: only a physicist commissions")
        done = _commission(console_id, who, convention.split(","), note)
        if isinstance(done, str):
            return _consoles_page(who, 400, done)
        return RedirectResponse("/consoles", 303)

    # --- REST API -------------------------------------------------------------------------

    @app.get("/api/v1/records", response_model=RecordPage, tags=["records"])
    def api_records(
        who: Who, flagged: bool | None = None, unacknowledged: bool = False,
        decision: str | None = None, console: str | None = None,
        calling_ae_title: str | None = None,
        since: Annotated[str | None, Query(description="ISO 8601 date or time, UTC default")]
        = None,
        until: Annotated[str | None, Query(description="ISO 8601; a date includes its day")]
        = None,
        sop_instance_uid: str | None = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
    ) -> Any:
        """Decision records, newest first, with the list page's filters."""
        try:
            where = _filter(None if flagged is None else str(flagged), str(unacknowledged),
                            decision, console, calling_ae_title, since, until, sop_instance_uid)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        with Session(engine) as session:
            rows, total = page_of_records(session, where, limit=limit, offset=offset)
            return RecordPage(total=total, offset=offset, limit=limit,
                              records=[_summary(d) for d in rows])

    @app.get("/api/v1/records/{ident}", response_model=RecordDetail, tags=["records"])
    def api_record(who: Who, ident: int) -> Any:
        """One record: docs/contract.md section 5's record plus the node's fields."""
        with Session(engine) as session:
            d = record_by_id(session, ident)
            if d is None:
                return JSONResponse({"detail": f"no record {ident}"}, 404)
            return RecordDetail(id=d.id, record=export_record(
                d, len(duplicates_of(session, d.received_object.id))))

    @app.post("/api/v1/records/{ident}/acknowledge", response_model=AcknowledgementOut,
              status_code=201, tags=["records"])
    def api_acknowledge(request: Request, who: Physicist,
                        ident: int, body: AcknowledgeRequest) -> Any:
        """Acknowledge a decision (a physicist; with a session cookie, send the session's CSRF
        token in ``X-CSRF-Token``)."""
        check_csrf(who, request.headers.get(CSRF_HEADER))
        try:
            note = None if body.note is None else operator_text(
                body.note, "note", NOTE_MAX, multiline=True)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        ack = _acknowledge(ident, who, note)
        if ack is None:
            return JSONResponse({"detail": f"no record {ident}"}, 404)
        return ack

    @app.post("/api/v1/decode", tags=["decode"],
              responses={200: {"content": {"application/json": {}},
                               "description": "docs/contract.md section 5's record, exactly "
                                              "the line `sro-decoder decode --json` prints"}})
    async def api_decode(
        request: Request, who: Who, file: Annotated[UploadFile, File()],
        model: Annotated[str | None, Query(description="ebm, analytic or a weights file "
                                                        "(default: the shipped model)")] = None,
        offset: Annotated[str | None, Query(description="TX,TY,TZ,RX,RY,RZ")] = None,
        isocenter: Annotated[str | None, Query(description="CX,CY,CZ")] = None,
        rotation_step: Annotated[float | None, Query(gt=0)] = None,
        translation_step: Annotated[float | None, Query(gt=0)] = None,
        translation_unit: Annotated[str | None, Query(pattern="^(mm|cm)$")] = None,
        tolerance_mm: Annotated[float | None, Query(gt=0)] = None,
        radius_mm: Annotated[float | None, Query(gt=0)] = None,
        isocenter_bound_mm: Annotated[float | None, Query(gt=0)] = None,
    ) -> Response:
        """Decode an uploaded SRO with ``decode``'s flags; nothing is stored."""
        check_csrf(who, request.headers.get(CSRF_HEADER))
        data = await file.read(settings.node.max_dataset_bytes + 1)
        if len(data) > settings.node.max_dataset_bytes:
            return JSONResponse({"detail": "larger than [node] max_dataset_bytes"}, 413)
        try:
            o, iso = _floats(offset, 6, "offset"), _floats(isocenter, 3, "isocenter")
            if model and "/" in model:
                raise ValueError("model: ebm or analytic (weights files only on the command line)")
            record = await run_in_threadpool(
                _decode_upload, ctx, data, file.filename or "upload.dcm", model=model, offset=o,
                isocenter=iso, rotation_step_deg=rotation_step,
                translation_step_mm=translation_step, translation_unit=translation_unit,
                tolerance_mm=tolerance_mm, radius_mm=radius_mm,
                isocenter_bound_mm=isocenter_bound_mm)
        except (ValueError, UnknownModelError) as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        return FastAPIResponse(json.dumps(record.as_dict()) + "\n", media_type="application/json")

    @app.get("/api/v1/consoles", response_model=list[ConsoleOut], tags=["consoles"])
    def api_consoles(who: Who) -> Any:
        """The consoles seen (the offset's console text, else the calling AE title)."""
        with Session(engine) as session:
            return [ConsoleOut(console=c.console, objects=c.objects, flagged=c.flagged,
                               last_received_at=c.last_received_at)
                    for c in consoles_seen(session)]

    @app.post("/api/v1/consoles/{console_id}/commission", response_model=CommissionedOut,
              status_code=201, tags=["consoles"])
    def api_commission(request: Request, who: Physicist, console_id: int,
                       body: CommissionRequest) -> Any:
        """Commission a console's (order, direction) pairs (a physicist; added record, never
        an edit; with a session cookie, send its CSRF token in ``X-CSRF-Token``)."""
        check_csrf(who, request.headers.get(CSRF_HEADER))
        done = _commission(console_id, who, body.convention, body.note)
        if isinstance(done, str):
            return JSONResponse({"detail": done}, 404 if done.startswith("no console") else 422)
        return done

    # --- DICOMweb STOW-RS -----------------------------------------------------------------

    @app.post("/dicomweb/studies", tags=["dicomweb"])
    async def stow_rs(request: Request, who: Who) -> Response:
        """Store Instances (PS3.18 section 10.5): ``multipart/related;
        type="application/dicom"``, each part a PS3.10 file; by API token only."""
        if who.csrf is not None:
            raise Forbidden("STOW-RS takes an API token (Authorization: Bearer), not a session")
        if ctx.store is None:
            return JSONResponse({"detail": "this web application runs without the DICOM node "
                                           "(sro-decoder web); send to sro-decoder serve"}, 503)
        return await stow.store_instances(request, ctx.store, settings, who,
                                          association_id=uuid.uuid4().hex)

    return app


def _local(target: str | None) -> str:
    """A redirect target on this site only (no scheme, no host, no ``//``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def user_of(session: Session, principal: Principal) -> User | None:
    return session.get(User, principal.user_id)
