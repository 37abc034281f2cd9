"""Replay a recorded rosbag2 through the live policy node on simulated time, with RViz.

    ros2 launch mole_vla_ros replay.launch.py bag:=/data/episodes/ep_0003 instruction:="open the drawer"

`ros2 bag play --clock` publishes the bag's topics and /clock; the node runs with use_sim_time, so its control tick,
staleness checks and marker fading follow bag time (rate:=0.5 slows everything down consistently). The node stays in
dry run: it publishes predictions, markers and diagnostics, never commands. For a deterministic offline replay without
ROS 2 use `mole-vla replay BAG` (same runtime core, same parameter file).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

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
    share = get_package_share_directory(PACKAGE)
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
    actions = [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides],
        ),
        ExecuteProcess(cmd=play, output="screen"),
    ]
    if get("use_rviz").lower() == "true":
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="mole_vla_rviz",
                arguments=["-d", os.path.join(share, "config", "mole_vla.rviz")],
                parameters=[{"use_sim_time": True}],
                output="log",
            )
        )
    if get("publish_robot_model").lower() == "true":
        from launch.substitutions import Command, FindExecutable
        from launch_ros.parameter_descriptions import ParameterValue

        robot_type = get("robot_type")
        xacro_file = os.path.join(
            get_package_share_directory("franka_description"), "robots", robot_type, f"{robot_type}.urdf.xacro"
        )
        description = Command([FindExecutable(name="xacro"), " ", xacro_file, " hand:=true"])
        actions.append(
            Node(
                package="robot_state_publisher",
                executable="robot_state_publisher",
                namespace=namespace,
                parameters=[{"robot_description": ParameterValue(description, value_type=str), "use_sim_time": True}],
            )
        )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS]
        + [OpaqueFunction(function=_launch_setup)]
    )
