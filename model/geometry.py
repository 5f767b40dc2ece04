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


def _implied_tables() -> tuple[npt.NDArray[np.int64], FloatArray, npt.NDArray[np.int64],
                                npt.NDArray[np.int64], FloatArray]:
    """Gather tables of :func:`implied_offsets`: ``P`` is a signed permutation, so ``P R Pᵀ``
    and ``P u`` are sign flips and re-indexing of ``R``'s and ``u``'s entries, and the Euler
    angles of each order (:func:`matrix_to_euler`) need five of them.

    Returns ``rot_idx``, ``rot_sign`` (48, 5): entries of the 3×3 block (row-major) and their
    signs; ``slots`` (48, 3): where α, β, γ go among (rx, ry, rz); ``t_idx``, ``t_sign``
    (48, 3): entries of ``[u_direct, u_inverse]`` and their signs.
    """
    perm = np.abs(PERMUTATIONS).argmax(axis=2)  # (48, 3): P[x, π(x)] = ±1
    sign = np.take_along_axis(PERMUTATIONS, perm[..., None], axis=2)[..., 0]  # (48, 3)
    rot_idx = np.empty((48, 5), dtype=np.int64)
    rot_sign = np.empty((48, 5))
    slots = np.empty((48, 3), dtype=np.int64)
    for h in range(48):
        i, j, k = ORDERS[int(ORDER_INDEX[h])].axis_indices
        eps = 1.0 if (j - i) % 3 == 1 else -1.0
        # sin β = −ε R[k,i];  α = atan2(ε R[k,j], R[k,k]);  γ = atan2(ε R[j,i], R[i,i])
        wanted = [((k, i), -eps), ((k, j), eps), ((k, k), 1.0), ((j, i), eps), ((i, i), 1.0)]
        for q, ((x, y), e) in enumerate(wanted):
            a, b = perm[h, x], perm[h, y]
            if INVERSE_FLAGS[h]:
                a, b = b, a  # the correction's rotation is Mᵀ
            rot_idx[h, q] = 3 * a + b
            rot_sign[h, q] = e * sign[h, x] * sign[h, y]
        slots[h, [i, j, k]] = [0, 1, 2]  # α about axis i, β about j, γ about k
    t_idx = perm + 3 * INVERSE_FLAGS.astype(np.int64)[:, None]  # into [u_direct, u_inverse]
    return rot_idx, rot_sign, slots, t_idx, sign


IMPLIED_ROT_IDX, IMPLIED_ROT_SIGN, IMPLIED_SLOTS, IMPLIED_T_IDX, IMPLIED_T_SIGN = _implied_tables()


def implied_offsets(
    matrix: ArrayLike, isocenter_mm: ArrayLike | None = None
) -> tuple[FloatArray, FloatArray]:
    """The offset ``(t, r)`` each hypothesis reads from ``M`` (the inverse of :func:`forward`).

    ``matrix`` is (N, 4, 4); ``isocenter_mm`` (N, 3) or ``None`` (translation then taken about
    the origin, which SPEC section 3 does not compare). Returns ``t`` (N, 48, 3) in mm and
    ``r`` (N, 48, 3) in degrees, ``r`` indexed by axis and wrapped to (−180, 180].

    In closed form through the gather tables (:func:`_implied_tables`): for the correction
    ``T = M`` (direct) or ``M⁻¹`` (inverse), ``u = d_T − c + R_T c`` and ``t = P u``; the angles
    are :func:`matrix_to_euler`'s of ``P R_T Pᵀ``, read straight from ``M``'s entries.
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(-1, 4, 4)
    n = m.shape[0]
    c = np.zeros((n, 3)) if isocenter_mm is None else np.atleast_2d(np.asarray(isocenter_mm, float))
    rot = m[:, :3, :3]
    d = m[:, :3, 3]
    u_direct = d - c + (rot @ c[:, :, None])[..., 0]
    u_inverse = (np.swapaxes(rot, 1, 2) @ (c - d)[:, :, None])[..., 0] - c
    u = np.concatenate([u_direct, u_inverse], axis=1)  # (N, 6)
    t = u[:, IMPLIED_T_IDX] * IMPLIED_T_SIGN
    e = rot.reshape(n, 9)[:, IMPLIED_ROT_IDX] * IMPLIED_ROT_SIGN  # (N, 48, 5)
    beta = np.arcsin(np.clip(e[..., 0], -1.0, 1.0))
    alpha = np.arctan2(e[..., 1], e[..., 2])
    gamma = np.arctan2(e[..., 3], e[..., 4])
    abg = np.degrees(np.stack([alpha, beta, gamma], axis=2))
    r = np.take_along_axis(abg, np.broadcast_to(IMPLIED_SLOTS, (n, 48, 3)), axis=2)
    return t, np.where(r == -180.0, 180.0, r)


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
