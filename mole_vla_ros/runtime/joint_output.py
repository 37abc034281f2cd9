"""`output_mode: joint_trajectory`: the Cartesian command stream as JointTrajectory messages for JTC.

Every `trajectory.joint_point_dt` the planner takes the tracker's next `trajectory.joint_horizon_s` of samples,
solves IK for each point (seeded by the previous point, so the arm stays in its current configuration) and sends
positions AND velocities (J+ times the EE twist), so JointTrajectoryController interpolates cubically instead of
linearly (franka_ros2 #168, ros2_controllers PR #2491).

Continuity: what the robot executes is the LAST MESSAGE, so every message continues the previous one.

* Between messages the live tracker replays the samples the last message realises (`pop`), even when the plan
  changes in between (a new chunk, a hold): the change takes effect with the next message, at most joint_point_dt
  later, which starts from the committed sample and the committed joint position AND velocity at that time
  (`state_at`: exact at the message's points, JTC's cubic interpolation between them). A message therefore never
  jumps away from what JTC is executing, in joint space or in the Cartesian preview.
* When a horizon point has no IK solution the runtime brakes along the Cartesian path (hold). When even that path
  has none (singularity, joint limits, joint speed), `brake` stops in JOINT space: all joints decelerate together
  along the committed joint velocity (the arm stops on its current path, at most BRAKE_ACC_FRACTION x qdd_max and
  slow enough that the Cartesian limits hold), and the tracker follows the forward kinematics of that stop, so the
  Cartesian stream stays continuous in position and velocity too. No fallback teleports or stops instantly.
* A caller that stalls longer than joint_horizon_s lets JTC run to the end of the last message and stop there; the
  tracker mirrors that (`horizon_exhausted` is counted) instead of pretending the arm kept moving.

Cost control: the tracker is deterministic, so while the plan (chunk, hold state, tracker restart) is unchanged the
committed samples are the beginning of the next message's rollout and their IK solutions are reused (cached per
sample stamp): each message solves one new point; a new plan recomputes the horizon once.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mole_vla_ros.robot.franka import FrankaDescription
from mole_vla_ros.robot.kinematics import FrankaKinematics
from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.runtime.commands import JointTrajectoryCommand
from mole_vla_ros.runtime.config import IKConfig, TrajectoryConfig
from mole_vla_ros.runtime.trajectory import CartesianTracker, TrackerState

log = logging.getLogger(__name__)

# (point index, IK reason, position) of the first horizon point without a solution
Failure = tuple[int, str, list]

# A joint-space stop decelerates at most this fraction of the hardware joint acceleration limits (like
# ik.velocity_fraction for speed: margin against libfranka's acceleration/jerk reflexes).
BRAKE_ACC_FRACTION = 0.5
# Longer stops tried (x this factor) until the stop's Cartesian preview also respects the trajectory limits.
_BRAKE_STRETCH = 1.25
_BRAKE_TRIES = 10
_EPS = 1e-9


def _stamp_key(stamp: float) -> int:
    return round(stamp * 1e6)


@dataclass(frozen=True)
class JointBrake:
    """A synchronised joint-space stop from (q0, qd0) at t0, at rest after `duration` seconds.

    q(t) = q0 + qd0 * (tau - tau^2 / (2 T)), qd(t) = qd0 * (1 - tau / T), tau = clip(t - t0, 0, T): every joint
    decelerates uniformly and all reach rest together, so the arm stays on the joint-space line it was moving along.
    """

    t0: float
    q0: np.ndarray
    qd0: np.ndarray
    duration: float

    @property
    def end(self) -> float:
        return self.t0 + self.duration

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(q, qd) at time t (before t0: the start; after the end: at rest at the final position)."""
        T = self.duration
        if T <= 0.0:
            return self.q0.copy(), np.zeros_like(self.qd0)
        if t >= self.end or t - self.t0 >= T:
            # at rest exactly: (t0 + T) - t0 can round below T and leave a velocity of 1e-16 on the last point
            return self.q0 + self.qd0 * (0.5 * T), np.zeros_like(self.qd0)
        tau = max(t - self.t0, 0.0)
        return self.q0 + self.qd0 * (tau - tau * tau / (2.0 * T)), self.qd0 * (1.0 - tau / T)


@dataclass
class JointPlan:
    """One planned message, not committed yet.

    samples: the tracker samples after the current one up to the horizon; points: [(stamp, q, qd)] from the current
    sample on, up to the first point without an IK solution; failure: that point (None = the whole horizon solved).
    """

    key: tuple
    samples: list[TrackerState]
    points: list[tuple[float, np.ndarray, np.ndarray]]
    failure: Failure | None
    ik: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


class JointTrajectoryPlanner:
    """Joint trajectories from the tracker's future that continue each other; see the module docstring."""

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
        self.limits = description.limits
        self.v_lim = description.limits.qd_max * ik.velocity_fraction
        self.a_brake = description.limits.qdd_max * BRAKE_ACC_FRACTION
        self.ik_config = ik
        self.command_dt = command_dt
        self.point_dt = trajectory.joint_point_dt
        self.sub = max(1, round(trajectory.joint_point_dt / command_dt))  # tracker samples per trajectory point
        self.horizon_samples = self.sub * max(1, round(trajectory.joint_horizon_s / (self.sub * command_dt)))
        self.counters: Counter[str] = Counter()
        self.last: JointTrajectoryCommand | None = None
        self.brake_plan: JointBrake | None = None  # the joint-space stop in progress, if any
        self._start_q: np.ndarray | None = None
        self._last_stamp = -np.inf  # stamp of the last message (due() and shift())
        self._points: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # committed (stamps, q, qd)
        self._committed: deque[TrackerState] = deque()  # committed tracker samples not replayed yet
        self._last_sample: TrackerState | None = None  # the last committed sample (for a stalled caller)
        self._key: tuple | None = None  # plan key the committed samples and IK cache belong to
        self._ik: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # sample stamp (us) -> (q, qd) under _key

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self, q_measured: np.ndarray | None) -> None:
        """(Re)start at the measured joints at rest: forget everything committed (actuation start, tracker reset)."""
        self._start_q = None if q_measured is None else np.asarray(q_measured, dtype=np.float64).copy()
        self.last = None
        self.brake_plan = None
        self._last_stamp = -np.inf
        self._points = None
        self._committed.clear()
        self._last_sample = None
        self._key = None
        self._ik = {}

    def shift(self, delta: float) -> None:
        """The caller's clock jumped by `delta` s (bag loop, stalled caller): move everything committed with it."""
        self._last_stamp += delta
        if self._points is not None:
            stamps, q, qd = self._points
            self._points = (stamps + delta, q, qd)
        for s in self._committed:
            s.stamp += delta
        if self._last_sample is not None:
            self._last_sample = self._last_sample.copy()
            self._last_sample.stamp += delta
        if self.brake_plan is not None:
            b = self.brake_plan
            self.brake_plan = JointBrake(b.t0 + delta, b.q0, b.qd0, b.duration)
        # the reference is a function of time: samples past the committed ones must be rolled out afresh
        self._key = None
        self._ik = {}

    @property
    def q_cmd(self) -> np.ndarray | None:
        """Joints the last message commands at its first (current) sample (None before the first message)."""
        return None if self._points is None else self._points[1][0]

    def due(self, now: float) -> bool:
        """True when a new message should go out (one per joint_point_dt)."""
        return now - self._last_stamp >= self.point_dt - _EPS

    def braking(self, now: float) -> bool:
        """True while a joint-space stop is still moving the arm."""
        return self.brake_plan is not None and now < self.brake_plan.end - _EPS

    # -- the committed trajectory ------------------------------------------------------------------------------------
    def pop(self, t_next: float) -> TrackerState | None:
        """The committed tracker sample at t_next (None before the first message: the tracker steps by itself)."""
        if not self._committed and self._last_sample is None:
            return None
        while self._committed and self._committed[0].stamp < t_next - _EPS:
            self._committed.popleft()
        if self._committed and abs(self._committed[0].stamp - t_next) < _EPS:
            self._last_sample = self._committed.popleft()
            return self._last_sample
        last = self._last_sample
        if last is None:
            return None
        # the caller stalled past the end of the last message: JTC holds its last point, at rest; so does the preview
        if last.moving and self.brake_plan is None:
            self.counters["joint/horizon_exhausted"] += 1
            log.warning("no JointTrajectory for %.3f s: JTC reached the end of the last one and stopped", t_next)
        self._last_sample = TrackerState(t_next, last.position.copy(), np.zeros(3), last.quaternion.copy(), np.zeros(3))
        return self._last_sample

    def state_at(self, stamp: float, q_measured: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Commanded joint (position, velocity) at `stamp`: what JTC executes then (None: nothing known yet).

        Exact at the last message's points, JTC's cubic Hermite interpolation between them, at rest at its last
        point after its end; before any message the measured joints (start()) at rest."""
        if self.brake_plan is not None:
            return self.brake_plan.at(stamp)
        if self._points is None:
            q = self._start_q if self._start_q is not None else q_measured
            return None if q is None else (np.asarray(q, dtype=np.float64).copy(), np.zeros(7))
        stamps, qs, qds = self._points
        i = int(np.searchsorted(stamps, stamp - _EPS))
        if i < len(stamps) and abs(stamps[i] - stamp) < _EPS:
            return qs[i].copy(), qds[i].copy()
        if i == 0:
            return qs[0].copy(), qds[0].copy()
        if i >= len(stamps):
            return qs[-1].copy(), np.zeros(7)
        h = stamps[i] - stamps[i - 1]
        u = (stamp - stamps[i - 1]) / h
        h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
        d00, d10, d01, d11 = 6 * u**2 - 6 * u, 3 * u**2 - 4 * u + 1, -6 * u**2 + 6 * u, 3 * u**2 - 2 * u
        q = h00 * qs[i - 1] + h10 * h * qds[i - 1] + h01 * qs[i] + h11 * h * qds[i]
        qd = (d00 * qs[i - 1] + d01 * qs[i]) / h + d10 * qds[i - 1] + d11 * qds[i]
        return q, qd

    # -- planning ----------------------------------------------------------------------------------------------------
    def plan(
        self,
        now: float,
        tracker: CartesianTracker,
        reference_fn: Callable,
        key: tuple,
        q_measured: np.ndarray | None = None,
    ) -> JointPlan | None:
        """Solve the next message from the committed state under plan `key`, without committing anything.

        Returns None when no joint state is known yet. Call again after a re-plan (e.g. a hold), then `commit` a
        plan without failure, or `brake`."""
        current = tracker.state
        start = self.state_at(current.stamp, q_measured)
        if start is None:
            return None
        need = self.horizon_samples
        reuse = (
            key == self._key
            and self._committed
            and abs(self._committed[0].stamp - (current.stamp + self.command_dt)) < _EPS
        )
        if reuse:
            samples = list(self._committed)[:need]
            ik = {k: v for k, v in self._ik.items() if k > _stamp_key(current.stamp)}
        else:
            samples, ik = [], {}
        if len(samples) < need:
            samples += tracker.rollout(reference_fn, need - len(samples), start=samples[-1] if samples else current)
        ikc = self.ik_config
        points = [(current.stamp, start[0], start[1])]
        for i in range(self.sub - 1, need, self.sub):
            s = samples[i]
            k = _stamp_key(s.stamp)
            hit = ik.get(k)
            if hit is None:
                t_prev, q_prev, _ = points[-1]
                res = self.kinematics.ik(
                    s.pose,
                    q_prev,
                    dt=s.stamp - t_prev,
                    velocity_fraction=ikc.velocity_fraction,
                    joint_limit_margin=ikc.joint_limit_margin,
                    damping=ikc.damping,
                    max_iterations=ikc.max_iterations,
                    position_tolerance=ikc.position_tolerance,
                    rotation_tolerance=ikc.rotation_tolerance,
                    nullspace_gain=ikc.nullspace_gain,
                )
                if not res.success:
                    failure = (len(points), res.reason, np.round(s.position, 3).tolist())
                    return JointPlan(key, samples, points, failure, ik)
                # a tracker sample's velocity is its rate over the PREVIOUS period (p_k = p_{k-1} + v_k dt), i.e. the
                # velocity dt/2 earlier; the velocity AT the point is the mean of the periods before and after it.
                # (With the lagging one, JTC's cubic overshoots the path's joint acceleration by ~3 a dt / point_dt.)
                twist = s.twist if i + 1 >= len(samples) else 0.5 * (s.twist + samples[i + 1].twist)
                qd = np.clip(self.kinematics.joint_velocity(res.q, twist), -self.v_lim, self.v_lim)
                hit = ik[k] = (res.q, qd)
            points.append((s.stamp, hit[0], hit[1]))
        return JointPlan(key, samples, points, None, ik)

    def commit(self, now: float, plan: JointPlan) -> JointTrajectoryCommand:
        """Make `plan` (solved, no failure) the committed trajectory and return its message."""
        if plan.failure is not None:
            raise ValueError(f"cannot commit a joint plan that failed at {plan.failure}; brake() instead")
        self.brake_plan = None
        self._key = plan.key
        self._ik = plan.ik
        self._committed = deque(plan.samples)
        stamps = np.array([p[0] for p in plan.points])
        qs = np.array([p[1] for p in plan.points])
        qds = np.array([p[2] for p in plan.points])
        self._points = (stamps, qs, qds)
        self._check_acceleration(stamps, qs, qds)
        return self._message(now, stamps, qs, qds)

    def _check_acceleration(self, stamps: np.ndarray, qs: np.ndarray, qds: np.ndarray) -> None:
        """Count a message whose first cubic (the one JTC executes before the next message) needs more joint
        acceleration than the hardware allows: the Cartesian limits do not bound joint accelerations (near the
        wrist singularity they map to several times qdd_max), and libfranka would abort with a reflex."""
        h = stamps[1] - stamps[0]
        dp = qs[1] - qs[0]
        a0 = (6.0 * dp - h * (4.0 * qds[0] + 2.0 * qds[1])) / (h * h)
        a1 = (-6.0 * dp + h * (2.0 * qds[0] + 4.0 * qds[1])) / (h * h)
        excess = np.maximum(np.abs(a0), np.abs(a1)) / self.limits.qdd_max
        if np.max(excess) > 1.0:
            self.counters["joint/acc_over_limit"] += 1
            if self.counters["joint/acc_over_limit"] == 1:
                j = int(np.argmax(excess))
                log.warning(
                    "joint %d needs %.1f rad/s^2 (limit %.1f) to follow the Cartesian trajectory; lower "
                    "trajectory.max_rot_acc / max_lin_acc or keep the arm away from singular configurations",
                    j + 1,
                    excess[j] * self.limits.qdd_max[j],
                    self.limits.qdd_max[j],
                )

    def brake(self, now: float, tracker: CartesianTracker) -> JointTrajectoryCommand:
        """Stop in joint space from the committed state at the tracker's current sample (see JointBrake).

        The tracker then replays the forward kinematics of the stop (offset so that it starts exactly at its current
        sample), and stays at rest at its end until a plan is committed again."""
        current = tracker.state
        q0, qd0 = self.state_at(current.stamp, self._start_q)
        moving = bool(np.any(qd0 != 0.0))
        if moving:
            self.counters["joint/brakes"] += 1
        duration = max(float(np.max(np.abs(qd0) / self.a_brake)), tracker.braking_time(), self.command_dt)
        t_limit = self._limit_stop_time(q0, qd0)
        if duration > t_limit:
            # a joint would pass its position limit: stop before it, as hard as the hardware allows
            self.counters["joint/brake_at_joint_limit"] += 1
            duration = max(t_limit, float(np.max(np.abs(qd0) / self.limits.qdd_max)), self.command_dt)
            samples = self._brake_samples(JointBrake(current.stamp, q0, qd0, duration), current)
        else:
            for attempt in range(_BRAKE_TRIES):
                if attempt:
                    duration = min(duration * _BRAKE_STRETCH, t_limit)
                samples = self._brake_samples(JointBrake(current.stamp, q0, qd0, duration), current)
                if self._within_cartesian_limits(samples, tracker) or duration >= t_limit:
                    break
        brake = JointBrake(current.stamp, q0, qd0, duration)
        if moving:
            log.warning(
                "no IK solution along the Cartesian braking path: stopping in joint space in %.3f s from %s rad/s",
                duration,
                np.round(qd0, 3).tolist(),
            )
        self.brake_plan = brake
        self._key = ("joint_brake", current.stamp)  # nothing planned before or after may reuse these samples
        self._ik = {}
        self._committed = deque(samples)
        self._points = None
        return self.brake_message(now)

    def brake_message(self, now: float) -> JointTrajectoryCommand:
        """The rest of the joint-space stop in progress, from `now` to rest, as one message."""
        b = self.brake_plan
        t = b.t0 + self.point_dt * np.arange(1, int(np.ceil(b.duration / self.point_dt - _EPS)) + 1)
        t = np.append(t[t < b.end - _EPS], b.end)
        t = t[t > now + 1e-6]
        if t.size == 0:
            t = np.array([now + self.point_dt])
        states = [b.at(x) for x in t]
        return self._message(now, t, np.array([s[0] for s in states]), np.array([s[1] for s in states]))

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _message(self, now: float, stamps: np.ndarray, qs: np.ndarray, qds: np.ndarray) -> JointTrajectoryCommand:
        # the first point is usually the current sample (time ~0): JTC gets the future points (time_from_start > 0)
        ts = stamps - now
        keep = ts > 1e-6
        if not np.any(keep):
            keep[-1] = True
            ts = ts.copy()
            ts[-1] = max(ts[-1], self.command_dt)
        self._last_stamp = now
        self.last = JointTrajectoryCommand(now, self.joint_names, ts[keep], qs[keep], qds[keep])
        return self.last

    def _limit_stop_time(self, q0: np.ndarray, qd0: np.ndarray) -> float:
        """Longest stop (s) that keeps every joint moving toward a position limit inside it."""
        lo, hi = self.limits.q_min, self.limits.q_max
        room = np.where(qd0 > 0, hi - q0, np.where(qd0 < 0, q0 - lo, np.inf))
        speed = np.abs(qd0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(speed > 0, 2.0 * np.maximum(room - 1e-4, 0.0) / speed, np.inf)
        return float(np.min(t))

    def _brake_samples(self, brake: JointBrake, current: TrackerState) -> list[TrackerState]:
        """Tracker samples after `current` that follow FK of `brake` (displacements applied to `current`)."""
        dt = self.command_dt
        f0 = self.kinematics.fk_matrix(brake.q0)
        r0_t = f0[:3, :3].T
        n = max(1, int(np.ceil(brake.duration / dt - _EPS)))
        out = []
        prev = current
        for k in range(1, n + 1):
            t = current.stamp + k * dt
            f = self.kinematics.fk_matrix(brake.at(t)[0])
            pos = current.position + (f[:3, 3] - f0[:3, 3])
            quat = rot.quat_normalize(rot.quat_multiply(rot.matrix_to_quat(f[:3, :3] @ r0_t), current.quaternion))
            if float(np.dot(quat, prev.quaternion)) < 0:
                quat = -quat
            # velocities are the sample-to-sample rates, as the tracker defines them (p_k = p_{k-1} + v_k dt)
            vel = (pos - prev.position) / dt
            omega = rot.quat_to_rotvec(rot.quat_multiply(quat, rot.quat_conjugate(prev.quaternion))) / dt
            prev = TrackerState(t, pos, vel, quat, omega)
            out.append(prev)
        return out

    @staticmethod
    def _within_cartesian_limits(samples: list[TrackerState], tracker: CartesianTracker) -> bool:
        """True when the stop's preview respects the tracker's per-axis velocity and acceleration limits."""
        v = np.array([s.velocity for s in samples])
        w = np.array([s.angular_velocity for s in samples])
        dt = tracker.dt
        return bool(
            np.all(np.abs(v) <= tracker.v_max + _EPS)
            and np.all(np.abs(w) <= tracker.w_max + _EPS)
            and np.all(np.abs(np.diff(v, axis=0)) <= tracker.a_max * dt + _EPS)
            and np.all(np.abs(np.diff(w, axis=0)) <= tracker.alpha_max * dt + _EPS)
        )
