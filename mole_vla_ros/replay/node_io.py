"""The policy node's message handling without rclpy: messages in -> PolicyRuntime, runtime steps -> messages out.

This is what `ros/policy_node.py`'s subscription callbacks and timers do, written once against the shared pieces
(`ros.conversions` for inbound messages, `ros.outputs.OutputBuilder` for outbound ones) so a shell only moves
messages: the live node publishes what `control_tick` returns; offline replay writes it into a bag.

Why it lives here for now: `PolicyNodeShell` still holds the same few lines in its callbacks. The intent is that
the shell delegates to this class (move it to mole_vla_ros/ros/ then), so node and replay cannot drift apart.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mole_vla_ros.robot.franka import describe
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.outputs import OutputBuilder
from mole_vla_ros.ros.params import NodeSettings
from mole_vla_ros.runtime.commands import StepOutput

log = logging.getLogger(__name__)


@dataclass
class TickOutput:
    """One control tick: the runtime's step, {output key: message} to publish, and the gripper goal to send."""

    step: StepOutput
    messages: dict[str, Any]
    gripper_goal: tuple[str, Any] | None
    step_s: float = 0.0  # wall time of PolicyRuntime.step (inline inference included)


class NodeIO:
    """Message handling of node `mole_vla_policy` around a `PolicyRuntime`, for any message backend.

    Inputs that fail conversion are counted in `input_errors` (by stream) with the last message in `last_error`,
    as the node does; they never reach the runtime.
    """

    def __init__(self, settings: NodeSettings, runtime: Any, outputs: OutputBuilder):
        self.settings = settings
        self.runtime = runtime
        self.outputs = outputs
        self.robot = describe(settings.runtime.frames.robot_type)
        self.input_errors: Counter[str] = Counter()
        self.last_error: dict[str, str] = {}
        self.gripper_events: Counter[str] = Counter()
        self._last_diagnostics = None
        self._robot_state_last = -float("inf")

    # -- inputs ----------------------------------------------------------------------------------------------------
    def _reject(self, what: str, exc: Exception) -> bool:
        self.input_errors[what] += 1
        self.last_error[what] = str(exc)
        return False

    def on_camera(self, name: str, msg: Any, compressed: bool = False) -> bool:
        """sensor_msgs/Image (or CompressedImage) of camera `name`. Returns False when the frame was rejected."""
        try:
            convert = conv.compressed_to_frame if compressed else conv.image_to_frame
            self.runtime.on_camera(convert(msg, name))
        except ValueError as exc:
            return self._reject(f"camera/{name}", exc)
        return True

    def on_joint_state(self, msg: Any) -> bool:
        """Arm joint state; also the gripper width when no separate gripper topic is configured."""
        try:
            self.runtime.on_joint_state(conv.joint_state_to_sample(msg, self.robot.arm_joint_names))
            if not self.settings.node.topics.gripper_state:
                gripper = conv.joint_state_to_gripper(msg, self.robot.finger_joint_names)
                if gripper is not None:
                    self.runtime.on_gripper(gripper)
        except ValueError as exc:
            return self._reject("joint_states", exc)
        return True

    def on_gripper_state(self, msg: Any) -> bool:
        try:
            gripper = conv.joint_state_to_gripper(msg, self.robot.finger_joint_names)
            if gripper is None:
                raise ValueError(
                    f"gripper JointState lacks {list(self.robot.finger_joint_names)}; it has {list(msg.name)}"
                )
            self.runtime.on_gripper(gripper)
        except ValueError as exc:
            return self._reject("gripper_state", exc)
        return True

    def on_ee_pose(self, msg: Any) -> bool:
        """geometry_msgs/PoseStamped of the EE, which must be expressed in frames.base_frame."""
        try:
            sample = conv.pose_stamped_to_sample(msg, child_frame_id=self.settings.runtime.frames.ee_frame)
            self._check_frame(sample.frame_id, "ee_pose")
            self.runtime.on_ee_pose(sample)
        except ValueError as exc:
            return self._reject("ee_pose", exc)
        return True

    def on_transform(self, tf: Any) -> bool:
        """One geometry_msgs/TransformStamped base_frame -> ee_frame (what the node's TF lookup returns)."""
        try:
            self.runtime.on_ee_pose(conv.transform_to_sample(tf))
        except ValueError as exc:
            return self._reject("tf", exc)
        return True

    def _check_frame(self, frame_id: str, what: str) -> None:
        base = self.settings.runtime.frames.base_frame
        if frame_id and frame_id != base:
            raise ValueError(
                f"{what} is expressed in frame {frame_id!r} but frames.base_frame is {base!r}; set frames.base_frame "
                "or publish the pose in the base frame"
            )

    def robot_state_due(self, t: float) -> bool:
        """Whether a FrankaRobotState arriving at `t` is decoded: like the node, at most `robot_state_rate_hz` per
        second (the topic runs at 1 kHz; a blocking robot mode lasts far longer than that period)."""
        period = 1.0 / float(getattr(self.settings.node, "robot_state_rate_hz", 0.0) or float("inf"))
        if t - self._robot_state_last < period:
            return False
        self._robot_state_last = t
        return True

    def on_robot_state(self, msg: Any) -> None:
        self.runtime.on_robot_mode(conv.robot_mode_name(msg))

    def on_instruction(self, msg: Any) -> bool:
        try:
            text = conv.instruction_from_msg(msg)
        except ValueError as exc:
            return self._reject("instruction", exc)
        self.runtime.set_instruction(text)
        return True

    # -- timers ----------------------------------------------------------------------------------------------------
    def control_tick(self, now: float) -> TickOutput:
        """The control timer: one runtime step and the messages it produces (commands, previews, a new chunk)."""
        t0 = time.perf_counter()
        step = self.runtime.step(now)
        step_s = time.perf_counter() - t0
        self._last_diagnostics = step.diagnostics
        messages = dict(self.outputs.commands(step))
        if step.chunk is not None:
            messages.update(self.outputs.chunk(step.chunk))
        goal = None
        if step.gripper_command is not None:
            goal = self.outputs.gripper_goal(step.gripper_command)
            self.gripper_events[f"sent/{goal[0]}"] += 1
        return TickOutput(step, messages, goal, step_s)

    def diagnostics_tick(self) -> Any | None:
        """The diagnostics timer: a DiagnosticArray of the latest step (None before the first step)."""
        if self._last_diagnostics is None:
            return None
        extra: dict[str, Any] = {f"input_errors.{k}": v for k, v in self.input_errors.items()}
        extra.update({f"gripper.{k}": v for k, v in self.gripper_events.items()})
        return self.outputs.diagnostics(self._last_diagnostics, extra)

    def visualization_tick(self, now: float) -> Any | None:
        """The visualization timer: the MarkerArray of recent chunks (None before the first chunk)."""
        return self.outputs.markers(now)
