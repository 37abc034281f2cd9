"""`output_mode: joint_trajectory`: the Cartesian command stream as JointTrajectory messages for JTC.

Every `trajectory.joint_point_dt` the planner takes the tracker's next `trajectory.joint_horizon_s` of samples,
solves IK for each point (seeded by the previous point, so the arm stays in its current configuration) and sends
positions AND velocities (J+ times the EE twist), so JointTrajectoryController interpolates cubically instead of
linearly (franka_ros2 #168, ros2_controllers PR #2491).

Cost control: the tracker is deterministic, so its future samples are computed once per plan and replayed by the
live tracker (`pop`), and IK solutions are cached per sample stamp. While the plan (chunk, hold state, tracker
restart) is unchanged, each message solves one new point; a new plan recomputes the horizon once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from mole_vla_ros.robot.franka import FrankaDescription
from mole_vla_ros.robot.kinematics import FrankaKinematics
from mole_vla_ros.runtime.commands import JointTrajectoryCommand
from mole_vla_ros.runtime.config import IKConfig, TrajectoryConfig
from mole_vla_ros.runtime.trajectory import CartesianTracker, TrackerState

# (point index, IK reason, position) of the first horizon point without a solution
Failure = tuple[int, str, list]


class JointTrajectoryPlanner:
    """Joint trajectories from the tracker's future, with the caches described in the module docstring."""

    def __init__(
        self,
        kinematics: FrankaKinematics,
        description: FrankaDescription,
        trajectory: TrajectoryConfig,
        ik: IKConfig,
        command_dt: float,
    ):
        self.kinematics = kinematics
        self.joint_names = description.arm_joint_names
        self.v_lim = description.limits.qd_max * ik.velocity_fraction
        self.ik_config = ik
        self.command_dt = command_dt
        self.point_dt = trajectory.joint_point_dt
        self.sub = max(1, round(trajectory.joint_point_dt / command_dt))  # tracker samples per trajectory point
        self.horizon_samples = self.sub * max(1, round(trajectory.joint_horizon_s / (self.sub * command_dt)))
        self.q_cmd: np.ndarray | None = None  # joints commanded at the current sample by the last message
        self.last: JointTrajectoryCommand | None = None
        self._future: deque[TrackerState] = deque()
        self._future_key: tuple | None = None
        self._ik_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # sample stamp (us) -> (q, qd)

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self, q_measured: np.ndarray | None) -> None:
        """Actuation begins at the measured joints: the first message is seeded there, without a speed check."""
        self.q_cmd = None if q_measured is None else np.asarray(q_measured, dtype=np.float64).copy()
        self.last = None
        self.invalidate()

    def invalidate(self) -> None:
        """Forget the cached future and IK (the plan, hold state or tracker start changed)."""
        self._future.clear()
        self._ik_cache.clear()
        self._future_key = None

    def pop(self, key: tuple, t_next: float) -> TrackerState | None:
        """The cached tracker sample at t_next when it was computed under the same plan `key`, else None."""
        if self._future and self._future_key == key and abs(self._future[0].stamp - t_next) < 1e-9:
            return self._future.popleft()
        self._future.clear()
        return None

    def due(self, now: float) -> bool:
        """True when a new message should go out (one per joint_point_dt)."""
        return self.last is None or now - self.last.stamp >= self.point_dt - 1e-9

    # -- planning ----------------------------------------------------------------------------------------------------
    def plan(
        self,
        now: float,
        tracker: CartesianTracker,
        reference_fn: Callable,
        key: tuple,
        seed: np.ndarray,
    ) -> tuple[list, Failure | None]:
        """Solve the horizon without committing anything: (points, failure). points = [(t, q, qd)] up to the first
        IK failure; call again after a re-plan (e.g. braking), then `commit` the points or `hold`."""
        first_dt = None if self.last is None or self.q_cmd is None else max(now - self.last.stamp, self.command_dt)
        return self._solve(now, tracker, reference_fn, key, seed, first_dt)

    def commit(self, now: float, points: list) -> JointTrajectoryCommand:
        """The message for solved `points` (non-empty); its first point (the current sample) becomes q_cmd."""
        self.q_cmd = points[0][1]
        # the first point is the current sample (time ~0); JTC gets the future points (time_from_start > 0)
        ts = np.array([p[0] for p in points])
        keep = ts > 1e-6
        if not np.any(keep):
            keep[-1] = True
            ts[-1] = max(ts[-1], self.command_dt)
        qs = np.array([p[1] for p in points])
        qds = np.array([p[2] for p in points])
        self.last = JointTrajectoryCommand(now, self.joint_names, ts[keep], qs[keep], qds[keep])
        return self.last

    def hold(self, now: float, q_hold: np.ndarray) -> JointTrajectoryCommand:
        """A one-point message that holds `q_hold` at rest."""
        self.last = JointTrajectoryCommand(
            now, self.joint_names, np.array([self.point_dt]), np.asarray(q_hold)[None], np.zeros((1, 7))
        )
        return self.last

    def _solve(self, now, tracker, reference_fn, key, seed, first_dt):
        if key != self._future_key:
            self.invalidate()
            self._future_key = key
        need = self.horizon_samples
        if len(self._future) < need:
            start = self._future[-1] if self._future else tracker.state
            self._future.extend(tracker.rollout(reference_fn, need - len(self._future), start=start))
        points = [tracker.state, *[self._future[i] for i in range(self.sub - 1, need, self.sub)]]
        old = round((now - 1.0) * 1e6)
        for stamp in [t for t in self._ik_cache if t < old]:
            del self._ik_cache[stamp]
        ikc = self.ik_config
        out = []
        q = seed
        for k, s in enumerate(points):
            stamp_key = round(s.stamp * 1e6)
            hit = self._ik_cache.get(stamp_key)
            if hit is None:
                res = self.kinematics.ik(
                    s.pose,
                    q,
                    dt=first_dt if k == 0 else self.sub * self.command_dt,
                    velocity_fraction=ikc.velocity_fraction,
                    joint_limit_margin=ikc.joint_limit_margin,
                    damping=ikc.damping,
                    max_iterations=ikc.max_iterations,
                    position_tolerance=ikc.position_tolerance,
                    rotation_tolerance=ikc.rotation_tolerance,
                    nullspace_gain=ikc.nullspace_gain,
                )
                if not res.success:
                    return out, (k, res.reason, np.round(s.position, 3).tolist())
                qd = np.clip(self.kinematics.joint_velocity(res.q, s.twist), -self.v_lim, self.v_lim)
                hit = (res.q, qd)
                self._ik_cache[stamp_key] = hit
            q = hit[0]
            out.append((s.stamp - now, hit[0], hit[1]))
        return out, None
