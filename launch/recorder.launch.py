"""Record teleoperated demonstrations into rosbag2/MCAP episodes.

    ros2 launch mole_vla_ros recorder.launch.py output_dir:=/data/demos
    ros2 launch mole_vla_ros recorder.launch.py robot_namespace:=fr3_left config_file:=/path/my_recorder.yaml

Then, in the recorder's terminal or another one: `ros2 run mole_vla_ros mole_vla_record_keys` (r start, s stop,
y/n save as success/failure, d discard), or
`ros2 topic pub --once /mole_vla_recorder/command std_msgs/msg/String "{data: 'start open the drawer'}"`.
What is recorded (topics, QoS, expected rates, cameras) is set in config_file (config/recorder.yaml by default).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "mole_vla_ros"
EXECUTABLE = "mole_vla_recorder"
NODE_NAME = "mole_vla_recorder"

ARGUMENTS = [
    ("config_file", "", "recorder YAML (topics, QoS, rates, limits); empty = the package's config/recorder.yaml"),
    ("output_dir", "", "where episodes are written; empty = output_dir in config_file"),
    ("robot_namespace", "", "franka_ros2 robot namespace relative topic names resolve under; empty = config value"),
    ("instruction_topic", "mole_vla/instruction", "std_msgs/String topic that sets the next episode's instruction"),
    ("use_sim_time", "false", "stamp receive times with /clock (simulation, bag replay)"),
    ("log_level", "info", "node log level (debug, info, warn, error)"),
]


def _launch_setup(context, *args, **kwargs):
    share = get_package_share_directory(PACKAGE)
    config_file = LaunchConfiguration("config_file").perform(context) or os.path.join(share, "config", "recorder.yaml")
    params = {
        "config_file": config_file,
        "output_dir": LaunchConfiguration("output_dir").perform(context),
        "robot_namespace": LaunchConfiguration("robot_namespace").perform(context),
        "instruction_topic": LaunchConfiguration("instruction_topic").perform(context),
        "use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true",
    }
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            output="screen",
            emulate_tty=True,
            parameters=[params],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level").perform(context)],
        )
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS]
        + [OpaqueFunction(function=_launch_setup)]
    )
