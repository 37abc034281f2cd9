"""The live node's messages (rclpy classes) and replay's messages (rosbags dataclasses) are the same bytes.

Every outbound message is built twice through the same conversion code, once per factory, and the CDR bytes from
rclpy's serializer must equal rosbags'. Inbound conversions are run on real rclpy messages (array.array fields).
Skipped where rclpy is missing. Without a ROS 2 install, rclpy and the message packages come from PyPI wheels
(Python 3.11, Jazzy, Fast DDS), e.g. in a separate venv:

    pip install "ros-jazzy-rclpy[fastrtps]" ros-jazzy-std-msgs ros-jazzy-sensor-msgs ros-jazzy-geometry-msgs \
        ros-jazzy-nav-msgs ros-jazzy-trajectory-msgs ros-jazzy-visualization-msgs ros-jazzy-diagnostic-msgs \
        ros-jazzy-std-srvs ros-jazzy-rcl-interfaces
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
for _pkg in ("sensor_msgs", "geometry_msgs", "nav_msgs", "trajectory_msgs", "visualization_msgs", "diagnostic_msgs"):
    pytest.importorskip(_pkg)

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from mole_vla_ros.interfaces import Pose  # noqa: E402
from mole_vla_ros.robot.franka import describe  # noqa: E402
from mole_vla_ros.ros import conversions as conv  # noqa: E402
from mole_vla_ros.ros.markers import MarkerStyle  # noqa: E402
from mole_vla_ros.ros.messages import RclpyMessages, RosbagsMessages  # noqa: E402
from mole_vla_ros.ros.outputs import OutputBuilder  # noqa: E402
from mole_vla_ros.runtime.commands import ChunkPrediction, Diagnostics, JointTrajectoryCommand, StepOutput  # noqa: E402

pytestmark = pytest.mark.ros
FR3 = describe("fr3")
RCLPY, ROSBAGS = RclpyMessages(), RosbagsMessages()


def cdr_equal(rclpy_msg, rosbags_msg) -> bool:
    """Same CDR content both ways. rclpy's serialize_message leaves alignment padding uninitialised and appends
    slack after the message (bytes from a raw subscription have neither), so raw bytes differ: instead rosbags must
    decode rclpy's bytes (without the trailing slack) into a message that re-encodes to exactly our bytes, and rclpy
    must decode our bytes into the message its own bytes decode to (float32 fields compare after rounding)."""
    ours = ROSBAGS.serialize(rosbags_msg)
    theirs = serialize_message(rclpy_msg)
    if len(theirs) < len(ours):
        return False
    decoded = ROSBAGS.deserialize(theirs[: len(ours)], rosbags_msg.__msgtype__)
    rosbags_reads_rclpy = ROSBAGS.serialize(decoded) == ours
    cls = type(rclpy_msg)
    rclpy_reads_ours = deserialize_message(ours, cls) == deserialize_message(theirs, cls)
    return rosbags_reads_rclpy and rclpy_reads_ours


def same_bytes(build):
    """build(factory) -> message; the rclpy and rosbags versions carry identical CDR content."""
    a, b = build(RCLPY), build(ROSBAGS)
    assert cdr_equal(a, b)
    return a


def chunk() -> ChunkPrediction:
    n = 6
    return ChunkPrediction(
        obs_stamp=5.0,
        stamps=5.0 + 0.1 * np.arange(1, n + 1),
        positions=np.column_stack([np.linspace(0.4, 0.45, n), np.zeros(n), np.full(n, 0.3)]),
        quaternions=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
        gripper=np.array([1, 1, 1, 0, 0, 0], dtype=float),
        executed=np.array([False, True, True, True, True, False]),
        frame_id="fr3_link0",
        layer_indices=(0, 3),
        num_layers=4,
        latency_s=0.05,
    )


def diagnostics() -> Diagnostics:
    return Diagnostics(
        stamp=5.0, state="running", ready=True, dry_run=True, enabled=True, hold_reason="", disable_reason="",
        robot_mode="MOVE", latency_ms={"total": 12.5}, rates_hz={"command": 100.0}, counters={"drops/front": 1},
        active_layers=(0, 3), num_layers=4,
    )  # fmt: skip


def test_every_outbound_message_is_byte_identical_across_backends():
    def outputs(factory):
        b = OutputBuilder(factory, MarkerStyle(history=3), "fr3_hand_tcp")
        msgs = b.chunk(chunk())
        msgs["markers"] = b.markers(5.3)
        msgs["diagnostics"] = b.diagnostics(diagnostics(), {"tf_check": "ok"})
        cmd = JointTrajectoryCommand(
            5.0, FR3.arm_joint_names, np.array([0.02, 0.04]), np.zeros((2, 7)), np.full((2, 7), 0.1)
        )
        step = StepOutput(5.0, None, cmd, None, None, cmd, None, diagnostics())
        msgs.update(b.commands(step))
        msgs["pose"] = conv.pose_stamped_msg(
            factory, Pose(np.array([0.4, 0.0, 0.3]), np.array([0, 0, 0, 1.0])), 5.0, "b"
        )
        msgs["grasp"] = conv.grasp_goal_msg(factory, 0.0, 0.05, 20.0, 0.005, 0.08) if _has_franka() else None
        msgs["image"] = conv.rgb_to_image_msg(factory, np.arange(48, dtype=np.uint8).reshape(4, 4, 3), 5.0, "c", "bgr8")
        return msgs

    a, b = outputs(RCLPY), outputs(ROSBAGS)
    assert set(a) == set(b)
    for key in a:
        if a[key] is None:
            continue
        assert cdr_equal(a[key], b[key]), key


def _has_franka() -> bool:
    try:
        import franka_msgs  # noqa: F401
    except ImportError:
        return False
    return True


def test_inbound_conversions_read_rclpy_messages():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = same_bytes(lambda f: conv.rgb_to_image_msg(f, rgb, 2.5, "cam", "bgr8"))
    np.testing.assert_array_equal(conv.image_to_rgb(image), rgb)
    # after a trip through rclpy's own deserializer too
    back = deserialize_message(serialize_message(image), type(image))
    np.testing.assert_array_equal(conv.image_to_frame(back, "front").image, rgb)

    names = [*reversed(FR3.arm_joint_names), "fr3_finger_joint1", "fr3_finger_joint2"]
    js = same_bytes(
        lambda f: f.make(
            "sensor_msgs/msg/JointState", header=f.header(1.0, ""), name=names, position=[*range(7), 0.01, 0.02]
        )
    )
    sample = conv.joint_state_to_sample(js, FR3.arm_joint_names)
    np.testing.assert_allclose(sample.position, np.arange(7)[::-1])
    assert conv.joint_state_to_gripper(js, FR3.finger_joint_names).width == pytest.approx(0.03)


def test_rclpy_coercion_handles_strict_setters():
    # ints into float fields, numpy scalars, numpy arrays into sequences: rclpy's setters reject all of these raw
    point = RCLPY.make("geometry_msgs/msg/Point", x=1, y=np.float32(2.0), z=np.int64(3))
    assert (point.x, point.y, point.z) == (1.0, 2.0, 3.0)
    arr = RCLPY.make("std_msgs/msg/Float32MultiArray", data=np.array([0.5, 0.25]))
    assert list(arr.data) == [0.5, 0.25]
    status = RCLPY.make("diagnostic_msgs/msg/DiagnosticStatus", level=2)
    assert status.level == RCLPY.constant("diagnostic_msgs/msg/DiagnosticStatus", "ERROR")
    with pytest.raises(ValueError, match=r"no field\(s\) \['colour'\]"):
        RCLPY.make("visualization_msgs/msg/Marker", colour=None)
