"""Start the MoLe-VLA policy node on a robot's topics (dry run by default), optionally with RViz.

    ros2 launch mole_vla_ros mole_vla.launch.py instruction:="pick up the red cube"
    ros2 launch mole_vla_ros mole_vla.launch.py namespace:=fr3_left checkpoint:=/data/ckpt output_mode:=joint_trajectory

Parameters come from `params_file` (config/mole_vla.yaml by default); a launch argument left empty keeps the file's
value, a non-empty one overrides it. Actuation needs BOTH dry_run:=false (or safety.dry_run: false in the file) and a
call to the node's enable service: `ros2 service call /mole_vla_policy/enable std_srvs/srv/SetBool "{data: true}"`.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from mole_vla_ros.ros.launch_parts import policy_node, rviz_node, share_dir

PACKAGE = "mole_vla_ros"
EXECUTABLE = "mole_vla_policy"
NODE_NAME = "mole_vla_policy"

# (launch argument, default, description, parameter it overrides or None)
ARGUMENTS = [
    ("params_file", "", "ROS 2 params file for the node; empty = the package's config/mole_vla.yaml", None),
    ("checkpoint", "", "MoLe-VLA checkpoint directory; empty = value in params_file", "policy.checkpoint"),
    ("device", "", "torch device (auto, cpu, cuda, cuda:N); empty = value in params_file", "policy.device"),
    ("instruction", "", "task instruction, e.g. 'pick up the red cube'; empty = value in params_file", "instruction"),
    (
        "camera_topics",
        "",
        "image topics as a YAML list, one per camera name, e.g. '[camera/front/image_raw]'",
        "topics.cameras",
    ),
    (
        "camera_names",
        "",
        "camera names as a YAML list matching the checkpoint's views, e.g. '[front, wrist]'",
        "observation.camera_names",
    ),
    ("camera_transport", "", "raw (sensor_msgs/Image) or compressed (CompressedImage)", "topics.camera_transport"),
    ("joint_states_topic", "", "sensor_msgs/JointState topic with the arm joints", "topics.joint_states"),
    ("ee_pose_topic", "", "PoseStamped EE pose topic; empty keeps the file value", "topics.ee_pose"),
    (
        "output_mode",
        "",
        "pose (PoseStamped target stream) or joint_trajectory (JointTrajectory with velocities)",
        "output_mode",
    ),
    ("dry_run", "", "true: publish predictions only, command nothing; false: commands after enable", "safety.dry_run"),
    ("active_layers", "", "LLM layers STAR runs per step (0 = checkpoint default)", "policy.active_layers"),
    ("robot_type", "", "fr3 or panda (frames and joint names)", "frames.robot_type"),
    ("namespace", "", "robot namespace the node runs in (topics are relative to it)", None),
    ("use_sim_time", "false", "use /clock (simulation, bag replay)", None),
    ("use_rviz", "false", "start RViz with config/mole_vla.rviz", None),
    ("log_level", "info", "node log level (debug, info, warn, error)", None),
]


def _parse_override(name: str, text: str):
    """A launch-argument string as the parameter value it stands for (YAML scalar or list)."""
    import yaml

    value = yaml.safe_load(text)
    if name in ("instruction", "policy.checkpoint") or isinstance(value, (dict, type(None))):
        return text  # free text stays text even when it looks like YAML
    return value


def _launch_setup(context, *args, **kwargs):
    share = share_dir()
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(share, "config", "mole_vla.yaml")
    overrides = {}
    for arg, _default, _desc, param in ARGUMENTS:
        if param is None:
            continue
        text = LaunchConfiguration(arg).perform(context)
        if text != "":
            overrides[param] = _parse_override(param, text)
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    namespace = LaunchConfiguration("namespace").perform(context)
    log_level = LaunchConfiguration("log_level").perform(context)
    actions = [
        policy_node(
            params_file,
            overrides,
            namespace,
            extra_parameters=[{"use_sim_time": use_sim_time}],
            arguments=["--ros-args", "--log-level", log_level],
        )
    ]
    if LaunchConfiguration("use_rviz").perform(context).lower() == "true":
        actions.append(rviz_node(namespace, use_sim_time))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc, _ in ARGUMENTS]
        + [OpaqueFunction(function=_launch_setup)]
    )
