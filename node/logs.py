"""Structured logs: one JSON object a line (or text); fields as ``extra={"fields": {...}}``.

Field values and messages often hold a sender's text (UIDs, AE titles, reasons). JSON escapes
it by itself; the text format escapes line breaks and control characters (:mod:`node.text`),
quotes a field value that holds a space, ``=`` or a quote, and marks every further line of a
traceback with ``  | ``, so no value can forge a log line or a field (issue 9).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

from node.text import visible

#: Prefix of every line after a text record's first (traceback, stack)
CONTINUATION = "  | "


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", ...fields}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            "thread": record.threadName,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def _field_value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="') or not text.isprintable():
        return json.dumps(text)  # quoted, every control character escaped
    return text


class TextFormatter(logging.Formatter):
    """``<format> key=value ...`` on one line; a traceback follows on marked lines."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = visible(self.formatMessage(record))
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{visible(k)}={_field_value(v)}" for k, v in fields.items())
        more: list[str] = []
        if record.exc_info:
            more += self.formatException(record.exc_info).splitlines()
        elif record.exc_text:
            more += record.exc_text.splitlines()
        if record.stack_info:
            more += self.formatStack(record.stack_info).splitlines()
        return "\n".join([line, *(CONTINUATION + visible(m) for m in more)])


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send the node's logs (and pynetdicom's warnings) to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # pynetdicom logs every PDU at INFO/DEBUG; keep its warnings and errors only
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
