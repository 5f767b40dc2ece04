"""The outbox sender: delivers queued alert e-mails over SMTP (RFC 5321), marks them sent.

Plain SMTP or STARTTLS (RFC 3207), optional login. A failed delivery keeps the e-mail pending
with a backoff that doubles up to ``[alerts] retry_max_s``; the outbox is in the audit database,
so an SMTP outage or a restart delays alerts but never loses one (delivery is at least once).

One message that cannot be built or sent at all (anything but a network or SMTP error) is marked
``failed`` with its reason, logged once at ERROR and never retried; the other messages of the
pass go on (issue 9). A pass that fails as a whole backs off the same way a delivery does. With
no recipients configured, alerts queued without any wait in the outbox untouched (no attempt
counted) and the sender says so once, not once per alert per pass.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import smtplib
import ssl
import threading
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from node.audit.models import AlertOutbox, utcnow
from node.audit.store import due_alerts, next_alert_time, unaddressed_alerts
from node.records import AlertState
from node.settings import AlertSettings, SmtpSettings
from node.text import bounded, header_safe, visible

log = logging.getLogger("node.alerts")

#: An address as the settings accept one (``local@domain``), with nothing that could end or
#: split a header field (RFC 5322 section 3.4): no white space, comma, angle bracket or quote
_ADDRESS = re.compile(r"[^@\s,;<>\"]+@[^@\s,;<>\"]+")
#: Longest reason kept in ``last_error``
_ERROR_MAX = 1000


def build_email(row: AlertOutbox, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The RFC 5322 message of one outbox row.

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
    msg["Message-ID"] = make_msgid(idstring=f"sro-alert-{row.id}")
    msg["X-SRO-Decoder-Alert"] = str(row.id)
    msg.set_content(row.body)
    return msg


class OutboxSender:
    """A thread that sends due alerts; :meth:`wake` after queueing new ones."""

    def __init__(self, engine: Engine, smtp: SmtpSettings, alerts: AlertSettings) -> None:
        self._engine = engine
        self._smtp = smtp
        self._alerts = alerts
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unaddressed = False  # alerts are known to wait for recipients (said once)
        self.sent = 0

    def start(self) -> None:
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
            rows = due_alerts(session, now, addressed_only=addressed_only)
            if not rows:
                return 0
            sent = 0
            client: smtplib.SMTP | None = None
            try:
                for index, row in enumerate(rows):
                    recipients = [r for r in row.recipients.split(",") if r] or list(
                        self._alerts.recipients
                    )
                    if not recipients:  # a malformed list such as ",": retried with backoff
                        self._failed(session, row, "no alert recipients configured "
                                     "([alerts] recipients)")
                        continue
                    ack = row.decision.acknowledgements[0] if row.decision.acknowledgements \
                        else None
                    if ack is not None:  # acknowledged before it was sent: not sent, and why
                        row.state = AlertState.NOT_SENT.value
                        row.last_error = bounded(
                            f"not sent: the decision was acknowledged by {ack.acknowledged_by} "
                            f"at {ack.acknowledged_at.isoformat()} before it was sent",
                            _ERROR_MAX)
                        session.commit()
                        continue
                    try:
                        message = build_email(row, self._smtp.sender, recipients)
                    except Exception as exc:  # this message can never be built: the next one
                        self._give_up(session, row, exc)
                        continue
                    if client is None:
                        try:
                            client = self._connect()
                        except (OSError, smtplib.SMTPException) as exc:
                            # the server is down or refuses us: one try per pass, not per e-mail
                            for waiting in rows[index:]:
                                self._failed(session, waiting, f"{type(exc).__name__}: {exc}")
                            break
                    try:
                        # as_bytes: no ">From" escaping of body lines (mangle_from_ false)
                        client.sendmail(self._smtp.sender, recipients, message.as_bytes(
                            policy=message.policy.clone(linesep="\r\n")))
                    except (OSError, smtplib.SMTPException) as exc:
                        self._failed(session, row, f"{type(exc).__name__}: {exc}")
                        client = self._drop(client)
                        continue
                    except Exception as exc:  # not a network or SMTP error: this message
                        client = self._drop(client)  # the connection's state is unknown
                        self._give_up(session, row, exc)
                        continue
                    row.state = AlertState.SENT.value
                    row.attempts += 1
                    row.sent_at = utcnow()
                    row.last_error = None
                    session.commit()
                    sent += 1
                    log.info("alert sent", extra={"fields": {
                        "alert_id": row.id, "recipients": recipients, "subject": row.subject}})
            finally:
                if client is not None:
                    try:
                        client.quit()
                    except (OSError, smtplib.SMTPException):
                        client.close()
            self.sent += sent
            return sent

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
        row.attempts += 1
        row.last_error = error
        session.commit()
        log.error("alert cannot be sent; marked failed and not retried", extra={"fields": {
            "alert_id": row.id, "decision_id": row.decision_id, "error": error}})

    def _failed(self, session: Session, row: AlertOutbox, error: str) -> None:
        row.attempts += 1
        row.last_error = error
        row.next_attempt_at = utcnow() + self._backoff(row.attempts)
        session.commit()
        log.warning("alert not sent; will retry", extra={"fields": {
            "alert_id": row.id, "attempts": row.attempts, "error": error,
            "next_attempt_at": row.next_attempt_at.isoformat()}})
