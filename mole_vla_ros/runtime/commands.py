"""What one runtime step hands to its shell (ROS node, replay, simulator): commands, the predicted chunk, diagnostics.

All stamps are seconds on the caller's clock (the `now` passed to `PolicyRuntime.step`). Poses are in the base frame
named by `frame_id`. Commands are only present when the runtime actuates (enabled and not dry-run); in dry run the
same values appear as `StepOutput.preview` so they can be visualised but never reach the robot by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mole_vla_ros.interfaces import Pose


@dataclass(frozen=True)
class PoseCommand:
    """One target pose for a Cartesian impedance controller (crisp `target_pose`), with its feed-forward twist.

    velocity: [6] linear (m/s) then angular (rad/s) velocity in the base frame at `stamp`.
    """

    stamp: float
    pose: Pose
    velocity: np.ndarray
    frame_id: str


@dataclass(frozen=True)
class JointTrajectoryCommand:
    """A short joint trajectory for JointTrajectoryController, positions AND velocities (so JTC interpolates cubically).

    time_from_start: [N] seconds after `stamp` (the header stamp); positions, velocities: [N, 7].
    """

    stamp: float
    joint_names: tuple[str, ...]
    time_from_start: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray


@dataclass(frozen=True)
class GripperCommand:
    """A Franka hand goal, issued only on state changes. action "move" (width, speed) or "grasp" (+ force, epsilons)."""

    stamp: float
    action: str
    open: bool
    width: float
    speed: float
    force: float = 0.0
    epsilon_inner: float = 0.005
    epsilon_outer: float = 0.005


@dataclass(frozen=True)
class ChunkPrediction:
    """A newly accepted chunk for visualisation: predicted EE poses in the base frame and what STAR chose.

    stamps: [T] when each pose is due; positions [T, 3]; quaternions [T, 4] (x,y,z,w); gripper [T] raw values.
    executed: [T] bool, True for the actions the scheduler kept (not in the past, inside the execute horizon).
    """

    obs_stamp: float
    stamps: np.ndarray
    positions: np.ndarray
    quaternions: np.ndarray
    gripper: np.ndarray
    executed: np.ndarray
    frame_id: str
    layer_indices: tuple[int, ...]
    num_layers: int
    latency_s: float
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    layer_probs: np.ndarray | None = None  # STAR router probability per layer [num_layers] (None = not reported)


@dataclass(frozen=True)
class Diagnostics:
    """A snapshot of the runtime's health, cheap to build every step.

    state: "warming_up" | "waiting_for_observation" | "idle" (not enabled) | "running" | "holding" | "disabled".
    latency_ms: last and median per stage (policy stages + "inference_total", "step").
    rates_hz: measured rates ("camera/<name>", "inference", "command").
    counters: drops ("drops/<camera>"), rejections ("rejected/<reason>"), clips ("clipped/<what>"), chunk totals.
    """

    stamp: float
    state: str
    ready: bool
    dry_run: bool
    enabled: bool
    hold_reason: str
    disable_reason: str
    robot_mode: str
    latency_ms: Mapping[str, float]
    rates_hz: Mapping[str, float]
    counters: Mapping[str, int]
    active_layers: tuple[int, ...]
    num_layers: int

    def rejections(self) -> dict[str, int]:
        """{reason: count} of everything the runtime refused."""
        return {k.split("/", 1)[1]: v for k, v in self.counters.items() if k.startswith("rejected/")}

    def summary(self) -> str:
        """One log line: state, gates, step/inference latency, chunk count and the refusals."""
        gates = f"{'dry-run' if self.dry_run else 'LIVE'} {'enabled' if self.enabled else 'disabled'}"
        why = self.hold_reason or self.disable_reason
        lat = self.latency_ms
        rejected = ", ".join(f"{k}={v}" for k, v in sorted(self.rejections().items())) or "none"
        return (
            f"{self.state} ({gates}{'; ' + why if why else ''}) step {lat.get('step/median', 0.0):.2f} ms, "
            f"inference {lat.get('inference_total/median', 0.0):.0f} ms, "
            f"chunks {self.counters.get('chunks/accepted', 0)}, rejected: {rejected}"
        )


@dataclass(frozen=True)
class StepOutput:
    """Everything one `PolicyRuntime.step(now)` produced. Commands are None unless the runtime actuates."""

    stamp: float
    pose_command: PoseCommand | None
    joint_command: JointTrajectoryCommand | None
    gripper_command: GripperCommand | None
    preview: PoseCommand | None  # the pose that would be commanded (always set once a trajectory exists)
    preview_joint: JointTrajectoryCommand | None  # the joint trajectory that would be sent (joint_trajectory mode)
    chunk: ChunkPrediction | None  # a chunk accepted during this step, for visualisation
    diagnostics: Diagnostics
