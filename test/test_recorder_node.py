"""The recorder node: imports without ROS 2; with rclpy it records published messages byte-for-byte on command."""

from __future__ import annotations

import importlib
import time

import pytest

from mole_vla_ros.ros.record_keyboard import command_for_key


def test_modules_import_without_ros():
    for name in ("mole_vla_ros.ros.recorder_node", "mole_vla_ros.ros.record_keyboard"):
        mod = importlib.import_module(name)
        assert callable(mod.main)


def test_keys_map_to_recorder_commands():
    assert command_for_key("r", ask=lambda _: "open the drawer") == "start open the drawer"
    assert command_for_key("r", ask=lambda _: "") == "start"
    assert command_for_key("y") == "save success"
    assert command_for_key("n") == "save failure"
    assert command_for_key("d") == "discard"
    assert command_for_key("i", ask=lambda _: "") is None
    assert command_for_key("x") is None


def test_node_records_serialized_messages(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from mole_vla_ros.data.episode import EpisodeReader, list_episodes
    from mole_vla_ros.ros.recorder_node import build_node

    cfg = tmp_path / "rec.yaml"
    cfg.write_text(
        f"output_dir: {tmp_path / 'out'}\nmin_free_disk_gb: 0\n"
        "topics:\n  - {name: /test_rec/joint_states, type: sensor_msgs/msg/JointState, expected_hz: 100}\n"
    )
    rclpy.init()
    try:
        node, core = build_node(config_file=str(cfg))
        helper = rclpy.create_node("recorder_test_helper")
        pub = helper.create_publisher(JointState, "/test_rec/joint_states", 10)
        cmd = helper.create_publisher(String, "/mole_vla_recorder/command", 10)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(helper)

        def spin(seconds):
            end = time.time() + seconds
            while time.time() < end:
                executor.spin_once(timeout_sec=0.01)

        spin(1.0)  # discovery
        cmd.publish(String(data="start wave hello"))
        spin(0.5)
        assert core.state == "recording"
        for i in range(20):
            pub.publish(JointState(name=["fr3_joint1"], position=[float(i)]))
            spin(0.01)
        spin(0.3)
        cmd.publish(String(data="save success"))
        spin(0.5)
        (ep,) = list_episodes(tmp_path / "out")
        with EpisodeReader(ep) as r:
            positions = [m.msg.position[0] for m in r.decoded()]
            assert r.success is True and r.instruction == "wave hello"
        assert positions == [float(i) for i in range(20)]
    finally:
        rclpy.shutdown()
