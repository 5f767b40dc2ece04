"""The node's counters, kept in-process and written in the Prometheus text exposition format
(version 0.0.4) by ``/metrics`` (node/web; issue 13 item 6).

The receiving path (:mod:`node.ingest`) counts here, the web application reads; gauges that are
states of something else (associations open, the outbox) are read when scraped, through the
callables given to :meth:`Metrics.gauge`. Label values are sender text (AE titles): they are
escaped as the format requires (backslash, double quote, line feed), so none can forge a line.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable

#: C-STORE handling time buckets, seconds
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "sro_decoder_"


def label_value(text: object) -> str:
    """A label value as the exposition format writes it (backslash, quote, newline escaped)."""
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{label_value(v)}"' for n, v in zip(names, values, strict=True)) \
        + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """Counters, one histogram and scraped gauges of one node (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, tuple[str, tuple[str, ...], dict[tuple[str, ...], float]]] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float | None]]] = {}
        self._buckets = DURATION_BUCKETS
        self._hist_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self._hist_sum = 0.0
        for name, text, labels in (
            ("objects_received_total", "Objects recorded with a decision, by decision and "
             "calling AE title", ("decision", "calling_ae_title")),
            ("duplicates_received_total", "Second copies of a SOP Instance UID, by calling AE "
             "title", ("calling_ae_title",)),
            ("duplicate_conflicts_total", "Copies of a recorded SOP Instance UID whose data set "
             "differs from the first copy's (flagged), by calling AE title",
             ("calling_ae_title",)),
            ("database_errors_total", "Audit database writes or lookups that failed", ()),
            ("archive_errors_total", "Archive writes that failed", ()),
        ):
            self._counters[name] = (text, labels, {})

    def count(self, name: str, *labels: str | None, by: float = 1.0) -> None:
        _, names, values = self._counters[name]
        key = tuple("" if v is None else v for v in labels)
        if len(key) != len(names):
            raise ValueError(f"{name} takes labels {names}")
        with self._lock:
            values[key] = values.get(key, 0.0) + by

    def value(self, name: str, *labels: str | None) -> float:
        key = tuple("" if v is None else v for v in labels)
        with self._lock:
            return self._counters[name][2].get(key, 0.0)

    def observe_store(self, seconds: float) -> None:
        """One C-STORE (or STOW-RS instance) handled in ``seconds``."""
        with self._lock:
            self._hist_counts[bisect.bisect_left(self._buckets, seconds)] += 1
            self._hist_sum += seconds

    def gauge(self, name: str, text: str, read: Callable[[], float | None]) -> None:
        """A gauge read when scraped (``None``: not written)."""
        self._gauges[name] = (text, read)

    def exposition(self) -> str:
        """Everything, in the Prometheus text format."""
        lines: list[str] = []
        with self._lock:
            counters = [(n, t, names, dict(v)) for n, (t, names, v) in self._counters.items()]
            counts, total = list(self._hist_counts), self._hist_sum
        for name, text, names, values in counters:
            full = PREFIX + name
            lines += [f"# HELP {full} {text}", f"# TYPE {full} counter"]
            if not names and not values:
                lines.append(f"{full} 0")
            for key, value in sorted(values.items()):
                lines.append(f"{full}{_labels(names, key)} {_number(value)}")
        full = PREFIX + "cstore_duration_seconds"
        lines += [f"# HELP {full} Time from a C-STORE request to its answer (archive, decode, "
                  "record)", f"# TYPE {full} histogram"]
        running = 0
        for bound, n in zip((*self._buckets, math.inf), counts, strict=True):
            running += n
            lines.append(f'{full}_bucket{{le="{_number(bound)}"}} {running}')
        lines += [f"{full}_sum {_number(total)}", f"{full}_count {running}"]
        for name, (text, read) in self._gauges.items():
            reading: float | None
            try:
                reading = read()
            except Exception:  # a gauge that cannot be read now is left out, not an error page
                reading = None
            if reading is None:
                continue
            full = PREFIX + name
            lines += [f"# HELP {full} {text}", f"# TYPE {full} gauge",
                      f"{full} {_number(reading)}"]
        return "\n".join(lines) + "\n"


def parse_exposition(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` of each sample (for tests and the benchmark)."""
    import re

    sample = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$')
    pair = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = sample.match(line)
        if m is None:
            raise ValueError(f"not a sample line: {line!r}")
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in pair.findall(m[2] or "")}
        yield m[1], labels, float(m[3])
