"""The sim robot as a ROS stand-in: its bridge (messages in, messages out) without ROS, its launch file, its node."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("franky_sim") is None:
    pytest.skip("simulator extra not installed (make venv installs mujoco and franky-sim)", allow_module_level=True)

from mole_vla_ros.data.typestore import get_typestore
from mole_vla_ros.robot.franka import Topics, describe
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.messages import RosbagsMessages
from mole_vla_ros.ros.params import load_settings
from mole_vla_ros.sim.config import SimConfig
from mole_vla_ros.sim.env import TabletopSim
from mole_vla_ros.sim.ik import quat_xyzw_to_mat
from mole_vla_ros.sim.messages import pose_msg
from mole_vla_ros.sim.robot_bridge import SimRobotBridge

ROOT = Path(__file__).resolve().parent.parent
FR3 = describe("fr3")


@pytest.fixture(scope="module")
def bridge():
    factory = RosbagsMessages(get_typestore())
    with TabletopSim(SimConfig(image_size=48), "pick") as sim:
        yield SimRobotBridge(sim, factory, seed=3)


def _target(factory, t, position, quaternion, frame="fr3_link0"):
    return factory.make(
        "geometry_msgs/msg/PoseStamped", header=factory.header(t, frame), pose=pose_msg(factory, position, quaternion)
    )


def test_bridge_publishes_the_robot_topics_and_follows_target_poses(bridge):
    latched = bridge.reset()
    assert {m.topic for m in latched} == {Topics.INSTRUCTION, "/tf_static"}
    assert latched[0].msg.data == bridge.sim.instruction
    f = bridge.factory
    start = bridge.last_obs.ee_pose.pose
    goal = start.position + np.array([0.05, 0.05, -0.1])
    assert bridge.on_target_pose(_target(f, bridge.sim.time, goal, start.quaternion))
    for _ in range(12):
        msgs = {m.topic: m for m in bridge.tick()}
    assert set(msgs) >= {Topics.JOINT_STATES, Topics.CURRENT_POSE, Topics.camera_image("scene"), "/tf"}
    pose = conv.pose_stamped_to_sample(msgs[Topics.CURRENT_POSE].msg)
    assert np.linalg.norm(pose.pose.position - goal) < 0.003
    assert conv.header_seconds(msgs[Topics.CURRENT_POSE].msg) == pytest.approx(bridge.sim.time)
    # TF: fr3_link0 -> fr3_hand (/tf) then fr3_hand -> fr3_hand_tcp (/tf_static) lands on the published TCP pose
    (hand,) = msgs["/tf"].msg.transforms
    (tcp,) = [t for t in latched[1].msg.transforms if t.child_frame_id == "fr3_hand_tcp"]
    assert (hand.header.frame_id, hand.child_frame_id, tcp.header.frame_id) == ("fr3_link0", "fr3_hand", "fr3_hand")
    h = conv.transform_to_sample(hand).pose
    offset = np.array([tcp.transform.translation.x, tcp.transform.translation.y, tcp.transform.translation.z])
    np.testing.assert_allclose(h.position + quat_xyzw_to_mat(h.quaternion) @ offset, pose.pose.position, atol=1e-6)
    assert not bridge.on_target_pose(_target(f, 0.0, goal, start.quaternion, frame="world"))
    assert bridge.rejected == {"pose": 1}


def test_bridge_follows_a_joint_trajectory_and_gripper_goals(bridge):
    bridge.reset()
    f = bridge.factory
    q0 = bridge.last_obs.joint_state.position[:7]
    q1 = q0 + np.array([0.2, 0.1, 0.0, 0.1, 0.0, -0.1, 0.3])
    names = list(reversed(FR3.arm_joint_names))  # matched by name, not position
    point = f.make("trajectory_msgs/msg/JointTrajectoryPoint", positions=q1[::-1], time_from_start=f.duration(0.5))
    traj = f.make(
        "trajectory_msgs/msg/JointTrajectory", header=f.header(bridge.sim.time, ""), joint_names=names, points=[point]
    )
    assert bridge.on_joint_trajectory(traj)
    assert bridge.on_gripper_move(0.02, 0.1)
    for _ in range(15):
        bridge.tick()
    obs = bridge.last_obs
    np.testing.assert_allclose(obs.joint_state.position[:7], q1, atol=0.01)
    assert obs.gripper.width == pytest.approx(0.02, abs=0.003)
    assert not bridge.on_gripper_move(0.5, 0.1)  # wider than the hand opens
    assert bridge.commands_received["joint_trajectory"] == 1 and bridge.commands_received["move"] == 1


def test_bridge_obeys_the_teleop_gripper_topic(bridge):
    bridge.reset()
    f = bridge.factory
    assert bridge.on_gripper_command(f.make("std_msgs/msg/Float32", data=0.0))  # close: a grasp
    for _ in range(10):
        bridge.tick(render=False)
    assert bridge.last_obs.gripper.width < 0.01
    assert bridge.on_gripper_command(f.make("std_msgs/msg/Float32", data=1.0))  # open: a move to full width
    for _ in range(10):
        bridge.tick(render=False)
    assert bridge.last_obs.gripper.width > 0.075
    assert not bridge.on_gripper_command(f.make("std_msgs/msg/Float32", data=2.0))


def test_bridge_keeps_sim_time_monotonic_across_episodes(bridge):
    bridge.reset()
    for _ in range(5):
        bridge.tick(render=False)
    before = bridge.sim.time
    latched = bridge.reset()
    assert bridge.sim.time > before  # /clock never runs backwards
    assert conv.header_seconds(latched[1].msg.transforms[0]) == pytest.approx(bridge.sim.time)
    clock = bridge.clock()
    assert clock.clock.sec + clock.clock.nanosec * 1e-9 == pytest.approx(bridge.sim.time)
    assert bridge.status()["episode"] == bridge.episode


# ------------------------------------------------------------------------------------------------ launch file


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _run_sim_launch(tmp_path, monkeypatch, **args):
    """Execute launch/sim.launch.py against small stand-ins for the launch API (no ROS 2 here)."""
    mods = {n: types.ModuleType(n) for n in ("launch", "launch.actions", "launch.substitutions", "launch_ros",
                                              "launch_ros.actions", "ament_index_python",
                                              "ament_index_python.packages")}  # fmt: skip
    mods["launch"].LaunchDescription = list
    for cls in ("DeclareLaunchArgument", "OpaqueFunction"):
        setattr(mods["launch.actions"], cls, type(cls, (_Recorder,), {}))
    mods["launch_ros.actions"].Node = type("Node", (_Recorder,), {})

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch.substitutions"].Command = type("Command", (_Recorder,), {})
    mods["launch.substitutions"].FindExecutable = type("FindExecutable", (_Recorder,), {})
    mods["launch_ros.parameter_descriptions"] = types.ModuleType("launch_ros.parameter_descriptions")
    mods["launch_ros.parameter_descriptions"].ParameterValue = type("ParameterValue", (_Recorder,), {})
    mods["ament_index_python.packages"].get_package_share_directory = lambda pkg: str(tmp_path / pkg)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("sim_launch", ROOT / "launch" / "sim.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description()
    declared = {
        e.kwargs.get("name", e.args[0] if e.args else None): e.kwargs
        for e in entities
        if type(e).__name__ == "DeclareLaunchArgument"
    }
    assert all(d["description"] for d in declared.values())
    context = {name: d["default_value"] for name, d in declared.items()}
    assert set(args) <= set(context)
    context.update(args)
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    return opaque.kwargs["function"](context)


def test_sim_launch_wires_the_policy_node_to_the_sim_robots_topics(tmp_path, monkeypatch):
    actions = _run_sim_launch(tmp_path, monkeypatch, task="stack", checkpoint="/data/ckpt", control_hz="20.0")
    by_exe = {a.kwargs["executable"]: a.kwargs for a in actions}
    assert set(by_exe) == {"mole_vla_sim_robot", "mole_vla_policy", "rviz2"}
    scripts = (ROOT / "setup.py").read_text()
    assert "mole_vla_sim_robot = mole_vla_ros.ros.sim_robot_node:main" in scripts
    (sim_params,) = by_exe["mole_vla_sim_robot"]["parameters"]
    assert sim_params["task"] == "stack" and sim_params["control_hz"] == 20.0 and sim_params["publish_tf"] is True
    from mole_vla_ros.ros.sim_robot_node import PARAMETERS

    assert set(sim_params) <= set(PARAMETERS)
    params_file, overrides = by_exe["mole_vla_policy"]["parameters"]
    assert params_file.endswith("config/mole_vla.yaml") and overrides["use_sim_time"] is True
    # every override is a real policy-node parameter with a valid value
    settings = load_settings(
        ROOT / "config" / "mole_vla.yaml", {k: v for k, v in overrides.items() if k != "use_sim_time"}
    )
    assert settings.runtime.safety.dry_run is False and settings.runtime.observation.camera_names == ("scene", "wrist")
    # and the policy node listens where the sim robot publishes / commands go where the sim robot listens
    topics = settings.node.topics
    assert list(topics.cameras) == [Topics.camera_image("scene"), Topics.camera_image("wrist")]
    assert topics.joint_states == Topics.JOINT_STATES and topics.ee_pose == Topics.CURRENT_POSE
    assert topics.pose_command == Topics.CARTESIAN_TARGET_POSE
    assert topics.joint_trajectory == Topics.JTC_COMMAND
    assert topics.instruction == Topics.INSTRUCTION
    assert topics.gripper_actions + "/move" == Topics.GRIPPER_MOVE_ACTION


def test_sim_launch_with_robot_model_hands_tf_to_robot_state_publisher(tmp_path, monkeypatch):
    actions = _run_sim_launch(tmp_path, monkeypatch, publish_robot_model="true")
    by_exe = {a.kwargs["executable"]: a.kwargs for a in actions}
    assert "robot_state_publisher" in by_exe
    assert by_exe["mole_vla_sim_robot"]["parameters"][0]["publish_tf"] is False


def test_sim_launch_without_policy_or_rviz(tmp_path, monkeypatch):
    actions = _run_sim_launch(tmp_path, monkeypatch, use_policy="false", use_rviz="false", namespace="fr3_sim")
    (only,) = actions
    assert only.kwargs["executable"] == "mole_vla_sim_robot" and only.kwargs["namespace"] == "fr3_sim"


# ------------------------------------------------------------------------------------------------ the node itself


def test_node_module_imports_without_ros():
    module = importlib.import_module("mole_vla_ros.ros.sim_robot_node")
    assert callable(module.main)
    assert "rclpy" not in module.__dict__


def test_node_runs_with_rclpy():
    """On a ROS 2 machine: the node process publishes the robot's joint states with the FR3 joint names."""
    rclpy = pytest.importorskip("rclpy")
    import subprocess

    from sensor_msgs.msg import JointState

    node = subprocess.Popen(
        [sys.executable, "-m", "mole_vla_ros.ros.sim_robot_node", "--ros-args", "-p", "image_size:=64",
         "-p", "realtime_factor:=5.0"]
    )  # fmt: skip
    rclpy.init()
    try:
        received = []
        listener = rclpy.create_node("sim_robot_test_listener")
        listener.create_subscription(JointState, "joint_states", received.append, 10)
        for _ in range(300):  # up to 30 s: the node compiles the scene first
            rclpy.spin_once(listener, timeout_sec=0.1)
            if received:
                break
        assert received and list(received[0].name) == list(FR3.arm_joint_names + FR3.finger_joint_names)
    finally:
        rclpy.shutdown()
        node.terminate()
        node.wait(timeout=10)
