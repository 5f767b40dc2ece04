"""SPEC section 3: the forward model and its inverse, for all 48 hypotheses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from model.conventions import HYPOTHESES, PATIENT_TO_IEC, Convention, PatientPosition, RotationOrder
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


def test_48_distinct_hypotheses() -> None:
    assert len(HYPOTHESES) == 48
    assert len(set(HYPOTHESES)) == 48
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
    """One case worked by hand from SPEC section 3's formulas."""
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
    m = forward(np.array([t]), np.array([r]), np.array([c]))[0]  # (48, 4, 4)
    t_h, r_h = implied_offsets(m, np.tile(np.array(c), (48, 1)))
    k = np.arange(48)
    assert np.allclose(r_h[k, k], np.array(r), atol=1e-9)
    assert np.allclose(t_h[k, k], np.array(t), atol=1e-7)


@given(r=vec3(angle), c=vec3(coord))
@settings(max_examples=60, deadline=None)
def test_inverse_of_forward_is_identity_without_translation(
    r: tuple[float, ...], c: tuple[float, ...]
) -> None:
    m = forward(np.zeros((1, 3)), np.array([r]), np.array([c]))[0]
    t_h, r_h = implied_offsets(m, np.tile(np.array(c), (48, 1)))
    k = np.arange(48)
    assert np.allclose(r_h[k, k], np.array(r), atol=1e-9)
    assert np.allclose(t_h[k, k], 0.0, atol=1e-7)


@given(t=vec3(shift), r=vec3(angle))
@settings(max_examples=60, deadline=None)
def test_inverse_of_forward_without_isocenter_recovers_rotation(
    t: tuple[float, ...], r: tuple[float, ...]
) -> None:
    m = forward(np.array([t]), np.array([r]))[0]
    t_h, r_h = implied_offsets(m)
    k = np.arange(48)
    assert np.allclose(r_h[k, k], np.array(r), atol=1e-9)
    assert np.allclose(t_h[k, k], np.array(t), atol=1e-9)  # about the origin


def test_hypotheses_differ_for_generic_offsets() -> None:
    m = forward(np.array([[1.0, 2.0, 3.0]]), np.array([[2.0, -1.0, 3.0]]), np.zeros((1, 3)))[0]
    flat = m.reshape(48, -1)
    dist = np.abs(flat[:, None] - flat[None]).max(axis=-1)
    assert (dist + np.eye(48) > 1e-6).all()


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
    for h in range(48):
        corr = rigid_inverse(m) if INVERSE_FLAGS[h] else m
        p = PERMUTATIONS[h]
        u = corr[:3, 3] - np.array(c) + corr[:3, :3] @ np.array(c)
        expected_r = wrap_degrees(matrix_to_euler(ORDERS[ORDER_INDEX[h]], p @ corr[:3, :3] @ p.T))
        np.testing.assert_allclose(got_t[0, h], p @ u, atol=1e-9)
        np.testing.assert_allclose(got_r[0, h], expected_r, atol=1e-9)
