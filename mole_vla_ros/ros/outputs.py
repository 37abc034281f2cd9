"""`StepOutput` (runtime core) -> every message the policy node publishes, without ROS.

The node calls `OutputBuilder` with rclpy messages (`RclpyMessages`); offline replay can call it with rosbags
dataclasses (`RosbagsMessages`) and write the same messages into an MCAP file. Keys of the returned dicts are the
keys of `OUTPUT_TOPICS` / `COMMAND_TOPICS` in policy_node.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.markers import MarkerStyle
from mole_vla_ros.ros.messages import MessageFactory
from mole_vla_ros.runtime.commands import ChunkPrediction, Diagnostics, GripperCommand, StepOutput


@dataclass(frozen=True)
class _ShownChunk:
    index: int
    predicted_at: float
    poses: tuple[Pose, ...]
    gripper: tuple[float, ...]
    executed: tuple[bool, ...]


class OutputBuilder:
    """Builds messages from runtime outputs and remembers the last `style.history` chunks for fading markers.

    ee_frame names the EE 'joint' of the MultiDOFJointTrajectory; node_name and hardware_id label diagnostics.
    """

    def __init__(
        self,
        factory: MessageFactory,
        style: MarkerStyle,
        ee_frame: str,
        node_name: str = "mole_vla_policy",
        hardware_id: str = "fr3",
    ):
        self.factory = factory
        self.style = style
        self.ee_frame = ee_frame
        self.node_name = node_name
        self.hardware_id = hardware_id
        self._chunks: deque[_ShownChunk] = deque(maxlen=style.history)
        self._chunk_count = 0
        self._frame_id = ""

    # -- commands --------------------------------------------------------------------------------------------------
    def commands(self, step: StepOutput) -> dict[str, Any]:
        """{"pose_command" | "joint_trajectory" | "target_pose_preview" | "joint_trajectory_preview": message} for
        what this step produced (commands only when the runtime actuates, previews always)."""
        f, out = self.factory, {}
        if step.pose_command is not None:
            c = step.pose_command
            out["pose_command"] = conv.pose_stamped_msg(f, c.pose, c.stamp, c.frame_id)
        if step.joint_command is not None:
            c = step.joint_command
            # header stamp 0 = "start on receipt" for JTC (see conversions.joint_trajectory_msg)
            out["joint_trajectory"] = conv.joint_trajectory_msg(
                f, c.joint_names, c.time_from_start, c.positions, c.velocities
            )
        if step.preview is not None:
            c = step.preview
            out["target_pose_preview"] = conv.pose_stamped_msg(f, c.pose, c.stamp, c.frame_id)
        preview_joint = getattr(step, "preview_joint", None)
        if preview_joint is not None:
            c = preview_joint
            out["joint_trajectory_preview"] = conv.joint_trajectory_msg(
                f, c.joint_names, c.time_from_start, c.positions, c.velocities
            )
        return out

    def gripper_goal(self, cmd: GripperCommand) -> tuple[str, Any]:
        """("move" | "grasp", franka_msgs action goal) for a gripper command."""
        if cmd.action == "move":
            return "move", conv.move_goal_msg(self.factory, cmd.width, cmd.speed)
        if cmd.action == "grasp":
            return "grasp", conv.grasp_goal_msg(
                self.factory, cmd.width, cmd.speed, cmd.force, cmd.epsilon_inner, cmd.epsilon_outer
            )
        raise ValueError(f"gripper command action must be 'move' or 'grasp', got {cmd.action!r}")

    # -- predictions -----------------------------------------------------------------------------------------------
    def chunk(self, chunk: ChunkPrediction) -> dict[str, Any]:
        """Messages for a newly accepted chunk: predicted_trajectory, predicted_path, layers (+ layer_probs when the
        runtime reports router probabilities). Also records the chunk for `markers`."""
        f = self.factory
        poses = tuple(Pose(p, q) for p, q in zip(chunk.positions, chunk.quaternions))
        stamps = np.asarray(chunk.stamps, dtype=np.float64)
        self._frame_id = chunk.frame_id
        self._chunks.append(
            _ShownChunk(
                self._chunk_count,
                chunk.obs_stamp,
                poses,
                tuple(float(g) for g in chunk.gripper),
                tuple(bool(e) for e in chunk.executed),
            )
        )
        self._chunk_count += 1
        out = {
            "predicted_trajectory": conv.chunk_multidof_msg(
                f, poses, stamps, chunk.obs_stamp, chunk.frame_id, self.ee_frame
            ),
            "predicted_path": conv.chunk_path_msg(f, poses, stamps, chunk.obs_stamp, chunk.frame_id),
        }
        probs = chunk.layer_probs
        if probs is None:
            # a policy without router probabilities: mark the chosen layers 1 and the rest 0 (still k-of-N at a glance)
            probs = np.zeros(chunk.num_layers, dtype=np.float32)
            probs[list(chunk.layer_indices)] = 1.0
        out["layers"], out["layer_probs"] = conv.layer_choice_msgs(f, chunk.layer_indices, probs)
        return out

    def markers(self, now: float) -> Any | None:
        """MarkerArray of the remembered chunks with alpha by age at `now`; None before the first chunk."""
        if not self._chunks:
            return None
        chunks = [(c.index, c.predicted_at, c.poses, c.gripper, c.executed) for c in self._chunks]
        return conv.chunk_markers_msg(self.factory, chunks, now, self._frame_id, self.style)

    def clear(self) -> None:
        """Forget shown chunks (episode reset)."""
        self._chunks.clear()

    # -- diagnostics -----------------------------------------------------------------------------------------------
    def diagnostics(self, diag: Diagnostics, extra: dict[str, Any] | None = None) -> Any:
        """DiagnosticArray: OK when ready and running or idle, WARN while warming up / holding / in an interlock,
        ERROR when disabled by a fault. Values: state, dry_run, enabled, latencies, rates, counters, active layers."""
        level, message = diagnostic_level(diag)
        values: dict[str, Any] = {
            "state": diag.state,
            "ready": diag.ready,
            "dry_run": diag.dry_run,
            "enabled": diag.enabled,
            "hold_reason": diag.hold_reason,
            "disable_reason": diag.disable_reason,
            "robot_mode": diag.robot_mode,
            "active_layers": f"{len(diag.active_layers)}/{diag.num_layers}",
            "active_layer_indices": ",".join(str(i) for i in diag.active_layers),
            "latency_ms": dict(diag.latency_ms),
            "rate_hz": dict(diag.rates_hz),
            "count": dict(diag.counters),
        }
        values.update(extra or {})
        return conv.diagnostics_msg(
            self.factory, diag.stamp, f"{self.node_name}: policy", self.hardware_id, level, message, values
        )


def diagnostic_level(diag: Diagnostics) -> tuple[int, str]:
    """(DiagnosticStatus level, one-line message) for a runtime snapshot."""
    mode = "dry run" if diag.dry_run else "actuating"
    if diag.state == "disabled" and diag.disable_reason:
        return conv.DIAG_ERROR, f"disabled: {diag.disable_reason} (call ~/enable after fixing it)"
    if not diag.ready:
        return conv.DIAG_WARN, f"not ready ({diag.state})"
    if diag.state == "holding":
        return conv.DIAG_WARN, f"holding pose: {diag.hold_reason} ({mode})"
    if diag.state == "stopping":
        return (
            conv.DIAG_WARN,
            f"braking to rest: {diag.disable_reason or diag.hold_reason or 'stop requested'} ({mode})",
        )
    if diag.state == "waiting_for_observation":
        return conv.DIAG_WARN, f"ready, waiting for a synchronized observation ({mode})"
    return conv.DIAG_OK, f"{diag.state} ({mode}{', enabled' if diag.enabled else ''})"
