"""The message factories: defaults for every ROS 2 Humble type, coercion, and rclpy's strict field types."""

from __future__ import annotations

import array

import numpy as np
import pytest

from mole_vla_ros.ros.messages import RosbagsMessages, coerce_for_rclpy, normalize_type_name


@pytest.fixture(scope="module")
def msgs() -> RosbagsMessages:
    return RosbagsMessages()


def test_every_registered_message_type_builds_with_defaults_and_survives_cdr(msgs):
    failures = []
    for type_name in sorted(msgs.typestore.fielddefs):
        if type_name.count("/") != 2:
            continue  # rosbags' own spelling of some service parts; not a name our code uses
        try:
            msg = msgs.make(type_name)
            back = msgs.deserialize(msgs.serialize(msg), type_name)
            assert type(back) is type(msg)
        except Exception as exc:
            failures.append(f"{type_name}: {exc}")
    assert not failures, failures


def test_make_fills_defaults_and_coerces_lists(msgs):
    point = msgs.make("trajectory_msgs/msg/JointTrajectoryPoint", positions=[1, 2, 3])
    assert point.positions.dtype == np.float64 and point.positions.tolist() == [1.0, 2.0, 3.0]
    assert point.velocities.shape == (0,)
    assert point.time_from_start.sec == 0
    info = msgs.make("sensor_msgs/msg/CameraInfo")
    assert info.k.shape == (9,)


def test_unknown_field_and_type_are_named(msgs):
    with pytest.raises(ValueError, match=r"no field\(s\) \['colour'\]"):
        msgs.make("visualization_msgs/msg/Marker", colour=None)
    with pytest.raises(ValueError, match="not registered in the rosbags typestore"):
        msgs.make("my_msgs/msg/Nope")
    with pytest.raises(ValueError, match="exactly 9 values"):
        msgs.make("sensor_msgs/msg/CameraInfo", k=[1, 2])


def test_type_names_normalize():
    assert normalize_type_name("sensor_msgs/Image") == "sensor_msgs/msg/Image"
    assert normalize_type_name("franka_msgs/action/Grasp_Goal") == "franka_msgs/action/Grasp_Goal"
    with pytest.raises(ValueError, match="not a ROS 2 type name"):
        normalize_type_name("Image")


def test_franka_gripper_goals_build(msgs):
    goal = msgs.make(
        "franka_msgs/action/Grasp_Goal",
        width=0.02,
        speed=0.1,
        force=30,
        epsilon=msgs.make("franka_msgs/msg/GraspEpsilon", inner=0.005, outer=0.005),
    )
    back = msgs.deserialize(msgs.serialize(goal), "franka_msgs/action/Grasp_Goal")
    assert back.force == 30.0 and back.epsilon.outer == 0.005


# rclpy is not installable here; its generated setters are strict in documented ways, which coerce_for_rclpy targets.
@pytest.mark.parametrize(
    ("value", "idl", "check"),
    [
        (np.array([1.0, 2.0]), "sequence<double>", lambda v: isinstance(v, array.array) and v.typecode == "d"),
        ([1, 2], "sequence<double>", lambda v: isinstance(v, array.array) and list(v) == [1.0, 2.0]),
        (np.zeros(4, np.uint8), "sequence<uint8>", lambda v: isinstance(v, array.array) and v.typecode == "B"),
        (np.arange(9), "double[9]", lambda v: isinstance(v, np.ndarray) and v.dtype == np.float64),
        (3, "double", lambda v: type(v) is float and v == 3.0),
        (np.int64(4), "int32", lambda v: type(v) is int and v == 4),
        (np.float32(0.5), "float", lambda v: type(v) is float),
        (np.bool_(True), "boolean", lambda v: v is True),
        (np.array([True, False]), "sequence<boolean>", lambda v: v == [True, False]),
        (("a", "b"), "sequence<string>", lambda v: v == ["a", "b"]),
        ("text", "string", lambda v: v == "text"),
        (2, "octet", lambda v: v == b"\x02"),
        (b"\x01", "octet", lambda v: v == b"\x01"),
    ],
)
def test_coerce_for_rclpy(value, idl, check):
    assert check(coerce_for_rclpy(value, idl))


def test_coerce_for_rclpy_rejects_wrong_fixed_size():
    with pytest.raises(ValueError, match="exactly 9 values"):
        coerce_for_rclpy([1.0, 2.0], "double[9]")


def test_default_quaternion_is_the_identity_as_in_rclpy():
    from mole_vla_ros.ros.messages import RosbagsMessages

    msgs = RosbagsMessages()
    q = msgs.make("geometry_msgs/msg/Quaternion")
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    assert msgs.make("geometry_msgs/msg/Pose").orientation.w == 1.0  # nested defaults too
    assert msgs.make("geometry_msgs/msg/Quaternion", w=0.5).w == 0.5
