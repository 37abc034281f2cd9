"""Launch actions several launch files share (policy node, RViz, robot model), defined once.

Used by launch/*.launch.py inside their OpaqueFunction; `launch_ros` and ament are imported inside the functions,
so this module imports without ROS 2 like the rest of ros/.
"""

from __future__ import annotations

import os
from typing import Any

PACKAGE = "mole_vla_ros"
POLICY_EXECUTABLE = "mole_vla_policy"
POLICY_NODE_NAME = "mole_vla_policy"


def share_dir() -> str:
    from ament_index_python.packages import get_package_share_directory

    return get_package_share_directory(PACKAGE)


def policy_node(params_file: str, overrides: dict, namespace: str, extra_parameters: list | None = None,
                arguments: list | None = None) -> Any:  # fmt: skip
    """The `mole_vla_policy` node with `params_file` then `overrides` (later entries win)."""
    from launch_ros.actions import Node

    kwargs = {"arguments": arguments} if arguments else {}
    return Node(
        package=PACKAGE,
        executable=POLICY_EXECUTABLE,
        name=POLICY_NODE_NAME,
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[params_file, overrides, *(extra_parameters or [])],
        **kwargs,
    )


def rviz_node(namespace: str, use_sim_time: bool) -> Any:
    """RViz with config/mole_vla.rviz (camera, robot model, predicted trajectory, markers)."""
    from launch_ros.actions import Node

    return Node(
        package="rviz2",
        executable="rviz2",
        name="mole_vla_rviz",
        namespace=namespace,
        arguments=["-d", os.path.join(share_dir(), "config", "mole_vla.rviz")],
        parameters=[{"use_sim_time": use_sim_time}],
        output="log",
    )


def robot_model_node(robot_type: str, namespace: str, use_sim_time: bool) -> Any:
    """robot_state_publisher with franka_description's xacro for `robot_type` (fr3 | panda) and the hand."""
    from ament_index_python.packages import get_package_share_directory
    from launch.substitutions import Command, FindExecutable
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    xacro_file = os.path.join(
        get_package_share_directory("franka_description"), "robots", robot_type, f"{robot_type}.urdf.xacro"
    )
    description = Command([FindExecutable(name="xacro"), " ", xacro_file, " hand:=true"])
    return Node(
        package="robot_state_publisher",
        executable="robot_state_publisher",
        namespace=namespace,
        parameters=[{"robot_description": ParameterValue(description, value_type=str), "use_sim_time": use_sim_time}],
    )
