"""`PolicyRuntime`: the one runtime core that the live ROS node, offline replay and the simulator all drive.

A shell feeds stamped inputs and calls `step(now)` at the command rate; everything else happens here:

    on_camera / on_joint_state / on_ee_pose / on_gripper   -> ObservationSync (header stamps, tolerance, drops)
    on_robot_mode                                          -> SafetyMonitor interlock
    step(now):
      1. collect a finished inference, decode its chunk from the observation's EE pose, clip it to the workspace,
         schedule it (ChunkScheduler: due times from the observation stamp, drop past actions, execute horizon,
         optional CogACT ensemble)
      2. request the next inference when the plan runs short and a newer synchronised observation exists
         (executor "thread": off the caller's thread; "inline": synchronously, result released at
         request time + measured or simulated latency, so replays are deterministic)
      3. watchdog: no fresh observation for safety.watchdog_timeout_s -> hold
      4. advance the CartesianTracker sample by sample to `now` (limits, continuity, workspace), check every sample
         (SafetyMonitor), IK to a JointTrajectory in joint_trajectory mode (each message continues the last one;
         the tracker replays what it committed, see runtime/joint_output.py)
      5. gripper: each newly active action's value through hysteresis + debounce
      6. return StepOutput: commands only when enabled and not dry run (or while a disable brakes to rest),
         previews always, diagnostics.

Continuity: the commanded pose / joint stream never jumps and never stops instantly while the arm moves. Faults
brake along the trajectory (hold); disable() / dry run while moving brake to rest before commands stop ("stopping");
reset_episode() while moving brakes instead of restarting. Restarting at the measured state at rest (enable,
reset_episode, leaving dry run) assumes the arm is at rest then: the runtime stopped it before commands ended.

Usage (what every shell does):

    rt = PolicyRuntime(RuntimeConfig.from_yaml("config/mole_vla.yaml"), policy, executor="thread")
    rt.warmup()                       # optional: step() warms up by itself
    rt.set_instruction("put the cube in the bowl")
    ... feed rt.on_camera(...), rt.on_ee_pose(...), rt.on_joint_state(...) as messages arrive ...
    rt.enable()                       # operator arms the robot (still dry run unless safety.dry_run is false)
    out = rt.step(now)                # at trajectory.command_rate_hz
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mole_vla_ros.interfaces import (
    CameraFrame,
    GripperSample,
    JointStateSample,
    Policy,
    PolicyInput,
    PolicyOutput,
    Pose,
    PoseSample,
)
from mole_vla_ros.robot.franka import describe
from mole_vla_ros.robot.kinematics import FrankaKinematics
from mole_vla_ros.runtime.action_space import get_action_space
from mole_vla_ros.runtime.commands import (
    ChunkPrediction,
    Diagnostics,
    GripperCommand,
    JointTrajectoryCommand,
    PoseCommand,
    StepOutput,
)
from mole_vla_ros.runtime.config import RuntimeConfig
from mole_vla_ros.runtime.gripper import GripperLogic
from mole_vla_ros.runtime.joint_output import JointTrajectoryPlanner
from mole_vla_ros.runtime.observation import Observation, ObservationSync
from mole_vla_ros.runtime.safety import SafetyMonitor
from mole_vla_ros.runtime.scheduler import ChunkScheduler
from mole_vla_ros.runtime.trajectory import CartesianTracker, TrackerState

log = logging.getLogger(__name__)

EXECUTORS = ("thread", "inline")
# A step() arriving this many command periods after the last sample re-anchors the tracker clock instead of
# integrating hundreds of samples at once (a paused replay, a stalled caller).
_MAX_SUBSTEPS = 100


@dataclass
class _Pending:
    """One inference in flight: its observation, when it was requested, and the result or future."""

    obs: Observation
    request_stamp: float
    future: Future | None = None
    output: PolicyOutput | None = None
    error: BaseException | None = None
    available_at: float = float("inf")
    latency_s: float = 0.0
    wall_start: float = 0.0


def _ee_link_of(frame: str) -> str:
    if frame.endswith("hand_tcp"):
        return "tcp"
    if frame.endswith("_hand"):
        return "hand"
    if frame.endswith("link8"):
        return "flange"
    raise ValueError(
        f"frames.ee_frame={frame!r} has no built-in kinematics (known: <robot>_hand_tcp, <robot>_hand, "
        f"<robot>_link8); pass kinematics=... to PolicyRuntime for a custom end effector"
    )


class PolicyRuntime:
    """Observations in, smooth and safe Franka commands out. See the module docstring for the step pipeline."""

    def __init__(
        self,
        config: RuntimeConfig,
        policy: Policy,
        executor: str = "thread",
        kinematics: FrankaKinematics | None = None,
    ):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
        self.config = config
        self.policy = policy
        self.executor_kind = executor
        self.description = describe(config.robot_type)
        self.frame_id = config.frames.base_frame

        missing = [c for c in policy.camera_names if c not in config.observation.camera_names]
        if missing:
            raise ValueError(
                f"the policy needs cameras {list(policy.camera_names)} but observation.camera_names is "
                f"{list(config.observation.camera_names)} (missing {missing}); add them to the runtime config"
            )
        space_name = config.action_space or policy.action_space
        if config.action_space and policy.action_space and config.action_space != policy.action_space:
            raise ValueError(
                f"action_space {config.action_space!r} in the runtime config contradicts the policy's "
                f"{policy.action_space!r}; leave action_space empty to use the checkpoint's"
            )
        self.action_space = get_action_space(space_name)
        dt = config.scheduling.control_dt or float(policy.control_dt)
        if config.scheduling.control_dt and abs(config.scheduling.control_dt - policy.control_dt) > 1e-9:
            log.warning(
                "scheduling.control_dt=%.4f differs from the policy's control_dt=%.4f: actions will be executed at a "
                "different speed than demonstrated",
                config.scheduling.control_dt,
                policy.control_dt,
            )
        self.control_dt = dt

        needs_kinematics = config.output_mode == "joint_trajectory" or config.observation.ee_pose_source == "fk"
        if kinematics is None:
            try:
                kinematics = FrankaKinematics(config.robot_type, _ee_link_of(config.frames.ee_frame))
            except ValueError:
                if needs_kinematics:
                    raise
                # pose output from the robot's own EE pose topic never needs our kinematics: a custom EE is fine
                log.info("no built-in kinematics for ee_frame %r (not needed in this mode)", config.frames.ee_frame)
        self.kinematics = kinematics
        self.sync = ObservationSync(
            config.observation,
            self.frame_id,
            self.description.arm_joint_names,
            fk=None if self.kinematics is None else self.kinematics.fk,
        )
        sch = config.scheduling
        self.scheduler = ChunkScheduler(dt, sch.execute_horizon, sch.max_latency_s, sch.ensemble)
        tr = config.trajectory
        self.command_dt = 1.0 / tr.command_rate_hz
        self.tracker = CartesianTracker(
            self.command_dt,
            tr.max_lin_vel,
            tr.max_lin_acc,
            tr.max_rot_vel,
            tr.max_rot_acc,
            config.safety.workspace_min,
            config.safety.workspace_max,
        )
        self.gripper = GripperLogic(config.gripper)
        self.safety = SafetyMonitor(config.safety)
        self.instruction = config.instruction
        self.active_layers: int | None = None

        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="mole_vla_infer") if executor == "thread" else None
        )
        self._pending: _Pending | None = None
        self._warmup_future: Future | None = None
        self.ready = sch.warmup_steps == 0
        # request i (counted from construction or the last restart_noise) gets diffusion noise seed _noise_seed + i
        self._requests = 0
        self._noise_seed = sch.seed
        self._last_obs_stamp = -np.inf  # newest observation already given to the policy
        self._last_fresh_obs = -np.inf  # newest_stamp of the last synchronised observation seen
        self._obs_status = "no observation yet"
        self._hold_since = -np.inf
        self._was_actuating = False
        # disabled (or switched to dry run) while the commanded trajectory was moving: commands go on, braking to
        # rest, and stop once it is at rest (a command stream that freezes mid-motion is a discontinuity reflex)
        self._stopping = False
        self.joints = (
            JointTrajectoryPlanner(self.kinematics, self.description, tr, config.ik, self.command_dt)
            if config.output_mode == "joint_trajectory"
            else None
        )
        self._gripper_key: tuple[int, int] | None = None
        self._chunk_id = 0
        self.counters: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._latency: dict[str, deque] = {}
        self._last_output: PolicyOutput | None = None
        self._command_times: deque = deque(maxlen=50)
        self._inference_times: deque = deque(maxlen=20)

    # ------------------------------------------------------------------------------------------------------------
    # inputs
    # Inputs may arrive on any thread (a multi-threaded ROS executor); one lock serialises them with step().
    def on_camera(self, frame: CameraFrame) -> None:
        with self._lock:
            self.sync.add_camera(frame)

    def on_joint_state(self, sample: JointStateSample) -> None:
        with self._lock:
            self.sync.add_joint_state(sample)

    def on_ee_pose(self, sample: PoseSample) -> None:
        with self._lock:
            self.sync.add_ee_pose(sample)

    def on_gripper(self, sample: GripperSample) -> None:
        with self._lock:
            self.sync.add_gripper(sample)

    def on_robot_mode(self, mode: str) -> None:
        """FrankaRobotState.robot_mode by name; a blocking mode (REFLEX, USER_STOPPED, ...) disables the runtime."""
        with self._lock:
            self.safety.on_robot_mode(mode)

    def set_instruction(self, text: str) -> None:
        """Language instruction for the following inferences; a change clears the plan (it was for the old task)."""
        with self._lock:
            if text != self.instruction:
                self.instruction = str(text)
                self.scheduler.clear()
                log.info("instruction: %r", self.instruction)

    def set_active_layers(self, n: int | None) -> None:
        """How many LLM layers STAR may run per inference (None = the checkpoint default)."""
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ValueError(f"active_layers must be a positive integer or None, got {n!r}")
        self.active_layers = n

    def set_dry_run(self, dry_run: bool) -> None:
        """Switch dry run at runtime; leaving dry run while enabled restarts the trajectory at the measured pose,
        entering it while the arm moves brakes to rest first (like disable())."""
        with self._lock:
            moving = self.safety.actuating and self._commanded_moving()
            self.safety.dry_run = bool(dry_run)
            if moving and not self.safety.actuating:
                self._begin_stop("dry run")
        log.info("dry_run=%s", self.safety.dry_run)

    def enable(self) -> str:
        """Arm the runtime. Returns "" on success, else why it stayed disabled (also counted in diagnostics)."""
        with self._lock:
            return self._enable()

    def _enable(self) -> str:
        if not self.ready:
            self.safety.reject("enable_refused", "warm-up not finished")
            return "warm-up not finished: call warmup() or keep stepping until diagnostics.ready"
        last = self.sync.latest_ee_pose()
        if self.config.output_mode == "joint_trajectory" and self.sync.latest_joint_positions() is None:
            self.safety.reject("enable_refused", "no joint state")
            return "output_mode joint_trajectory needs joint states before enabling; none received yet"
        return self.safety.try_enable(None if last is None else last[1].position)

    def disable(self, reason: str = "operator", brake: bool = True) -> None:
        """Stop actuating; enable() re-arms.

        When the commanded trajectory is moving, the runtime first brakes it to rest within the trajectory limits
        (diagnostics state "stopping"; pose / joint commands go on until then, at most max_vel / max_acc, ~0.2 s
        with the defaults) and only then stops commanding: a command stream that freezes mid-motion makes
        libfranka abort with a discontinuity reflex. brake=False stops the commands with this step (the robot side
        has already stopped). The robot-mode interlock (REFLEX, USER_STOPPED, ...) always stops at once.
        """
        with self._lock:
            moving = self.safety.actuating and self._commanded_moving()
            self.safety.disable(reason)
            if brake and moving:
                self._begin_stop(reason)
            else:
                self._end_stop()

    def _begin_stop(self, reason: str) -> None:
        self._stopping = True
        self.scheduler.clear()
        self.counters["stops/braked"] += 1
        log.info("%s while moving: braking to rest before commands stop", reason)

    def _end_stop(self) -> None:
        self._stopping = False
        # re-enabling must start actuation afresh (tracker from the measured pose, gripper re-read), even when
        # no step ran in between
        self._was_actuating = False

    def _commanded_moving(self) -> bool:
        """True while the commanded trajectory (Cartesian, or the last JointTrajectory) is not at rest."""
        st = self.tracker.state
        if st is None:
            return False
        if st.moving:
            return True
        jt = self.joints
        return jt is not None and (jt.braking(st.stamp) or (jt.last is not None and bool(np.any(jt.last.velocities))))

    def restart_noise(self, seed: int) -> None:
        """Give the next inference request the diffusion noise seed `seed` (then seed + 1, ...), whatever ran before.

        The simulator's evaluation calls it per episode, so an episode's rollout does not depend on how many requests
        earlier episodes made, and every setting compared meets the same noise on the same episode."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"the noise seed must be an integer >= 0, got {seed!r}.")
        with self._lock:
            self._noise_seed, self._requests = int(seed), 0

    def reset_episode(self) -> None:
        """Forget the plan, the pending inference and all buffered observations (between episodes).

        The next actuation restarts at the measured state at rest, except while enabled with the arm moving: then
        the commanded trajectory brakes to rest and the new episode continues from it (no velocity jump)."""
        with self._lock:
            self._reset_episode()

    def _reset_episode(self) -> None:
        # only while still enabled: after disable() the caller may have moved the arm (a simulator reset), so a
        # stop in progress ends here and the next enable() restarts at the measured state
        moving = self.safety.actuating and self._commanded_moving()
        self.scheduler.clear()
        self._pending = None
        self.sync.clear()
        self.gripper.reset()
        self._last_obs_stamp = -np.inf
        self._last_fresh_obs = -np.inf
        self._gripper_key = None
        self.safety.release_hold()
        if moving:
            # the arm is moving under our commands: restarting at the measured pose at rest would be a velocity
            # jump. The commanded trajectory brakes to rest instead (no plan) and the new episode continues from it
            self.counters["reset/while_moving"] += 1
            log.warning("reset_episode while the arm moves: braking along the commanded trajectory, no restart")
            return
        self._stopping = False
        # the next step starts over at the measured pose (the episode reset may have moved the arm) exactly as if
        # actuation had just begun: plan cleared, tracker at rest, gripper state re-read
        self.tracker.state = None
        self._was_actuating = False
        if self.joints is not None:
            self.joints.start(None)

    def close(self) -> None:
        """Stop the inference thread (thread executor)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PolicyRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------------------
    # warm-up and inference
    def _blank_input(self) -> PolicyInput:
        s = int(self.policy.image_size)
        images = {c: np.zeros((s, s, 3), dtype=np.uint8) for c in self.policy.camera_names}
        return PolicyInput(images, self.instruction or "warm up", self.active_layers, seed=0)

    def warmup(self) -> None:
        """Run `scheduling.warmup_steps` inferences on blank images now (cold start never reaches the robot)."""
        n = self.config.scheduling.warmup_steps
        for i in range(n):
            t0 = time.perf_counter()
            self.policy.infer(self._blank_input())
            log.info("warm-up inference %d/%d: %.1f ms", i + 1, n, (time.perf_counter() - t0) * 1e3)
        self.ready = True

    def _run_policy(self, inp: PolicyInput) -> tuple[PolicyOutput, float]:
        t0 = time.perf_counter()
        out = self.policy.infer(inp)
        return out, time.perf_counter() - t0

    def _run_policy_stamped(self, inp: PolicyInput) -> tuple[PolicyOutput, float]:
        out, _ = self._run_policy(inp)
        return out, time.perf_counter()

    def _maybe_request(self, now: float, obs: Observation | None) -> None:
        if self._pending is not None or not self.ready or obs is None or obs.stamp <= self._last_obs_stamp:
            return
        sch = self.config.scheduling
        if sch.inference_period_s > 0:
            due = now >= self._last_request_stamp() + sch.inference_period_s
        else:
            due = (
                not self.scheduler.has_plan
                or self.scheduler.end_time - now <= self._latency_estimate() + self.control_dt
            )
        if not due:
            return
        images = {c: obs.images[c] for c in self.policy.camera_names}
        inp = PolicyInput(images, self.instruction, self.active_layers, seed=self._noise_seed + self._requests)
        self._requests += 1
        self._last_obs_stamp = obs.stamp
        self._inference_times.append(now)
        pending = _Pending(obs=obs, request_stamp=now, wall_start=time.perf_counter())
        if self._pool is not None:
            pending.future = self._pool.submit(self._run_policy_stamped, inp)
        else:
            try:
                pending.output, measured = self._run_policy(inp)
            except Exception as exc:  # a policy bug must hold the robot, not kill the control loop
                pending.error, measured = exc, time.perf_counter() - pending.wall_start
            pending.latency_s = sch.simulated_latency_s if sch.latency_mode == "simulated" else measured
            pending.available_at = now + pending.latency_s
        self._pending = pending

    def _last_request_stamp(self) -> float:
        return self._inference_times[-1] if self._inference_times else -np.inf

    def _latency_estimate(self) -> float:
        hist = self._latency.get("inference_total")
        if hist:
            return statistics.median(hist) / 1e3
        if self.executor_kind == "inline" and self.config.scheduling.latency_mode == "simulated":
            return self.config.scheduling.simulated_latency_s
        return 0.0

    def _poll(self, now: float) -> _Pending | None:
        p = self._pending
        if p is None:
            return None
        if p.future is not None:
            if not p.future.done():
                return None
            try:
                p.output, t_done = p.future.result()
            except Exception as exc:
                p.error, t_done = exc, time.perf_counter()
            # request to completion (queueing included), not until this poll noticed it
            p.latency_s = t_done - p.wall_start
        elif now < p.available_at:
            return None
        self._pending = None
        return p

    def _record_latency(self, stage: str, ms: float) -> None:
        self._latency.setdefault(stage, deque(maxlen=100)).append(float(ms))

    def _accept(self, p: _Pending, now: float) -> ChunkPrediction | None:
        """Validate, decode and schedule one finished inference; failures hold the robot and are counted."""
        self._record_latency("inference_total", p.latency_s * 1e3)
        if p.error is not None:
            log.error("inference failed: %r", p.error)
            self._fault("inference_error", repr(p.error))
            return None
        out = p.output
        self._last_output = out
        for stage, ms in (out.timings_ms or {}).items():
            self._record_latency(stage, ms)
        try:
            actions = self.action_space.check_actions(out.actions, "policy actions")
            if actions.ndim != 2:
                raise ValueError(f"policy actions must be [T, {self.action_space.dim}], got shape {actions.shape}")
        except ValueError as exc:
            reason = "non_finite_actions" if "NaN" in str(exc) else "bad_action_shape"
            self._fault(reason, str(exc))
            return None
        obs = p.obs
        pos, quat, grip = self.action_space.decode_arrays(obs.ee_pose.position, obs.ee_pose.quaternion, actions)
        pos = self.safety.clip_targets(pos)
        if not self.safety.actuating and not self._stopping and self.tracker.state is not None:
            # shadow mode (dry run / not enabled): preview what would be commanded from where the robot IS, not
            # from a preview that drifted away from a robot that did not follow it
            self._restart_tracker(obs.ee_pose, self.tracker.state.stamp)
        if self.tracker.state is not None:
            start_p, start_q = self.tracker.state.position, self.tracker.state.quaternion
        else:
            start_p, start_q = obs.ee_pose.position, obs.ee_pose.quaternion
        why, executed = self.scheduler.add_chunk(obs.stamp, pos, quat, grip, actions, now, start_p, start_q)
        if why:
            self.safety.reject(why, f"obs {obs.stamp:.3f} arrived at {now:.3f}")
            if self.safety.counters[f"rejected/{why}"] == 1:
                log.warning(
                    "chunk refused (%s): observation %.3f s old on arrival; execute_horizon=%d x dt=%.3f s and "
                    "max_latency_s=%.2f s must cover the inference latency (raise them or speed up inference)",
                    why,
                    now - obs.stamp,
                    self.config.scheduling.execute_horizon,
                    self.control_dt,
                    self.config.scheduling.max_latency_s,
                )
            return None
        self._chunk_id += 1
        self.counters["chunks/accepted"] += 1
        if self.safety.hold_reason and obs.stamp > self._hold_since:
            log.info("hold released by a chunk from a fresh observation (%s)", self.safety.hold_reason)
            self.safety.release_hold()
        return ChunkPrediction(
            obs_stamp=obs.stamp,
            stamps=obs.stamp + self.control_dt * np.arange(1, len(pos) + 1),
            positions=pos,
            quaternions=quat,
            gripper=grip,
            executed=executed,
            frame_id=self.frame_id,
            layer_indices=tuple(out.layer_indices),
            num_layers=int(out.num_layers),
            latency_s=p.latency_s,
            timings_ms=dict(out.timings_ms or {}),
            layer_probs=self._layer_probs(out),
        )

    @staticmethod
    def _layer_probs(out: PolicyOutput) -> np.ndarray | None:
        probs = None if out.layer_probs is None else np.asarray(out.layer_probs, dtype=np.float64).reshape(-1)
        # only a per-layer vector is meaningful to visualise; anything else is dropped rather than mislabelled
        return probs if probs is not None and probs.shape[0] == int(out.num_layers) else None

    def _fault(self, reason: str, detail: str) -> None:
        """A fault that needs no operator: count it, drop the plan, brake and hold until a fresh chunk."""
        self.safety.reject(reason, detail)
        self.safety.hold(reason)
        self._hold_since = self._last_obs_stamp
        self.scheduler.clear()

    # ------------------------------------------------------------------------------------------------------------
    # the control step
    def step(self, now: float) -> StepOutput:
        """Advance the runtime to `now` (caller's clock, same timebase as the header stamps)."""
        with self._lock:
            return self._step(now)

    def _step(self, now: float) -> StepOutput:
        t0 = time.perf_counter()
        now = float(now)
        if not self.ready:
            self._advance_warmup()
        chunk = None
        done = self._poll(now)
        if done is not None:
            chunk = self._accept(done, now)

        obs, why = self.sync.latest(now) if self.ready else (None, "warming_up")
        self._obs_status = why
        if obs is not None:
            self._last_fresh_obs = max(self._last_fresh_obs, obs.newest_stamp)
        self._maybe_request(now, obs)

        actuating = self.safety.actuating
        if actuating:
            self._stopping = False  # re-armed during a stop: it simply goes on from the commanded state
        elif self._stopping and self.safety.robot_mode in self.safety.config.interlock_modes:
            self._end_stop()  # the robot stopped by itself (reflex, user stop): it takes no commands now
        if actuating and not self._was_actuating:
            self._start_actuation(now)
        self._was_actuating = actuating or self._stopping
        if self.safety.enabled and now - self._last_fresh_obs > self.config.safety.watchdog_timeout_s:
            if self.safety.hold_reason != "watchdog":
                self._fault("watchdog", f"no fresh observation since {self._last_fresh_obs:.3f} ({why})")

        if self.tracker.state is None:
            last = self.sync.latest_ee_pose()
            if last is not None:
                self._restart_tracker(last[1], now)
        sample = self._advance_tracker(now) if self.tracker.state is not None else None

        pose_cmd = None
        if sample is not None:
            pose_cmd = PoseCommand(sample.stamp, sample.pose, sample.twist, self.frame_id)
            self._command_times.append(now)
        joint_cmd = self._joint_trajectory(now) if self.config.output_mode == "joint_trajectory" else None
        grip_cmd = self._gripper_step(now)

        self._record_latency("step", (time.perf_counter() - t0) * 1e3)
        act = self.safety.actuating or self._stopping
        if self._stopping and not self._commanded_moving():
            log.info("at rest after %s: commands stop", self.safety.disable_reason or "dry run")
            self._end_stop()
        return StepOutput(
            stamp=now,
            pose_command=pose_cmd if act and self.config.output_mode == "pose" else None,
            joint_command=joint_cmd if act else None,
            gripper_command=grip_cmd if act else None,
            preview=pose_cmd,
            preview_joint=joint_cmd,
            chunk=chunk,
            diagnostics=self.diagnostics(now),
        )

    def _advance_warmup(self) -> None:
        if self._pool is None:
            self.warmup()
            return
        if self._warmup_future is None:
            self._warmup_future = self._pool.submit(self.warmup)
        elif self._warmup_future.done():
            self._warmup_future.result()  # re-raise a warm-up failure: the policy cannot run at all

    def _start_actuation(self, now: float) -> None:
        """Actuation begins: start the trajectory at the measured pose at rest; plan only from fresh chunks."""
        last = self.sync.latest_ee_pose()
        q = self.sync.latest_joint_positions()
        start = None if last is None else last[1]
        if self.config.output_mode == "joint_trajectory" and q is not None:
            # joint commands must start at the measured joints: plan from their FK, not from the pose topic
            fk = self.kinematics.fk(q)
            if start is not None and np.linalg.norm(fk.position - start.position) > 0.01:
                self.counters["frame_mismatch"] += 1
                log.warning(
                    "EE pose topic %s and FK of the joint states %s differ by %.3f m: is frames.ee_frame the frame "
                    "the robot publishes (Desk EE / TCP settings)?",
                    np.round(start.position, 3).tolist(),
                    np.round(fk.position, 3).tolist(),
                    float(np.linalg.norm(fk.position - start.position)),
                )
            start = fk
        if start is not None:
            self.tracker.reset(start, now)
        self.scheduler.clear()
        self._hold_since = self._last_obs_stamp
        if self.joints is not None:
            self.joints.start(q)
        width = self.sync.latest_gripper_width()
        if width is not None:
            self.gripper.sync_to_width(width)
        log.info("actuation started at %s", None if start is None else np.round(start.position, 3).tolist())

    def _restart_tracker(self, pose: Pose, stamp: float) -> None:
        """Restart the trajectory at rest at the measured state (shadow mode, first pose, new episode).

        In joint_trajectory mode the start is FK of the measured joints (what joint commands continue from) and
        the joint planner restarts there too."""
        q = self.sync.latest_joint_positions() if self.joints is not None else None
        if q is not None:
            pose = self.kinematics.fk(q)
        self.tracker.reset(pose, stamp)
        if self.joints is not None:
            self.joints.start(q)

    def _plan_key(self) -> tuple:
        """Identifies everything the tracker's future depends on; cached futures/IK are valid for one key only."""
        return (self.scheduler.version, bool(self.safety.hold_reason or self._stopping), self.tracker.resets)

    def _reference_fn(self):
        if self.safety.hold_reason or self._stopping:
            return lambda t: None
        return self.scheduler.reference

    def _shift_clock(self, new_stamp: float) -> None:
        """Re-anchor the tracker (and the committed joint trajectory) at `new_stamp` after a clock jump."""
        st = self.tracker.state
        self.counters["tracker/clock_jumps"] += 1
        if self.joints is not None:
            self.joints.shift(new_stamp - st.stamp)
        st.stamp = new_stamp

    def _advance_tracker(self, now: float) -> TrackerState | None:
        st = self.tracker.state
        if now < st.stamp - self.command_dt:
            # the caller's clock went back (bag loop, simulator reset): continue from here instead of freezing
            # until the clock catches up with the old stamps
            self._shift_clock(now)
            return st
        n = int(np.floor((now - st.stamp) / self.command_dt + 1e-9))
        if n <= 0:
            return st
        if n > _MAX_SUBSTEPS:
            self._shift_clock(now - self.command_dt)
            n = 1
        for _ in range(n):
            prev = self.tracker.state
            t_next = prev.stamp + self.command_dt
            # joint_trajectory mode: the sample the last JointTrajectory realises (JTC executes it whatever
            # changed since; the change takes effect with the next message, see runtime/joint_output.py)
            new = None if self.joints is None else self.joints.pop(t_next)
            committed = new is not None
            if committed:
                self.tracker.state = new
            else:
                new = self.tracker.step(self._reference_fn()(t_next))
            why = self.safety.check_sample(prev, new)
            if why:
                self.safety.reject(why, f"sample at {t_next:.3f}: {np.round(new.position, 4).tolist()}")
                self.safety.hold(why)
                self._hold_since = self._last_obs_stamp
                self.scheduler.clear()
                if committed:
                    # already sent to JTC: replacing it here would desynchronise preview and robot; the next
                    # message brakes from it
                    continue
                self.tracker.state = prev
                new = self.tracker.step(None)  # brake instead
                if self.safety.check_sample(prev, new):
                    # even braking fails the checks: stay exactly where we were
                    self.counters["tracker/frozen"] += 1
                    new = TrackerState(t_next, prev.position.copy(), np.zeros(3), prev.quaternion.copy(), np.zeros(3))
                    self.tracker.state = new
        return self.tracker.state

    def _joint_trajectory(self, now: float) -> JointTrajectoryCommand | None:
        """The next JointTrajectory (see runtime/joint_output.py), one per trajectory.joint_point_dt.

        Each message continues the committed one. A horizon point without an IK solution (out of reach, joint
        limits, joint speed) is reported and the runtime brakes along the Cartesian path NOW, while the path up to
        that point is still feasible, then holds; if that braking path has no IK solution either, the arm stops in
        joint space (continuous joint and Cartesian streams, never a jump or an instant stop).
        """
        planner = self.joints
        if self.tracker.state is None or not planner.due(now):
            return None
        if planner.braking(now):
            return planner.brake_message(now)
        measured = self.sync.latest_joint_positions()
        plan = planner.plan(now, self.tracker, self._reference_fn(), self._plan_key(), measured)
        if plan is None:
            return None
        if plan.failure is not None:
            k, reason, where = plan.failure
            self.safety.reject(f"ik_{reason}", f"horizon point {k} at {where}")
            if not self.safety.hold_reason:
                self._fault(f"ik_{reason}", f"no IK solution {k} points ahead at {where}: braking")
                plan = planner.plan(now, self.tracker, self._reference_fn(), self._plan_key(), measured)
        if plan.failure is None:
            return planner.commit(now, plan)
        self.safety.reject("ik_brake_path", f"braking path: no IK solution {plan.failure[0]} points ahead")
        if not self.safety.hold_reason:
            self._fault("ik_brake_path", "no IK solution along the braking path")
        return planner.brake(now, self.tracker)

    def _gripper_step(self, now: float) -> GripperCommand | None:
        if not self.scheduler.has_plan or self.safety.hold_reason:
            return None
        idx = self.scheduler.active_index(now)
        if idx < 1:
            return None
        key = (self._chunk_id, idx)
        if key == self._gripper_key:
            # retry only a debounced change waiting for min_interval_s (update keeps the streak)
            return None
        self._gripper_key = key
        value = float(self.scheduler.gripper[idx])
        return self.gripper.update(value, now)

    # ------------------------------------------------------------------------------------------------------------
    # diagnostics
    def state_name(self) -> str:
        s = self.safety
        if not self.ready:
            return "warming_up"
        if self._stopping:
            return "stopping"
        if not s.enabled:
            return "disabled" if s.disable_reason and s.disable_reason != "not enabled yet" else "idle"
        if s.hold_reason:
            return "holding"
        if self._obs_status:
            return "waiting_for_observation"
        return "running"

    def diagnostics(self, now: float) -> Diagnostics:
        """A snapshot of state, latencies, rates, drops, clips and rejections by reason."""
        lat = {}
        for stage, hist in self._latency.items():
            if hist:
                lat[f"{stage}/last"] = hist[-1]
                lat[f"{stage}/median"] = statistics.median(hist)
        rates = {f"camera/{c}": self.sync.rate_hz(f"camera/{c}") for c in self.config.observation.camera_names}
        rates["joint_states"] = self.sync.rate_hz("joint_states")
        rates["ee_pose"] = self.sync.rate_hz("ee_pose")
        for name, times in (("inference", self._inference_times), ("command", self._command_times)):
            rates[name] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        counters = Counter(self.counters)
        counters.update(self.sync.counters)
        counters.update(self.safety.counters)
        if self.joints is not None:
            counters.update(self.joints.counters)
        counters["gripper/commands"] = self.gripper.commands_sent
        out = self._last_output
        return Diagnostics(
            stamp=now,
            state=self.state_name(),
            ready=self.ready,
            dry_run=self.safety.dry_run,
            enabled=self.safety.enabled,
            hold_reason=self.safety.hold_reason,
            disable_reason=self.safety.disable_reason,
            robot_mode=self.safety.robot_mode,
            latency_ms=lat,
            rates_hz=rates,
            counters=dict(counters),
            active_layers=tuple(out.layer_indices) if out is not None else (),
            num_layers=int(out.num_layers) if out is not None else 0,
        )

    @property
    def commanded_pose(self) -> Pose | None:
        """The latest commanded (or, in dry run, previewed) EE pose."""
        return None if self.tracker.state is None else self.tracker.state.pose
