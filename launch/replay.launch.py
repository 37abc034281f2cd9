"""Replay a recorded rosbag2 through the live policy node on simulated time, with RViz.

    ros2 launch mole_vla_ros replay.launch.py bag:=/data/episodes/ep_0003 instruction:="open the drawer"

`ros2 bag play --clock` publishes the bag's topics and /clock; the node runs with use_sim_time, so its control tick,
staleness checks and marker fading follow bag time (rate:=0.5 slows everything down consistently). The node stays in
dry run: it publishes predictions, markers and diagnostics, never commands. For a deterministic offline replay without
ROS 2 use `mole-vla replay BAG` (same runtime core, same parameter file).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from mole_vla_ros.ros.launch_parts import policy_node, robot_model_node, rviz_node, share_dir

PACKAGE = "mole_vla_ros"
EXECUTABLE = "mole_vla_policy"
NODE_NAME = "mole_vla_policy"

ARGUMENTS = [
    ("bag", "", "path of the rosbag2 directory (or .mcap file) to play; required"),
    ("rate", "1.0", "playback rate (ros2 bag play --rate)"),
    ("start_offset", "0.0", "seconds into the bag to start (ros2 bag play --start-offset)"),
    ("topics", "", "space-separated topics to play; empty = all (leave out recorded command topics if any)"),
    ("loop", "false", "replay the bag in a loop"),
    ("params_file", "", "ROS 2 params file for the node; empty = the package's config/mole_vla.yaml"),
    ("checkpoint", "", "MoLe-VLA checkpoint directory; empty = value in params_file"),
    ("instruction", "", "task instruction; empty = value in params_file or the bag's latched instruction"),
    ("namespace", "", "robot namespace the bag's topics live in"),
    ("use_rviz", "true", "start RViz with config/mole_vla.rviz"),
    ("publish_robot_model", "false", "run robot_state_publisher from franka_description (needs it installed)"),
    ("robot_type", "fr3", "fr3 or panda (robot model and frames)"),
]


def _launch_setup(context, *args, **kwargs):
    share = share_dir()
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    bag = get("bag")
    if not bag:
        raise RuntimeError("replay.launch.py needs bag:=<path to a rosbag2 directory or .mcap file>")
    play = ["ros2", "bag", "play", bag, "--clock", "--rate", get("rate"), "--start-offset", get("start_offset")]
    if get("topics").strip():
        play += ["--topics", *get("topics").split()]
    if get("loop").lower() == "true":
        play.append("--loop")
    namespace = get("namespace")
    overrides = {"use_sim_time": True, "safety.dry_run": True, "frames.robot_type": get("robot_type")}
    if get("checkpoint"):
        overrides["policy.checkpoint"] = get("checkpoint")
    if get("instruction"):
        overrides["instruction"] = get("instruction")
    params_file = get("params_file") or os.path.join(share, "config", "mole_vla.yaml")
    actions = [policy_node(params_file, overrides, namespace), ExecuteProcess(cmd=play, output="screen")]
    if get("use_rviz").lower() == "true":
        actions.append(rviz_node(namespace, use_sim_time=True))
    if get("publish_robot_model").lower() == "true":
        actions.append(robot_model_node(get("robot_type"), namespace, use_sim_time=True))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS]
        + [OpaqueFunction(function=_launch_setup)]
    )
