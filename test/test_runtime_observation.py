"""Observation pairing by header stamps, staleness, drops, refusals; gripper hysteresis and debounce."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mole_vla_ros.interfaces import CameraFrame, GripperSample, JointStateSample, Pose, PoseSample
from mole_vla_ros.robot.franka import READY_Q, describe
from mole_vla_ros.robot.kinematics import FrankaKinematics
from mole_vla_ros.runtime.config import GripperConfig, ObservationConfig
from mole_vla_ros.runtime.gripper import GripperLogic
from mole_vla_ros.runtime.observation import ObservationSync

NAMES = describe("fr3").arm_joint_names
IMG = np.zeros((8, 8, 3), np.uint8)


def make_sync(**kw):
    cfg = ObservationConfig(camera_names=("front", "wrist"), sync_tolerance_s=0.02, max_age_s=0.3, **kw)
    return ObservationSync(cfg, "fr3_link0", NAMES, fk=FrankaKinematics().fk)


def pose_at(x):
    return Pose([x, 0.0, 0.4], [1.0, 0.0, 0.0, 0.0])


def test_pairs_cameras_and_state_by_stamp_and_uses_the_oldest_stamp():
    sync = make_sync()
    for k in range(10):  # EE pose at 100 Hz, x encodes its stamp
        t = 1.0 + 0.01 * k
        sync.add_ee_pose(PoseSample(t, pose_at(t), "fr3_link0"))
    sync.add_camera(CameraFrame("front", 1.033, IMG))
    sync.add_camera(CameraFrame("wrist", 1.041, IMG + 1))
    obs, why = sync.latest(now=1.1)
    assert why == ""
    assert obs.camera_stamps == {"front": 1.033, "wrist": 1.041}
    # the 100 Hz pose is interpolated to the reference camera's stamp (not the newest pose, 1.09)
    assert obs.ee_stamp == pytest.approx(1.033)
    assert obs.ee_pose.position[0] == pytest.approx(1.033)
    assert obs.stamp == pytest.approx(1.033) and obs.newest_stamp == pytest.approx(1.041)
    assert obs.images["wrist"][0, 0, 0] == 1


def test_unsynced_and_stale_observations_are_refused():
    sync = make_sync()
    assert sync.latest(0.0) == (None, "no_camera:front")
    sync.add_camera(CameraFrame("front", 1.0, IMG))
    sync.add_camera(CameraFrame("wrist", 1.05, IMG))  # 50 ms apart > 20 ms tolerance
    sync.add_ee_pose(PoseSample(1.0, pose_at(0.4), "fr3_link0"))
    assert sync.latest(1.06) == (None, "unsynced")
    # no EE sample after the camera frame yet: the nearest one (within tolerance) is used as is
    sync.add_camera(CameraFrame("wrist", 1.06, IMG))
    sync.add_camera(CameraFrame("front", 1.065, IMG))
    sync.add_ee_pose(PoseSample(1.06, pose_at(0.4), "fr3_link0"))
    obs, why = sync.latest(1.1)
    assert why == "" and obs.camera_stamps["front"] == 1.065 and obs.ee_stamp == 1.06
    assert sync.latest(1.5) == (None, "stale")  # 0.44 s old > max_age_s 0.3


def test_out_of_order_duplicates_wrong_frame_and_unknown_cameras_are_counted():
    sync = make_sync()
    assert sync.add_camera(CameraFrame("front", 2.0, IMG))
    assert not sync.add_camera(CameraFrame("front", 1.9, IMG))
    assert not sync.add_camera(CameraFrame("front", 2.0, IMG))
    assert not sync.add_camera(CameraFrame("side", 2.1, IMG))
    assert not sync.add_camera(CameraFrame("wrist", 2.1, np.zeros((8, 8), np.uint8)))
    assert not sync.add_ee_pose(PoseSample(2.0, pose_at(0.4), "world"))
    c = sync.counters
    assert c["rejected/out_of_order/camera/front"] == 1
    assert c["rejected/duplicate/camera/front"] == 1
    assert c["rejected/unknown_camera/side"] == 1
    assert c["rejected/bad_image/wrist"] == 1
    assert c["rejected/wrong_frame/ee_pose"] == 1


def test_frame_drops_are_counted_from_stamp_gaps():
    sync = make_sync(camera_rate_hz=30.0)
    stamps = [0.0, 1 / 30, 2 / 30, 5 / 30, 6 / 30, 10 / 30]  # frames 3, 4 and 7, 8, 9 missing
    for t in stamps:
        sync.add_camera(CameraFrame("front", t, IMG))
    assert sync.counters["drops/front"] == 5
    assert sync.rate_hz("camera/front") > 0


def test_joint_states_are_reordered_and_bad_ones_refused():
    cfg = ObservationConfig(camera_names=("front",), ee_pose_source="fk")
    kin = FrankaKinematics()
    sync = ObservationSync(cfg, "fr3_link0", NAMES, fk=kin.fk)
    names = ("fr3_finger_joint1", *reversed(NAMES))
    pos = np.concatenate([[0.04], READY_Q[::-1]])
    assert sync.add_joint_state(JointStateSample(1.0, names, pos))
    np.testing.assert_allclose(sync.latest_joint_positions(), READY_Q)
    # the EE pose comes from forward kinematics of those joints
    _, pose = sync.latest_ee_pose()
    np.testing.assert_allclose(pose.position, kin.fk(READY_Q).position)
    bad = pos.copy()
    bad[3] = np.nan
    assert not sync.add_joint_state(JointStateSample(1.1, names, bad))
    assert not sync.add_joint_state(JointStateSample(1.2, NAMES[:6], READY_Q[:6]))
    assert sync.counters["rejected/non_finite/joint_states"] == 1
    assert sync.counters["rejected/missing_joints/joint_states"] == 1
    assert not sync.add_gripper(GripperSample(1.0, float("nan")))


# -- gripper --------------------------------------------------------------------------------------------------------
def test_gripper_hysteresis_debounce_and_state_changes_only():
    g = GripperLogic(GripperConfig(close_threshold=0.3, open_threshold=0.7, debounce_count=2, min_interval_s=0.0))
    g.sync_to_width(0.08)
    assert g.is_open
    cmds = [g.update(v, t) for t, v in enumerate([0.5, 0.2, 0.5, 0.2, 0.1, 0.0, 0.0, 0.6, 0.8, 0.9, 0.9])]
    kinds = [(t, c.action, c.open) for t, c in enumerate(cmds) if c is not None]
    # 0.2 then 0.5 (inside the band) resets the streak; two closes in a row flip; then two opens flip back
    assert kinds == [(4, "grasp", False), (9, "move", True)]
    assert cmds[4].force == GripperConfig().force and cmds[9].width == pytest.approx(0.08)


def test_gripper_min_interval_delays_but_does_not_lose_a_change():
    g = GripperLogic(GripperConfig(debounce_count=1, min_interval_s=1.0, close_mode="move"))
    g.sync_to_width(0.08)
    assert g.update(0.0, 10.0).action == "move"  # close
    assert g.update(1.0, 10.5) is None  # too soon after the last command
    late = g.update(1.0, 11.1)
    assert late is not None and late.open


@settings(max_examples=40, deadline=None)
@given(
    jitter=st.lists(st.floats(-0.015, 0.015), min_size=40, max_size=40),
    cam_offset=st.floats(-0.03, 0.03),
    now_delay=st.floats(0.0, 0.4),
)
def test_any_observation_returned_is_within_tolerance_and_fresh(jitter, cam_offset, now_delay):
    sync = make_sync()
    for k in range(40):  # 100 Hz EE pose; x encodes the stamp
        t = 1.0 + 0.01 * k
        sync.add_ee_pose(PoseSample(t, pose_at(t), "fr3_link0"))
    for k in range(12):  # two 30 Hz cameras, the second offset and jittered
        t = 1.0 + k / 30
        sync.add_camera(CameraFrame("front", t, IMG))
        sync.add_camera(CameraFrame("wrist", t + cam_offset + jitter[k], IMG))
    now = 1.0 + 11 / 30 + now_delay
    obs, why = sync.latest(now)
    tol = sync.config.sync_tolerance_s
    if obs is None:
        assert why in ("unsynced", "stale")
        return
    stamps = [*obs.camera_stamps.values(), obs.ee_stamp]
    assert max(stamps) - min(stamps) <= 2 * tol + 1e-12
    assert abs(obs.camera_stamps["wrist"] - obs.camera_stamps["front"]) <= tol + 1e-12
    assert now - obs.stamp <= sync.config.max_age_s
    # the interpolated EE pose is the one at the reference camera's stamp (x encodes time in this fixture)
    assert obs.ee_pose.position[0] == pytest.approx(obs.ee_stamp, abs=1e-9)
    # no newer front frame would have had a partner: the newest synchronisable set is returned
    newer = [t for t in sync.cameras["front"].stamps if t > obs.camera_stamps["front"]]
    for t in newer:
        assert sync.cameras["wrist"].nearest(t, tol) is None
