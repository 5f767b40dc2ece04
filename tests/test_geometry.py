"""docs/contract.md sections 2-3: the 96 hypotheses, the forward model, its inverse, the
no-isocenter checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from model.conventions import (
    HYPOTHESES,
    N_HYPOTHESES,
    PATIENT_TO_IEC,
    Convention,
    PatientPosition,
    RotationOrder,
)
from model.geometry import (
    displacement_bound_mm,
    euler_to_matrix,
    forward,
    implied_offsets,
    rigid_inverse,
    wrap_degrees,
)

angle = st.floats(-10.0, 10.0, allow_nan=False)
shift = st.floats(-50.0, 50.0, allow_nan=False)
coord = st.floats(-1000.0, 1000.0, allow_nan=False)
vec3 = lambda s: st.tuples(s, s, s)  # noqa: E731


def test_96_distinct_hypotheses() -> None:
    assert N_HYPOTHESES == len(HYPOTHESES) == 96
    assert len(set(HYPOTHESES)) == 96
    assert {h.patient_position.value for h in HYPOTHESES} == {
        "HFS", "HFP", "FFS", "FFP", "HFDR", "HFDL", "FFDR", "FFDL"
    }
    assert {h.order.intrinsic_alias for h in HYPOTHESES} == {
        "ZYX",
        "YZX",
        "ZXY",
        "XZY",
        "YXZ",
        "XYZ",
    }


@pytest.mark.parametrize("position", list(PatientPosition))
def test_permutations_are_proper_rotations(position: PatientPosition) -> None:
    p = PATIENT_TO_IEC[position]
    assert np.allclose(p @ p.T, np.eye(3))
    assert np.isclose(np.linalg.det(p), 1.0)
    assert np.array_equal(p[0], np.cross(p[1], p[2]))  # X_iec = Y_iec × Z_iec
    assert set(np.abs(p).sum(axis=0)) == {1.0}  # a signed permutation


#: docs/contract.md section 2's table: the patient axis (x left, y posterior, z superior) each IEC
#: axis is.
SPEC_TABLE = {
    "HFS": ("+x", "+z", "-y"), "HFP": ("-x", "+z", "+y"),
    "FFS": ("-x", "-z", "-y"), "FFP": ("+x", "-z", "+y"),
    "HFDR": ("+y", "+z", "+x"), "HFDL": ("-y", "+z", "-x"),
    "FFDR": ("-y", "-z", "+x"), "FFDL": ("+y", "-z", "-x"),
}


def test_permutations_are_spec_table() -> None:
    assert {p.value for p in PatientPosition} == set(SPEC_TABLE)
    for name, rows in SPEC_TABLE.items():
        expected = np.zeros((3, 3))
        for i, cell in enumerate(rows):
            expected[i, "xyz".index(cell[1])] = 1.0 if cell[0] == "+" else -1.0
        assert np.array_equal(PATIENT_TO_IEC[PatientPosition(name)], expected), name
    decubitus = {p.value for p in PatientPosition if p.decubitus}
    assert decubitus == {"HFDR", "HFDL", "FFDR", "FFDL"}


@pytest.mark.parametrize("order", list(RotationOrder))
@given(r=vec3(angle))
@settings(max_examples=25, deadline=None)
def test_euler_matches_scipy_extrinsic(order: RotationOrder, r: tuple[float, float, float]) -> None:
    expected = Rotation.from_euler(
        order.value, [r[i] for i in order.axis_indices], degrees=True
    ).as_matrix()
    assert np.allclose(euler_to_matrix(order, np.array(r)), expected, atol=1e-12)


def test_intrinsic_alias_is_the_same_matrix() -> None:
    r = np.array([2.0, -1.5, 3.0])
    for order in RotationOrder:
        intrinsic = order.intrinsic_alias
        angles = [r["xyz".index(a.lower())] for a in intrinsic]
        assert np.allclose(
            Rotation.from_euler(intrinsic, angles, degrees=True).as_matrix(),
            euler_to_matrix(order, r),
        )


def test_forward_matches_spec_formula_directly() -> None:
    """One case worked by hand from docs/contract.md section 3's formulas."""
    t, r, c = np.array([1.0, 2.0, 3.0]), np.array([1.0, -2.0, 0.5]), np.array([10.0, 20.0, -30.0])
    h = Convention(RotationOrder.ZXY, True, PatientPosition.FFP)
    p = PATIENT_TO_IEC[h.patient_position]
    r_iec = Rotation.from_euler("zxy", [r[2], r[0], r[1]], degrees=True).as_matrix()
    rot = p.T @ r_iec @ p
    u = p.T @ t
    x = np.array([5.0, -7.0, 11.0])
    corrected = rot @ (x - c) + c + u
    m = forward(t[None], r[None], c[None])[0, h.index]
    # M is T⁻¹ for an inverse hypothesis: M applied to T(x) gives x back
    assert np.allclose(m[:3, :3] @ corrected + m[:3, 3], x)


@given(t=vec3(shift), r=vec3(angle), c=vec3(coord))
@settings(max_examples=60, deadline=None)
def test_inverse_of_forward_is_identity_with_isocenter(
    t: tuple[float, ...], r: tuple[float, ...], c: tuple[float, ...]
) -> None:
    m = forward(np.array([t]), np.array([r]), np.array([c]))[0]  # (96, 4, 4)
    t_h, r_h = implied_offsets(m, np.tile(np.array(c), (N_HYPOTHESES, 1)))
    k = np.arange(N_HYPOTHESES)
    assert np.allclose(r_h[k, k], np.array(r), atol=1e-9)
    assert np.allclose(t_h[k, k], np.array(t), atol=1e-7)


@given(r=vec3(angle), c=vec3(coord))
@settings(max_examples=60, deadline=None)
def test_inverse_of_forward_is_identity_without_translation(
    r: tuple[float, ...], c: tuple[float, ...]
) -> None:
    m = forward(np.zeros((1, 3)), np.array([r]), np.array([c]))[0]
    t_h, r_h = implied_offsets(m, np.tile(np.array(c), (N_HYPOTHESES, 1)))
    k = np.arange(N_HYPOTHESES)
    assert np.allclose(r_h[k, k], np.array(r), atol=1e-9)
    assert np.allclose(t_h[k, k], 0.0, atol=1e-7)


@given(t=vec3(shift), r=vec3(angle))
@settings(max_examples=60, deadline=None)
def test_inverse_of_forward_without_isocenter_recovers_rotation(
    t: tuple[float, ...], r: tuple[float, ...]
) -> None:
    m = forward(np.array([t]), np.array([r]))[0]
    t_h, r_h = implied_offsets(m)
    k = np.arange(N_HYPOTHESES)
    assert np.allclose(r_h[k, k], np.array(r), atol=1e-9)
    assert np.allclose(t_h[k, k], np.array(t), atol=1e-9)  # about the origin


def test_hypotheses_differ_for_generic_offsets() -> None:
    m = forward(np.array([[1.0, 2.0, 3.0]]), np.array([[2.0, -1.0, 3.0]]), np.zeros((1, 3)))[0]
    flat = m.reshape(N_HYPOTHESES, -1)
    dist = np.abs(flat[:, None] - flat[None]).max(axis=-1)
    assert (dist + np.eye(N_HYPOTHESES) > 1e-6).all()


def test_rigid_inverse() -> None:
    m = forward(np.array([[1.0, 2.0, 3.0]]), np.array([[2.0, -1.0, 3.0]]), np.ones((1, 3)))[0]
    assert np.allclose(rigid_inverse(m) @ m, np.eye(4))


def test_wrap_degrees() -> None:
    assert np.allclose(
        wrap_degrees(np.array([359.8, 180.0, -180.0, 540.0, 0.2])), [-0.2, 180.0, 180.0, 180.0, 0.2]
    )


def test_displacement_bound_is_an_upper_bound() -> None:
    rng = np.random.default_rng(0)
    c = np.array([10.0, -20.0, 30.0])
    a = forward(np.array([[1.0, 0.0, 0.0]]), np.array([[1.0, 2.0, -1.0]]), c[None])[0, 0]
    b = forward(np.array([[1.2, 0.0, 0.0]]), np.array([[1.1, 2.0, -1.0]]), c[None])[0, 3]
    bound = displacement_bound_mm(a, b, c, 100.0)
    pts = c + rng.normal(size=(2000, 3)) * 100.0
    pts = c + (pts - c) / np.maximum(1.0, np.linalg.norm(pts - c, axis=1) / 100.0)[:, None]
    moved_a = pts @ a[:3, :3].T + a[:3, 3]
    moved_b = pts @ b[:3, :3].T + b[:3, 3]
    actual = np.linalg.norm(moved_a - moved_b, axis=1).max()
    assert actual <= bound + 1e-9
    assert bound < 3 * actual  # and not a vacuous one


@pytest.mark.parametrize("order", list(RotationOrder))
@given(r=vec3(st.floats(-80.0, 80.0, allow_nan=False)))
@settings(max_examples=40, deadline=None)
def test_matrix_to_euler_matches_scipy(order: RotationOrder, r: tuple[float, float, float]) -> None:
    from model.geometry import matrix_to_euler

    m = euler_to_matrix(order, np.array(r))
    seq = Rotation.from_matrix(m).as_euler(order.value, degrees=True)
    expected = np.empty(3)
    expected[list(order.axis_indices)] = seq
    assert np.allclose(matrix_to_euler(order, m), expected, atol=1e-9)
    assert np.allclose(matrix_to_euler(order, m), r, atol=1e-9)


@given(r1=vec3(angle), r2=vec3(angle))
@settings(max_examples=40, deadline=None)
def test_spectral_norm_closed_form(r1: tuple[float, ...], r2: tuple[float, ...]) -> None:
    a = forward(np.zeros((1, 3)), np.array([r1]))[0, 0]
    b = forward(np.zeros((1, 3)), np.array([r2]))[0, 5]
    expected = np.linalg.norm(a[:3, :3] - b[:3, :3], ord=2)
    assert np.isclose(displacement_bound_mm(a, b, np.zeros(3), 1.0), expected, atol=1e-7)


@given(r=vec3(angle), t=vec3(st.floats(-50.0, 50.0, allow_nan=False)),
       c=vec3(st.floats(-500.0, 500.0, allow_nan=False)))
@settings(max_examples=40, deadline=None)
def test_implied_offsets_closed_form_is_its_definition(
    r: tuple[float, ...], t: tuple[float, ...], c: tuple[float, ...]
) -> None:
    """The gather-table closed form equals the definition, hypothesis by hypothesis: the
    correction T (M or M⁻¹), u = d_T − c + R_T c, t = P u, angles of P R_T Pᵀ in its order."""
    from model.conventions import INVERSE_FLAGS, ORDER_INDEX, PERMUTATIONS
    from model.geometry import ORDERS, matrix_to_euler

    m = forward(np.array([t]), np.array([r]), np.array([c]))[0, 7]
    got_t, got_r = implied_offsets(m[None], np.array([c]))
    for h in range(N_HYPOTHESES):
        corr = rigid_inverse(m) if INVERSE_FLAGS[h] else m
        p = PERMUTATIONS[h]
        u = corr[:3, 3] - np.array(c) + corr[:3, :3] @ np.array(c)
        expected_r = wrap_degrees(matrix_to_euler(ORDERS[ORDER_INDEX[h]], p @ corr[:3, :3] @ p.T))
        np.testing.assert_allclose(got_t[0, h], p @ u, atol=1e-9)
        np.testing.assert_allclose(got_r[0, h], expected_r, atol=1e-9)


def test_rotation_axis_chord_any_angle() -> None:
    """``R·n = n`` and ``2 sin(θ/2)`` for random rotations of every size (past 90° too), and an
    exact identity (θ = 0) gives a unit axis and a zero chord."""
    from model.geometry import rotation_axis_chord

    rot = Rotation.random(500, random_state=3)
    m = np.tile(np.eye(4), (501, 1, 1))
    m[:500, :3, :3] = rot.as_matrix()
    axis, chord = rotation_axis_chord(m)
    assert np.allclose((m[:, :3, :3] @ axis[..., None])[..., 0], axis, atol=1e-9)
    assert np.allclose(np.linalg.norm(axis, axis=1), 1.0)
    assert np.allclose(chord[:500], 2 * np.sin(rot.magnitude() / 2), atol=1e-12)
    assert chord[500] == 0.0


@given(t=vec3(shift), r=vec3(angle), c=vec3(st.floats(-1150.0, 1150.0, allow_nan=False)),
       step=st.sampled_from([0.01, 0.1, 0.5, 1.0]), digits=st.sampled_from([15, 8, 6]))
@settings(max_examples=80, deadline=None)
def test_no_isocenter_checks_never_exclude_the_truth(
    t: tuple[float, ...], r: tuple[float, ...], c: tuple[float, ...], step: float, digits: int
) -> None:
    """docs/contract.md section 3: for every one of the 96 hypotheses, the matrix it builds
    from the true offset about an isocenter with |c| ≤ 2000 (here ≤ 2000 by construction),
    DS-rounded, passes all three checks against the displayed translation, within the
    matrix's noise; and the checks exclude most of the other hypotheses."""
    from model.dicom.sro import ds_round
    from model.geometry import no_isocenter_excess, no_isocenter_sigma, rotation_block_error
    from model.training.synth import round_to_step

    m = forward(np.array([t]), np.array([r]), np.array([c]))[0]
    m = np.stack([ds_round(x, digits) for x in m])
    shown = np.repeat(round_to_step(np.array([t]), step), N_HYPOTHESES, axis=0)
    excess = no_isocenter_excess(m, shown, np.full(N_HYPOTHESES, step))  # (96, 96, 3)
    sigma = no_isocenter_sigma(m, rotation_block_error(m)[0])
    k = np.arange(N_HYPOTHESES)
    assert (excess[k, k] <= 2.0 * sigma[:, None]).all()


def test_no_isocenter_checks_exclude_other_hypotheses() -> None:
    """The checks are not vacuous: with rotations of a few degrees and shifts of a few mm,
    the along-axis check alone rules out most hypotheses with another direction or position."""
    from model.geometry import no_isocenter_excess

    rng = np.random.default_rng(5)
    n = 400
    t, r = rng.normal(0, 5, (n, 3)), rng.uniform(-3, 3, (n, 3))
    c = rng.uniform(-300, 300, (n, 3))
    truth = rng.integers(0, N_HYPOTHESES, n)
    m = forward(t, r, c)[np.arange(n), truth]
    excess = no_isocenter_excess(m, np.round(t, 1), np.full(n, 0.1))
    assert (excess[np.arange(n), truth] <= 1e-9).all()
    same = np.array([[HYPOTHESES[a].patient_position == HYPOTHESES[b].patient_position
                      and HYPOTHESES[a].inverse == HYPOTHESES[b].inverse
                      for b in range(N_HYPOTHESES)] for a in truth])
    excluded = excess[..., 0] > 0
    assert excluded[~same].mean() > 0.8
    assert not excluded[same].any()  # the checks do not depend on the rotation order


def test_no_isocenter_checks_at_zero_rotation_are_the_full_translation_check() -> None:
    """θ = 0: the correction is the translation itself, compared component by component."""
    from model.geometry import no_isocenter_excess

    m = forward(np.array([[1.0, 2.0, 3.0]]), np.zeros((1, 3)))[0, :1]  # HFS, direct
    inside = no_isocenter_excess(m, np.array([[1.04, 2.04, 2.96]]), np.array([0.1]))[0, 0]
    outside = no_isocenter_excess(m, np.array([[1.0, 2.0, 3.1]]), np.array([0.1]))[0, 0]
    assert (inside <= 0).all()
    assert np.isclose(outside[2], 0.05)  # 0.1 off in one component: 0.05 beyond its half-step
