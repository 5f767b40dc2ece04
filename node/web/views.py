"""What the record page shows, from a stored or a just-decoded record: docs/contract.md section 4's
report,
the posterior over the conventions and the displacement of each credible alternative as
server-rendered SVG, and the offset each credible convention implies against the reported one
(docs/contract.md sections 3-5).

SVG is built from numbers and the conventions' own names, every text run through
:func:`markupsafe.escape`; nothing here is sender text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from model.conventions import Convention
from model.geometry import implied_offsets


def _name(conv: dict[str, Any]) -> str:
    direction = "inverse" if conv.get("inverse") else "direct"
    return f"{conv.get('order')}/{direction}/{conv.get('patient_position')}"


def _bars(rows: list[tuple[str, float, str]], limit: float | None, unit: str,
          mark: float | None = None, mark_label: str = "") -> Markup:
    """A horizontal bar chart: ``(label, value, text)`` rows on a 0..``limit`` scale, with an
    optional vertical mark (the tolerance)."""
    if not rows:
        return Markup("")
    top = max([limit or 0.0, *(v for _, v, _ in rows), mark or 0.0, 1e-12])
    width, left, bar_w, row_h = 560, 190, 300, 22
    height = row_h * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" class="chart">']
    for i, (label, value, text) in enumerate(rows):
        y = 10 + i * row_h
        w = max(0.0, min(1.0, value / top)) * bar_w
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" '
                   f'font-size="12">{escape(label)}</text>')
        out.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row_h - 6}" '
                   'fill="#3b6ea8"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 14}" font-size="12">'
                   f'{escape(text)}</text>')
    if mark is not None:
        x = left + min(1.0, mark / top) * bar_w
        out.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 18}" '
                   'stroke="#b22" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 4}" font-size="11" fill="#b22" '
                   f'text-anchor="middle">{escape(mark_label)}</text>')
    out.append(f'<text x="{left}" y="{height - 4}" font-size="11" fill="#666">{escape(unit)}'
               '</text></svg>')
    return Markup("".join(out))


@dataclass(frozen=True, slots=True)
class ImpliedRow:
    """The offset one credible convention reads from the matrix, and how far from the one
    reported."""

    convention: str
    probability: float | None
    translation_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    delta_translation_mm: float | None
    delta_rotation_deg: float | None


def record_view(data: dict[str, Any], matrix: np.ndarray | None, *, tolerance_mm: float,
                radius_mm: float) -> dict[str, Any]:
    """The record page's pictures and tables for ``data`` (docs/contract.md section 5's record with
    the
    node's fields) and, when known, the SRO's effective matrix."""
    top = data.get("top_conventions") or []
    rest = max(0.0, 1.0 - sum(float(t["probability"]) for t in top)) if top else 0.0
    posterior_rows = [(_name(t["convention"]), float(t["probability"]),
                       f"{float(t['probability']):.3f}") for t in top]
    if top and rest > 1e-6:
        posterior_rows.append(("all others", rest, f"{rest:.3f}"))
    alternatives = data.get("alternatives") or []
    displacement_rows = [(_name(a["convention"]), float(a["displacement_mm"]),
                          f"{float(a['displacement_mm']):.2f} mm") for a in alternatives]
    credible: list[tuple[dict[str, Any], float | None]] = []
    if data.get("convention"):
        credible.append((data["convention"], data.get("probability")))
    credible += [(a["convention"], a.get("probability")) for a in alternatives]
    implied: list[ImpliedRow] = []
    offset = data.get("offset")
    if matrix is not None and credible:
        iso = None if not offset or offset.get("isocenter_mm") is None else \
            np.asarray([offset["isocenter_mm"]], dtype=float)
        t, r = implied_offsets(np.asarray(matrix, dtype=float)[None], iso)
        for conv, p in credible:
            k = Convention.from_dict(conv).index
            tk, rk = t[0, k], r[0, k]
            dt_mm = dr_deg = None
            if offset:
                dt_mm = float(np.max(np.abs(tk - np.asarray(offset["translation_mm"]))))
                diff = (rk - np.asarray(offset["rotation_deg"]) + 180.0) % 360.0 - 180.0
                dr_deg = float(np.max(np.abs(diff)))
            implied.append(ImpliedRow(_name(conv), p, tuple(float(v) for v in tk),  # type: ignore[arg-type]
                                      tuple(float(v) for v in rk), dt_mm, dr_deg))  # type: ignore[arg-type]
    return {
        "convention_name": _name(data["convention"]) if data.get("convention") else None,
        "posterior_svg": _bars(posterior_rows, 1.0, "posterior probability"),
        "displacement_svg": _bars(displacement_rows, None,
                                  f"largest displacement within {radius_mm:g} mm (mm)",
                                  mark=tolerance_mm, mark_label=f"tolerance {tolerance_mm:g} mm"),
        "implied": implied,
    }
