"""The safety layer every command passes through. Nothing reaches the robot without `SafetyMonitor.actuating`.

Gates: dry run (default on), explicit `enable()`, the robot-mode interlock (REFLEX / USER_STOPPED / ... disable
until re-enabled), the workspace box (targets clipped, commanded samples checked), the max step between two
commanded samples, NaN/inf rejection. Faults that should not need an operator (stale observations, inference
errors, a sample failing its checks) put the runtime in HOLD: the tracker brakes to rest and holds the last
commanded pose until a fresh chunk arrives. Every refusal is counted under its reason.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from mole_vla_ros.runtime.config import SafetyConfig
from mole_vla_ros.runtime.trajectory import TrackerState

log = logging.getLogger(__name__)


class SafetyMonitor:
    """Enable/disable state, interlocks, hold state and rejection counters."""

    def __init__(self, config: SafetyConfig):
        self.config = config
        self.dry_run = bool(config.dry_run)
        self.enabled = False
        self.disable_reason = "not enabled yet"
        self.hold_reason = ""
        self.robot_mode = ""
        self.counters: Counter[str] = Counter()
        self._lo = np.asarray(config.workspace_min)
        self._hi = np.asarray(config.workspace_max)

    # -- gates -----------------------------------------------------------------------------------------------------
    @property
    def actuating(self) -> bool:
        """True when commands may go to the robot: enabled, not dry run."""
        return self.enabled and not self.dry_run

    def reject(self, reason: str, detail: str = "") -> None:
        """Count one refusal under `reason` (and log it at debug level with `detail`)."""
        self.counters[f"rejected/{reason}"] += 1
        if detail:
            log.debug("rejected (%s): %s", reason, detail)

    def interlocked(self) -> str:
        """Why enabling is impossible right now from the robot side ("" = not interlocked)."""
        if self.robot_mode in self.config.interlock_modes:
            return f"robot mode is {self.robot_mode}"
        if self.config.require_robot_mode and not self.robot_mode:
            return "no robot mode received yet (safety.require_robot_mode is true)"
        return ""

    def try_enable(self, current_position: np.ndarray | None) -> str:
        """Enable unless something forbids it; returns "" on success or the reason it stayed disabled."""
        why = self.interlocked()
        if not why and current_position is None:
            why = "no end-effector pose received yet"
        if not why and not self.inside(current_position):
            why = (
                f"end effector at {np.round(current_position, 3).tolist()} is outside the workspace box "
                f"{list(self.config.workspace_min)}..{list(self.config.workspace_max)}; move it inside or widen "
                f"safety.workspace_min/max"
            )
        if why:
            self.reject("enable_refused", why)
            return why
        self.enabled = True
        self.disable_reason = ""
        self.hold_reason = ""
        log.info("runtime enabled (dry_run=%s)", self.dry_run)
        return ""

    def disable(self, reason: str) -> None:
        """Stop actuating until `try_enable` succeeds again."""
        if self.enabled:
            log.warning("runtime disabled: %s", reason)
        self.enabled = False
        self.disable_reason = reason
        self.counters[f"disabled/{reason.split(':')[0].split(' ')[0]}"] += 1

    def on_robot_mode(self, mode: str) -> None:
        """Interlock input (FrankaRobotState.robot_mode name). A blocking mode disables until re-enabled."""
        self.robot_mode = str(mode)
        if self.robot_mode in self.config.interlock_modes and self.enabled:
            self.disable(f"robot_mode {self.robot_mode}")

    def hold(self, reason: str) -> None:
        """Enter HOLD (brake and keep the last commanded pose) and count why."""
        if self.hold_reason != reason:
            log.warning("holding: %s", reason)
            self.counters[f"hold/{reason}"] += 1
        self.hold_reason = reason

    def release_hold(self) -> None:
        self.hold_reason = ""

    # -- geometric checks ------------------------------------------------------------------------------------------
    def inside(self, position) -> bool:
        p = np.asarray(position, dtype=np.float64)
        return bool(np.all(p >= self._lo - 1e-9) and np.all(p <= self._hi + 1e-9))

    def clip_targets(self, positions: np.ndarray) -> np.ndarray:
        """Waypoints clipped into the workspace box; counts how many were moved."""
        clipped = np.clip(positions, self._lo, self._hi)
        n = int(np.sum(np.any(clipped != positions, axis=-1)))
        if n:
            self.counters["clipped/workspace"] += n
        return clipped

    def check_sample(self, previous: TrackerState | None, sample: TrackerState) -> str:
        """ "" if `sample` may be commanded after `previous`, else the reason it may not."""
        if not (
            np.all(np.isfinite(sample.position))
            and np.all(np.isfinite(sample.quaternion))
            and np.all(np.isfinite(sample.velocity))
            and np.all(np.isfinite(sample.angular_velocity))
        ):
            return "non_finite_command"
        if not self.inside(sample.position):
            return "outside_workspace"
        if previous is not None:
            if float(np.max(np.abs(sample.position - previous.position))) > self.config.max_step_m:
                return "max_step_exceeded"
            dq = abs(float(np.dot(sample.quaternion, previous.quaternion)))
            if 2.0 * np.arccos(min(1.0, dq)) > self.config.max_step_rad:
                return "max_step_exceeded"
        return ""
