"""The outbox sender: delivers queued alert e-mails over SMTP (RFC 5321), marks them sent.

Plain SMTP or STARTTLS (RFC 3207), optional login. A failed delivery keeps the e-mail pending
with a backoff that doubles up to ``[alerts] retry_max_s``; the outbox is in the audit database,
so an SMTP outage or a restart delays alerts but never loses one (delivery is at least once).
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from node.audit.models import AlertOutbox, AlertState, utcnow
from node.audit.store import due_alerts, next_alert_time
from node.settings import AlertSettings, SmtpSettings

log = logging.getLogger("node.alerts")


def build_email(row: AlertOutbox, sender: str, recipients: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = row.subject
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
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the database may be down: try again later
                log.exception("alert outbox pass failed")
            wait = self._alerts.poll_s
            try:
                with Session(self._engine) as session:
                    due = next_alert_time(session)
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
        with Session(self._engine) as session:
            rows = due_alerts(session, now)
            if not rows:
                return 0
            sent = 0
            client: smtplib.SMTP | None = None
            try:
                for index, row in enumerate(rows):
                    recipients = [r for r in row.recipients.split(",") if r] or list(
                        self._alerts.recipients
                    )
                    if not recipients:
                        self._failed(session, row, "no alert recipients configured "
                                     "([alerts] recipients)")
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
                        client.send_message(build_email(row, self._smtp.sender, recipients))
                    except (OSError, smtplib.SMTPException) as exc:
                        self._failed(session, row, f"{type(exc).__name__}: {exc}")
                        if client is not None:
                            try:
                                client.close()
                            finally:
                                client = None
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

    def _failed(self, session: Session, row: AlertOutbox, error: str) -> None:
        row.attempts += 1
        row.last_error = error
        row.next_attempt_at = utcnow() + self._backoff(row.attempts)
        session.commit()
        log.warning("alert not sent; will retry", extra={"fields": {
            "alert_id": row.id, "attempts": row.attempts, "error": error,
            "next_attempt_at": row.next_attempt_at.isoformat()}})
