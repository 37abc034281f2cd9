"""Franka FR3 / Panda facts, defined once and imported everywhere they are used.

Sources: franka_description (frames, joint names), libfranka rate_limiting.h and the FR3 robot specification
(limits). See ../shared/spec/ros2_franka.md sections 2.1, 2.5-2.7.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROBOT_TYPES = ("fr3", "panda")


@dataclass(frozen=True)
class FrankaLimits:
    """Hardware limits of one arm model. Commands must stay below these with margins (see runtime config)."""

    q_min: np.ndarray  # [7] rad
    q_max: np.ndarray  # [7] rad
    qd_max: np.ndarray  # [7] rad/s
    qdd_max: np.ndarray  # [7] rad/s^2
    qddd_max: np.ndarray  # [7] rad/s^3
    cart_trans_vel: float  # m/s
    cart_trans_acc: float  # m/s^2
    cart_trans_jerk: float  # m/s^3
    cart_rot_vel: float  # rad/s
    cart_rot_acc: float  # rad/s^2
    cart_rot_jerk: float  # rad/s^3
    gripper_max_width: float  # m (both fingers together)


def _a(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    arr.setflags(write=False)
    return arr


FR3_LIMITS = FrankaLimits(
    q_min=_a([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]),
    q_max=_a([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]),
    qd_max=_a([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
    qdd_max=_a([10.0] * 7),
    qddd_max=_a([5000.0] * 7),
    cart_trans_vel=3.0,
    cart_trans_acc=9.0,
    cart_trans_jerk=4500.0,
    cart_rot_vel=2.5,
    cart_rot_acc=17.0,
    cart_rot_jerk=8500.0,
    gripper_max_width=0.08,
)

PANDA_LIMITS = FrankaLimits(
    q_min=_a([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
    q_max=_a([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
    qd_max=_a([2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100]),
    qdd_max=_a([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0]),
    qddd_max=_a([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0]),
    cart_trans_vel=1.7,
    cart_trans_acc=13.0,
    cart_trans_jerk=6500.0,
    cart_rot_vel=2.5,
    cart_rot_acc=25.0,
    cart_rot_jerk=12500.0,
    gripper_max_width=0.08,
)

# A comfortable, reachable start configuration (franka's "ready" pose); FR3 joint 6 limits admit it too.
READY_Q = _a([0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398])


@dataclass(frozen=True)
class FrankaDescription:
    """Names and frames of one arm as franka_description spells them (prefix `fr3` or `panda`)."""

    robot_type: str
    limits: FrankaLimits

    def __post_init__(self):
        if self.robot_type not in ROBOT_TYPES:
            raise ValueError(f"robot_type must be one of {ROBOT_TYPES}, got {self.robot_type!r}")

    @property
    def arm_joint_names(self) -> tuple[str, ...]:
        return tuple(f"{self.robot_type}_joint{i}" for i in range(1, 8))

    @property
    def finger_joint_names(self) -> tuple[str, ...]:
        return (f"{self.robot_type}_finger_joint1", f"{self.robot_type}_finger_joint2")

    @property
    def base_frame(self) -> str:
        return f"{self.robot_type}_link0"

    @property
    def flange_frame(self) -> str:
        return f"{self.robot_type}_link8"

    @property
    def hand_frame(self) -> str:
        return f"{self.robot_type}_hand"

    @property
    def tcp_frame(self) -> str:
        return f"{self.robot_type}_hand_tcp"


# franka_hand_arguments.xacro: fr3_hand_tcp sits 0.1034 m along z of fr3_hand; the hand is rotated -45 deg about z
# relative to link8 (flange).
HAND_TCP_OFFSET_Z = 0.1034
FLANGE_TO_HAND_YAW = -np.pi / 4


def describe(robot_type: str = "fr3") -> FrankaDescription:
    """The description of `robot_type` ('fr3' or 'panda')."""
    if robot_type not in ROBOT_TYPES:
        raise ValueError(f"robot_type must be one of {ROBOT_TYPES}, got {robot_type!r}")
    return FrankaDescription(robot_type, FR3_LIMITS if robot_type == "fr3" else PANDA_LIMITS)


# Default topic names, relative to the robot namespace (franka_ros2 v2.x bring-up; cameras are the user's).
class Topics:
    JOINT_STATES = "joint_states"  # merged arm + gripper, 30 Hz default
    MEASURED_JOINT_STATES = "franka_robot_state_broadcaster/measured_joint_states"  # best_effort, up to 1 kHz
    CURRENT_POSE = "franka_robot_state_broadcaster/current_pose"  # PoseStamped, best_effort, depth 1
    ROBOT_STATE = "franka_robot_state_broadcaster/robot_state"  # franka_msgs/FrankaRobotState, reliable
    GRIPPER_JOINT_STATES = "franka_gripper/joint_states"  # 15 Hz, each finger = width / 2
    GRIPPER_MOVE_ACTION = "franka_gripper/move"
    GRIPPER_GRASP_ACTION = "franka_gripper/grasp"
    JTC_COMMAND = "fr3_arm_controller/joint_trajectory"  # trajectory_msgs/JointTrajectory
    CARTESIAN_TARGET_POSE = "cartesian_impedance_controller/target_pose"  # crisp-style PoseStamped stream
    INSTRUCTION = "mole_vla/instruction"  # std_msgs/String, transient-local
    TELEOP_TARGET_POSE = "teleop/target_pose"  # PoseStamped commanded by the teleop device / scripted expert
    TELEOP_GRIPPER = "teleop/gripper"  # std_msgs/Float32 gripper command in [0, 1] (1 = open)

    @staticmethod
    def camera_image(name: str) -> str:
        return f"camera/{name}/image_raw"

    @staticmethod
    def camera_info(name: str) -> str:
        return f"camera/{name}/camera_info"
