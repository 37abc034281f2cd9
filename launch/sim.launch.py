"""The whole system without a robot: the simulated FR3 tabletop, the MoLe-VLA policy node and RViz.

    ros2 launch mole_vla_ros sim.launch.py task:=pick checkpoint:=/data/runs/pick/ckpt
    ros2 service call /mole_vla_policy/enable std_srvs/srv/SetBool "{data: true}"     # start moving

`mole_vla_sim_robot` publishes what franka_ros2 and two cameras publish (joint_states, current_pose, gripper joint
states, camera/scene|wrist/image_raw, /tf_static), the episode's instruction (latched) and /clock; it follows the
policy node's target poses (or joint trajectories) and franka_gripper move/grasp goals, and starts a new episode
after success or the task's time limit. The policy node runs on sim time with the simulator's cameras. Like on the
robot, nothing moves until the enable service is called (dry_run:=true keeps it from moving even then).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mole_vla_ros.ros.launch_parts import policy_node, robot_model_node, rviz_node, share_dir

PACKAGE = "mole_vla_ros"
SIM_EXECUTABLE = "mole_vla_sim_robot"
POLICY_EXECUTABLE = "mole_vla_policy"
CAMERAS = ["scene", "wrist"]

ARGUMENTS = [
    ("task", "pick", "simulated task: pick (red or green cube) or stack (one cube on the other)"),
    ("seed", "0", "seed of the first episode (episode i uses seed + i)"),
    ("control_hz", "10.0", "simulator camera / control rate in Hz"),
    ("image_size", "224", "square camera resolution in pixels (the model resizes to its own)"),
    ("realtime_factor", "1.0", "sim seconds per wall second (lower it when inference is slow)"),
    ("robot_type", "fr3", "fr3 or panda (joint and frame names)"),
    ("checkpoint", "", "MoLe-VLA checkpoint directory; empty = value in params_file"),
    ("params_file", "", "ROS 2 params file for the policy node; empty = the package's config/mole_vla.yaml"),
    ("output_mode", "pose", "pose (target_pose stream) or joint_trajectory; the sim robot obeys both"),
    ("dry_run", "false", "true: the policy node only publishes predictions, even after enable"),
    ("use_policy", "true", "start the policy node (false: only the simulated robot, e.g. for teleop or recording)"),
    ("use_rviz", "true", "start RViz with config/mole_vla.rviz"),
    ("publish_robot_model", "false", "run robot_state_publisher from franka_description (needs it installed)"),
    ("namespace", "", "robot namespace for both nodes"),
]


def _launch_setup(context, *args, **kwargs):
    share = share_dir()
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    namespace = get("namespace")
    control_hz = float(get("control_hz"))
    actions = [
        Node(
            package=PACKAGE,
            executable=SIM_EXECUTABLE,
            name="mole_vla_sim_robot",
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[
                {
                    "task": get("task"),
                    "seed": int(get("seed")),
                    "control_hz": control_hz,
                    "image_size": int(get("image_size")),
                    "cameras": CAMERAS,
                    "realtime_factor": float(get("realtime_factor")),
                    "robot_type": get("robot_type"),
                    "publish_clock": True,
                    # robot_state_publisher publishes the hand's TF through the links; two parents would clash
                    "publish_tf": get("publish_robot_model").lower() != "true",
                }
            ],
        )
    ]
    if get("use_policy").lower() == "true":
        overrides = {
            "use_sim_time": True,
            "topics.cameras": [f"camera/{c}/image_raw" for c in CAMERAS],
            "observation.camera_names": CAMERAS,
            "observation.camera_rate_hz": control_hz,
            # the simulator publishes no FrankaRobotState; the interlock has nothing to watch
            "topics.robot_state": "",
            "frames.robot_type": get("robot_type"),
            "output_mode": get("output_mode"),
            "safety.dry_run": get("dry_run").lower() == "true",
            # the table top is the base plane (z = 0): the TCP must reach a few mm above it to grasp the cubes
            "safety.workspace_min": [0.2, -0.5, 0.0],
        }
        if get("checkpoint"):
            overrides["policy.checkpoint"] = get("checkpoint")
        params_file = get("params_file") or os.path.join(share, "config", "mole_vla.yaml")
        actions.append(policy_node(params_file, overrides, namespace))
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
