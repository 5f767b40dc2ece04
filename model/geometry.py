"""The forward model of SPEC section 3 and its inverse, vectorised over hypotheses and inputs.

Shapes: ``N`` inputs, ``H = 48`` hypotheses. Angles are degrees, lengths millimetres.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from model.conventions import (
    HYPOTHESES,
    INVERSE_FLAGS,
    ORDER_INDEX,
    PERMUTATIONS,
    FloatArray,
    RotationOrder,
)

ORDERS: tuple[RotationOrder, ...] = tuple(RotationOrder)


def wrap_degrees(angles: FloatArray | float) -> FloatArray:
    """Wrap angles to (−180, 180] (SPEC section 5: 359.8 means −0.2)."""
    a = np.asarray(angles, dtype=np.float64)
    wrapped = np.mod(a + 180.0, 360.0) - 180.0
    return np.where(wrapped == -180.0, 180.0, wrapped)


def _axis_rotation(axis: int, angle_rad: FloatArray) -> FloatArray:
    """Right-handed rotation matrices about one axis, shape ``angle.shape + (3, 3)``."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    out = np.zeros((*np.shape(angle_rad), 3, 3))
    i, j = (axis + 1) % 3, (axis + 2) % 3  # cyclic, so every rotation is right-handed
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., j, j] = c
    out[..., j, i] = s
    out[..., i, j] = -s
    return out


def euler_to_matrix(order: RotationOrder, rotation_deg: FloatArray) -> FloatArray:
    """``from_euler(order, [r[a] for a in order], degrees=True)``, extrinsic, for (..., 3) input.

    ``rotation_deg`` is indexed by axis (rx, ry, rz), not by position in the sequence.
    """
    r = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    out: FloatArray | None = None
    for axis in order.axis_indices:
        step = _axis_rotation(axis, r[..., axis])
        out = step if out is None else step @ out  # extrinsic: later rotations act on the left
    assert out is not None
    return out


def iec_rotations(rotation_deg: FloatArray) -> FloatArray:
    """``R_iec`` for each of the 6 orders: (N, 3) angles to (N, 6, 3, 3).

    The three axis rotations are built once and composed in each order (extrinsic: later
    rotations act on the left).
    """
    r = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    axis = [_axis_rotation(a, r[..., a]) for a in range(3)]
    return np.stack(
        [axis[k] @ axis[j] @ axis[i] for i, j, k in (o.axis_indices for o in ORDERS)], axis=1
    )


def forward(
    translation_mm: ArrayLike,
    rotation_deg: ArrayLike,
    isocenter_mm: ArrayLike | None = None,
) -> FloatArray:
    """The matrix ``M`` each hypothesis predicts from an offset (SPEC section 3).

    ``translation_mm`` and ``rotation_deg`` are (N, 3); ``isocenter_mm`` is (N, 3) or ``None``
    (rotation about the origin). Returns (N, 48, 4, 4).
    """
    t = np.atleast_2d(np.asarray(translation_mm, dtype=np.float64))
    r = np.atleast_2d(np.asarray(rotation_deg, dtype=np.float64))
    n = t.shape[0]
    c = np.zeros((n, 3)) if isocenter_mm is None else np.atleast_2d(np.asarray(isocenter_mm, float))
    r_iec = iec_rotations(r)[:, ORDER_INDEX]  # (N, 48, 3, 3)
    p = PERMUTATIONS  # (48, 3, 3)
    pt = np.swapaxes(p, -1, -2)
    rot = pt @ r_iec @ p  # R = Pᵀ R_iec P
    u = (pt @ t[:, None, :, None])[..., 0]  # u = Pᵀ t, (N, 48, 3)
    d = c[:, None, :] - (rot @ c[:, None, :, None])[..., 0] + u  # T(x) = R x + (c − R c + u)
    rot_inv = np.swapaxes(rot, -1, -2)
    d_inv = -(rot_inv @ d[..., None])[..., 0]
    inv = INVERSE_FLAGS[None, :, None]
    out = np.zeros((n, len(HYPOTHESES), 4, 4))
    out[..., :3, :3] = np.where(inv[..., None], rot_inv, rot)
    out[..., :3, 3] = np.where(inv, d_inv, d)
    out[..., 3, 3] = 1.0
    return out


def rigid_inverse(matrix: FloatArray) -> FloatArray:
    """Inverse of rigid 4×4 matrices (..., 4, 4) without a general solve."""
    rot = np.swapaxes(matrix[..., :3, :3], -1, -2)
    out = np.zeros_like(matrix)
    out[..., :3, :3] = rot
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot, matrix[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def implied_offsets(
    matrix: ArrayLike, isocenter_mm: ArrayLike | None = None
) -> tuple[FloatArray, FloatArray]:
    """The offset ``(t, r)`` each hypothesis reads from ``M`` (the inverse of :func:`forward`).

    ``matrix`` is (N, 4, 4); ``isocenter_mm`` (N, 3) or ``None`` (translation then taken about
    the origin, which SPEC section 3 does not compare). Returns ``t`` (N, 48, 3) in mm and
    ``r`` (N, 48, 3) in degrees, ``r`` indexed by axis and wrapped to (−180, 180].
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(-1, 4, 4)
    n, h = m.shape[0], len(HYPOTHESES)
    c = np.zeros((n, 3)) if isocenter_mm is None else np.atleast_2d(np.asarray(isocenter_mm, float))
    t, r = implied_offset_of(np.repeat(m, h, axis=0), np.repeat(c, h, axis=0),
                             np.tile(np.arange(h), n))
    return t.reshape(n, h, 3), r.reshape(n, h, 3)


def implied_offset_of(
    matrix: FloatArray, isocenter_mm: FloatArray, hypothesis: npt.NDArray[np.int64]
) -> tuple[FloatArray, FloatArray]:
    """The offset ``(t, r)`` that hypothesis ``hypothesis[i]`` reads from ``matrix[i]``.

    ``matrix`` (K, 4, 4), ``isocenter_mm`` (K, 3) (zeros: about the origin), ``hypothesis``
    (K,) indices into :data:`HYPOTHESES`. Returns ``t`` and ``r`` (K, 3) as
    :func:`implied_offsets` does, for one hypothesis per row.
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(-1, 4, 4)
    hyp = np.asarray(hypothesis, dtype=np.int64).reshape(-1)
    c = np.asarray(isocenter_mm, dtype=np.float64).reshape(-1, 3)
    inverse = INVERSE_FLAGS[hyp]
    t_corr = np.where(inverse[:, None, None], rigid_inverse(m), m)  # the correction T
    rot = t_corr[:, :3, :3]
    p = PERMUTATIONS[hyp]  # (K, 3, 3)
    r_iec = p @ rot @ np.swapaxes(p, -1, -2)  # R_iec = P R Pᵀ
    u = t_corr[:, :3, 3] - c + (rot @ c[:, :, None])[..., 0]
    t = (p @ u[:, :, None])[..., 0]  # t = P u
    r = np.empty((len(hyp), 3))
    order = ORDER_INDEX[hyp]
    for k in np.unique(order):
        rows = order == k
        r[rows] = matrix_to_euler(ORDERS[int(k)], r_iec[rows])
    return t, wrap_degrees(r)


def matrix_to_euler(order: RotationOrder, rotation: FloatArray) -> FloatArray:
    """Angles (..., 3) indexed by axis, with ``euler_to_matrix(order, angles) == rotation``.

    Closed form for ``R = R_k(γ) R_j(β) R_i(α)`` (extrinsic ``i, j, k``), the middle angle in
    [−90°, 90°], as SciPy's ``as_euler`` returns it, without its per-call overhead.
    """
    i, j, k = order.axis_indices
    e = 1.0 if (j - i) % 3 == 1 else -1.0  # +1 for cyclic orders (xyz, yzx, zxy)
    rot = np.asarray(rotation, dtype=np.float64)
    beta = np.arcsin(np.clip(-e * rot[..., k, i], -1.0, 1.0))
    alpha = np.arctan2(e * rot[..., k, j], rot[..., k, k])
    gamma = np.arctan2(e * rot[..., j, i], rot[..., i, i])
    out = np.empty((*rot.shape[:-2], 3))
    out[..., i], out[..., j], out[..., k] = alpha, beta, gamma
    return np.degrees(out)


def rotation_block_error(matrix: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``max |RᵀR − I|`` and ``det R`` for (..., 4, 4) matrices (SPEC section 1 checks)."""
    rot = np.asarray(matrix)[..., :3, :3]
    gram = np.swapaxes(rot, -1, -2) @ rot
    err = np.abs(gram - np.eye(3)).max(axis=(-2, -1))
    return err, np.linalg.det(rot)


def displacement_bound_mm(
    a: FloatArray, b: FloatArray, centre_mm: FloatArray, radius_mm: float
) -> FloatArray:
    """``|Δu| + radius · ‖R₁ − R₂‖₂`` for two stacks of rigid maps (SPEC section 4).

    ``Δu`` is the difference of the two maps at ``centre_mm`` (the isocenter, or the origin of
    the rotation when there is none), so the bound holds for every point within ``radius_mm``.
    ``a`` and ``b`` broadcast to (..., 4, 4); ``centre_mm`` to (..., 3).
    """
    da = (a[..., :3, :3] @ centre_mm[..., None])[..., 0] + a[..., :3, 3]
    db = (b[..., :3, :3] @ centre_mm[..., None])[..., 0] + b[..., :3, 3]
    shift = np.sqrt(np.square(da - db).sum(axis=-1))
    # For rotations R₁, R₂ the difference R₁(I − R₁ᵀR₂) has singular values 2 sin(θ/2) (twice)
    # and 0, θ the angle of R₁ᵀR₂: its spectral norm is its Frobenius norm over √2.
    spectral = np.sqrt(np.square(a[..., :3, :3] - b[..., :3, :3]).sum(axis=(-2, -1)) / 2.0)
    return shift + radius_mm * spectral
