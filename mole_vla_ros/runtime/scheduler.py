"""Chunk scheduling: when each predicted action is due, which actions are dropped, how chunks overlap.

Timing (latency compensation by stamps, not arrival): a chunk predicted from an observation stamped `obs_stamp`
holds actions a_0..a_{T-1}. Action k is due at obs_stamp + k*dt and its target pose must be reached by its
WAYPOINT TIME obs_stamp + (k+1)*dt (the dataset encodes a_k = pose_{k+1} - pose_k). When the chunk arrives at
`now`, actions whose waypoint time is not after `now` are already history and are dropped; so are actions past the
receding `execute_horizon` (only a_0..a_{H-1} are ever executed: the next chunk, from a newer observation, takes
over). A chunk arriving more than `max_latency_s` after its observation is dropped whole and counted as late.

The plan is the waypoint list of the newest accepted chunk. The tracker follows a reference that runs from the
commanded pose at arrival to the first kept waypoint, then linearly (slerp for rotation) through the waypoints, and
rests at the last one: if no new chunk comes, the arm stops at the end of the horizon and holds.

Adaptive ensemble (CogACT `AdaptiveEnsembler`, optional): each waypoint is the weighted mean of the predictions of
the last `horizon` chunks for that time (interpolated between their own waypoints), with weights
exp(alpha * cos(a_i, a_newest)) from the raw action vectors, as CogACT computes them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.runtime.config import EnsembleConfig


@dataclass(frozen=True)
class Chunk:
    """A decoded chunk: waypoint times [T], positions [T, 3], quaternions [T, 4], gripper [T], raw actions [T, D]."""

    obs_stamp: float
    times: np.ndarray
    positions: np.ndarray
    quaternions: np.ndarray
    gripper: np.ndarray
    actions: np.ndarray

    def interpolate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(covered mask, positions, quaternions, raw actions) of this chunk at times t (inside its span only)."""
        t = np.asarray(t, dtype=np.float64)
        covered = (t >= self.times[0] - 1e-9) & (t <= self.times[-1] + 1e-9)
        idx = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.times) - 1)
        nxt = np.minimum(idx + 1, len(self.times) - 1)
        span = np.where(nxt > idx, self.times[nxt] - self.times[idx], 1.0)
        u = np.clip((t - self.times[idx]) / span, 0.0, 1.0)
        pos = self.positions[idx] + u[:, None] * (self.positions[nxt] - self.positions[idx])
        quat = rot.quat_slerp(self.quaternions[idx], self.quaternions[nxt], u)
        act = self.actions[idx] + u[:, None] * (self.actions[nxt] - self.actions[idx])
        return covered, pos, quat, act


class ChunkScheduler:
    """Holds the current plan and answers "where should the EE be at time t" for the tracker."""

    def __init__(self, dt: float, execute_horizon: int, max_latency_s: float, ensemble: EnsembleConfig):
        if not dt > 0:
            raise ValueError(f"control dt must be > 0 s, got {dt!r}; set scheduling.control_dt or the policy's")
        self.dt = float(dt)
        self.execute_horizon = int(execute_horizon)
        self.max_latency_s = float(max_latency_s)
        self.ensemble = ensemble
        self._history: deque[Chunk] = deque(maxlen=max(1, ensemble.horizon))
        self.version = 0  # changes whenever the plan does (callers cache trajectories per version)
        self._empty_plan()

    # -- plan updates ----------------------------------------------------------------------------------------------
    def add_chunk(
        self,
        obs_stamp: float,
        positions: np.ndarray,
        quaternions: np.ndarray,
        gripper: np.ndarray,
        actions: np.ndarray,
        now: float,
        start_position: np.ndarray,
        start_quaternion: np.ndarray,
    ) -> tuple[str, np.ndarray]:
        """Schedule a decoded chunk. Returns ("" | rejection reason, executed mask [T]).

        Reasons: "late_chunk" (arrived after max_latency_s), "chunk_in_past" (every waypoint already passed).
        """
        n = positions.shape[0]
        times = obs_stamp + self.dt * np.arange(1, n + 1)
        executed = times > now
        if self.execute_horizon > 0:
            executed &= np.arange(n) < self.execute_horizon
        if now - obs_stamp > self.max_latency_s:
            return "late_chunk", np.zeros(n, dtype=bool)
        if not np.any(executed):
            return "chunk_in_past", executed
        chunk = Chunk(obs_stamp, times, positions, quaternions, gripper, actions)
        self._history.append(chunk)
        keep = np.flatnonzero(executed)
        wp_t = times[keep]
        if self.ensemble.enabled and len(self._history) > 1:
            wp_p, wp_q, wp_g = self._ensemble(wp_t, chunk)
        else:
            wp_p, wp_q, wp_g = positions[keep], quaternions[keep], gripper[keep]
        self.times = np.concatenate([[now], wp_t])
        self.positions = np.concatenate([np.asarray(start_position)[None], wp_p])
        self.quaternions = rot.quat_sign_continuity(np.concatenate([np.asarray(start_quaternion)[None], wp_q]))
        self.gripper = np.concatenate([[wp_g[0]], wp_g])
        self._segments()
        self.version += 1
        return "", executed

    def _segments(self) -> None:
        # per-segment constant velocities of the piecewise-linear reference, computed once per chunk
        span = np.maximum(np.diff(self.times), 1e-9)
        self._seg_vel = np.diff(self.positions, axis=0) / span[:, None]
        rel = rot.quat_multiply(self.quaternions[1:], rot.quat_conjugate(self.quaternions[:-1]))
        self._seg_omega = rot.quat_to_rotvec(rel) / span[:, None]

    def _ensemble(self, t: np.ndarray, newest: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        preds = []
        for c in self._history:
            covered, p, q, a = c.interpolate(t)
            g = np.interp(t, c.times, c.gripper)
            preds.append((covered, p, q, a, g))
        _, _, _, a_ref, _ = preds[-1]
        out_p = np.empty((len(t), 3))
        out_q = np.empty((len(t), 4))
        out_g = np.empty(len(t))
        for j in range(len(t)):
            ws, ps, qs, gs = [], [], [], []
            for covered, p, q, a, g in preds:
                if not covered[j]:
                    continue
                denom = np.linalg.norm(a[j]) * np.linalg.norm(a_ref[j])
                cos = float(a[j] @ a_ref[j] / denom) if denom > 1e-12 else 1.0
                ws.append(np.exp(self.ensemble.alpha * cos))
                ps.append(p[j])
                qs.append(q[j])
                gs.append(g[j])
            w = np.asarray(ws) / np.sum(ws)
            out_p[j] = w @ np.asarray(ps)
            out_q[j] = rot.quat_weighted_mean(np.asarray(qs), w)
            out_g[j] = float(w @ np.asarray(gs))
        return out_p, out_q, out_g

    def clear(self) -> None:
        """Forget the plan (the tracker then brakes/holds); the ensemble history too, its chunks are stale now."""
        self._empty_plan()
        self._history.clear()
        self.version += 1

    def _empty_plan(self) -> None:
        # the current plan; index 0 is the start point (commanded pose when the chunk arrived)
        self.times = np.zeros(0)
        self.positions = np.zeros((0, 3))
        self.quaternions = np.zeros((0, 4))
        self.gripper = np.zeros(0)

    # -- queries ---------------------------------------------------------------------------------------------------
    @property
    def has_plan(self) -> bool:
        return self.times.shape[0] > 1

    @property
    def end_time(self) -> float:
        """Waypoint time of the last scheduled action (-inf without a plan)."""
        return float(self.times[-1]) if self.has_plan else -np.inf

    def reference(self, t: float):
        """(position, velocity, quaternion, angular velocity) the EE should have at time t, or None without a plan."""
        if not self.has_plan:
            return None
        times = self.times
        if t >= times[-1]:
            return self.positions[-1], np.zeros(3), self.quaternions[-1], np.zeros(3)
        j = max(int(np.searchsorted(times, t, side="right")) - 1, 0)
        span = times[j + 1] - times[j]
        u = min(max((t - times[j]) / span, 0.0), 1.0) if span > 0 else 1.0
        pos = self.positions[j] + u * (self.positions[j + 1] - self.positions[j])
        quat = rot.quat_slerp(self.quaternions[j], self.quaternions[j + 1], float(u))
        return pos, self._seg_vel[j], quat, self._seg_omega[j]

    def active_index(self, t: float) -> int:
        """Index (into the plan's waypoints, 1-based; 0 = before the first) of the action being executed at t."""
        if not self.has_plan:
            return -1
        return int(min(np.searchsorted(self.times, t, side="left"), self.times.shape[0] - 1))

    def gripper_at(self, t: float) -> float | None:
        """Raw gripper value of the action being executed at t (None without a plan)."""
        if not self.has_plan:
            return None
        return float(self.gripper[max(self.active_index(t), 1)])
