"""`ros.node_io.NodeIO` on its own, without any shell: the message handling both the live node and replay call.

A real `PolicyRuntime` (inline executor, scripted policy) and real ROS 2 messages (rosbags dataclasses); every time
comes from the test, as it comes from the node clock or bag time in the two shells.
"""

from __future__ import annotations

import logging

import numpy as np
from test_ros_node_shell import DOWN, FR3, MSGS, START, ScriptedPolicy

from mole_vla_ros.robot.franka import READY_Q
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.node_io import NodeIO
from mole_vla_ros.ros.outputs import OutputBuilder
from mole_vla_ros.ros.params import load_settings
from mole_vla_ros.runtime.node_core import PolicyRuntime


def make_io(**overrides) -> NodeIO:
    settings = load_settings(None, overrides={"observation.camera_names": ["front"], **overrides})
    runtime = PolicyRuntime(settings.runtime, ScriptedPolicy(), executor="inline")
    runtime.warmup()
    outputs = OutputBuilder(MSGS, settings.node.markers, settings.runtime.frames.ee_frame)
    return NodeIO(settings, runtime, outputs)


def feed(io: NodeIO, t: float) -> None:
    assert io.on_camera("front", conv.rgb_to_image_msg(MSGS, np.full((32, 32, 3), 90, np.uint8), t, "cam"))
    joints = MSGS.make(
        "sensor_msgs/msg/JointState", header=MSGS.header(t, ""), name=[*FR3.arm_joint_names, *FR3.finger_joint_names],
        position=[*READY_Q, 0.04, 0.04],
    )  # fmt: skip
    assert io.on_joint_state(joints)
    assert io.on_ee_pose(conv.pose_stamped_msg(MSGS, conv.Pose(START, DOWN), t, "fr3_link0")) is not None


def test_robot_state_decimation_follows_the_callers_clock():
    io = make_io(**{"robot_state_rate_hz": 10.0})
    due = [t for t in np.arange(0.0, 1.0, 0.001).round(3) if io.robot_state_due(float(t))]
    assert due == [round(0.1 * k, 1) for k in range(10)]  # 10 Hz of the caller's time, whatever the wall clock did
    assert io.robot_state_due(0.5)  # the clock jumped back (looping bag): decoding restarts at once
    assert not io.robot_state_due(0.55) and io.robot_state_due(0.6)


def test_rejected_inputs_are_counted_every_time_and_logged_once_per_period(caplog):
    io = make_io()
    bad = conv.rgb_to_image_msg(MSGS, np.zeros((4, 4, 3), np.uint8), 1.0, "cam")
    bad.encoding = "yuv422"
    with caplog.at_level(logging.ERROR, logger="mole_vla_ros.ros.node_io"):
        assert not io.on_camera("front", bad)
        assert not io.on_camera("front", bad)
        assert not io.on_instruction(MSGS.make("std_msgs/msg/String", data=" "))
    assert io.input_errors == {"camera/front": 2, "instruction": 1}
    assert "yuv422" in io.last_error["camera/front"]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and logged[0].startswith("camera/front: ") and logged[1].startswith("instruction: ")


def test_enable_reports_why_not_then_ticks_produce_messages_and_counted_diagnostics():
    io = make_io(**{"safety.dry_run": False})
    assert "pose" in io.enable()  # no EE pose yet: a sentence saying why
    assert io.diagnostics_tick() is None  # nothing before the first step
    t = 100.0
    for _ in range(30):
        feed(io, t)
        io.control_tick(t)
        t += 0.01
    assert io.enable() == ""
    keys: set[str] = set()
    for _ in range(100):
        if round(t * 100) % 3 == 0:
            feed(io, t)
        keys |= set(io.control_tick(t).messages)
        t += 0.01
    assert {"pose_command", "target_pose_preview", "predicted_path", "layers", "layer_probs"} <= keys
    assert io.visualization_tick(t) is not None
    io.gripper_event("sent/grasp")
    io.reject("tf", ValueError("no transform"))
    (status,) = io.diagnostics_tick({"tf_check": "ok"}).status
    values = [(kv.key, kv.value) for kv in status.values]
    assert values[-3:] == [("tf_check", "ok"), ("input_errors.tf", "1"), ("gripper.sent/grasp", "1")]
    io.reset_episode()
    assert io.visualization_tick(t) is None  # markers forgotten with the episode


def test_pose_topic_against_tf():
    io = make_io()
    sample = conv.pose_stamped_to_sample(conv.pose_stamped_msg(MSGS, conv.Pose(START, DOWN), 1.0, "fr3_link0"))

    def tf(xyz):
        return MSGS.make(
            "geometry_msgs/msg/TransformStamped",
            header=MSGS.header(1.0, "fr3_link0"),
            child_frame_id="fr3_hand_tcp",
            transform=conv.transform_msg(MSGS, conv.Pose(np.asarray(xyz), DOWN)),
        )

    assert io.check_pose_against_tf(sample, tf(START + np.array([0.0, 0.0, 0.005]))) == "ok"
    assert io.check_pose_against_tf(sample, tf(START + np.array([0.0, 0.0, 0.1034]))) == "MISMATCH 10.3 cm / 0.0 deg"
