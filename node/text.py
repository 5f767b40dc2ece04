"""Text from a sender made safe where it enters e-mail, logs, tables and CSV (issue 9).

Everything a sender controls (UIDs, AE titles, patient name and ID, the console's text, the peer
address, reasons quoting a value) may hold CR/LF, other control characters, lone surrogates,
markup or a spreadsheet formula. One rule makes it visible instead of active: every character
that could end a line, move a terminal's cursor or hide text (Unicode categories Cc, Cf, Cs, Zl,
Zp) is written as a Python-style escape (``\\r``, ``\\n``, ``\\t``, ``\\x1b``, ``\\u2028``), so
the value stays readable and nothing it holds can forge a header (RFC 5322 section 2.2), a line
of an e-mail body or a log, or a record of the table. The functions here are applied once, at
each entry point (the e-mail composer and builder, the log formatter, the audit commands), not
at each use.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.text import Text

#: Unicode categories that are escaped: controls, format (bidi overrides, zero width), lone
#: surrogates (undecodable bytes under ``surrogateescape``), line and paragraph separators
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}

#: Longest text of one header field value written from a sender's text (RFC 5322 section 2.1.1
#: recommends lines of at most 78 characters; folding keeps them short, this keeps them few)
HEADER_MAX = 200
#: Longest operator name (``audit ack --by``) and note (``--note``)
OPERATOR_NAME_MAX = 64
NOTE_MAX = 4000

#: A CSV cell that a spreadsheet would read as a formula starts with one of these (OWASP "CSV
#: Injection"); such a cell gets a leading ``'`` so it is shown as text
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` with every line break, control, format character and lone surrogate escaped."""
    s = str(text)
    if s.isprintable() and s.isascii():  # the usual case: nothing to do
        return s
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c
                   for c in s)


def bounded(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with ``…``."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def header_safe(text: object, limit: int = HEADER_MAX) -> str:
    """A header field value: one line, no control characters, at most ``limit`` characters."""
    return bounded(visible(text), limit)


def line_safe(text: object) -> str:
    """Text for one line of an e-mail body or log: nothing in it starts a new line."""
    return visible(text)


def table_safe(text: object) -> Text:
    """A cell of a ``rich`` table: shown literally (no markup, no emoji codes), one line."""
    from rich.text import Text

    return Text(visible(text))


def csv_safe(value: Any) -> Any:
    """A CSV cell: text a spreadsheet would run as a formula gets a leading ``'``.

    Numbers (and text that is exactly a number, such as ``-0.5``) are left as they are: a
    negative number is no formula.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START) \
            and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def is_utf8(text: str) -> bool:
    """Whether ``text`` (say from ``sys.argv``, decoded with ``surrogateescape``) is UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def operator_text(text: str, what: str, limit: int, *, multiline: bool = False) -> str:
    """An operator's input (``--by NAME``, ``--note TEXT``) as it is stored, or ``ValueError``
    with a message naming ``what``: it must be UTF-8, at most ``limit`` characters and hold no
    control characters (a note may hold line breaks and tabs).
    """
    if not is_utf8(text):
        raise ValueError(f"{what} is not valid UTF-8 text (is the terminal's locale UTF-8?)")
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text):,} characters long; at most {limit} are allowed")
    allowed = "\r\n\t" if multiline else ""
    bad = next((c for c in text if c not in allowed and unicodedata.category(c) in
                _UNSAFE_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"{what} holds the control character {_escape(bad)}")
    return text
