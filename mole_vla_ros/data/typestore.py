"""One rosbags type store for every bag this package reads or writes: ROS 2 Humble plus franka_msgs and friends.

`get_typestore()` returns a cached `rosbags.typesys.store.Typestore` built from `Stores.ROS2_HUMBLE` (standard
messages: sensor_msgs, geometry_msgs, std_msgs, ...) with the message types Humble's store lacks registered from
their `.msg` text:

- franka_msgs (franka_ros2 v2.x): `FrankaRobotState` and the messages it nests, `GraspEpsilon`, and the gripper action
  parts `franka_msgs/action/{Move,Grasp,Homing}_{Goal,Result,Feedback}` (ROS 2 names action sub-messages this way;
  rosbags keeps the `/action/` segment).
- control_msgs `GripperCommand` (msg and action parts) for MoveIt-style grippers.
- std_srvs `Trigger` / `SetBool` request and response, so service payloads can be built and logged without rclpy.

Message classes have the same field names as rclpy's, so code written against them reads like node code:

    ts = get_typestore()
    State = ts.types["franka_msgs/msg/FrankaRobotState"]
    raw = ts.serialize_cdr(msg, "franka_msgs/msg/FrankaRobotState")
"""

from __future__ import annotations

import functools

from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.store import Typestore

# franka_msgs definitions, copied field for field from franka_ros2 (franka_msgs/msg, franka_msgs/action).
# Field order and types matter: CDR is positional, so a mismatch silently garbles every field after it.
_FRANKA_MSGS: dict[str, str] = {
    "franka_msgs/msg/CollisionIndicators": """
geometry_msgs/Vector3 is_cartesian_linear_collision
geometry_msgs/Vector3 is_cartesian_angular_collision
geometry_msgs/Vector3 is_cartesian_linear_contact
geometry_msgs/Vector3 is_cartesian_angular_contact
float64[7] is_joint_collision
float64[7] is_joint_contact
""",
    "franka_msgs/msg/Elbow": """
float64[2] position
float64[2] desired_position
float64[2] commanded_position
float64[2] commanded_velocity
float64[2] commanded_acceleration
""",
    "franka_msgs/msg/Errors": """
bool joint_position_limits_violation
bool cartesian_position_limits_violation
bool self_collision_avoidance_violation
bool joint_velocity_violation
bool cartesian_velocity_violation
bool force_control_safety_violation
bool joint_reflex
bool cartesian_reflex
bool max_goal_pose_deviation_violation
bool max_path_pose_deviation_violation
bool cartesian_velocity_profile_safety_violation
bool joint_position_motion_generator_start_pose_invalid
bool joint_motion_generator_position_limits_violation
bool joint_motion_generator_velocity_limits_violation
bool joint_motion_generator_velocity_discontinuity
bool joint_motion_generator_acceleration_discontinuity
bool cartesian_position_motion_generator_start_pose_invalid
bool cartesian_motion_generator_elbow_limit_violation
bool cartesian_motion_generator_velocity_limits_violation
bool cartesian_motion_generator_velocity_discontinuity
bool cartesian_motion_generator_acceleration_discontinuity
bool cartesian_motion_generator_elbow_sign_inconsistent
bool cartesian_motion_generator_start_elbow_invalid
bool cartesian_motion_generator_joint_position_limits_violation
bool cartesian_motion_generator_joint_velocity_limits_violation
bool cartesian_motion_generator_joint_velocity_discontinuity
bool cartesian_motion_generator_joint_acceleration_discontinuity
bool cartesian_position_motion_generator_invalid_frame
bool force_controller_desired_force_tolerance_violation
bool controller_torque_discontinuity
bool start_elbow_sign_inconsistent
bool communication_constraints_violation
bool power_limit_violation
bool joint_p2p_insufficient_torque_for_planning
bool tau_j_range_violation
bool instability_detected
""",
    "franka_msgs/msg/FrankaRobotState": """
std_msgs/Header header
franka_msgs/CollisionIndicators collision_indicators
sensor_msgs/JointState measured_joint_state
sensor_msgs/JointState desired_joint_state
sensor_msgs/JointState measured_joint_motor_state
float64[7] ddq_d
float64[7] dtau_j
sensor_msgs/JointState tau_ext_hat_filtered
franka_msgs/Elbow elbow
geometry_msgs/WrenchStamped k_f_ext_hat_k
geometry_msgs/WrenchStamped o_f_ext_hat_k
geometry_msgs/InertiaStamped inertia_ee
geometry_msgs/InertiaStamped inertia_load
geometry_msgs/InertiaStamped inertia_total
geometry_msgs/PoseStamped o_t_ee
geometry_msgs/PoseStamped o_t_ee_d
geometry_msgs/PoseStamped o_t_ee_c
geometry_msgs/PoseStamped f_t_ee
geometry_msgs/PoseStamped ee_t_k
geometry_msgs/TwistStamped o_dp_ee_d
geometry_msgs/TwistStamped o_dp_ee_c
geometry_msgs/AccelStamped o_ddp_ee_c
float64 time
float64 control_command_success_rate
uint8 ROBOT_MODE_OTHER=0
uint8 ROBOT_MODE_IDLE=1
uint8 ROBOT_MODE_MOVE=2
uint8 ROBOT_MODE_GUIDING=3
uint8 ROBOT_MODE_REFLEX=4
uint8 ROBOT_MODE_USER_STOPPED=5
uint8 ROBOT_MODE_AUTOMATIC_ERROR_RECOVERY=6
uint8 robot_mode
franka_msgs/Errors current_errors
franka_msgs/Errors last_motion_errors
""",
    "franka_msgs/msg/GraspEpsilon": """
float64 inner
float64 outer
""",
    # Actions: goal --- result --- feedback, split into three messages the way rosidl does. Feedback carries
    # current_width as in franka_ros2 v2.x (older releases had empty feedback; feedback is never in our bags).
    "franka_msgs/action/Move_Goal": "float64 width\nfloat64 speed\n",
    "franka_msgs/action/Move_Result": "bool success\nstring error\n",
    "franka_msgs/action/Move_Feedback": "float64 current_width\n",
    "franka_msgs/action/Grasp_Goal": "float64 width\nfranka_msgs/GraspEpsilon epsilon\nfloat64 speed\nfloat64 force\n",
    "franka_msgs/action/Grasp_Result": "bool success\nstring error\n",
    "franka_msgs/action/Grasp_Feedback": "float64 current_width\n",
    "franka_msgs/action/Homing_Goal": "",
    "franka_msgs/action/Homing_Result": "bool success\nstring error\n",
    "franka_msgs/action/Homing_Feedback": "float64 current_width\n",
}

_OTHER_MSGS: dict[str, str] = {
    "control_msgs/msg/GripperCommand": "float64 position\nfloat64 max_effort\n",
    "control_msgs/action/GripperCommand_Goal": "control_msgs/GripperCommand command\n",
    "control_msgs/action/GripperCommand_Result": (
        "float64 position\nfloat64 effort\nbool stalled\nbool reached_goal\n"
    ),
    "control_msgs/action/GripperCommand_Feedback": (
        "float64 position\nfloat64 effort\nbool stalled\nbool reached_goal\n"
    ),
    "std_srvs/srv/Trigger_Request": "",
    "std_srvs/srv/Trigger_Response": "bool success\nstring message\n",
    "std_srvs/srv/SetBool_Request": "bool data\n",
    "std_srvs/srv/SetBool_Response": "bool success\nstring message\n",
}

# Every type this module adds, for callers (and tests) that want to list or check them.
EXTRA_TYPES: tuple[str, ...] = (*_FRANKA_MSGS, *_OTHER_MSGS)

# rosbags' parser wants at least one field; ROS 2 gives empty messages this placeholder member (see std_msgs/Empty).
_EMPTY = "uint8 structure_needs_at_least_one_member\n"


@functools.lru_cache(maxsize=1)
def get_typestore() -> Typestore:
    """The shared type store (cached): ROS 2 Humble messages plus `EXTRA_TYPES`."""
    store = _rosbags_typestore(Stores.ROS2_HUMBLE)
    types = {}
    for name, text in {**_FRANKA_MSGS, **_OTHER_MSGS}.items():
        types.update(get_types_from_msg(text.strip() + "\n" if text.strip() else _EMPTY, name))
    store.register(types)
    return store


def require_msgtype(msgtype: str) -> None:
    """Raise a ValueError naming `msgtype` and how to fix it when the type store does not know it."""
    store = get_typestore()
    if msgtype not in store.fielddefs:
        near = sorted(t for t in store.fielddefs if t.rsplit("/", 1)[-1] == msgtype.rsplit("/", 1)[-1])
        hint = f" Did you mean {near}?" if near else ""
        raise ValueError(
            f"unknown message type {msgtype!r}: use the full ROS 2 name 'package/msg/Type' of a type in ROS 2 Humble "
            f"or mole_vla_ros.data.typestore.EXTRA_TYPES, or register its .msg text there.{hint}"
        )


def default_message(msgtype: str, _store: Typestore | None = None, **fields):
    """A message of `msgtype` with every field zero / empty (nested messages too), then `fields` applied on top.

    rosbags message classes have no defaults; this gives rclpy's `Msg()` behaviour, e.g.
    `default_message("franka_msgs/msg/FrankaRobotState", robot_mode=2)`. Unknown field names raise a ValueError.
    Values are coerced as `ros.messages.RosbagsMessages.make` does it (the one implementation of ROS defaults):
    lists for primitive arrays become numpy arrays of the field's dtype, so the message serializes as it is.
    """
    require_msgtype(msgtype)
    return _factory(_store or get_typestore()).make(msgtype, **fields)


@functools.lru_cache(maxsize=4)
def _factory(store: Typestore):
    # imported here: ros.messages imports this module lazily too (ros.messages.default_typestore)
    from mole_vla_ros.ros.messages import RosbagsMessages

    return RosbagsMessages(store)
