"""The forward model of docs/contract.md section 3 and its inverse, vectorised over hypotheses and
inputs.

Shapes: ``N`` inputs, ``H = 96`` hypotheses (:data:`model.conventions.N_HYPOTHESES`). Angles are
degrees, lengths millimetres.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from model.conventions import (
    HYPOTHESES,
    INVERSE_FLAGS,
    N_HYPOTHESES,
    ORDER_INDEX,
    PERMUTATIONS,
    FloatArray,
    RotationOrder,
)

ORDERS: tuple[RotationOrder, ...] = tuple(RotationOrder)
H = N_HYPOTHESES
#: ``isocenter_bound_mm`` of docs/contract.md section 3: an unknown isocenter lies this close to
#: the origin.
DEFAULT_ISOCENTER_BOUND_MM = 2000.0


def wrap_degrees(angles: FloatArray | float) -> FloatArray:
    """Wrap angles to (−180, 180] (docs/contract.md section 5: 359.8 means −0.2)."""
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
    """The matrix ``M`` each hypothesis predicts from an offset (docs/contract.md section 3).

    ``translation_mm`` and ``rotation_deg`` are (N, 3); ``isocenter_mm`` is (N, 3) or ``None``
    (rotation about the origin). Returns (N, H, 4, 4).
    """
    t = np.atleast_2d(np.asarray(translation_mm, dtype=np.float64))
    r = np.atleast_2d(np.asarray(rotation_deg, dtype=np.float64))
    n = t.shape[0]
    c = np.zeros((n, 3)) if isocenter_mm is None else np.atleast_2d(np.asarray(isocenter_mm, float))
    r_iec = iec_rotations(r)[:, ORDER_INDEX]  # (N, H, 3, 3)
    p = PERMUTATIONS  # (H, 3, 3)
    pt = np.swapaxes(p, -1, -2)
    rot = pt @ r_iec @ p  # R = Pᵀ R_iec P
    u = (pt @ t[:, None, :, None])[..., 0]  # u = Pᵀ t, (N, H, 3)
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

    Returns ``rot_idx``, ``rot_sign`` (H, 5): entries of the 3×3 block (row-major) and their
    signs; ``slots`` (H, 3): where α, β, γ go among (rx, ry, rz); ``t_idx``, ``t_sign``
    (H, 3): entries of ``[u_direct, u_inverse]`` and their signs (``P v`` is
    ``v[t_idx % 3] · t_sign``).
    """
    perm = np.abs(PERMUTATIONS).argmax(axis=2)  # (H, 3): P[x, π(x)] = ±1
    sign = np.take_along_axis(PERMUTATIONS, perm[..., None], axis=2)[..., 0]  # (H, 3)
    rot_idx = np.empty((H, 5), dtype=np.int64)
    rot_sign = np.empty((H, 5))
    slots = np.empty((H, 3), dtype=np.int64)
    for h in range(H):
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
    the origin; :func:`no_isocenter_excess` says what it still constrains). Returns ``t``
    (N, H, 3) in mm and ``r`` (N, H, 3) in degrees, ``r`` indexed by axis and wrapped to
    (−180, 180].

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
    e = rot.reshape(n, 9)[:, IMPLIED_ROT_IDX] * IMPLIED_ROT_SIGN  # (N, H, 5)
    beta = np.arcsin(np.clip(e[..., 0], -1.0, 1.0))
    alpha = np.arctan2(e[..., 1], e[..., 2])
    gamma = np.arctan2(e[..., 3], e[..., 4])
    abg = np.degrees(np.stack([alpha, beta, gamma], axis=2))
    r = np.take_along_axis(abg, np.broadcast_to(IMPLIED_SLOTS, (n, H, 3)), axis=2)
    return t, np.where(r == -180.0, 180.0, r)


#: Where ``P v`` takes each component from and its sign: ``(P v)_x = v[PERM_IDX[h, x]] ·
#: PERM_SIGN[h, x]`` (the gather form of :data:`model.conventions.PERMUTATIONS`).
PERM_IDX: npt.NDArray[np.int64] = IMPLIED_T_IDX % 3
PERM_SIGN: FloatArray = IMPLIED_T_SIGN
#: Number of no-isocenter checks of :func:`no_isocenter_excess`.
N_NO_ISOCENTER_CHECKS = 3


def rotation_axis_chord(matrix: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """The unit rotation axis ``n`` (N, 3) of each rotation block and ``2·sin(θ/2)`` (N,).

    ``2·sin(θ/2) = ‖I − R‖_F / √2`` (exact for any angle). The axis comes from the
    antisymmetric part ``2 sin θ · [n]ₓ`` up to 90° and from the symmetric part
    ``R + Rᵀ − (tr R − 1) I = 2(1 − cos θ) n nᵀ`` beyond (both well conditioned there); its sign
    is arbitrary, and so is ``n`` itself when ``θ = 0``. ``R`` and ``Rᵀ`` share ``n`` (up to
    sign) and ``θ``, so the correction of either direction has them too.
    """
    rot = np.asarray(matrix, dtype=np.float64).reshape(-1, 4, 4)[:, :3, :3]
    n = rot.shape[0]
    chord = np.sqrt(np.square(rot - np.eye(3)).sum(axis=(1, 2)) / 2.0)
    anti = np.stack(
        [rot[:, 2, 1] - rot[:, 1, 2], rot[:, 0, 2] - rot[:, 2, 0], rot[:, 1, 0] - rot[:, 0, 1]],
        axis=1,
    )
    sym = rot + np.swapaxes(rot, 1, 2)
    sym = sym - (np.trace(rot, axis1=1, axis2=2) - 1.0)[:, None, None] * np.eye(3)
    col = np.argmax(np.diagonal(sym, axis1=1, axis2=2), axis=1)
    sym_axis = sym[np.arange(n), :, col]
    a_norm = np.linalg.norm(anti, axis=1)
    s_norm = np.linalg.norm(sym_axis, axis=1)
    use_anti = a_norm >= s_norm
    axis = np.where(use_anti[:, None], anti, sym_axis)
    norm = np.where(use_anti, a_norm, s_norm)
    safe = norm > 0
    axis = np.where(safe[:, None], axis / np.where(safe, norm, 1.0)[:, None], [1.0, 0.0, 0.0])
    return axis, chord


def no_isocenter_bounds(
    matrix: ArrayLike,
    translation_step_mm: ArrayLike,
    isocenter_bound_mm: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """The axis in IEC coordinates per hypothesis and the bounds of :func:`no_isocenter_excess`.

    Returns ``axis_iec`` (N, H, 3), ``P·n`` for each hypothesis (sign arbitrary), and ``bounds``
    (N, 3): along the axis ``|P·n|₁ · s/2``; across it ``2·sin(θ/2)·bound + √3 · s/2``; per IEC
    component ``s/2 + 2·sin(θ/2)·bound`` (docs/contract.md section 3).
    """
    axis, chord = rotation_axis_chord(matrix)
    s = np.asarray(translation_step_mm, dtype=np.float64).reshape(-1)
    bound = np.asarray(isocenter_bound_mm, dtype=np.float64).reshape(-1)
    spread = chord * bound
    half = s / 2.0
    bounds = np.stack(
        [np.abs(axis).sum(axis=1) * half, spread + np.sqrt(3.0) * half, half + spread], axis=1
    )
    return axis[:, PERM_IDX] * PERM_SIGN, bounds


def no_isocenter_excess(
    matrix: ArrayLike,
    translation_mm: ArrayLike,
    translation_step_mm: ArrayLike,
    isocenter_bound_mm: ArrayLike = DEFAULT_ISOCENTER_BOUND_MM,
    t_about_origin: FloatArray | None = None,
) -> FloatArray:
    """How far the reported translation lies outside what an unknown isocenter allows, (N, H, 3).

    docs/contract.md section 3: without ``c`` the correction's translation is
    ``d_T = (I − R_T)·c + u``. In IEC coordinates ``W = P·(d_T − u)`` is the translation each
    hypothesis reads about the origin (``t_about_origin``, :func:`implied_offsets` without an
    isocenter) minus the reported ``t``. The three checks, each ``≤ 0`` when the hypothesis
    explains the input: along the axis ``|m·W| − |m|₁·s/2`` (``m = P·n``; exact, ``c`` drops
    out), across it ``|W_⊥| − (2·sin(θ/2)·bound + √3·s/2)``, and per component
    ``max |W_i| − (s/2 + 2·sin(θ/2)·bound)``, the full translation check at ``θ = 0``. Every
    one holds for the true convention whenever ``|c| ≤ bound``.
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(-1, 4, 4)
    if t_about_origin is None:
        t_about_origin = implied_offsets(m)[0]
    w = t_about_origin - np.asarray(translation_mm, dtype=np.float64).reshape(-1, 1, 3)
    axis_iec, bounds = no_isocenter_bounds(m, translation_step_mm,
                                           np.broadcast_to(isocenter_bound_mm, (m.shape[0],)))
    along = np.abs(np.einsum("nhk,nhk->nh", axis_iec, w))
    across = np.sqrt(np.maximum(np.einsum("nhk,nhk->nh", w, w) - along * along, 0.0))
    comp = np.abs(w).max(axis=2)
    return np.stack([along, across, comp], axis=2) - bounds[:, None, :]


def no_isocenter_sigma(matrix: ArrayLike, orthonormality_error: ArrayLike,
                       isocenter_bound_mm: ArrayLike = DEFAULT_ISOCENTER_BOUND_MM) -> FloatArray:
    """The matrix's DS noise on the checks of :func:`no_isocenter_excess`, mm (N,).

    An entry noise ``ε`` of the rotation block moves ``(I − R_T)·c`` by about
    ``ε·|c| ≤ ε·bound`` and the axis with it; the translation column's noise is ``ε·|d|``. The
    orthonormality error ``max |RᵀR − I|`` is about ``2ε``, which is used as ``ε`` (a factor two
    of margin: the true convention's checks stay at or below zero, tests/test_geometry.py).
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(-1, 4, 4)
    noise = np.maximum(np.asarray(orthonormality_error, dtype=np.float64).reshape(-1), 1e-12)
    length = np.linalg.norm(m[:, :3, 3], axis=1) + np.asarray(isocenter_bound_mm, np.float64)
    return noise * (length + 1.0) + 1e-9


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
    """``max |RᵀR − I|`` and ``det R`` for (..., 4, 4) matrices (docs/contract.md section 1
    checks)."""
    rot = np.asarray(matrix)[..., :3, :3]
    gram = np.swapaxes(rot, -1, -2) @ rot
    err = np.abs(gram - np.eye(3)).max(axis=(-2, -1))
    return err, np.linalg.det(rot)


def displacement_bound_mm(
    a: FloatArray, b: FloatArray, centre_mm: FloatArray, radius_mm: float
) -> FloatArray:
    """``|Δu| + radius · ‖R₁ − R₂‖₂`` for two stacks of rigid maps (docs/contract.md section 4).

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
