"""JointTrajectoryPlanner: messages realise the tracker's future; caches mean one new IK solve per message."""

import numpy as np

from mole_vla_ros.robot.franka import READY_Q, describe
from mole_vla_ros.robot.kinematics import FrankaKinematics
from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.runtime.config import IKConfig, TrajectoryConfig
from mole_vla_ros.runtime.joint_output import JointTrajectoryPlanner
from mole_vla_ros.runtime.trajectory import CartesianTracker

DT = 0.01


class CountingKinematics(FrankaKinematics):
    """The real kinematics, counting IK solves."""

    def __init__(self):
        super().__init__("fr3")
        self.solves = 0

    def ik(self, *args, **kwargs):
        self.solves += 1
        return super().ik(*args, **kwargs)


def setup():
    kin = CountingKinematics()
    tr_cfg = TrajectoryConfig()  # 0.2 s horizon, a point every 0.04 s
    planner = JointTrajectoryPlanner(kin, describe("fr3"), tr_cfg, IKConfig(), DT)
    tracker = CartesianTracker(DT, tr_cfg.max_lin_vel, tr_cfg.max_lin_acc, tr_cfg.max_rot_vel, tr_cfg.max_rot_acc)
    start = kin.fk(READY_Q)
    tracker.reset(start, 0.0)
    goal = start.position + np.array([0.1, 0.05, -0.05])
    ref = (goal, np.zeros(3), rot.quat_multiply(rot.rpy_to_quat([0, 0, 0.3]), start.quaternion), np.zeros(3))
    planner.start(READY_Q)
    return kin, planner, tracker, lambda t: ref


def test_messages_follow_the_tracker_and_reuse_cached_solutions():
    kin, planner, tracker, ref_fn = setup()
    key = ("plan", 1)
    solves_per_message = []
    now = 0.0
    for _ in range(60):
        now = round(now + DT, 9)
        cached = planner.pop(key, tracker.state.stamp + DT)
        if cached is not None:
            tracker.state = cached
        else:
            tracker.step(ref_fn(tracker.state.stamp + DT))
        if planner.due(now):
            before = kin.solves
            points, failure = planner.plan(now, tracker, ref_fn, key, planner.q_cmd)
            assert failure is None
            cmd = planner.commit(now, points)
            solves_per_message.append(kin.solves - before)
            # every point realises the tracker's pose at that time
            assert np.linalg.norm(kin.fk(cmd.positions[-1]).position - tracker.rollout(ref_fn, 20)[-1].position) < 1e-3
            assert np.all(np.diff(cmd.time_from_start) > 0)
    assert solves_per_message[0] == 6  # the current sample + 5 horizon points
    assert max(solves_per_message[1:]) <= 2  # afterwards only the new end point (and the current sample rarely)
    assert np.mean(solves_per_message[1:]) <= 1.1


def test_a_new_plan_key_recomputes_and_hold_is_at_rest():
    kin, planner, tracker, ref_fn = setup()
    points, _ = planner.plan(0.0, tracker, ref_fn, ("a",), READY_Q)
    planner.commit(0.0, points)
    before = kin.solves
    points, _ = planner.plan(0.04, tracker, ref_fn, ("b",), planner.q_cmd)  # another plan: caches dropped
    assert kin.solves - before == len(points) == 6
    held = planner.hold(0.08, READY_Q)
    assert held.positions.shape == (1, 7) and not np.any(held.velocities)
    np.testing.assert_array_equal(held.positions[0], READY_Q)
