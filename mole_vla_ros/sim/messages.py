"""The simulator's observations as the real robot's ROS 2 messages (names, types, frames, encodings).

One builder serves both the recorder path (rosbags dataclasses -> MCAP, `RosbagsMessages`) and the ROS node
(rclpy classes, `RclpyMessages`): both come from `mole_vla_ros.ros.messages` and share `make()`.

Topics (relative to the robot namespace, from `robot.franka.Topics`):

| topic | type | content |
|---|---|---|
| `joint_states` | sensor_msgs/JointState | `fr3_joint1..7` + `fr3_finger_joint1/2` (merged, like joint_state_publisher) |
| `franka_robot_state_broadcaster/current_pose` | geometry_msgs/PoseStamped | `fr3_hand_tcp` in `fr3_link0` |
| `franka_gripper/joint_states` | sensor_msgs/JointState | `fr3_finger_joint1/2`, each = width / 2 |
| `camera/<name>/image_raw` | sensor_msgs/Image | rgb8, frame `<name>_camera_optical_frame` |
| `camera/<name>/camera_info` | sensor_msgs/CameraInfo | pinhole intrinsics from the MuJoCo camera's fovy |
| `/tf_static` | tf2_msgs/TFMessage | camera optical frames (scene: from `fr3_link0`, wrist: from `fr3_hand`), `fr3_hand_tcp` |
| `/tf` | tf2_msgs/TFMessage | `fr3_link0` -> `fr3_hand` (ROS node only, unless robot_state_publisher runs) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mole_vla_ros.robot.franka import HAND_TCP_OFFSET_Z, Topics, describe
from mole_vla_ros.ros.conversions import rgb_to_image_msg
from mole_vla_ros.ros.messages import MessageFactory
from mole_vla_ros.sim.ik import mat_to_quat_xyzw, quat_xyzw_to_mat

# MuJoCo cameras look along -z with y up; ROS optical frames look along +z with y down: a half turn about x.
_MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class StampedMessage:
    """A message ready to publish or record: topic (relative), full type name, message object, stamp (s)."""

    topic: str
    msgtype: str
    msg: Any
    stamp: float


def camera_frame_id(name: str) -> str:
    return f"{name}_camera_optical_frame"


def camera_intrinsics(fovy_deg: float, size: int) -> np.ndarray:
    """3x3 pinhole K of a square MuJoCo camera image (square pixels, principal point at the centre)."""
    f = (size / 2.0) / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return np.array([[f, 0.0, size / 2.0], [0.0, f, size / 2.0], [0.0, 0.0, 1.0]])


def pose_msg(factory: MessageFactory, position: np.ndarray, quaternion: np.ndarray) -> Any:
    p, q = np.asarray(position, dtype=float), np.asarray(quaternion, dtype=float)
    return factory.make(
        "geometry_msgs/msg/Pose",
        position=factory.make("geometry_msgs/msg/Point", x=p[0], y=p[1], z=p[2]),
        orientation=factory.make("geometry_msgs/msg/Quaternion", x=q[0], y=q[1], z=q[2], w=q[3]),
    )


class SimMessageBuilder:
    """Builds the robot's topics from a `SimObservation` (and the expert's commands) with a MessageFactory."""

    def __init__(self, factory: MessageFactory, sim):
        self.factory = factory
        self.sim = sim
        self.desc = describe(sim.config.robot_type)

    # ---------------------------------------------------------------------------------------------------- state
    def joint_state(self, t: float, names, position, velocity=(), effort=(), frame_id: str = "") -> Any:
        return self.factory.make(
            "sensor_msgs/msg/JointState",
            header=self.factory.header(t, frame_id),
            name=list(names),
            position=np.asarray(position, dtype=np.float64),
            velocity=np.asarray(velocity, dtype=np.float64),
            effort=np.asarray(effort, dtype=np.float64),
        )

    def pose_stamped(self, t: float, frame_id: str, position, quaternion) -> Any:
        return self.factory.make(
            "geometry_msgs/msg/PoseStamped",
            header=self.factory.header(t, frame_id),
            pose=pose_msg(self.factory, position, quaternion),
        )

    def observation(self, obs) -> list[StampedMessage]:
        """Every state and camera message of one control tick, all stamped with the tick's sim time."""
        t = obs.stamp
        js = obs.joint_state
        out = [
            StampedMessage(
                Topics.JOINT_STATES,
                "sensor_msgs/msg/JointState",
                self.joint_state(t, js.names, js.position, js.velocity, js.effort),
                t,
            ),
            StampedMessage(
                Topics.CURRENT_POSE,
                "geometry_msgs/msg/PoseStamped",
                self.pose_stamped(t, obs.ee_pose.frame_id, obs.ee_pose.pose.position, obs.ee_pose.pose.quaternion),
                t,
            ),
            StampedMessage(
                Topics.GRIPPER_JOINT_STATES,
                "sensor_msgs/msg/JointState",
                self.joint_state(t, self.desc.finger_joint_names, [obs.gripper.width / 2.0] * 2),
                t,
            ),
        ]
        for name, frame in obs.images.items():
            image = rgb_to_image_msg(self.factory, frame.image, frame.stamp, camera_frame_id(name))
            out.append(StampedMessage(Topics.camera_image(name), "sensor_msgs/msg/Image", image, frame.stamp))
            out.append(
                StampedMessage(
                    Topics.camera_info(name), "sensor_msgs/msg/CameraInfo", self.camera_info(name, frame.stamp), t
                )
            )
        return out

    def camera_info(self, name: str, t: float) -> Any:
        size = self.sim.config.image_size
        fovy = float(self.sim.model.cam_fovy[self.sim.ids.camera[name]])
        k = camera_intrinsics(fovy, size)
        proj = np.zeros((3, 4))
        proj[:, :3] = k
        return self.factory.make(
            "sensor_msgs/msg/CameraInfo",
            header=self.factory.header(t, camera_frame_id(name)),
            height=size,
            width=size,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=k.reshape(-1),
            r=np.eye(3).reshape(-1),
            p=proj.reshape(-1),
        )

    # ---------------------------------------------------------------------------------------------------- static
    def camera_transforms(self) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
        """(parent, child, position, quaternion xyzw) of each camera's optical frame, from the MuJoCo model."""
        model, ids = self.sim.model, self.sim.ids
        out = []
        for name in self.sim.config.cameras:
            cam = ids.camera[name]
            parent_body = int(model.cam_bodyid[cam])
            parent = self.desc.hand_frame if parent_body == ids.hand_body else self.desc.base_frame
            q = model.cam_quat[cam]  # wxyz
            rot = quat_xyzw_to_mat(np.array([q[1], q[2], q[3], q[0]])) @ _MUJOCO_TO_OPTICAL
            out.append((parent, camera_frame_id(name), model.cam_pos[cam].copy(), mat_to_quat_xyzw(rot)))
        return out

    def transform(self, t: float, parent: str, child: str, pos, quat) -> Any:
        f = self.factory
        return f.make(
            "geometry_msgs/msg/TransformStamped",
            header=f.header(t, parent),
            child_frame_id=child,
            transform=f.make(
                "geometry_msgs/msg/Transform",
                translation=f.make("geometry_msgs/msg/Vector3", x=pos[0], y=pos[1], z=pos[2]),
                rotation=f.make("geometry_msgs/msg/Quaternion", x=quat[0], y=quat[1], z=quat[2], w=quat[3]),
            ),
        )

    def tf_static(self, t: float) -> StampedMessage:
        """Camera optical frames and fr3_hand -> fr3_hand_tcp (franka_description's fixed 0.1034 m)."""
        f = self.factory
        transforms = [self.transform(t, *frame) for frame in self.camera_transforms()]
        transforms.append(
            self.transform(t, self.desc.hand_frame, self.desc.tcp_frame, (0.0, 0.0, HAND_TCP_OFFSET_Z), (0, 0, 0, 1))
        )
        return StampedMessage(
            "/tf_static", "tf2_msgs/msg/TFMessage", f.make("tf2_msgs/msg/TFMessage", transforms=transforms), t
        )

    def tf_hand(self, t: float) -> StampedMessage:
        """/tf fr3_link0 -> fr3_hand from the simulated arm: with tf_static this connects the wrist camera and the
        TCP to the base frame in RViz without robot_state_publisher (which would publish it through the links)."""
        d, ids = self.sim.data, self.sim.ids
        base_pos, base_rot = d.xpos[ids.base_body], d.xmat[ids.base_body].reshape(3, 3)
        hand_pos, hand_rot = d.xpos[ids.hand_body], d.xmat[ids.hand_body].reshape(3, 3)
        pos = base_rot.T @ (hand_pos - base_pos)
        quat = mat_to_quat_xyzw(base_rot.T @ hand_rot)
        tf = self.transform(t, self.desc.base_frame, self.desc.hand_frame, pos, quat)
        return StampedMessage(
            "/tf", "tf2_msgs/msg/TFMessage", self.factory.make("tf2_msgs/msg/TFMessage", transforms=[tf]), t
        )

    # ---------------------------------------------------------------------------------------------------- commands
    def instruction(self, text: str, t: float) -> StampedMessage:
        return StampedMessage(
            Topics.INSTRUCTION, "std_msgs/msg/String", self.factory.make("std_msgs/msg/String", data=text), t
        )

    def teleop(self, t: float, pose, gripper: float) -> list[StampedMessage]:
        """The expert's command as a teleop device publishes it: target pose (base frame) and gripper in [0, 1]."""
        return [
            StampedMessage(
                Topics.TELEOP_TARGET_POSE,
                "geometry_msgs/msg/PoseStamped",
                self.pose_stamped(t, self.desc.base_frame, pose.position, pose.quaternion),
                t,
            ),
            StampedMessage(
                Topics.TELEOP_GRIPPER,
                "std_msgs/msg/Float32",
                self.factory.make("std_msgs/msg/Float32", data=gripper),
                t,
            ),
        ]
