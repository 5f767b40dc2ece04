"""The outbox sender: delivers queued alert e-mails over SMTP (RFC 5321), marks them sent.

Plain SMTP or STARTTLS (RFC 3207), optional login. A failed delivery keeps the e-mail pending
with a backoff that doubles up to ``[alerts] retry_max_s``; the outbox is in the audit database,
so an SMTP outage or a restart delays alerts but never loses one (delivery is at least once).
An alert's Message-ID (RFC 5322 section 3.6.4) is the same each time it is sent, so the one copy
a kill can cause (below) is recognisable, and mail systems that drop repeated Message-IDs do.

One message that cannot be built or sent at all (anything but a network or SMTP error) is marked
``failed`` with its reason, logged once at ERROR and never retried; the other messages of the
pass go on (issue 9). A pass that fails as a whole backs off the same way a delivery does. With
no recipients configured, alerts queued without any wait in the outbox untouched (no attempt
counted) and the sender says so once, not once per alert per pass.

Several nodes may share the outbox: each pass claims its alerts first
(:func:`node.audit.store.claim_alerts`, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so one alert
is sent by one sender, exactly once while its sender lives. Only a sender killed in the moment
between the SMTP server's acceptance of an e-mail and the commit that marks it sent leaves that
e-mail to be sent again (once its claim expires or its node starts again): no exchange between
two systems can close that window, and a second copy is safer than a lost alert. Each e-mail
names the node that sent it (``X-SRO-Decoder-Node``).

At most one e-mail per console per ``[alerts] digest_window_s``: a flooding console's further
alerts wait and go out as one digest listing every object (:mod:`node.alerts.digest`); a
decision acknowledged before its e-mail is sent is left out (``not_sent``, and why).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import smtplib
import ssl
import threading
import uuid
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import format_datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from node.alerts.digest import DigestMessage, compose_digest, plan
from node.audit.models import AlertOutbox, utcnow
from node.audit.store import (
    claim_alerts,
    claim_rows,
    next_alert_time,
    release_claims,
    unaddressed_alerts,
)
from node.records import AlertState
from node.settings import AlertSettings, SmtpSettings
from node.text import bounded, header_safe, visible

log = logging.getLogger("node.alerts")

#: An address as the settings accept one (``local@domain``), with nothing that could end or
#: split a header field (RFC 5322 section 3.4): no white space, comma, angle bracket or quote
_ADDRESS = re.compile(r"[^@\s,;<>\"]+@[^@\s,;<>\"]+")
#: Longest reason kept in ``last_error``
_ERROR_MAX = 1000


#: What a Message-ID part may not hold (RFC 5322 section 3.6.4, dot-atom text, kept plain)
_NOT_ID_TEXT = re.compile(r"[^A-Za-z0-9.-]")


def message_id(row: AlertOutbox | DigestMessage, sender: str) -> str:
    """The Message-ID of ``row``'s e-mail: the same whenever it is sent (RFC 5322 section
    3.6.4): its id and creation time, at the domain of the sender address."""
    domain = _NOT_ID_TEXT.sub("", sender.rpartition("@")[2]) or "sro-decoder.invalid"
    stamp = row.created_at.strftime("%Y%m%d%H%M%S%f")
    return f"<sro-alert-{_NOT_ID_TEXT.sub('', str(row.id))}.{stamp}@{domain}>"


def build_email(row: AlertOutbox | DigestMessage, sender: str, recipients: Sequence[str],
                node: str = "") -> EmailMessage:
    """The RFC 5322 message of one outbox row (or of a console's digest of several).

    The subject is made one header-safe line here as well as by the composer (a row may have
    been queued by an older version); an address cannot be made safe, only refused: a recipient
    that is not plainly an address raises :class:`ValueError`.
    """
    bad = [a for a in recipients if not (_ADDRESS.fullmatch(a) and a.isprintable())]
    if bad:  # the sender is a setting, checked at start-up: not this message's fault
        raise ValueError("recipient is not an e-mail address: "
                         + ", ".join(visible(b) for b in bad))
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = header_safe(row.subject)
    msg["Date"] = format_datetime(row.created_at)
    msg["Message-ID"] = message_id(row, sender)
    msg["X-SRO-Decoder-Alert"] = str(row.id)
    if node:
        msg["X-SRO-Decoder-Node"] = header_safe(node)
    msg.set_content(row.body)
    return msg


#: how many alerts one pass claims at a time
CLAIM_BATCH = 10


def _unclaim(row: AlertOutbox) -> None:
    row.claimed_by = row.claim_token = None
    row.claimed_until = None


class OutboxSender:
    """A thread that sends due alerts; :meth:`wake` after queueing new ones."""

    def __init__(self, engine: Engine, smtp: SmtpSettings, alerts: AlertSettings,
                 node: str = "") -> None:
        self._engine = engine
        self._smtp = smtp
        self._alerts = alerts
        #: who claims alerts (several nodes may share the outbox): the node, this sender
        self._node = node
        self._token = uuid.uuid4().hex
        #: how long a claim holds: a whole claimed batch can be sent within it
        self._lease = dt.timedelta(seconds=60 + CLAIM_BATCH * smtp.timeout_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unaddressed = False  # alerts are known to wait for recipients (said once)
        self.sent = 0

    def start(self) -> None:
        """Release what this node's previous process had claimed, then send in a thread."""
        with Session(self._engine) as session:
            released = release_claims(session, self._node)
        if released:
            log.info("released alert claims of this node's previous process",
                     extra={"fields": {"alerts": released, "node": self._node}})
        self._thread = threading.Thread(target=self._run, name="alert-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0  # passes failed in a row: they back off like a delivery does
        while not self._stop.is_set():
            try:
                self.run_once()
                failures = 0
            except Exception:  # the database may be down: try again later, never at once
                failures += 1
                wait = self._backoff(failures).total_seconds()
                log.exception("alert outbox pass failed", extra={"fields": {
                    "failures_in_a_row": failures, "retry_in_s": wait}})
                self._stop.wait(wait)  # not cut short by wake(): a failing pass never spins
                self._wake.clear()
                continue
            wait = self._alerts.poll_s
            try:
                with Session(self._engine) as session:
                    due = next_alert_time(session, addressed_only=not self._alerts.recipients)
                if due is not None:
                    wait = min(wait, max(0.0, (due - utcnow()).total_seconds()))
            except Exception:
                pass
            self._wake.wait(wait)
            self._wake.clear()

    def _backoff(self, attempts: int) -> dt.timedelta:
        seconds = min(self._alerts.retry_initial_s * 2 ** max(0, attempts - 1),
                      self._alerts.retry_max_s)
        return dt.timedelta(seconds=seconds)

    def _connect(self) -> smtplib.SMTP:
        s = self._smtp
        client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        try:
            client.ehlo()
            if s.starttls:
                context = ssl.create_default_context(cafile=s.ca_file or None)
                client.starttls(context=context)
                client.ehlo()
            if s.user:
                client.login(s.user, s.password)
        except BaseException:
            client.close()
            raise
        return client

    def run_once(self) -> int:
        """Send every due alert; return how many were sent."""
        now = utcnow()
        # with no recipients configured, alerts queued without any cannot be sent yet
        addressed_only = not self._alerts.recipients
        with Session(self._engine) as session:
            if addressed_only:
                self._note_unaddressed(unaddressed_alerts(session))
            ids = claim_alerts(session, self._node, self._token, now, self._lease, CLAIM_BATCH,
                               addressed_only=addressed_only)
            if not ids:
                return 0
            rows = list(session.scalars(
                select(AlertOutbox).where(AlertOutbox.id.in_(ids),
                                          AlertOutbox.claim_token == self._token)
                .order_by(AlertOutbox.id)))
            # one e-mail per console per window: a group of rows is one digest (module doc)
            window_s = self._alerts.digest_window_s
            groups = plan(session, rows, now, window_s)
            # a digest takes only rows this sender holds (claimed now, or not held by another)
            groups = [(key, held) for key, group in groups
                      if (held := claim_rows(session, group, self._node, self._token, now,
                                             self._lease))]
            grouped = {m.id for _, group in groups for m in group}
            for row in rows:  # deferred to their console's window: free for any sender
                if row.id not in grouped:
                    _unclaim(row)
            session.commit()
            sent = 0
            client: smtplib.SMTP | None = None
            try:
                for index, (key, group) in enumerate(groups):
                    row = group[0]
                    recipients = [r for r in row.recipients.split(",") if r] or list(
                        self._alerts.recipients
                    )
                    if not recipients:  # a malformed list such as ",": retried with backoff
                        for member in group:
                            self._failed(session, member, "no alert recipients configured "
                                         "([alerts] recipients)")
                        continue
                    group = [m for m in group if not self._acknowledged(session, m)]
                    if not group:
                        continue
                    try:
                        message = build_email(
                            group[0] if key is None or len(group) == 1
                            else compose_digest(key, group, window_s),
                            self._smtp.sender, recipients, self._node)
                    except Exception as exc:  # this message can never be built: the next one
                        for member in group:
                            self._give_up(session, member, exc)
                        continue
                    if client is None:
                        try:
                            client = self._connect()
                        except (OSError, smtplib.SMTPException) as exc:
                            # the server is down or refuses us: one try per pass, not per e-mail
                            for _, waiting_group in groups[index:]:
                                for waiting in waiting_group:
                                    if waiting.state == AlertState.PENDING.value:
                                        self._failed(session, waiting,
                                                     f"{type(exc).__name__}: {exc}")
                            break
                    try:
                        # as_bytes: no ">From" escaping of body lines (mangle_from_ false)
                        client.sendmail(self._smtp.sender, recipients, message.as_bytes(
                            policy=message.policy.clone(linesep="\r\n")))
                    except (OSError, smtplib.SMTPException) as exc:
                        for member in group:
                            self._failed(session, member, f"{type(exc).__name__}: {exc}")
                        client = self._drop(client)
                        continue
                    except Exception as exc:  # not a network or SMTP error: this message
                        client = self._drop(client)  # the connection's state is unknown
                        for member in group:
                            self._give_up(session, member, exc)
                        continue
                    at = utcnow()
                    for member in group:  # a digest's rows together, in one commit
                        member.state = AlertState.SENT.value
                        _unclaim(member)
                        member.attempts += 1
                        member.sent_at = at
                        member.last_error = None
                    session.commit()
                    sent += len(group)
                    log.info("alert sent", extra={"fields": {
                        "alert_ids": [m.id for m in group], "recipients": recipients,
                        "subject": message["Subject"]}})
            finally:
                if client is not None:
                    try:
                        client.quit()
                    except (OSError, smtplib.SMTPException):
                        client.close()
            self.sent += sent
            return sent

    @staticmethod
    def _acknowledged(session: Session, row: AlertOutbox) -> bool:
        """Whether ``row``'s decision was acknowledged before it was sent: then it is marked
        ``not_sent``, and why, and left out."""
        acks = row.decision.acknowledgements
        if not acks:
            return False
        ack = acks[0]
        row.state = AlertState.NOT_SENT.value
        _unclaim(row)
        row.last_error = bounded(
            f"not sent: the decision was acknowledged by {ack.acknowledged_by} "
            f"at {ack.acknowledged_at.isoformat()} before it was sent", _ERROR_MAX)
        session.commit()
        return True

    @staticmethod
    def _drop(client: smtplib.SMTP) -> None:
        with contextlib.suppress(Exception):
            client.close()
        return None

    def _note_unaddressed(self, waiting: int) -> None:
        """Say once (not per alert, not per pass) that alerts wait for recipients."""
        if waiting and not self._unaddressed:
            log.warning("alerts wait in the outbox: no alert recipients configured; they are "
                        "sent once [alerts] recipients is set and the node restarted",
                        extra={"fields": {"waiting": waiting,
                                          "setting": "[alerts] recipients"}})
        self._unaddressed = waiting > 0

    def _give_up(self, session: Session, row: AlertOutbox, exc: Exception) -> None:
        """Mark ``row`` failed for good (it is never picked up again) and say so once."""
        error = bounded(f"{type(exc).__name__}: {exc}", _ERROR_MAX)
        row.state = AlertState.FAILED.value
        _unclaim(row)
        row.attempts += 1
        row.last_error = error
        session.commit()
        log.error("alert cannot be sent; marked failed and not retried", extra={"fields": {
            "alert_id": row.id, "decision_id": row.decision_id, "error": error}})

    def _failed(self, session: Session, row: AlertOutbox, error: str) -> None:
        row.attempts += 1
        row.last_error = error
        row.next_attempt_at = utcnow() + self._backoff(row.attempts)
        _unclaim(row)
        session.commit()
        log.warning("alert not sent; will retry", extra={"fields": {
            "alert_id": row.id, "attempts": row.attempts, "error": error,
            "next_attempt_at": row.next_attempt_at.isoformat()}})
