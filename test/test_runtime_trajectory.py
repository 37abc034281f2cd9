"""CartesianTracker and ChunkScheduler: limits, continuity, workspace, braking; due times, drops, horizon, ensemble."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.runtime.config import EnsembleConfig
from mole_vla_ros.runtime.scheduler import ChunkScheduler
from mole_vla_ros.runtime.trajectory import CartesianTracker

V, A, W, AL = (0.3, 0.2, 0.25), (1.5, 1.0, 2.0), (0.6, 0.5, 0.6), (4.0, 3.0, 4.0)
LO, HI = np.array([0.2, -0.5, 0.02]), np.array([0.8, 0.5, 0.8])
DT = 0.01
DOWN = rot.rpy_to_quat([np.pi, 0.0, 0.0])


def make_tracker(dt=DT):
    return CartesianTracker(dt, V, A, W, AL, LO, HI)


def check_stream(states, dt):
    """Every sample inside limits, box; position/velocity continuous (finite differences). Starts from rest."""
    start_vel = start_w = np.zeros(3)
    pos = np.array([s.position for s in states])
    vel = np.array([s.velocity for s in states])
    w = np.array([s.angular_velocity for s in states])
    quats = np.array([s.quaternion for s in states])
    tol = 1e-9
    assert np.all(pos >= LO - tol) and np.all(pos <= HI + tol), "left the workspace"
    assert np.all(np.abs(vel) <= np.array(V) + tol)
    assert np.all(np.abs(w) <= np.array(W) + tol)
    # position moves by exactly velocity * dt: the velocity is the true derivative of the commanded path
    np.testing.assert_allclose(np.diff(pos, axis=0), vel[1:] * dt, atol=1e-12)
    dv = np.diff(np.vstack([start_vel, vel]), axis=0) / dt
    dw = np.diff(np.vstack([start_w, w]), axis=0) / dt
    assert np.all(np.abs(dv) <= np.array(A) + 1e-6), f"linear acceleration {np.abs(dv).max(0)} > {A}"
    assert np.all(np.abs(dw) <= np.array(AL) + 1e-6), f"angular acceleration {np.abs(dw).max(0)} > {AL}"
    # orientation changes by exactly omega * dt in the base frame
    for k in range(1, len(states)):
        rel = rot.quat_to_rotvec(rot.quat_multiply(quats[k], rot.quat_conjugate(quats[k - 1])))
        np.testing.assert_allclose(rel, w[k] * dt, atol=1e-9)


xyz = st.tuples(st.floats(0.0, 1.0), st.floats(-0.7, 0.7), st.floats(-0.2, 1.0))


@settings(max_examples=30, deadline=None)
@given(
    targets=st.lists(st.tuples(xyz, st.floats(-3.2, 3.2), st.floats(0.05, 0.6)), min_size=1, max_size=5),
    start=st.tuples(st.floats(0.25, 0.75), st.floats(-0.45, 0.45), st.floats(0.05, 0.75)),
)
def test_tracker_respects_limits_and_box_for_any_reference(targets, start):
    """Step references jumping anywhere (even outside the box, even rotating by pi) never break a limit."""
    tr = make_tracker()
    tr.reset(Pose(start, DOWN), 0.0)
    states = []
    for tgt_p, yaw, dur in targets:
        ref = (np.array(tgt_p), np.zeros(3), rot.rpy_to_quat([np.pi, 0.0, yaw]), np.zeros(3))
        for _ in range(int(dur / DT)):
            states.append(tr.step(ref).copy())
    check_stream(states, DT)


def test_tracker_reaches_a_reachable_target_and_stops():
    tr = make_tracker()
    tr.reset(Pose([0.4, 0.0, 0.4], DOWN), 0.0)
    goal = (np.array([0.5, 0.1, 0.3]), np.zeros(3), rot.rpy_to_quat([np.pi, 0.0, 0.5]), np.zeros(3))
    states = [tr.step(goal).copy() for _ in range(300)]
    check_stream(states, DT)
    np.testing.assert_allclose(states[-1].position, goal[0], atol=1e-4)
    assert float(rot.quat_angle(states[-1].quaternion, goal[2])) < 1e-3
    assert np.abs(states[-1].velocity).max() < 1e-3


def test_brake_stops_within_braking_time_then_holds_exactly():
    tr = make_tracker()
    tr.reset(Pose([0.3, 0.0, 0.4], DOWN), 0.0)
    far = (np.array([0.7, 0.3, 0.4]), np.zeros(3), rot.rpy_to_quat([np.pi, 0.0, 1.0]), np.zeros(3))
    states = [tr.step(far).copy() for _ in range(40)]
    assert tr.state.moving
    t_brake = tr.braking_time()
    n = round(t_brake / DT)
    states += [tr.step(None).copy() for _ in range(n + 20)]
    check_stream(states, DT)
    held = states[40 + n :]
    for s in held:
        np.testing.assert_array_equal(s.position, held[0].position)
        np.testing.assert_array_equal(s.quaternion, held[0].quaternion)
        assert not s.moving


def test_rollout_does_not_change_the_state():
    tr = make_tracker()
    tr.reset(Pose([0.4, 0.0, 0.4], DOWN), 1.0)
    ref = (np.array([0.5, 0.0, 0.4]), np.zeros(3), DOWN, np.zeros(3))
    before = tr.state.copy()
    roll = tr.rollout(lambda t: ref, 10)
    assert len(roll) == 10 and roll[-1].stamp == pytest.approx(1.1)
    np.testing.assert_array_equal(tr.state.position, before.position)
    assert tr.state.stamp == before.stamp


# -- scheduler ------------------------------------------------------------------------------------------------------
def chunk(n=16, x0=0.4, step=0.01):
    pos = np.stack([x0 + step * np.arange(1, n + 1), np.zeros(n), np.full(n, 0.4)], axis=-1)
    quats = np.tile(DOWN, (n, 1))
    return pos, quats, np.ones(n), np.zeros((n, 7))


def test_due_times_drop_past_actions_and_horizon():
    sch = ChunkScheduler(0.1, execute_horizon=8, max_latency_s=1.0, ensemble=EnsembleConfig())
    pos, q, g, a = chunk()
    # observation at t=10.0, result at 10.25: waypoints of actions 0 and 1 (10.1, 10.2) are already past
    why, executed = sch.add_chunk(10.0, pos, q, g, a, 10.25, np.array([0.4, 0, 0.4]), DOWN)
    assert why == ""
    np.testing.assert_array_equal(np.flatnonzero(executed), [2, 3, 4, 5, 6, 7])
    np.testing.assert_allclose(sch.times, [10.25, 10.3, 10.4, 10.5, 10.6, 10.7, 10.8])
    # reference: at a waypoint time it is exactly that waypoint; after the last it rests there
    p, v, _, _ = sch.reference(10.5)
    np.testing.assert_allclose(p, pos[4])
    np.testing.assert_allclose(v, [0.1, 0, 0])  # 1 cm per 0.1 s
    p, v, _, _ = sch.reference(99.0)
    np.testing.assert_allclose(p, pos[7])
    np.testing.assert_array_equal(v, 0)
    assert sch.end_time == pytest.approx(10.8)


def test_late_and_past_chunks_are_refused():
    sch = ChunkScheduler(0.1, execute_horizon=4, max_latency_s=0.5, ensemble=EnsembleConfig())
    pos, q, g, a = chunk()
    assert sch.add_chunk(0.0, pos, q, g, a, 0.6, pos[0], DOWN)[0] == "late_chunk"
    sch2 = ChunkScheduler(0.1, execute_horizon=4, max_latency_s=5.0, ensemble=EnsembleConfig())
    assert sch2.add_chunk(0.0, pos, q, g, a, 0.45, pos[0], DOWN)[0] == "chunk_in_past"
    assert not sch.has_plan and not sch2.has_plan


def test_adaptive_ensemble_weights_follow_cogact():
    ens = EnsembleConfig(enabled=True, alpha=2.0, horizon=2)
    sch = ChunkScheduler(0.1, execute_horizon=0, max_latency_s=5.0, ensemble=ens)
    n = 16
    q = np.tile(DOWN, (n, 1))
    pos_a = np.tile([0.4, 0.0, 0.4], (n, 1))
    pos_b = np.tile([0.5, 0.0, 0.4], (n, 1))
    act_a = np.tile([1.0, 0, 0, 0, 0, 0, 1.0], (n, 1))
    act_b = np.tile([0.0, 1.0, 0, 0, 0, 0, 1.0], (n, 1))
    sch.add_chunk(0.0, pos_a, q, np.ones(n), act_a, 0.05, pos_a[0], DOWN)
    sch.add_chunk(0.2, pos_b, q, np.ones(n), act_b, 0.25, pos_a[0], DOWN)
    # overlapping times get w_old ~ exp(alpha * cos(a_old, a_new)) = exp(2 * 0.5), w_new ~ exp(2 * 1)
    cos = 1.0 / 2.0  # cos([1,0,..,1], [0,1,..,1]) = 1 / (sqrt2 * sqrt2)
    w_old, w_new = np.exp(2.0 * cos), np.exp(2.0)
    expected_x = (w_old * 0.4 + w_new * 0.5) / (w_old + w_new)
    p, _, _, _ = sch.reference(0.3)  # covered by both chunks
    assert p[0] == pytest.approx(expected_x)
    p, _, _, _ = sch.reference(1.75)  # beyond the old chunk (0.1..1.6): only the newest one
    assert p[0] == pytest.approx(0.5)
