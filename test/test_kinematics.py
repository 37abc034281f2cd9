"""FR3/Panda kinematics: FK against published poses, Jacobian against finite differences, IK over a workspace grid."""

import dataclasses
import itertools

import numpy as np
import pytest

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.robot.franka import READY_Q, describe
from mole_vla_ros.robot.kinematics import FrankaKinematics
from mole_vla_ros.runtime import rotations as rot

DOWN = rot.rpy_to_quat([np.pi, 0.0, 0.0])  # gripper pointing down, as at the ready pose


def test_fk_matches_known_franka_poses():
    # flange at q = 0 is 0.088 m forward and 0.333 + 0.316 + 0.384 - 0.107 = 0.926 m up (Franka docs figure)
    flange = FrankaKinematics("fr3", ee="flange").fk(np.zeros(7))
    np.testing.assert_allclose(flange.position, [0.088, 0.0, 0.926], atol=1e-9)
    # the ready pose puts the TCP at (0.3069, 0, 0.4869) pointing straight down (franka_ros2 / libfranka examples)
    tcp = FrankaKinematics("fr3").fk(READY_Q)
    np.testing.assert_allclose(tcp.position, [0.30689, 0.0, 0.48688], atol=1e-4)
    assert float(rot.quat_angle(tcp.quaternion, DOWN)) < 1e-6
    # hand frame: TCP minus 0.1034 along the (downward) z axis
    hand = FrankaKinematics("fr3", ee="hand").fk(READY_Q)
    np.testing.assert_allclose(hand.position, tcp.position + np.array([0, 0, 0.1034]), atol=1e-9)


def test_jacobian_matches_finite_differences():
    kin = FrankaKinematics("panda")
    q = READY_Q + np.array([0.1, -0.2, 0.3, 0.2, -0.1, 0.2, 0.3])
    j = kin.jacobian(q)
    eps = 1e-6
    t0 = kin.fk_matrix(q)
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = eps
        t1 = kin.fk_matrix(q + dq)
        v = (t1[:3, 3] - t0[:3, 3]) / eps
        w = rot.quat_to_rotvec(rot.matrix_to_quat(t1[:3, :3] @ t0[:3, :3].T)) / eps
        np.testing.assert_allclose(j[:3, i], v, atol=1e-5)
        np.testing.assert_allclose(j[3:, i], w, atol=1e-5)


@pytest.mark.parametrize("robot_type", ["fr3", "panda"])
def test_ik_round_trip_over_workspace_grid(robot_type):
    kin = FrankaKinematics(robot_type)
    lim = describe(robot_type).limits
    solved = 0
    for x, y, z, yaw in itertools.product([0.35, 0.5, 0.65], [-0.25, 0.0, 0.25], [0.1, 0.3, 0.5], [-0.6, 0.0, 0.6]):
        target = Pose([x, y, z], rot.rpy_to_quat([np.pi, 0.0, yaw]))
        res = kin.ik(target, READY_Q, max_iterations=200)
        assert res.success, f"{robot_type} IK failed for {(x, y, z, yaw)}: {res}"
        got = kin.fk(res.q)
        assert np.linalg.norm(got.position - target.position) < 1e-3
        assert float(rot.quat_angle(got.quaternion, target.quaternion)) < 0.01
        assert np.all(res.q >= lim.q_min) and np.all(res.q <= lim.q_max)
        solved += 1
    assert solved == 81


def test_ik_stays_near_the_current_configuration():
    kin = FrankaKinematics()
    q_cur = READY_Q + np.array([0.2, 0.1, -0.3, 0.1, 0.2, -0.1, 0.2])
    target = kin.fk(q_cur + 0.01)
    res = kin.ik(target, q_cur)
    assert res.success
    assert np.max(np.abs(res.q - q_cur)) < 0.1  # the neighbouring solution, not some other elbow


def test_unreachable_pose_is_reported_not_clamped():
    kin = FrankaKinematics()
    far = Pose([1.5, 0.0, 0.4], DOWN)  # 1.5 m: beyond the ~0.855 m reach
    res = kin.ik(far, READY_Q)
    assert not res.success and res.reason == "unreachable"
    assert res.position_error > 0.3
    assert kin.within_limits(res.q)  # the best iterate never left the joint limits


def test_pose_needing_joints_beyond_their_limits_is_reported():
    # lock the four twist joints (1, 3, 5, 7) to +-0.1 rad: the arm becomes planar in x-z, so y = 0.3 is out of reach
    base = describe("fr3").limits
    twist = np.array([1, 0, 1, 0, 1, 0, 1], dtype=bool)
    q_min = np.where(twist, -0.1, base.q_min)
    q_max = np.where(twist, 0.1, base.q_max)
    q_min[6], q_max[6] = 0.685, 0.885  # joint 7 around the ready value (the hand's -45 deg yaw)
    kin = FrankaKinematics("fr3", limits=dataclasses.replace(base, q_min=q_min, q_max=q_max))
    target = Pose([0.45, 0.3, 0.4], DOWN)
    res = kin.ik(target, READY_Q, max_iterations=200)
    assert not res.success and res.reason == "unreachable"
    assert kin.within_limits(res.q, margin=0.05 - 1e-9)  # the best iterate stayed inside the (narrowed) limits
    # the same pose is fine for the real arm
    assert FrankaKinematics("fr3").ik(target, READY_Q).success


def test_velocity_limit_over_dt_is_reported():
    kin = FrankaKinematics()
    target = kin.fk(READY_Q + np.array([0.3, 0, 0, 0, 0, 0, 0]))  # 0.3 rad on joint 1
    slow = kin.ik(target, READY_Q, dt=0.01, velocity_fraction=0.5)  # allows 1.31 rad/s * 0.01 s = 0.013 rad
    assert not slow.success and slow.reason == "velocity_limit"
    fine = kin.ik(target, READY_Q, dt=1.0, velocity_fraction=0.5)
    assert fine.success


def test_bad_joint_vector_names_the_problem():
    kin = FrankaKinematics()
    with pytest.raises(ValueError, match="7 values"):
        kin.fk(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        kin.fk([0, 0, 0, np.nan, 0, 0, 0])
    with pytest.raises(ValueError, match="ee must be one of"):
        FrankaKinematics(ee="wrist")
