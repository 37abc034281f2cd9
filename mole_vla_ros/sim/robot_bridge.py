"""The simulated robot behind a ROS interface, without ROS: messages in, messages out.

`ros/sim_robot_node.py` is only wiring around this class: each subscription callback hands its message to an
`on_*` method, a timer calls `tick()` and publishes what it returns. With `RosbagsMessages` the same bridge runs in
tests (no rclpy), with `RclpyMessages` in the node, so both produce the same messages.

Commands understood (what the policy node sends):
- `cartesian_impedance_controller/target_pose` (PoseStamped in the base frame): tracked by the simulated impedance
  controller (IK to the joint servos).
- `fr3_arm_controller/joint_trajectory` (JointTrajectory): the point due now (by `time_from_start` after the
  header stamp; the last point once all are due) becomes the joint target.
- franka_gripper `move` (width, speed) and `grasp` (width, speed, force) goals.
- `teleop/target_pose` + `teleop/gripper` (std_msgs/Float32, 1 = open): what a teleop device publishes, so the sim
  can be driven by hand and recorded by the recorder node exactly like the real robot.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.ros.messages import MessageFactory, stamp_to_seconds
from mole_vla_ros.sim.env import TabletopSim, apply_gripper
from mole_vla_ros.sim.messages import SimMessageBuilder, StampedMessage

log = logging.getLogger(__name__)


class SimRobotBridge:
    """Steps a `TabletopSim` and converts between it and ROS messages built by `factory`."""

    def __init__(self, sim: TabletopSim, factory: MessageFactory, seed: int = 0, publish_tf: bool = True):
        self.sim = sim
        self.factory = factory
        self.builder = SimMessageBuilder(factory, sim)
        self.seed = seed
        self.publish_tf = publish_tf
        self.episode = 0
        self._trajectory: tuple[float, list[float], list[np.ndarray]] | None = None
        self.commands_received = {"pose": 0, "joint_trajectory": 0, "move": 0, "grasp": 0, "gripper_command": 0}
        self._gripper_command: float | None = None
        self.rejected: dict[str, int] = {}
        self.last_obs = None

    # ------------------------------------------------------------------------------------------------ episodes
    def reset(self, seed: int | None = None) -> list[StampedMessage]:
        """New episode (next seed unless given); returns the latched messages to (re)publish: instruction, tf_static."""
        if seed is None:
            seed = self.seed + self.episode
        # Sim time keeps running across episodes: a /clock that jumps back makes ROS nodes drop their TF buffers.
        start = self.sim.time + self.sim.config.control_dt if self.episode else 0.0
        self.episode += 1
        self._trajectory = None
        self._gripper_command = None
        self.last_obs = self.sim.reset(seed, start_time=start)
        log.info("sim episode %d (seed %d): %r", self.episode, seed, self.sim.instruction)
        return [self.builder.instruction(self.sim.instruction, self.sim.time), self.builder.tf_static(self.sim.time)]

    # ------------------------------------------------------------------------------------------------ commands
    def _reject(self, what: str, exc: Exception) -> None:
        self.rejected[what] = self.rejected.get(what, 0) + 1
        log.warning("sim robot rejected a %s command: %s", what, exc)

    def on_target_pose(self, msg: Any) -> bool:
        """geometry_msgs/PoseStamped target in the base frame. Returns False (and counts it) when rejected."""
        expected = self.builder.desc.base_frame
        try:
            if msg.header.frame_id not in ("", expected):
                raise ValueError(f"target pose is in frame {msg.header.frame_id!r}, the sim expects {expected!r}")
            p, o = msg.pose.position, msg.pose.orientation
            pose = Pose(np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w]))
        except ValueError as exc:
            self._reject("pose", exc)
            return False
        self._trajectory = None
        self.sim.command_pose(pose)
        self.commands_received["pose"] += 1
        return True

    def on_joint_trajectory(self, msg: Any) -> bool:
        """trajectory_msgs/JointTrajectory for the arm joints (matched by name)."""
        try:
            names = list(msg.joint_names)
            arm = list(self.builder.desc.arm_joint_names)
            missing = [n for n in arm if n not in names]
            if missing or not msg.points:
                raise ValueError(f"trajectory lacks joints {missing} or has no points (joint_names={names})")
            idx = [names.index(n) for n in arm]
            start = stamp_to_seconds(msg.header.stamp)
            if start == 0.0:  # ROS convention: a zero stamp means "start now"
                start = self.sim.time
            times = [stamp_to_seconds(p.time_from_start) for p in msg.points]
            positions = [np.asarray(p.positions, dtype=np.float64)[idx] for p in msg.points]
            if any(not np.all(np.isfinite(q)) for q in positions):
                raise ValueError("trajectory has non-finite joint positions")
        except (ValueError, IndexError) as exc:
            self._reject("joint_trajectory", exc)
            return False
        self._trajectory = (start, times, positions)
        self.commands_received["joint_trajectory"] += 1
        return True

    def on_gripper_move(self, width: float, speed: float) -> bool:
        try:
            self.sim.move_gripper(float(width), float(speed) if speed > 0 else None)
        except ValueError as exc:
            self._reject("move", exc)
            return False
        self.commands_received["move"] += 1
        return True

    def on_gripper_grasp(self, width: float, speed: float, force: float) -> bool:
        try:
            self.sim.grasp(float(width), float(speed) if speed > 0 else None, float(force) if force > 0 else None)
        except ValueError as exc:
            self._reject("grasp", exc)
            return False
        self.commands_received["grasp"] += 1
        return True

    def on_gripper_command(self, msg: Any) -> bool:
        """std_msgs/Float32 in [0, 1] (1 = open): a grasp when it crosses to closed, a move to open when it opens."""
        value = float(msg.data)
        if not 0.0 <= value <= 1.0:
            self._reject("gripper_command", ValueError(f"gripper command {value} is outside [0, 1] (1 = open)"))
            return False
        self._gripper_command = apply_gripper(self.sim, value, self._gripper_command)
        self.commands_received["gripper_command"] += 1
        return True

    def _trajectory_target(self, now: float) -> np.ndarray | None:
        if self._trajectory is None:
            return None
        start, times, positions = self._trajectory
        for t, q in zip(times, positions):
            if start + t >= now:
                return q
        return positions[-1]

    # ------------------------------------------------------------------------------------------------ stepping
    def tick(self, duration: float | None = None, render: bool = True) -> list[StampedMessage]:
        """Advance the simulation and return the robot's messages for the new state."""
        target = self._trajectory_target(self.sim.time + (duration or self.sim.config.control_dt))
        if target is not None:
            self.sim.command_joints(target)
        self.last_obs = self.sim.step(duration, render=render)
        messages = self.builder.observation(self.last_obs)
        if self.publish_tf:
            messages.append(self.builder.tf_hand(self.last_obs.stamp))
        return messages

    def clock(self) -> Any:
        """rosgraph_msgs/Clock of the current sim time (the node publishes it for use_sim_time)."""
        return self.factory.make("rosgraph_msgs/msg/Clock", clock=self.factory.time(self.sim.time))

    def status(self) -> dict[str, Any]:
        """Episode, instruction, success and command counters (published as JSON on the node's status topic)."""
        return {
            "episode": self.episode,
            "instruction": self.sim.instruction if self.sim.setup else "",
            "time": round(self.sim.time, 3),
            "success": self.sim.success() if self.sim.setup else False,
            "commands": dict(self.commands_received),
            "rejected": dict(self.rejected),
        }
