"""Action spaces and rotation helpers: round trips, chunk chaining, wrap-around, cross-checks against scipy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.runtime.action_space import ACTION_SPACES, DEFAULT_ACTION_SPACE, get_action_space

finite = st.floats(-1.0, 1.0, allow_nan=False)
quat_st = st.tuples(finite, finite, finite, finite).filter(lambda q: np.linalg.norm(q) > 0.2)
pos_st = st.tuples(*[st.floats(-0.8, 0.8, allow_nan=False)] * 3)


def pose_of(p, q) -> Pose:
    return Pose(np.asarray(p), np.asarray(q) / np.linalg.norm(q))


def same_rotation(q1, q2, tol=1e-9) -> bool:
    return float(rot.quat_angle(q1, q2)) < tol


def test_rotations_match_scipy():
    rng = np.random.default_rng(0)
    q = Rotation.random(200, random_state=1).as_quat()
    r = Rotation.from_quat(q)
    np.testing.assert_allclose(rot.quat_to_rpy(q), r.as_euler("xyz"), atol=1e-9)
    np.testing.assert_allclose(rot.quat_to_matrix(q), r.as_matrix(), atol=1e-12)
    rv = rot.quat_to_rotvec(q)
    np.testing.assert_allclose(rv, r.as_rotvec(), atol=1e-9)
    rpy = rng.uniform(-np.pi, np.pi, (200, 3))
    ref = Rotation.from_euler("xyz", rpy).as_quat()
    assert all(same_rotation(a, b) for a, b in zip(rot.rpy_to_quat(rpy), ref))
    m = r.as_matrix()
    assert all(same_rotation(a, b) for a, b in zip(rot.matrix_to_quat(m), q))
    a, b = q[:100], q[100:]
    prod = (Rotation.from_quat(a) * Rotation.from_quat(b)).as_quat()
    assert all(same_rotation(x, y) for x, y in zip(rot.quat_multiply(a, b), prod))
    v = rng.normal(size=(100, 3))
    np.testing.assert_allclose(rot.quat_rotate(a, v), Rotation.from_quat(a).apply(v), atol=1e-12)


def test_small_angle_and_gimbal_lock_round_trip():
    for rv in ([0.0, 0.0, 0.0], [1e-9, -2e-9, 0.0], [0.0, 0.0, np.pi - 1e-9]):
        q = rot.rotvec_to_quat(rv)
        np.testing.assert_allclose(rot.quat_to_rotvec(q), rv, atol=1e-9)
    for pitch in (np.pi / 2, -np.pi / 2):
        q = rot.rpy_to_quat([0.3, pitch, -0.7])
        assert same_rotation(rot.rpy_to_quat(rot.quat_to_rpy(q)), q, tol=1e-6)


def test_unwrap_rpy_removes_roll_jump_near_pi():
    rolls = np.array([3.13, -3.13, 3.12, -3.10])  # a 0.02-0.04 rad wobble around pi, as in RLBench data
    rpy = np.stack([rolls, np.zeros(4), np.zeros(4)], axis=-1)
    out = rot.unwrap_rpy(rpy)
    assert np.max(np.abs(np.diff(out[:, 0]))) < 0.1
    # same rotations after unwrapping
    assert all(same_rotation(a, b) for a, b in zip(rot.rpy_to_quat(out), rot.rpy_to_quat(rpy)))
    anchored = rot.unwrap_rpy(rpy[1:], reference=[3.13, 0, 0])
    assert abs(anchored[0, 0] - 3.13) < 0.05


def test_rotvec_continuity_and_quat_signs():
    axis = np.array([0.0, 0.0, 1.0])
    angles = np.array([3.10, 3.13, 3.16, 3.19])  # crosses pi: canonical rotvec flips to the opposite side
    canon = rot.quat_to_rotvec(rot.rotvec_to_quat(axis * angles[:, None]))
    assert np.max(np.linalg.norm(np.diff(canon, axis=0), axis=-1)) > 6.0
    fixed = rot.rotvec_continuity(canon)
    assert np.max(np.linalg.norm(np.diff(fixed, axis=0), axis=-1)) < 0.05
    q = rot.rotvec_to_quat(axis * angles[:, None])
    q[1] *= -1
    cont = rot.quat_sign_continuity(q)
    assert np.all(np.sum(cont[1:] * cont[:-1], axis=-1) > 0)


def test_quat_weighted_mean_is_sign_invariant():
    q = rot.rpy_to_quat([[0.1, 0, 0], [0.3, 0, 0]])
    q[1] *= -1
    mean = rot.quat_weighted_mean(q, [1.0, 1.0])
    assert same_rotation(mean, rot.rpy_to_quat([0.2, 0, 0]), tol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        rot.quat_weighted_mean(q, [0.0, 0.0])


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(ACTION_SPACES)), p0=pos_st, q0=quat_st, p1=pos_st, q1=quat_st, g=st.floats(0, 1))
def test_encode_decode_round_trip(name, p0, q0, p1, q1, g):
    space = get_action_space(name)
    cur, tgt = pose_of(p0, q0), pose_of(p1, q1)
    a = space.encode(cur, tgt, g)
    assert a.shape == (space.dim,)
    back, g2 = space.decode(cur, a)
    np.testing.assert_allclose(back.position, tgt.position, atol=1e-9)
    assert same_rotation(back.quaternion, tgt.quaternion, tol=1e-6)
    assert g2 == pytest.approx(g)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(ACTION_SPACES)), seed=st.integers(0, 10_000))
def test_encode_trajectory_then_decode_chunk_reproduces_the_demo(name, seed):
    rng = np.random.default_rng(seed)
    space = get_action_space(name)
    # a smooth random walk whose roll crosses +-pi (the RLBench case)
    n = 12
    pos = np.cumsum(rng.normal(0, 0.01, (n, 3)), axis=0) + np.array([0.4, 0.0, 0.3])
    rpy = np.stack([np.pi - 0.05 + np.linspace(0, 0.1, n), rng.normal(0, 0.02, n), rng.normal(0, 0.02, n)], -1)
    poses = [Pose(p, q) for p, q in zip(pos, rot.rpy_to_quat(rpy))]
    grip = (rng.uniform(size=n) > 0.5).astype(float)
    acts = space.encode_trajectory(poses, grip)
    assert acts.shape == (n - 1, space.dim)
    if space.rotation_repr == "rpy" and space.rotation == "absolute":
        assert np.max(np.abs(np.diff(acts[:, 3]))) < 0.5  # no +-2pi jump in the training targets
    out, g = space.decode_chunk(poses[0], acts)
    for got, want in zip(out, poses[1:]):
        np.testing.assert_allclose(got.position, want.position, atol=1e-9)
        assert same_rotation(got.quaternion, want.quaternion, tol=1e-6)
    np.testing.assert_array_equal(g, grip[1:])


def test_paper_space_semantics():
    space = get_action_space(DEFAULT_ACTION_SPACE)
    assert space.name == "delta_xyz_abs_rpy" and space.dim == 7
    start = Pose([0.4, 0.0, 0.3], rot.rpy_to_quat([np.pi, 0.0, 0.0]))
    chunk = np.array([[0.01, 0.0, 0.0, np.pi, 0.0, 0.1, 1.0], [0.01, 0.02, 0.0, -np.pi, 0.0, 0.2, 0.0]])
    poses, g = space.decode_chunk(start, chunk)
    np.testing.assert_allclose(poses[0].position, [0.41, 0.0, 0.3])
    np.testing.assert_allclose(poses[1].position, [0.42, 0.02, 0.3])  # deltas chain
    assert same_rotation(poses[1].quaternion, rot.rpy_to_quat([np.pi, 0, 0.2]), tol=1e-9)  # rpy is absolute
    np.testing.assert_array_equal(g, [1.0, 0.0])
    # consecutive quaternions keep one sign even when roll flips between +pi and -pi
    assert float(np.dot(poses[0].quaternion, poses[1].quaternion)) > 0


def test_delta_rotation_is_in_base_frame():
    space = get_action_space("delta_pose_rotvec")
    cur = Pose([0, 0, 0], rot.rpy_to_quat([0.0, np.pi / 2, 0.0]))
    a = np.array([0, 0, 0, 0, 0, np.pi / 2, 1.0])  # +90 deg about base z
    tgt, _ = space.decode(cur, a)
    want = Rotation.from_euler("z", np.pi / 2) * Rotation.from_euler("y", np.pi / 2)
    assert same_rotation(tgt.quaternion, want.as_quat(), tol=1e-9)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown action space 'nope'.*delta_xyz_abs_rpy"):
        get_action_space("nope")
    space = get_action_space("abs_pose_quat")
    assert space.dim == 8
    start = Pose([0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="last dimension 8"):
        space.decode_chunk(start, np.zeros((4, 7)))
    with pytest.raises(ValueError, match="NaN/inf"):
        space.decode(start, np.array([0, 0, np.nan, 0, 0, 0, 1, 1.0]))
    with pytest.raises(ValueError, match="gripper_open must be in"):
        space.encode(start, start, 1.5)


def test_single_value_fast_paths_match_the_batched_ones():
    q = Rotation.random(50, random_state=3).as_quat()
    b = Rotation.random(50, random_state=4).as_quat()
    rv = np.random.default_rng(5).normal(size=(50, 3))
    m = Rotation.from_quat(q).as_matrix()
    np.testing.assert_allclose(np.stack([rot.quat_multiply(x, y) for x, y in zip(q, b)]), rot.quat_multiply(q, b))
    np.testing.assert_allclose(np.stack([rot.quat_to_rotvec(x) for x in q]), rot.quat_to_rotvec(q), atol=1e-12)
    np.testing.assert_allclose(np.stack([rot.rotvec_to_quat(x) for x in rv]), rot.rotvec_to_quat(rv), atol=1e-12)
    np.testing.assert_allclose(np.stack([rot.quat_to_matrix(x) for x in q]), rot.quat_to_matrix(q), atol=1e-12)
    np.testing.assert_allclose(np.stack([rot.matrix_to_quat(x) for x in m]), rot.matrix_to_quat(m), atol=1e-12)
    np.testing.assert_allclose(np.stack([rot.quat_normalize(2 * x) for x in q]), rot.quat_normalize(2 * q))
    single = np.stack([rot.quat_slerp(x, y, 0.3) for x, y in zip(q, b)])
    np.testing.assert_allclose(single, rot.quat_slerp(q, b, np.full(50, 0.3)), atol=1e-12)


def test_encode_with_a_reference_continues_a_sequence():
    space = get_action_space("delta_xyz_abs_rpy")
    here = Pose([0.4, 0.0, 0.3], rot.rpy_to_quat([np.pi + 0.01, 0.0, 0.0]))  # canonical roll: -pi + 0.01
    prev = np.array([0.0, 0.0, 0.0, np.pi - 0.02, 0.0, 0.0, 1.0])  # the previous action's roll, just below +pi
    plain = space.encode(here, here, 1.0)
    assert abs(plain[3] - prev[3]) > 6.0  # the canonical roll sits at -pi + ...: a 2pi jump from prev
    cont = space.encode(here, here, 1.0, reference=prev)
    assert abs(cont[3] - prev[3]) < 0.05
    back, _ = space.decode(here, cont)
    assert same_rotation(back.quaternion, here.quaternion, tol=1e-9)
    qspace = get_action_space("abs_pose_quat")
    ref = qspace.encode(here, here, 1.0)
    flipped = Pose(here.position, -here.quaternion)
    assert np.dot(qspace.encode(here, flipped, 1.0, reference=ref)[3:7], ref[3:7]) > 0
