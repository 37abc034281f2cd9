"""The policy node under real rclpy (runs with `colcon test` on a ROS 2 machine; skipped where rclpy is missing).

Covers what the ROS-free shell test cannot: parameter declaration and override handling by rclpy, real QoS
matching between publishers and the node's subscriptions, services over DDS, and the published message types.
Without ROS 2 installed, rclpy comes from PyPI wheels (see test_ros_messages_rclpy.py for the pip line).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("std_srvs")
pytest.importorskip("diagnostic_msgs")
pytest.importorskip("visualization_msgs")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from mole_vla_ros.robot.franka import READY_Q, describe  # noqa: E402
from mole_vla_ros.ros import conversions as conv  # noqa: E402
from mole_vla_ros.ros.messages import RclpyMessages  # noqa: E402
from mole_vla_ros.ros.policy_node import PolicyNodeShell, declare_and_read_parameters  # noqa: E402
from mole_vla_ros.ros.qos import profile  # noqa: E402

pytestmark = pytest.mark.ros
FR3 = describe("fr3")


class ScriptedPolicy:
    camera_names = ("front",)
    chunk_size = 8
    action_space = "delta_xyz_abs_rpy"
    control_dt = 0.1
    image_size = 32
    num_layers = 4

    def infer(self, inp):
        from mole_vla_ros.interfaces import PolicyOutput

        actions = np.tile([0.005, 0.0, 0.0, np.pi, 0.0, 0.0, 1.0], (self.chunk_size, 1))
        return PolicyOutput(actions, (1, 3), np.array([0.1, 0.4, 0.1, 0.4]), 4, {"total": 1.0})


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def test_invalid_parameter_value_refuses_to_start(ros):
    node = rclpy.create_node("mole_vla_policy", parameter_overrides=[Parameter("safety.dry_run", value="yes")])
    try:
        with pytest.raises(ValueError, match=r"'safety\.dry_run' must be true or false"):
            declare_and_read_parameters(node)
    finally:
        node.destroy_node()


def test_unknown_parameter_refuses_to_start(ros):
    node = rclpy.create_node("mole_vla_policy", parameter_overrides=[Parameter("saftey.dry_run", value=True)])
    try:
        with pytest.raises(ValueError, match="unknown parameter"):
            declare_and_read_parameters(node)
    finally:
        node.destroy_node()


def test_parameters_are_declared_with_descriptions(ros):
    node = rclpy.create_node("mole_vla_policy")
    try:
        settings = declare_and_read_parameters(node)
        assert settings.runtime.safety.dry_run is True
        (desc,) = node.describe_parameters(["safety.workspace_min"])
        assert desc.description
    finally:
        node.destroy_node()


def test_node_runs_on_real_topics_and_services(ros):
    from std_srvs.srv import SetBool

    node = rclpy.create_node("mole_vla_policy", parameter_overrides=[Parameter("instruction", value="push the cube")])
    settings = declare_and_read_parameters(node)
    shell = PolicyNodeShell(node, settings, policy=ScriptedPolicy(), executor="thread")
    peer = rclpy.create_node("peer")
    f = RclpyMessages()
    image_pub = peer.create_publisher(
        f.message_class("sensor_msgs/msg/Image"), "camera/front/image_raw", profile("camera")
    )
    joint_pub = peer.create_publisher(f.message_class("sensor_msgs/msg/JointState"), "joint_states", 10)
    pose_pub = peer.create_publisher(
        f.message_class("geometry_msgs/msg/PoseStamped"),
        "franka_robot_state_broadcaster/current_pose",
        profile("franka_best_effort"),
    )
    got: dict[str, list] = {"path": [], "diagnostics": []}
    peer.create_subscription(
        f.message_class("nav_msgs/msg/Path"), "/mole_vla_policy/predicted_path", got["path"].append, 10
    )
    peer.create_subscription(
        f.message_class("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", got["diagnostics"].append, 10
    )
    enable = peer.create_client(SetBool, "/mole_vla_policy/enable")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    try:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not (got["path"] and got["diagnostics"]):
            t = node.get_clock().now().nanoseconds * 1e-9
            image_pub.publish(conv.rgb_to_image_msg(f, np.full((32, 32, 3), 80, np.uint8), t, "cam"))
            joint_pub.publish(
                f.make(
                    "sensor_msgs/msg/JointState",
                    header=f.header(t, ""),
                    name=list(FR3.arm_joint_names),
                    position=READY_Q,
                )
            )
            pose = conv.Pose(np.array([0.5, 0.0, 0.4]), np.array([1.0, 0.0, 0.0, 0.0]))
            pose_pub.publish(conv.pose_stamped_msg(f, pose, t, "fr3_link0"))
            for _ in range(5):
                executor.spin_once(timeout_sec=0.01)
        assert got["path"], "no predicted path published"
        assert got["path"][-1].header.frame_id == "fr3_link0"
        assert got["diagnostics"], "no diagnostics published"
        assert node.count_publishers("cartesian_impedance_controller/target_pose") == 0  # dry run: no commander
        assert enable.wait_for_service(timeout_sec=5.0)
        future = enable.call_async(SetBool.Request(data=True))
        executor.spin_until_future_complete(future, timeout_sec=5.0)
        assert future.result().success and "DRY RUN" in future.result().message
    finally:
        shell.shutdown()
        executor.shutdown()
        peer.destroy_node()
        node.destroy_node()


def test_runtime_parameter_changes_and_read_only_parameters(ros):
    node = rclpy.create_node("mole_vla_policy")
    shell = PolicyNodeShell(node, declare_and_read_parameters(node), policy=ScriptedPolicy(), executor="inline")
    try:
        (ok,) = node.set_parameters([Parameter("instruction", value="stack the cups")])
        assert ok.successful and shell.runtime.instruction == "stack the cups"
        (ok,) = node.set_parameters([Parameter("policy.active_layers", value=3)])
        assert ok.successful and shell.runtime.active_layers == 3
        (bad,) = node.set_parameters([Parameter("policy.active_layers", value=9)])
        assert not bad.successful and "0..4" in bad.reason
        (frozen,) = node.set_parameters([Parameter("safety.dry_run", value=False)])
        assert not frozen.successful  # read-only: dry run cannot be switched off on a running node
        assert node.get_parameter("safety.dry_run").value is True
    finally:
        shell.shutdown()
        node.destroy_node()


def test_use_sim_time_follows_clock(ros):
    from rosgraph_msgs.msg import Clock

    node = rclpy.create_node("mole_vla_policy", parameter_overrides=[Parameter("use_sim_time", value=True)])
    shell = PolicyNodeShell(node, declare_and_read_parameters(node), policy=ScriptedPolicy(), executor="inline")
    peer = rclpy.create_node("clock_source")
    clock_pub = peer.create_publisher(Clock, "/clock", 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    try:
        assert shell.now() == 0.0  # no /clock yet: the control tick does nothing
        shell._on_control_tick()
        assert shell.io.last_diagnostics is None
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and shell.now() < 1234.0:
            clock_pub.publish(Clock(clock=RclpyMessages().time(1234.5)))
            executor.spin_once(timeout_sec=0.05)
        assert shell.now() == pytest.approx(1234.5)
    finally:
        shell.shutdown()
        executor.shutdown()
        peer.destroy_node()
        node.destroy_node()


def test_shipped_params_file_loads_through_rcl(tmp_path):
    """config/mole_vla.yaml as rcl's YAML parser reads it (types, `/**/` node key, empty strings, lists)."""
    from pathlib import Path

    from mole_vla_ros.ros.params import NodeConfig, NodeSettings
    from mole_vla_ros.runtime.config import RuntimeConfig

    params_file = Path(__file__).resolve().parent.parent / "config" / "mole_vla.yaml"
    rclpy.init(args=["--ros-args", "--params-file", str(params_file)])
    try:
        node = rclpy.create_node("mole_vla_policy", namespace="fr3_left")  # `/**/` must match in any namespace
        try:
            assert "safety.workspace_min" in node._parameter_overrides  # the file really reached this node
            settings = declare_and_read_parameters(node)
            assert settings.to_flat() == NodeSettings(NodeConfig(), RuntimeConfig()).to_flat()
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()


def _run_main(args: list[str], until: str | None = None, timeout: float = 120.0):
    """Run the console-script entry point in a subprocess; with `until`, SIGINT it once that text was logged."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = "import sys; from mole_vla_ros.ros.policy_node import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if until and until in line:
                proc.send_signal(signal.SIGINT)
                break
            if time.monotonic() > deadline:
                break
        rest, _ = proc.communicate(timeout=30)
        lines.append(rest or "")
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines)


def test_main_refuses_invalid_parameters_with_exit_code_2():
    # ("yes" would not do: ROS parses it as YAML 1.1, i.e. the boolean true)
    rc, out = _run_main(["--ros-args", "-p", "safety.dry_run:=maybe"])
    assert rc == 2, out
    assert "refusing to start" in out and "safety.dry_run" in out


def test_main_without_a_checkpoint_says_what_to_pass(tmp_path):
    rc, out = _run_main(["--ros-args", "-p", f"policy.checkpoint:={tmp_path / 'missing'}"])
    assert rc == 2 and "is not a directory" in out, out


def test_main_starts_with_a_checkpoint_and_stops_cleanly(tmp_path):
    pytest.importorskip("torch")
    import torch

    from mole_vla_ros.model.checkpoint import save_checkpoint
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import build_model
    from mole_vla_ros.model.normalization import ActionNormalizer

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny"
    save_checkpoint(
        str(ckpt), build_model(MoLeVLAConfig.preset("tiny", camera_names=("front",))), ActionNormalizer.identity(7)
    )
    args = ["--ros-args", "-p", f"policy.checkpoint:={ckpt}", "-p", "policy.device:=cpu"]
    rc, out = _run_main(args, until="ready:")
    assert "ready:" in out and "DRY RUN" in out, out
    assert rc == 0, out
