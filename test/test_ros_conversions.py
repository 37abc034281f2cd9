"""Messages -> core types, checked with the real ROS 2 message definitions from the rosbags typestore.

Every message goes through CDR (serialize -> deserialize) before conversion, so the tests exercise the exact bytes a
camera driver or franka_ros2 would put on the wire.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mole_vla_ros.robot.franka import describe
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.messages import RosbagsMessages, seconds_to_stamp, stamp_to_seconds

FR3 = describe("fr3")


@pytest.fixture(scope="module")
def msgs() -> RosbagsMessages:
    return RosbagsMessages()


def wire(msgs: RosbagsMessages, msg):
    """The message as a subscriber sees it after CDR serialization."""
    return msgs.deserialize(msgs.serialize(msg), msg.__msgtype__)


def rgb_image(h=6, w=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def image_msg(msgs, pixels: np.ndarray, encoding: str, step_pad: int = 0, t: float = 3.25):
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(h, w * c)
    if step_pad:
        rows = np.concatenate([rows, np.full((h, step_pad), 77, np.uint8)], axis=1)
    return msgs.make(
        "sensor_msgs/msg/Image",
        header=msgs.header(t, "wrist_cam"),
        height=h,
        width=w,
        encoding=encoding,
        step=w * c + step_pad,
        data=rows.reshape(-1),
    )


# ---------------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("step_pad", [0, 3])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3"])
def test_every_supported_encoding_decodes_to_rgb(msgs, encoding, step_pad):
    rgb = rgb_image()
    alpha = np.full((*rgb.shape[:2], 1), 200, np.uint8)
    gray = rgb[:, :, 0]
    pixels, expected = {
        "rgb8": (rgb, rgb),
        "bgr8": (rgb[:, :, ::-1], rgb),
        "8UC3": (rgb[:, :, ::-1], rgb),
        "rgba8": (np.concatenate([rgb, alpha], axis=2), rgb),
        "bgra8": (np.concatenate([rgb[:, :, ::-1], alpha], axis=2), rgb),
        "mono8": (gray, np.repeat(gray[:, :, None], 3, axis=2)),
        "8UC1": (gray, np.repeat(gray[:, :, None], 3, axis=2)),
    }[encoding]
    msg = wire(msgs, image_msg(msgs, np.ascontiguousarray(pixels), encoding, step_pad=step_pad))
    frame = conv.image_to_frame(msg, "wrist")
    assert frame.image.dtype == np.uint8 and frame.image.shape == (6, 5, 3)
    np.testing.assert_array_equal(frame.image, expected)
    assert frame.stamp == pytest.approx(3.25) and frame.frame_id == "wrist_cam" and frame.camera == "wrist"


def test_decoded_image_does_not_alias_the_message_buffer(msgs):
    msg = image_msg(msgs, rgb_image(), "rgb8")
    out = conv.image_to_rgb(msg)
    msg.data[:] = 0
    assert out.any()


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_rgb_to_image_msg_round_trips(msgs, encoding):
    rgb = rgb_image(8, 7, seed=3)
    msg = wire(msgs, conv.rgb_to_image_msg(msgs, rgb, 1.5, "cam", encoding=encoding))
    out = conv.image_to_rgb(msg)
    if encoding == "mono8":
        expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        assert np.abs(out[:, :, 0].astype(int) - expected.astype(int)).max() <= 1
    else:
        np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["yuv422", "bayer_rggb8", "16UC1", "32FC1", "jpeg"])
def test_unknown_encoding_is_a_clear_error(msgs, encoding):
    msg = image_msg(msgs, rgb_image(), "rgb8")
    msg.encoding = encoding
    with pytest.raises(ValueError, match=f"unsupported image encoding '{encoding}'.*rgb8"):
        conv.image_to_rgb(msg)


def test_truncated_data_names_the_sizes(msgs):
    msg = image_msg(msgs, rgb_image(), "rgb8")
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match=r"89 bytes but height \* step = 6 \* 15 = 90"):
        conv.image_to_rgb(wire(msgs, msg))


def test_step_smaller_than_row_is_rejected(msgs):
    msg = image_msg(msgs, rgb_image(), "rgb8")
    msg.step = 10
    with pytest.raises(ValueError, match=r"step 10 is smaller than width \* channels = 5 \* 3 = 15"):
        conv.image_to_rgb(msg)


def test_width_mismatch_with_encoding_is_rejected(msgs):
    # A bgra8 claim on an rgb8-sized buffer: the row would need 20 bytes but step says 15.
    msg = image_msg(msgs, rgb_image(), "rgb8")
    msg.encoding = "bgra8"
    with pytest.raises(ValueError, match="smaller than width"):
        conv.image_to_rgb(msg)


def test_empty_image_is_rejected(msgs):
    msg = msgs.make("sensor_msgs/msg/Image", encoding="rgb8")
    with pytest.raises(ValueError, match="0x0 pixels"):
        conv.image_to_rgb(msg)


@pytest.mark.parametrize("fmt", [".jpg", ".png"])
def test_compressed_image_decodes_to_rgb(msgs, fmt):
    rgb = rgb_image(16, 16, seed=5)
    rgb[:8] = (250, 10, 10)  # a red band survives jpeg compression recognisably
    ok, encoded = cv2.imencode(fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = msgs.make(
        "sensor_msgs/msg/CompressedImage", header=msgs.header(2.0, "cam"), format=fmt[1:], data=encoded.reshape(-1)
    )
    frame = conv.compressed_to_frame(wire(msgs, msg), "front")
    assert frame.image.shape == (16, 16, 3) and frame.stamp == 2.0
    if fmt == ".png":
        np.testing.assert_array_equal(frame.image, rgb)
    red = frame.image[:8].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_corrupt_compressed_image_is_a_clear_error(msgs):
    msg = msgs.make("sensor_msgs/msg/CompressedImage", format="jpeg", data=np.arange(50, dtype=np.uint8))
    with pytest.raises(ValueError, match="could not decode compressed image"):
        conv.compressed_to_rgb(msg)
    with pytest.raises(ValueError, match="has no data"):
        conv.compressed_to_rgb(msgs.make("sensor_msgs/msg/CompressedImage", format="jpeg"))


# ---------------------------------------------------------------------------------------------------- joints


def joint_msg(msgs, names, position, velocity=(), effort=(), t=10.0):
    return msgs.make(
        "sensor_msgs/msg/JointState",
        header=msgs.header(t, ""),
        name=list(names),
        position=position,
        velocity=velocity,
        effort=effort,
    )


def test_joint_state_is_matched_by_name_and_reordered(msgs):
    names = list(FR3.arm_joint_names)
    q = np.arange(7) * 0.1
    order = [3, 6, 0, 5, 1, 4, 2]
    shuffled = [*(names[i] for i in order), "fr3_finger_joint1", "fr3_finger_joint2"]
    msg = wire(msgs, joint_msg(msgs, shuffled, [*q[order], 0.02, 0.02], velocity=[*(q[order] * 2), 0.0, 0.0]))
    sample = conv.joint_state_to_sample(msg, FR3.arm_joint_names)
    assert sample.names == FR3.arm_joint_names
    np.testing.assert_allclose(sample.position, q)
    np.testing.assert_allclose(sample.velocity, q * 2)
    assert sample.effort is None  # empty effort array -> None, not zeros
    assert sample.stamp == 10.0
    gripper = conv.joint_state_to_gripper(msg, FR3.finger_joint_names)
    assert gripper.width == pytest.approx(0.04)


def test_missing_joint_names_them(msgs):
    names = list(FR3.arm_joint_names)[:6]
    with pytest.raises(ValueError, match=r"missing joint\(s\) \['fr3_joint7'\].*robot_type"):
        conv.joint_state_to_sample(joint_msg(msgs, names, np.zeros(6)), FR3.arm_joint_names)


def test_panda_names_on_fr3_robot_are_rejected(msgs):
    panda = describe("panda").arm_joint_names
    with pytest.raises(ValueError, match="fr3_joint1"):
        conv.joint_state_to_sample(joint_msg(msgs, panda, np.zeros(7)), FR3.arm_joint_names)


def test_nan_joint_position_is_rejected(msgs):
    q = np.zeros(7)
    q[4] = np.nan
    with pytest.raises(ValueError, match=r"non-finite positions for \['fr3_joint5'\]"):
        conv.joint_state_to_sample(wire(msgs, joint_msg(msgs, FR3.arm_joint_names, q)), FR3.arm_joint_names)


def test_nan_on_an_unused_joint_is_ignored_and_nan_velocity_dropped(msgs):
    names = [*FR3.arm_joint_names, "other_joint"]
    vel = np.zeros(8)
    vel[0] = np.inf
    msg = joint_msg(msgs, names, [*np.zeros(7), np.nan], velocity=vel)
    sample = conv.joint_state_to_sample(msg, FR3.arm_joint_names)
    assert sample.velocity is None and np.all(sample.position == 0)


def test_positions_shorter_than_names_is_rejected(msgs):
    with pytest.raises(ValueError, match="7 names but 6 positions"):
        conv.joint_state_to_sample(joint_msg(msgs, FR3.arm_joint_names, np.zeros(6)), FR3.arm_joint_names)


def test_gripper_absent_gives_none(msgs):
    assert (
        conv.joint_state_to_gripper(joint_msg(msgs, FR3.arm_joint_names, np.zeros(7)), FR3.finger_joint_names) is None
    )


# ---------------------------------------------------------------------------------------------------- poses etc.


def test_pose_stamped_and_transform_convert(msgs):
    q = np.array([0.0, 1.0, 0.0, 1.0]) / np.sqrt(2)
    pose = msgs.make(
        "geometry_msgs/msg/Pose",
        position=msgs.make("geometry_msgs/msg/Point", x=0.4, y=-0.1, z=0.3),
        orientation=msgs.make("geometry_msgs/msg/Quaternion", x=q[0], y=q[1], z=q[2], w=q[3]),
    )
    ps = wire(msgs, msgs.make("geometry_msgs/msg/PoseStamped", header=msgs.header(7.5, "fr3_link0"), pose=pose))
    sample = conv.pose_stamped_to_sample(ps)
    assert sample.frame_id == "fr3_link0" and sample.stamp == 7.5
    np.testing.assert_allclose(sample.pose.position, [0.4, -0.1, 0.3])
    np.testing.assert_allclose(sample.pose.quaternion, q)

    tf = msgs.make(
        "geometry_msgs/msg/TransformStamped",
        header=msgs.header(7.5, "fr3_link0"),
        child_frame_id="fr3_hand_tcp",
        transform=msgs.make(
            "geometry_msgs/msg/Transform",
            translation=msgs.make("geometry_msgs/msg/Vector3", x=0.4, y=-0.1, z=0.3),
            rotation=pose.orientation,
        ),
    )
    tsample = conv.transform_to_sample(wire(msgs, tf))
    assert tsample.child_frame_id == "fr3_hand_tcp"
    np.testing.assert_allclose(tsample.pose.position, sample.pose.position)


def test_pose_with_zero_quaternion_is_rejected(msgs):
    # an unset quaternion from a C++ publisher that zero-initialises the message (the .msg default w=1 is not used)
    ps = msgs.make("geometry_msgs/msg/PoseStamped")
    ps.pose.orientation.w = 0.0
    with pytest.raises(ValueError, match="unit length"):
        conv.pose_stamped_to_sample(ps)


def test_robot_mode_from_franka_robot_state(msgs):
    state = msgs.make("franka_msgs/msg/FrankaRobotState", robot_mode=4)
    assert conv.robot_mode_name(wire(msgs, state)) == "REFLEX"
    assert msgs.constant("franka_msgs/msg/FrankaRobotState", "ROBOT_MODE_REFLEX") == 4
    for i, name in enumerate(conv.ROBOT_MODES):
        assert msgs.constant("franka_msgs/msg/FrankaRobotState", f"ROBOT_MODE_{name}") == i
    assert conv.robot_mode_name(42) == "UNKNOWN_42"


def test_instruction(msgs):
    assert (
        conv.instruction_from_msg(msgs.make("std_msgs/msg/String", data="  pick up the cube\n")) == "pick up the cube"
    )
    with pytest.raises(ValueError, match="empty instruction"):
        conv.instruction_from_msg(msgs.make("std_msgs/msg/String", data="   "))


@pytest.mark.parametrize("t", [0.0, 1.5, 1e9 + 0.123456789, -0.25, 12.999999999])
def test_stamps_round_trip(t):
    sec, nanosec = seconds_to_stamp(t)
    assert 0 <= nanosec < 1_000_000_000

    class S:
        pass

    s = S()
    s.sec, s.nanosec = sec, nanosec
    # float64 seconds resolve ~0.24 us at epoch-sized times; the core works in float seconds
    assert stamp_to_seconds(s) == pytest.approx(t, abs=1e-6)


def test_pose_difference():
    from mole_vla_ros.interfaces import Pose

    a = Pose(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
    b = Pose(np.array([0.0, 0.03, 0.04]), np.array([0.0, 0.0, np.sin(0.25), np.cos(0.25)]))
    dist, angle = conv.pose_difference(a, b)
    assert dist == pytest.approx(0.05) and angle == pytest.approx(0.5)
    flipped = Pose(np.zeros(3), -a.quaternion)  # same rotation, other sign
    assert conv.pose_difference(a, flipped) == (0.0, 0.0)
