"""JointTrajectoryPlanner: messages realise the tracker's future and continue each other; caches mean one new IK
solve per message; the joint-space stop is continuous in joint and Cartesian space."""

import itertools

import numpy as np
import pytest

from mole_vla_ros.robot.franka import READY_Q, describe
from mole_vla_ros.robot.kinematics import FrankaKinematics
from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.runtime.config import IKConfig, TrajectoryConfig
from mole_vla_ros.runtime.joint_output import BRAKE_ACC_FRACTION, JointBrake, JointTrajectoryPlanner
from mole_vla_ros.runtime.trajectory import CartesianTracker

DT = 0.01
LIMITS = describe("fr3").limits


class CountingKinematics(FrankaKinematics):
    """The real kinematics, counting IK solves."""

    def __init__(self):
        super().__init__("fr3")
        self.solves = 0

    def ik(self, *args, **kwargs):
        self.solves += 1
        return super().ik(*args, **kwargs)


def setup(offset=(0.1, 0.05, -0.05), yaw=0.3):
    kin = CountingKinematics()
    tr_cfg = TrajectoryConfig()  # 0.2 s horizon, a point every 0.04 s
    planner = JointTrajectoryPlanner(kin, describe("fr3"), tr_cfg, IKConfig(), DT)
    tracker = CartesianTracker(DT, tr_cfg.max_lin_vel, tr_cfg.max_lin_acc, tr_cfg.max_rot_vel, tr_cfg.max_rot_acc)
    start = kin.fk(READY_Q)
    tracker.reset(start, 0.0)
    goal = start.position + np.asarray(offset)
    ref = (goal, np.zeros(3), rot.quat_multiply(rot.rpy_to_quat([0, 0, yaw]), start.quaternion), np.zeros(3))
    planner.start(READY_Q)
    return kin, planner, tracker, lambda t: ref


def advance(planner, tracker, ref_fn):
    """One command period of the live loop: replay the committed sample (or step before the first message)."""
    t_next = tracker.state.stamp + DT
    cached = planner.pop(t_next)
    if cached is not None:
        tracker.state = cached
    else:
        tracker.step(ref_fn(t_next))


def segment_accelerations(p0, v0, p1, v1, h):
    """Largest |acceleration| of the cubic Hermite segment JTC interpolates between two points (at its ends)."""
    a0 = (6 * (p1 - p0) - h * (4 * v0 + 2 * v1)) / h**2
    a1 = (-6 * (p1 - p0) + h * (2 * v0 + 4 * v1)) / h**2
    return np.maximum(np.abs(a0), np.abs(a1))


def test_messages_follow_the_tracker_and_reuse_cached_solutions():
    kin, planner, tracker, ref_fn = setup()
    key = ("plan", 1)
    solves_per_message = []
    now = 0.0
    for _ in range(60):
        now = round(now + DT, 9)
        advance(planner, tracker, ref_fn)
        if planner.due(now):
            before = kin.solves
            plan = planner.plan(now, tracker, ref_fn, key)
            assert plan.failure is None
            cmd = planner.commit(now, plan)
            solves_per_message.append(kin.solves - before)
            # every point realises the tracker's pose at that time
            assert np.linalg.norm(kin.fk(cmd.positions[-1]).position - tracker.rollout(ref_fn, 20)[-1].position) < 1e-3
            assert np.all(np.diff(cmd.time_from_start) > 0)
    assert solves_per_message[0] == 5  # the 5 horizon points (the current sample is the measured start)
    assert max(solves_per_message[1:]) <= 1  # afterwards only the new end point
    assert np.mean(solves_per_message[1:]) <= 1.0


def test_a_plan_change_between_messages_takes_effect_at_the_next_message_from_the_committed_state():
    kin, planner, tracker, ref_fn = setup()
    now = 0.0
    cmds = []
    while len(cmds) < 5:  # accelerate toward the first goal
        now = round(now + DT, 9)
        advance(planner, tracker, ref_fn)
        if planner.due(now):
            cmds.append(planner.commit(now, planner.plan(now, tracker, ref_fn, ("a",))))
    committed = cmds[-1]
    assert tracker.state.moving
    expected = [s.copy() for s in planner._committed]
    # a new chunk arrives right after the message: the goal flips to the other side
    start = kin.fk(READY_Q)
    other = (start.position - np.array([0.1, 0.05, -0.05]), np.zeros(3), start.quaternion, np.zeros(3))
    replayed = []
    for _ in range(3):
        now = round(now + DT, 9)
        advance(planner, tracker, lambda t: other)
        replayed.append(tracker.state)
    for got, want in zip(replayed, expected, strict=False):  # JTC executes the committed message: so does the preview
        np.testing.assert_array_equal(got.position, want.position)
        np.testing.assert_array_equal(got.velocity, want.velocity)
    now = round(now + DT, 9)
    advance(planner, tracker, lambda t: other)
    assert planner.due(now)
    q0, qd0 = planner.state_at(tracker.state.stamp)
    # the new message starts exactly where the committed one is at this time (its first point), position AND velocity
    np.testing.assert_array_equal(q0, committed.positions[0])
    np.testing.assert_array_equal(qd0, committed.velocities[0])
    plan = planner.plan(now, tracker, lambda t: other, ("b",))
    assert plan.failure is None
    new = planner.commit(now, plan)
    acc = segment_accelerations(q0, qd0, new.positions[0], new.velocities[0], new.time_from_start[0])
    assert np.all(acc <= LIMITS.qdd_max), acc  # the executed cubic stays within the joint acceleration limits


def test_state_between_points_is_jtc_cubic_interpolation():
    _kin, planner, tracker, ref_fn = setup()
    for i in range(1, 9):
        advance(planner, tracker, ref_fn)
        if planner.due(i * DT):
            planner.commit(i * DT, planner.plan(i * DT, tracker, ref_fn, ("a",)))
    stamps, qs, qds = planner._points
    t_mid = 0.5 * (stamps[1] + stamps[2])
    q_mid, qd_mid = planner.state_at(t_mid)
    h = stamps[2] - stamps[1]
    # cubic Hermite at u = 1/2: (p0 + p1)/2 + h (m0 - m1)/8; derivative 1.5 (p1 - p0)/h - (m0 + m1)/4
    np.testing.assert_allclose(q_mid, 0.5 * (qs[1] + qs[2]) + h * (qds[1] - qds[2]) / 8, atol=1e-12)
    np.testing.assert_allclose(qd_mid, 1.5 * (qs[2] - qs[1]) / h - 0.25 * (qds[1] + qds[2]), atol=1e-9)
    np.testing.assert_array_equal(planner.state_at(stamps[2])[0], qs[2])
    q_end, qd_end = planner.state_at(stamps[-1] + 1.0)  # after its end JTC holds the last point at rest
    np.testing.assert_array_equal(q_end, qs[-1])
    assert not np.any(qd_end)


def test_joint_brake_profile_is_continuous_and_within_limits():
    q0, qd0 = READY_Q.copy(), np.array([0.5, -0.3, 0.2, 0.4, -0.6, 0.3, 0.9])
    b = JointBrake(1.0, q0, qd0, 0.2)
    ts = np.linspace(0.99, 1.25, 261)
    qs = np.array([b.at(t)[0] for t in ts])
    qds = np.array([b.at(t)[1] for t in ts])
    np.testing.assert_array_equal(qs[0], q0)  # before t0: the start
    np.testing.assert_allclose(np.gradient(qs, ts, axis=0)[20:180], qds[20:180], atol=1e-6)
    assert np.max(np.abs(np.diff(qds, axis=0)) / np.diff(ts)[:, None]) <= np.max(np.abs(qd0)) / 0.2 + 1e-6
    np.testing.assert_allclose(qs[-1], q0 + qd0 * 0.1)  # stops after qd0 * T / 2
    assert not np.any(qds[-1])


@pytest.mark.parametrize("near_limit", [False, True])
def test_joint_space_stop_continues_the_motion_and_the_preview(near_limit):
    kin, planner, tracker, ref_fn = setup(offset=(0.15, 0.1, -0.1), yaw=0.6)
    now, cmds, samples = 0.0, [], [tracker.state]
    for _ in range(28):  # full speed by now
        now = round(now + DT, 9)
        advance(planner, tracker, ref_fn)
        samples.append(tracker.state)
        if planner.due(now):
            cmds.append(planner.commit(now, planner.plan(now, tracker, ref_fn, ("a",))))
    if near_limit:
        # pretend the joint moving fastest is about to reach its limit: the stop must end inside the hard limit
        q0, qd0 = planner.state_at(tracker.state.stamp)
        j = int(np.argmax(np.abs(qd0)))
        room = 0.4 * abs(qd0[j]) * np.max(np.abs(qd0) / planner.a_brake)  # less than the relaxed stop needs
        planner.limits = type(LIMITS)(
            **{
                **LIMITS.__dict__,
                "q_max": np.where(np.arange(7) == j, q0[j] + room, LIMITS.q_max) if qd0[j] > 0 else LIMITS.q_max,
                "q_min": np.where(np.arange(7) == j, q0[j] - room, LIMITS.q_min) if qd0[j] < 0 else LIMITS.q_min,
            }
        )
    q0, qd0 = planner.state_at(tracker.state.stamp)
    assert np.max(np.abs(qd0)) > 0.2  # really moving
    brake = planner.brake(now, tracker)
    assert planner.braking(now) and planner.counters["joint/brakes"] == 1
    # JTC continues from the committed state along the stop: the executed cubic never exceeds the stop's deceleration
    points = [(0.0, q0, qd0), *zip(brake.time_from_start, brake.positions, brake.velocities, strict=True)]
    a_stop = np.max(np.abs(qd0) / planner.brake_plan.duration)
    for (t_a, p_a, v_a), (t_b, p_b, v_b) in itertools.pairwise(points):
        assert np.all(segment_accelerations(p_a, v_a, p_b, v_b, t_b - t_a) <= a_stop * (1 + 1e-6))
    assert not np.any(brake.velocities[-1])
    final = brake.positions[-1]
    assert np.all(final <= planner.limits.q_max) and np.all(final >= planner.limits.q_min)
    if near_limit:
        assert planner.counters["joint/brake_at_joint_limit"] == 1
    else:
        assert np.all(np.abs(qd0) / planner.brake_plan.duration <= LIMITS.qdd_max * BRAKE_ACC_FRACTION + 1e-9)
    # the preview follows FK of the stop from the current sample: continuous, and at rest at the end
    while now < planner.brake_plan.end + 0.1:
        now = round(now + DT, 9)
        advance(planner, tracker, ref_fn)
        samples.append(tracker.state)
    pos = np.array([s.position for s in samples])
    vel = np.array([s.velocity for s in samples])
    np.testing.assert_allclose(np.diff(pos, axis=0), vel[1:] * DT, atol=1e-12)
    if not near_limit:  # a stop at a joint limit may brake harder than the Cartesian limits
        assert np.all(np.abs(np.diff(vel, axis=0)) <= np.array(tracker.a_max) * DT + 1e-9)
    assert not tracker.state.moving
    offset = tracker.state.position - kin.fk(final).position
    assert np.linalg.norm(offset) < 1e-3  # the preview stays on FK of the commanded joints (IK tolerance)
    assert planner.counters["joint/horizon_exhausted"] == 0  # resting after a stop is not a stall
    # after the stop the next plan starts at rest at its end
    assert not planner.braking(now)
    q_rest, qd_rest = planner.state_at(tracker.state.stamp)
    np.testing.assert_array_equal(q_rest, final)
    assert not np.any(qd_rest)


def test_a_stalled_caller_stops_where_jtc_stops():
    kin, planner, tracker, ref_fn = setup()
    now = 0.0
    for _ in range(24):
        now = round(now + DT, 9)
        advance(planner, tracker, ref_fn)
        if planner.due(now):
            cmd = planner.commit(now, planner.plan(now, tracker, ref_fn, ("a",)))
    for _ in range(30):  # no message for 0.3 s > joint_horizon_s
        advance(planner, tracker, ref_fn)
    assert planner.counters["joint/horizon_exhausted"] == 1
    assert not tracker.state.moving
    assert np.linalg.norm(tracker.state.position - kin.fk(cmd.positions[-1]).position) < 1e-3


def test_a_new_plan_key_recomputes_and_a_failed_plan_cannot_be_committed():
    kin, planner, tracker, ref_fn = setup()
    planner.commit(0.0, planner.plan(0.0, tracker, ref_fn, ("a",)))
    before = kin.solves
    plan = planner.plan(0.04, tracker, ref_fn, ("b",))  # another plan: caches dropped
    assert kin.solves - before == len(plan.points) - 1 == 5
    with pytest.raises(ValueError, match="brake"):
        planner.commit(0.04, type(plan)(plan.key, plan.samples, plan.points, (1, "unreachable", [0, 0, 0])))
