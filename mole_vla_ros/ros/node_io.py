"""The policy node's message handling without rclpy: messages in -> PolicyRuntime, runtime steps -> messages out.

Written once, used by both shells so they cannot drift apart:

- the live node (`ros/policy_node.py::PolicyNodeShell`): its subscription callbacks, timers and services call these
  methods and publish what they return; the shell itself only holds the rclpy wiring (parameters, QoS,
  subscriptions, publishers, services, action clients, timers, TF);
- offline replay (`replay/engine.py`): hands over bag messages in log-time order, fires the same timers on bag time
  and writes what they return into the output bag.

Time always comes from the caller (`now` arguments): the node passes its ROS clock (sim time under use_sim_time),
replay passes bag time. Nothing here reads a clock that decides behaviour, so a bag played into the node with
`ros2 bag play --clock` and the same bag through `mole-vla replay` take the same decisions.

Inbound messages are converted by `ros.conversions`, outbound ones built by `ros.outputs.OutputBuilder`, with any
message backend (rclpy classes on the robot, rosbags dataclasses offline).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mole_vla_ros.interfaces import PoseSample
from mole_vla_ros.robot.franka import describe
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.outputs import OutputBuilder
from mole_vla_ros.ros.params import NodeSettings
from mole_vla_ros.runtime.commands import Diagnostics, StepOutput

# A bad input stream (wrong encoding, NaN joints) repeats at its full rate; one log line per stream and period is
# enough to see it, the counters in /diagnostics give the totals. Wall time on purpose: this only limits log volume.
REJECT_LOG_PERIOD_S = 5.0


@dataclass
class TickOutput:
    """One control tick: the runtime's step, {output key: message} to publish, and the gripper goal to send.

    Output keys are those of `policy_node.OUTPUT_TOPICS` plus "pose_command" / "joint_trajectory" (commands, present
    only while the runtime actuates). `gripper_goal` is ("move" | "grasp", franka_msgs action goal) or None; the
    caller delivers it and reports the outcome with `NodeIO.gripper_event`.
    """

    step: StepOutput
    messages: dict[str, Any]
    gripper_goal: tuple[str, Any] | None
    step_s: float = 0.0  # wall time of PolicyRuntime.step (inline inference included)


class NodeIO:
    """Message handling of node `mole_vla_policy` around a `PolicyRuntime`, for any message backend.

    Inputs that fail conversion never reach the runtime: they are counted in `input_errors` (by stream: "camera/<name>",
    "joint_states", "gripper_state", "ee_pose", "tf", "instruction"), the last message kept in `last_error`, and
    logged at most once per stream every REJECT_LOG_PERIOD_S. `log` is anything with `info(str)` / `error(str)`:
    the node passes its rclpy logger, replay leaves the module's Python logger.
    """

    def __init__(self, settings: NodeSettings, runtime: Any, outputs: OutputBuilder, log: Any = None):
        self.settings = settings
        self.runtime = runtime
        self.outputs = outputs
        self.log = log if log is not None else logging.getLogger(__name__)
        self.robot = describe(settings.runtime.frames.robot_type)
        self.input_errors: Counter[str] = Counter()
        self.last_error: dict[str, str] = {}
        self.gripper_events: Counter[str] = Counter()
        self.last_diagnostics: Diagnostics | None = None
        self._robot_state_period = 1.0 / settings.node.robot_state_rate_hz
        self._robot_state_last = -math.inf
        self._reject_logged: dict[str, float] = {}

    # -- inputs ----------------------------------------------------------------------------------------------------
    def reject(self, what: str, exc: Exception) -> bool:
        """Count and (throttled) log a bad input of stream `what`. Returns False, so callbacks can `return` it."""
        self.input_errors[what] += 1
        self.last_error[what] = str(exc)
        wall = time.monotonic()
        if wall - self._reject_logged.get(what, -math.inf) >= REJECT_LOG_PERIOD_S:
            self._reject_logged[what] = wall
            self.log.error(f"{what}: {exc}")
        return False

    def on_camera(self, name: str, msg: Any, compressed: bool = False) -> bool:
        """sensor_msgs/Image (or CompressedImage) of camera `name`. Returns False when the frame was rejected."""
        try:
            convert = conv.compressed_to_frame if compressed else conv.image_to_frame
            self.runtime.on_camera(convert(msg, name))
        except ValueError as exc:
            return self.reject(f"camera/{name}", exc)
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
            return self.reject("joint_states", exc)
        return True

    def on_gripper_state(self, msg: Any) -> bool:
        """sensor_msgs/JointState of the hand (topics.gripper_state): the finger joints give the width."""
        try:
            gripper = conv.joint_state_to_gripper(msg, self.robot.finger_joint_names)
            if gripper is None:
                raise ValueError(
                    f"gripper JointState lacks {list(self.robot.finger_joint_names)}; it has {list(msg.name)}"
                )
            self.runtime.on_gripper(gripper)
        except ValueError as exc:
            return self.reject("gripper_state", exc)
        return True

    def on_ee_pose(self, msg: Any) -> PoseSample | None:
        """geometry_msgs/PoseStamped of the EE, which must be expressed in frames.base_frame.

        Returns the sample handed to the runtime (the node cross-checks it against TF), None when rejected."""
        try:
            sample = conv.pose_stamped_to_sample(msg, child_frame_id=self.settings.runtime.frames.ee_frame)
            self._check_frame(sample.frame_id, "ee_pose")
            self.runtime.on_ee_pose(sample)
        except ValueError as exc:
            self.reject("ee_pose", exc)
            return None
        return sample

    def on_transform(self, tf: Any) -> bool:
        """One geometry_msgs/TransformStamped base_frame -> ee_frame (what the node's TF lookup returns)."""
        try:
            self.runtime.on_ee_pose(conv.transform_to_sample(tf))
        except ValueError as exc:
            return self.reject("tf", exc)
        return True

    def _check_frame(self, frame_id: str, what: str) -> None:
        base = self.settings.runtime.frames.base_frame
        if frame_id and frame_id != base:
            raise ValueError(
                f"{what} is expressed in frame {frame_id!r} but frames.base_frame is {base!r}; set frames.base_frame "
                "or publish the pose in the base frame"
            )

    def check_pose_against_tf(self, sample: PoseSample, tf: Any) -> str:
        """Compare an EE pose-topic sample with TF base_frame -> ee_frame (a TransformStamped); returns "ok" or
        "MISMATCH <cm> / <deg>" (beyond node.tf_check_tolerance) and logs which. A mismatch means frames.ee_frame
        names another link than the pose topic (flange vs hand TCP is 10 cm) or the base frames differ."""
        frames = self.settings.runtime.frames
        dist, angle = conv.pose_difference(sample.pose, conv.transform_to_sample(tf).pose)
        tol_m, tol_rad = self.settings.node.tf_check_tolerance
        deg = math.degrees(angle)
        if dist > tol_m or angle > tol_rad:
            self.log.error(
                f"the EE pose topic differs from TF {frames.base_frame} -> {frames.ee_frame} by {dist * 100:.1f} cm "
                f"and {deg:.1f} deg: frames.ee_frame probably names another link than the pose topic "
                "(flange vs hand TCP?) or the base frames differ; predictions would be offset by that much"
            )
            return f"MISMATCH {dist * 100:.1f} cm / {deg:.1f} deg"
        self.log.info(f"EE pose topic agrees with TF within {dist * 1000:.1f} mm / {deg:.2f} deg")
        return "ok"

    def robot_state_due(self, now: float) -> bool:
        """Whether a FrankaRobotState arriving at `now` (caller's clock, seconds) is to be decoded.

        The topic runs at 1 kHz with ~3 kB messages: decoding each in Python would take a large share of a core on
        the robot PC. At most `robot_state_rate_hz` are decoded per second of the caller's clock; a blocking robot
        mode lasts far longer than that period. A clock that jumps back (a looping `ros2 bag play --clock`) restarts
        the count instead of silencing the interlock until it catches up.
        """
        # 1 ns slack: times are float seconds of a nanosecond clock (0.3 - 0.2 < 0.1 in floats)
        if now < self._robot_state_last or now - self._robot_state_last >= self._robot_state_period - 1e-9:
            self._robot_state_last = now
            return True
        return False

    def on_robot_state(self, msg: Any) -> None:
        """A decoded franka_msgs/FrankaRobotState: its robot_mode feeds the runtime's interlock."""
        self.runtime.on_robot_mode(conv.robot_mode_name(msg))

    def on_instruction(self, msg: Any) -> bool:
        """std_msgs/String instruction; an empty one is rejected (counted under "instruction")."""
        try:
            text = conv.instruction_from_msg(msg)
        except ValueError as exc:
            return self.reject("instruction", exc)
        self.set_instruction(text)
        return True

    def set_instruction(self, text: str) -> None:
        """Use `text` for the next inferences (topic, parameter or replay's choice)."""
        self.runtime.set_instruction(text)
        self.log.info(f"instruction: {text!r}")

    # -- operator actions (the node's services and parameters) ------------------------------------------------------
    def enable(self) -> str:
        """~/enable true: arm the runtime. Returns "" when enabled, else why it stayed disabled (one sentence)."""
        try:
            refusal = self.runtime.enable()
        except (RuntimeError, ValueError) as exc:
            return str(exc)
        if refusal is False:  # a runtime that answers with a bool keeps its reason in the diagnostics
            return "the runtime refused (see /diagnostics for the reason)"
        return refusal if isinstance(refusal, str) else ""

    def disable(self, reason: str) -> None:
        """~/enable false (or shutdown): stop actuating now and hold."""
        self.runtime.disable(reason)

    def reset_episode(self) -> None:
        """~/reset: forget chunks, history and shown markers; enabled or not stays as it is."""
        self.runtime.reset_episode()
        self.outputs.clear()
        self.log.info("episode reset")

    def set_active_layers(self, k: int) -> None:
        """policy.active_layers: run `k` LLM layers per inference from the next one on; 0 = the checkpoint's default."""
        self.runtime.set_active_layers(k or None)
        self.log.info(f"active layers: {k or 'checkpoint default'}")

    def gripper_event(self, event: str) -> None:
        """Count what became of a gripper goal ("sent/grasp", "no_client", "rejected/move", ...) for diagnostics."""
        self.gripper_events[event] += 1

    # -- timers ----------------------------------------------------------------------------------------------------
    def control_tick(self, now: float) -> TickOutput:
        """The control timer at `now` (caller's clock): one runtime step and the messages it produces (commands,
        previews, a new chunk) plus the gripper goal to send, if any."""
        t0 = time.perf_counter()
        step = self.runtime.step(now)
        step_s = time.perf_counter() - t0
        self.last_diagnostics = step.diagnostics
        messages = dict(self.outputs.commands(step))
        if step.chunk is not None:
            messages.update(self.outputs.chunk(step.chunk))
        goal = None if step.gripper_command is None else self.outputs.gripper_goal(step.gripper_command)
        return TickOutput(step, messages, goal, step_s)

    def diagnostics_tick(self, extra: dict[str, Any] | None = None) -> Any | None:
        """The diagnostics timer: a DiagnosticArray of the latest step (None before the first step), with the
        shell's own `extra` values first, then the input-error and gripper counters."""
        if self.last_diagnostics is None:
            return None
        values: dict[str, Any] = dict(extra or {})
        values.update({f"input_errors.{k}": v for k, v in self.input_errors.items()})
        values.update({f"gripper.{k}": v for k, v in self.gripper_events.items()})
        return self.outputs.diagnostics(self.last_diagnostics, values)

    def visualization_tick(self, now: float) -> Any | None:
        """The visualization timer at `now`: the MarkerArray of recent chunks (None before the first chunk)."""
        return self.outputs.markers(now)
