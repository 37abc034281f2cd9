"""Turning scheduled EE waypoints into a smooth, limited command stream at the command rate.

`CartesianTracker` is an online trajectory generator: every command period it moves its state (position, linear
velocity, orientation, angular velocity) toward a time-varying reference with

    v_des = v_ref + sign(e) * min(sqrt(a_max * |e|), k * |e|)      (feed-forward + braking-curve feedback)
    v_new = clip(v_des, v - a_max*dt, v + a_max*dt), then |v_new| <= v_max, then the workspace braking bound
    p_new = p + v_new * dt

per base-frame axis, with the rotation error taken as a base-frame rotation vector. Consequences the property tests
check: position and velocity are continuous by construction (the state persists across chunk boundaries, a new
chunk only changes the reference), |v| <= v_max and |dv/dt| <= a_max on every axis, and the position never leaves
the workspace box (the velocity toward a wall is bounded so the tracker can always brake before it).

`brake()` (reference None) decelerates at a_max to a standstill and then holds that pose exactly: this is how the
safety layer "holds the last commanded pose" without a velocity jump.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.runtime import rotations as rot

# (position, linear velocity, quaternion, angular velocity) the tracker should follow at a given time
Reference = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
ReferenceFn = Callable[[float], "Reference | None"]

# Feedback gain (1/s) of the linear part of the braking law; capped at 0.5/dt so the discrete loop stays stable.
_FEEDBACK_GAIN = 20.0


@dataclass
class TrackerState:
    """One commanded sample: stamp (s), position [3], linear velocity [3], quaternion [4], angular velocity [3]."""

    stamp: float
    position: np.ndarray
    velocity: np.ndarray
    quaternion: np.ndarray
    angular_velocity: np.ndarray

    def copy(self) -> TrackerState:
        return TrackerState(
            self.stamp, self.position.copy(), self.velocity.copy(), self.quaternion.copy(), self.angular_velocity.copy()
        )

    @property
    def pose(self) -> Pose:
        return Pose(self.position, self.quaternion)

    @property
    def twist(self) -> np.ndarray:
        return np.concatenate([self.velocity, self.angular_velocity])

    @property
    def moving(self) -> bool:
        return bool(np.any(self.velocity != 0.0) or np.any(self.angular_velocity != 0.0))


class CartesianTracker:
    """Velocity- and acceleration-limited tracking of a Cartesian reference, sampled every `dt` seconds."""

    def __init__(
        self,
        dt: float,
        max_lin_vel,
        max_lin_acc,
        max_rot_vel,
        max_rot_acc,
        workspace_min=None,
        workspace_max=None,
    ):
        if not dt > 0:
            raise ValueError(f"tracker period dt must be > 0 s, got {dt!r}")
        self.dt = float(dt)
        self.v_max = np.asarray(max_lin_vel, dtype=np.float64)
        self.a_max = np.asarray(max_lin_acc, dtype=np.float64)
        self.w_max = np.asarray(max_rot_vel, dtype=np.float64)
        self.alpha_max = np.asarray(max_rot_acc, dtype=np.float64)
        self.lo = None if workspace_min is None else np.asarray(workspace_min, dtype=np.float64)
        self.hi = None if workspace_max is None else np.asarray(workspace_max, dtype=np.float64)
        self.gain = min(_FEEDBACK_GAIN, 0.5 / self.dt)
        self.state: TrackerState | None = None
        self.resets = 0  # incremented by reset(): anything cached from an older start is invalid

    def reset(self, pose: Pose, stamp: float) -> None:
        """Start at `pose` at rest (e.g. the measured EE pose when actuation begins: no start jump)."""
        self.state = TrackerState(float(stamp), pose.position.copy(), np.zeros(3), pose.quaternion.copy(), np.zeros(3))
        self.resets += 1

    @property
    def initialized(self) -> bool:
        return self.state is not None

    # -- one axis-group update -------------------------------------------------------------------------------------
    def _axis_update(self, x, v, x_ref, v_ref, v_max, a_max, lo=None, hi=None) -> np.ndarray:
        dt = self.dt
        if x_ref is None:
            v_des = np.zeros_like(v)  # brake: no feedback, decelerate to rest
        else:
            e = x_ref - x
            ae = np.abs(e)
            v_des = v_ref + np.sign(e) * np.minimum(np.sqrt(a_max * ae), self.gain * ae)
        v_new = np.clip(v_des, v - a_max * dt, v + a_max * dt)
        v_new = np.clip(v_new, -v_max, v_max)
        if hi is not None:
            # the fastest approach to a wall from which braking at a_max (one sample late) still stops before it
            d_hi = np.maximum(hi - x, 0.0)
            d_lo = np.maximum(x - lo, 0.0)
            s = 1.5 * dt
            up = a_max * (np.sqrt(s * s + 2.0 * d_hi / a_max) - s)
            down = a_max * (np.sqrt(s * s + 2.0 * d_lo / a_max) - s)
            v_new = np.clip(v_new, -down, up)
            # the acceleration limit wins over the wall bound (the bound is kept by construction; see module doc)
            v_new = np.clip(v_new, v - a_max * dt, v + a_max * dt)
        return v_new

    def step(self, reference: Reference | None) -> TrackerState:
        """Advance one period toward `reference` (None = brake and hold). Returns the new state (also kept)."""
        s = self.state
        if s is None:
            raise RuntimeError("CartesianTracker.step before reset(): start it at the measured EE pose first")
        if reference is None:
            p_ref = v_ref = q_err = w_ref = None
        else:
            p_ref, v_ref, q_ref, w_ref = reference
            q_err = rot.quat_to_rotvec(rot.quat_multiply(q_ref, rot.quat_conjugate(s.quaternion)))
        v_new = self._axis_update(s.position, s.velocity, p_ref, v_ref, self.v_max, self.a_max, self.lo, self.hi)
        # rotation: the error is a base-frame rotation vector, driven to zero like a position with x = 0
        w_new = self._axis_update(np.zeros(3), s.angular_velocity, q_err, w_ref, self.w_max, self.alpha_max, None, None)
        pos = s.position + v_new * self.dt
        if np.any(w_new != 0.0):
            quat = rot.quat_normalize(rot.quat_multiply(rot.rotvec_to_quat(w_new * self.dt), s.quaternion))
        else:
            quat = s.quaternion
        self.state = TrackerState(s.stamp + self.dt, pos, v_new, quat, w_new)
        return self.state

    def rollout(self, reference_fn: ReferenceFn, steps: int, start: TrackerState | None = None) -> list[TrackerState]:
        """The `steps` samples the tracker would produce after `start` (default: its state), without changing it.

        Deterministic: stepping live with the same references yields exactly these states, so a caller may cache
        them (the runtime does, for joint trajectories) and replay them instead of recomputing.
        """
        if self.state is None and start is None:
            raise RuntimeError("CartesianTracker.rollout before reset()")
        saved = self.state
        self.state = start if start is not None else saved
        out = []
        try:
            for _ in range(steps):
                out.append(self.step(reference_fn(self.state.stamp + self.dt)))
        finally:
            self.state = saved
        return out

    def braking_time(self) -> float:
        """Seconds until the tracker is at rest if it brakes now."""
        if self.state is None:
            return 0.0
        t_lin = float(np.max(np.abs(self.state.velocity) / self.a_max))
        t_rot = float(np.max(np.abs(self.state.angular_velocity) / self.alpha_max))
        return math.ceil(max(t_lin, t_rot) / self.dt - 1e-9) * self.dt
