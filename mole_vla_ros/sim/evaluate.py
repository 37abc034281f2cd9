"""Closed-loop evaluation in the simulator, through the same `PolicyRuntime` the ROS node runs.

The loop is the node's, with the simulator in place of ROS:

    sim observation --on_camera / on_joint_state / on_ee_pose / on_gripper--> PolicyRuntime (inline executor)
    PolicyRuntime.step(now) --PoseCommand / GripperCommand--> sim.command_pose / sim.grasp / sim.move_gripper

The runtime steps at its command rate (`commands_per_frame` x the camera rate); cameras are rendered at the
simulator's control rate, like real cameras slower than the controller. Inference latency is simulated by the
runtime (`scheduling.simulated_latency_s`), so a run is deterministic for a seed; the measured compute time is
reported separately. The diffusion noise restarts from each episode's seed (`NOISE_SEEDS_PER_EPISODE` request seeds
per episode), so an episode's rollout does not depend on the episodes before it, and every setting of a grid meets
the same noise on the same episode (common random numbers: differences between settings are not noise luck).
Any `Policy` works: the MoLe-VLA checkpoint, or `ScriptedPolicy` (the scripted expert behind the policy interface,
which reads the instruction to choose its cube) to check the loop without a trained model.

Results per configuration (k active layers x skip mode): success rate with a Wilson 95% interval, mean inference
latency, FLOPs per inference, mean layers run, wall time per control step; and why the failed episodes failed
(`outcomes.py`: wrong cube, missed grasp, dropped, no grasp, no reach, from the closest TCP-to-cube distances, the
gripper closings and what was held, measured every command tick from the simulator's privileged state).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mole_vla_ros.config_dicts import flatten
from mole_vla_ros.interfaces import GripperSample, JointStateSample, Policy, PolicyInput, PolicyOutput
from mole_vla_ros.runtime.action_space import get_action_space
from mole_vla_ros.runtime.commands import GripperCommand, StepOutput
from mole_vla_ros.runtime.config import RuntimeConfig
from mole_vla_ros.runtime.metered_policy import MeteredPolicy
from mole_vla_ros.runtime.node_core import PolicyRuntime
from mole_vla_ros.sim.config import SimConfig
from mole_vla_ros.sim.env import SimObservation, TabletopSim
from mole_vla_ros.sim.expert import ExpertConfig, ScriptedExpert
from mole_vla_ros.sim.outcomes import REACH_MM, OutcomeTracker
from mole_vla_ros.sim.stats import wilson_interval
from mole_vla_ros.sim.tasks import EpisodeSetup, get_task

log = logging.getLogger(__name__)

# episode e's inference requests get noise seeds e * NOISE_SEEDS_PER_EPISODE + 0, 1, ...: disjoint across episodes
# (a 10 s episode makes a few dozen requests)
NOISE_SEEDS_PER_EPISODE = 10_000


@dataclass
class EvalSettings:
    """One evaluation run: task, episodes (seeds seed..seed+episodes-1), simulator and loop settings.

    commands_per_frame: runtime command ticks per camera frame (control_hz x this = trajectory.command_rate_hz).
    runtime:            overrides for the runtime config (flat dotted keys or nested), on top of the sim defaults.
    max_seconds:        episode time limit (default: the task's).
    """

    task: str
    episodes: int = 10
    seed: int = 1000
    sim: SimConfig = field(default_factory=SimConfig)
    commands_per_frame: int = 5
    runtime: dict = field(default_factory=dict)
    max_seconds: float | None = None
    gif_dir: Path | None = None
    gif_episodes: int = 2

    def __post_init__(self):
        get_task(self.task)
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if not 1 <= self.commands_per_frame <= 50:
            raise ValueError(
                f"commands_per_frame={self.commands_per_frame} must be in [1, 50] (e.g. 5: 50 Hz at 10 Hz)"
            )
        steps = self.sim.control_dt / self.commands_per_frame / self.sim.physics_dt
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError(
                f"a command period of {self.sim.control_dt / self.commands_per_frame:.4f} s is not a whole number of "
                f"physics steps ({self.sim.physics_dt} s); pick commands_per_frame dividing {self.sim.substeps}"
            )
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.gif_episodes < 0:
            raise ValueError(f"gif_episodes must be >= 0, got {self.gif_episodes}")
        if not self.sim.render or not self.sim.cameras:
            raise ValueError(
                "evaluation feeds camera images to the policy: use a SimConfig with render=True and cameras"
            )

    @property
    def command_dt(self) -> float:
        return self.sim.control_dt / self.commands_per_frame


def sim_runtime_config(settings: EvalSettings, policy: Policy) -> RuntimeConfig:
    """The runtime configuration for the simulator: the node's defaults, actuating (no dry run), the simulator's
    cameras and rates, a workspace that reaches the table top, simulated inference latency; then `settings.runtime`."""
    sim = settings.sim
    missing = [c for c in policy.camera_names if c not in sim.cameras]
    if missing:
        raise ValueError(
            f"the policy expects cameras {list(policy.camera_names)} but the simulator renders {list(sim.cameras)} "
            f"(no {missing}); pass --cameras {' '.join(policy.camera_names)} if they are sim cameras, or train on "
            "episodes recorded with the simulator's camera names (scene, wrist)"
        )
    base = {
        "frames.robot_type": sim.robot_type,
        "observation.camera_names": list(dict.fromkeys([*policy.camera_names, *sim.cameras])),
        "observation.camera_rate_hz": sim.control_hz,
        "observation.sync_tolerance_s": 0.5 * settings.command_dt,
        "observation.max_age_s": 3.0 * sim.control_dt,
        "trajectory.command_rate_hz": sim.control_hz * settings.commands_per_frame,
        "scheduling.latency_mode": "simulated",
        "scheduling.warmup_steps": 1,
        "safety.dry_run": False,
        # The table top is z = 0 in the base frame: the TCP must reach a few mm above it to grasp a 4 cm cube.
        "safety.workspace_min": [0.2, -0.5, 0.0],
        "safety.watchdog_timeout_s": max(0.5, 3.0 * sim.control_dt),
    }
    return RuntimeConfig.from_dict({**base, **flatten(settings.runtime)})


# ------------------------------------------------------------------------------------------------------------------
# policies
class ScriptedPolicy:
    """The scripted expert behind the `Policy` interface (privileged: it reads cube poses from the simulator).

    It parses the instruction to decide which cube to act on, so a wrong instruction makes it fail, and it emits
    action chunks that the whole runtime (decode, scheduling, trajectory limits, gripper hysteresis, safety) turns
    into commands. The expert advances once per control period of sim time: a chunk requested before the previous
    one ran out repeats the still-pending plan instead of racing ahead. Default action space `abs_pose_quat`: absolute
    targets do not depend on which measured pose the runtime decodes them from.
    """

    def __init__(
        self,
        sim: TabletopSim,
        chunk_size: int = 4,
        action_space: str = "abs_pose_quat",
        expert_config: ExpertConfig | None = None,
        seed: int = 0,
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.sim = sim
        self.camera_names = tuple(sim.config.cameras)
        self.chunk_size = int(chunk_size)
        self.action_space = action_space
        self.space = get_action_space(action_space)
        self.control_dt = sim.config.control_dt
        self.image_size = sim.config.image_size
        self.expert_config = expert_config or ExpertConfig(mistake_prob=0.0, command_noise_std=0.0)
        self.seed = seed
        self._expert: ScriptedExpert | None = None
        self._key: tuple | None = None
        self._plan: list[tuple[float, object, float]] = []  # (due time, pose, gripper)

    def infer(self, inp: PolicyInput) -> PolicyOutput:
        obs = self.sim.observe(render=False)
        hold = self._output([obs.ee_pose.pose] * self.chunk_size, [1.0] * self.chunk_size)
        if self.sim.setup is None:  # the runtime's warm-up may run before any episode
            return hold
        key = (id(self.sim.setup), inp.instruction)
        if self._expert is None or key != self._key:
            try:
                target, other = self.sim.task.parse(inp.instruction)
            except ValueError:  # not an instruction of this task (e.g. the runtime's warm-up): stay put
                return hold
            setup = EpisodeSetup(inp.instruction, self.sim.setup.cubes, target, other)
            self._expert = ScriptedExpert(self.sim, np.random.default_rng(self.seed), self.expert_config, setup)
            self._key = key
            self._plan = []
        # The observation the runtime used is the newest camera frame: frames come every control period.
        dt = self.control_dt
        t_obs = np.floor(self.sim.time / dt + 1e-6) * dt
        self._plan = [p for p in self._plan if p[0] > t_obs + 1e-6]
        while len(self._plan) < self.chunk_size:
            due = self._plan[-1][0] + dt if self._plan else t_obs + dt
            a = self._expert.act(obs)
            self._plan.append((due, a.pose, a.gripper))
        return self._output([p[1] for p in self._plan], [p[2] for p in self._plan])

    def _output(self, poses, gripper) -> PolicyOutput:
        start = poses[0]  # ignored by absolute spaces; delta spaces chain from it
        actions = self.space.encode_trajectory([start, *poses], [gripper[0], *gripper])
        return PolicyOutput(actions=actions, layer_indices=(), layer_probs=np.zeros(0), num_layers=0)


# ------------------------------------------------------------------------------------------------------------------
# the loop
@dataclass
class EpisodeOutcome:
    """One episode's result. The fields after wall_s come from `outcomes.OutcomeTracker` (defaults: not measured):

    closest_target_mm / closest_other_mm: smallest horizontal TCP distance to the named / the other cube's centre
    while the TCP was low (`outcomes.REACH_HEIGHT_MM` above it); NaN if it never came that low.
    grasp_closes: open -> closed gripper commands sent.  held: "target", "other", "both" or "" (which cube was
    ever held: in hand and lifted, or in hand `outcomes.HOLD_MIN_S`).
    failure: "" on success, else one of `outcomes.FAILURES`.
    inferences / route_changes: the episode's completed inferences, and how many of them ran another set of LLM
    layers than the one before (STAR re-routes as the scene changes; random skip re-draws every call).
    """

    seed: int
    instruction: str
    success: bool
    seconds: float  # sim time until success (or the time limit)
    control_steps: int
    wall_s: float
    closest_target_mm: float = float("nan")
    closest_other_mm: float = float("nan")
    grasp_closes: int = 0
    held: str = ""
    failure: str = ""
    inferences: int = 0
    route_changes: int = 0
    layer_sets: list[tuple[int, ...]] = field(default_factory=list)  # the distinct layer sets it ran, sorted


def _feed(runtime: PolicyRuntime, obs: SimObservation) -> None:
    js = obs.joint_state
    runtime.on_joint_state(JointStateSample(js.stamp, js.names[:7], js.position[:7], js.velocity[:7], js.effort[:7]))
    runtime.on_ee_pose(obs.ee_pose)
    runtime.on_gripper(GripperSample(obs.gripper.stamp, obs.gripper.width))
    for frame in obs.images.values():
        runtime.on_camera(frame)


def apply_step(sim: TabletopSim, out: StepOutput, command_dt: float, tracker: OutcomeTracker | None = None) -> None:
    """Hand one runtime step's commands to the simulated robot, as the node hands them to franka_ros2: the pose
    target, or the joint trajectory's point due one command period ahead, and gripper goals (also reported to
    `tracker`, which counts the closings)."""
    if out.pose_command is not None:
        sim.command_pose(out.pose_command.pose)
    traj = out.joint_command
    if traj is not None and len(traj.positions):
        due = np.flatnonzero(np.asarray(traj.time_from_start) >= command_dt - 1e-9)
        sim.command_joints(traj.positions[due[0] if due.size else -1])
    cmd: GripperCommand | None = out.gripper_command
    if cmd is not None:
        if tracker is not None:
            tracker.gripper_command(cmd.open)
        if cmd.action == "grasp":
            sim.grasp(cmd.width, cmd.speed, cmd.force)
        else:
            sim.move_gripper(cmd.width, cmd.speed)


def run_episode(
    runtime: PolicyRuntime,
    sim: TabletopSim,
    settings: EvalSettings,
    seed: int,
    frames: list[np.ndarray] | None = None,
    instruction: str | None = None,
    stop_at_s: float | None = None,
) -> EpisodeOutcome:
    """One closed-loop episode; appends scene-camera frames to `frames` when given (for GIFs).

    `instruction` replaces the episode's instruction for the policy only (success and the failure category are
    still judged on the episode's task and its named cube): an ablation that shows whether a policy follows the
    language at all. `stop_at_s` ends the episode early at that sim time (before the task's limit), leaving the
    simulator where the policy brought it: the expert takeover of `sim record --takeover-checkpoint` starts there."""
    wall0 = time.perf_counter()
    obs = sim.reset(seed)
    if runtime.safety.enabled:  # left enabled by an interrupted episode
        runtime.disable("new episode")
    runtime.reset_episode()
    runtime.set_instruction(instruction or sim.instruction)
    _feed(runtime, obs)
    if not runtime.ready:
        runtime.warmup()
    why = runtime.enable()
    if why:
        raise RuntimeError(f"the runtime refused to enable in the simulator: {why}")
    limit = settings.max_seconds or sim.task.episode_seconds
    if stop_at_s is not None:
        limit = min(limit, max(stop_at_s - sim.time, 0.0))
    ticks = round(limit / settings.command_dt)
    cam = "scene" if "scene" in sim.config.cameras else sim.config.cameras[0]
    setup = sim.setup  # the episode's task: what success and the failure category are judged on
    tracker = OutcomeTracker(setup.target, setup.other, settings.command_dt, REACH_MM)
    tracker.observe(obs.ee_pose.pose.position, sim.task_state())
    success = False
    tick = 0
    for tick in range(1, ticks + 1):
        apply_step(sim, runtime.step(sim.time), settings.command_dt, tracker)
        render = tick % settings.commands_per_frame == 0
        obs = sim.step(settings.command_dt, render=render)
        _feed(runtime, obs)
        if render and frames is not None:
            frames.append(obs.images[cam].image)
        # one privileged-state query per tick serves the trace and the success check: no second contact scan
        state = sim.task_state()
        tracker.observe(obs.ee_pose.pose.position, state)
        if sim.success(state):
            success = True
            break
    runtime.disable("episode end")
    s = tracker.summary(success)
    return EpisodeOutcome(
        seed,
        sim.instruction,
        success,
        sim.time,
        tick // settings.commands_per_frame,
        time.perf_counter() - wall0,
        closest_target_mm=s.closest_target_mm,
        closest_other_mm=s.closest_other_mm,
        grasp_closes=s.grasp_closes,
        held=s.held,
        failure=s.failure,
    )


@dataclass
class EvalResult:
    """Success and cost of one configuration."""

    task: str
    skip_mode: str
    active_layers: int | None
    episodes: int
    successes: int
    ci_low: float
    ci_high: float
    mean_latency_ms: float  # measured compute per inference
    mean_flops: float  # per inference (what the model reports)
    mean_layers: float  # LLM layers run per inference
    inferences: int
    ms_per_control_step: float  # wall time per camera-rate step: sim + rendering + runtime + inference
    mean_seconds_to_success: float
    outcomes: list[EpisodeOutcome] = field(default_factory=list)
    distinct_layer_sets: int = 0  # different sets of LLM layers the inferences ran

    @property
    def route_change_rate(self) -> float:
        """Share of consecutive inferences within an episode that ran another layer set (NaN: none to compare).
        0 for full depth and early exit, ~1 for random skip; for STAR, how stable its choice is along a rollout."""
        pairs = sum(max(o.inferences - 1, 0) for o in self.outcomes)
        return sum(o.route_changes for o in self.outcomes) / pairs if pairs else float("nan")

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    def by_instruction(self) -> dict[str, tuple[int, int]]:
        """{instruction: (successes, episodes)}: a policy that ignores the words succeeds on one cube only."""
        out: dict[str, tuple[int, int]] = {}
        for o in self.outcomes:
            ok, n = out.get(o.instruction, (0, 0))
            out[o.instruction] = (ok + int(o.success), n + 1)
        return dict(sorted(out.items()))

    def failures(self) -> dict[str, int]:
        """{failure category: episodes}, most frequent first (ties by name); failed episodes without a category
        (outcomes built without a trace) count as "unclassified"."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if not o.success:
                key = o.failure or "unclassified"
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def median_failed_closest_target_mm(self) -> float:
        """Median closest horizontal TCP distance to the named cube over the failed episodes whose TCP came low
        (NaN: none did)."""
        values = [o.closest_target_mm for o in self.outcomes if not o.success and math.isfinite(o.closest_target_mm)]
        return float(np.median(values)) if values else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["success_rate"] = self.success_rate
        d["by_instruction"] = {k: {"successes": v[0], "episodes": v[1]} for k, v in self.by_instruction().items()}
        d["failures"] = self.failures()
        d["median_failed_closest_target_mm"] = self.median_failed_closest_target_mm()
        d["route_change_rate"] = self.route_change_rate
        return d


def evaluate(
    policy: Policy,
    settings: EvalSettings,
    sim: TabletopSim | None = None,
    label: tuple[str, int | None] = ("", None),
    progress: bool = True,
    episodes: Sequence[int] | None = None,
) -> EvalResult:
    """Run `settings.episodes` closed-loop episodes of `policy` and summarise them.

    episodes: which episode indices to run (seeds settings.seed + index), default all; a worker of
    `evaluate_grid(..., workers=N)` runs a slice, and each episode's result does not depend on which others ran."""
    from tqdm import tqdm

    own_sim = sim is None
    sim = sim or TabletopSim(settings.sim, settings.task)
    metered = MeteredPolicy(policy)
    runtime = PolicyRuntime(sim_runtime_config(settings, policy), metered, executor="inline")
    if label[1] is not None:
        runtime.set_active_layers(label[1])
    outcomes = []
    try:
        runtime.warmup()
        metered.reset()
        indices = range(settings.episodes) if episodes is None else episodes
        for i in tqdm(indices, desc=f"sim eval {settings.task}", unit="ep", disable=not progress):
            frames: list[np.ndarray] | None = [] if settings.gif_dir and i < settings.gif_episodes else None
            runtime.restart_noise((settings.seed + i) * NOISE_SEEDS_PER_EPISODE)
            first_call = len(metered.calls)
            outcome = run_episode(runtime, sim, settings, settings.seed + i, frames)
            routes = [c.layer_set for c in metered.calls[first_call:] if not c.failed]
            outcome.inferences = len(routes)
            outcome.route_changes = sum(a != b for a, b in itertools.pairwise(routes))
            outcome.layer_sets = sorted(set(routes))
            outcomes.append(outcome)
            log.info(
                "episode %d (seed %d) %r: success=%s after %.1f s%s (closest to target %.0f mm, other %.0f mm)",
                i,
                outcome.seed,
                outcome.instruction,
                outcome.success,
                outcome.seconds,
                f", {outcome.failure}" if outcome.failure else "",
                outcome.closest_target_mm,
                outcome.closest_other_mm,
            )
            if frames:
                save_gif(frames, settings.gif_dir / _gif_name(settings.task, label, i, outcome.success), settings.sim)
    finally:
        runtime.close()
        if own_sim:
            sim.close()
    calls = metered.completed
    return summarise(
        settings.task,
        label,
        outcomes,
        inferences=len(calls),
        mean_latency_ms=1e3 * float(np.mean([c.wall_s for c in calls])) if calls else 0.0,
        mean_flops=float(np.mean([c.flops for c in calls])) if calls else 0.0,
        mean_layers=float(np.mean([c.layers for c in calls])) if calls else 0.0,
    )


def summarise(
    task: str,
    label: tuple[str, int | None],
    outcomes: list[EpisodeOutcome],
    inferences: int,
    mean_latency_ms: float,
    mean_flops: float,
    mean_layers: float,
) -> EvalResult:
    """An EvalResult from episode outcomes and the inference means (success, interval, times, layer sets)."""
    n_ok = sum(o.success for o in outcomes)
    lo, hi = wilson_interval(n_ok, len(outcomes))
    steps = sum(o.control_steps for o in outcomes)
    ok_times = [o.seconds for o in outcomes if o.success]
    return EvalResult(
        task=task,
        skip_mode=label[0],
        active_layers=label[1],
        episodes=len(outcomes),
        successes=n_ok,
        ci_low=lo,
        ci_high=hi,
        mean_latency_ms=mean_latency_ms,
        mean_flops=mean_flops,
        mean_layers=mean_layers,
        inferences=inferences,
        ms_per_control_step=1e3 * sum(o.wall_s for o in outcomes) / max(steps, 1),
        mean_seconds_to_success=float(np.mean(ok_times)) if ok_times else float("nan"),
        outcomes=outcomes,
        distinct_layer_sets=len({tuple(ls) for o in outcomes for ls in o.layer_sets}),
    )


def merge_results(parts: list[EvalResult]) -> EvalResult:
    """One configuration's result from results on disjoint episode slices (parallel workers): outcomes in seed
    order, inference means weighted by each part's inference count."""
    if not parts:
        raise ValueError("merge_results needs at least one part")
    outcomes = sorted((o for p in parts for o in p.outcomes), key=lambda o: o.seed)
    n = sum(p.inferences for p in parts)

    def weighted(name: str) -> float:
        return sum(getattr(p, name) * p.inferences for p in parts) / n if n else 0.0

    first = parts[0]
    return summarise(
        first.task,
        (first.skip_mode, first.active_layers),
        outcomes,
        inferences=n,
        mean_latency_ms=weighted("mean_latency_ms"),
        mean_flops=weighted("mean_flops"),
        mean_layers=weighted("mean_layers"),
    )


PolicyFactory = Callable[[int | None, str | None, TabletopSim], Policy]


@dataclass(frozen=True)
class PolicySpec:
    """A policy that a worker process can load by itself: a checkpoint (on `device`, with `cfg_scale`), or the
    scripted expert when `checkpoint` is None."""

    checkpoint: str | None = None
    device: str = "cpu"
    cfg_scale: float | None = None

    def factory(self) -> PolicyFactory:
        if self.checkpoint is None:
            return scripted_policy_factory()
        return load_policy(self.checkpoint, self.device, self.cfg_scale)


def evaluate_grid(
    factory: PolicyFactory | PolicySpec,
    settings: EvalSettings,
    active_layers: list[int | None],
    skip_modes: list[str | None],
    progress: bool = True,
    workers: int = 1,
) -> list[EvalResult]:
    """Evaluate every (k, skip mode) pair on the same seeds; `factory(k, mode, sim)` returns the policy to use.

    workers > 1: the episodes run in that many processes (each loads the policy from a PolicySpec and builds its own
    simulator, one torch thread each); every episode's rollout depends on its seed alone, so the outcomes are the
    ones one process running one torch thread gives (torch's thread count changes float rounding, which a closed
    loop amplifies), in less time."""
    if workers > 1:
        if not isinstance(factory, PolicySpec):
            raise TypeError("evaluate_grid with workers > 1 needs a PolicySpec (each process loads its own policy)")
        return _evaluate_grid_parallel(factory, settings, active_layers, skip_modes, progress, workers)
    if isinstance(factory, PolicySpec):
        factory = factory.factory()
    results = []
    with TabletopSim(settings.sim, settings.task) as sim:
        for mode in skip_modes:
            for k in active_layers:
                policy = factory(k, mode, sim)
                results.append(evaluate(policy, settings, sim, _grid_label(policy, mode, k), progress))
    return results


def _grid_label(policy: Policy, mode: str | None, k: int | None) -> tuple[str, int | None]:
    """A grid cell's (skip mode, k) label: the mode asked for, else the policy's own."""
    return (mode or getattr(policy, "skip_mode", ""), k)


# one simulator and policy factory per worker process, built once by the pool's initializer
_WORKER: dict = {}


def _worker_init(spec: PolicySpec, settings: EvalSettings, log_level: int) -> None:
    import torch

    torch.set_num_threads(1)  # N processes on N cores: threads inside each would only fight each other
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _WORKER["sim"] = TabletopSim(settings.sim, settings.task)
    _WORKER["factory"] = spec.factory()
    _WORKER["settings"] = settings


def _worker_run(task: tuple[int, str | None, int | None, list[int]]) -> tuple[int, EvalResult]:
    cell, mode, k, indices = task
    sim = _WORKER["sim"]
    policy = _WORKER["factory"](k, mode, sim)
    return cell, evaluate(policy, _WORKER["settings"], sim, _grid_label(policy, mode, k), False, indices)


def _evaluate_grid_parallel(spec, settings, active_layers, skip_modes, progress, workers) -> list[EvalResult]:
    import multiprocessing

    from tqdm import tqdm

    cells = [(mode, k) for mode in skip_modes for k in active_layers]
    # slices of a few episodes: the bar moves, and a slow slice does not hold the others up
    size = max(1, min(5, math.ceil(settings.episodes / workers)))
    slices = [list(range(a, min(a + size, settings.episodes))) for a in range(0, settings.episodes, size)]
    tasks = [(c, mode, k, sl) for c, (mode, k) in enumerate(cells) for sl in slices]
    parts: dict[int, list[EvalResult]] = {c: [] for c in range(len(cells))}
    log.info("sim eval: %d episodes x %d setting(s) in %d processes", settings.episodes, len(cells), workers)
    ctx = multiprocessing.get_context("spawn")  # MuJoCo's GL contexts and torch's thread pools do not survive fork
    init = (spec, settings, logging.getLogger().getEffectiveLevel())
    with ctx.Pool(min(workers, len(tasks)), initializer=_worker_init, initargs=init) as pool:
        bar = tqdm(
            total=settings.episodes * len(cells), desc=f"sim eval {settings.task}", unit="ep", disable=not progress
        )
        for cell, result in pool.imap_unordered(_worker_run, tasks):
            parts[cell].append(result)
            bar.update(result.episodes)
        bar.close()
    return [merge_results(parts[c]) for c in range(len(cells))]


def scripted_policy_factory(chunk_size: int = 4) -> PolicyFactory:
    """A factory for `evaluate_grid` that puts the scripted expert on the grid's simulator (k and mode unused)."""

    def factory(_k, _mode, sim: TabletopSim) -> Policy:
        return ScriptedPolicy(sim, chunk_size)

    return factory


def load_policy(checkpoint: str | Path, device: str = "cpu", cfg_scale: float | None = None) -> PolicyFactory:
    """Load a MoLe-VLA checkpoint once; the factory sets STAR's k and the skip mode per grid cell.
    cfg_scale: classifier-free guidance scale (None: the checkpoint's)."""
    from mole_vla_ros.model.policy import MoLeVLAPolicy

    policy = MoLeVLAPolicy.from_checkpoint(str(checkpoint), device=device, cfg_scale=cfg_scale)
    default_k, default_mode = policy.active_layers, policy.skip_mode

    def factory(k: int | None, mode: str | None, _sim: TabletopSim) -> Policy:
        policy.active_layers = policy._check_k(default_k if k is None else k)
        policy.skip_mode = mode or default_mode
        return policy

    return factory


# ------------------------------------------------------------------------------------------------------------------
# reporting
def format_table(results: list[EvalResult]) -> str:
    """A plain-text table, one row per configuration, followed by its per-instruction successes and its failure
    breakdown (non-zero categories, most frequent first, and the median closest distance to the named cube)."""
    header = (
        f"{'task':6} {'mode':8} {'k':>3} {'success':>9} {'95% CI':>13} {'latency ms':>10} {'GFLOPs':>8} "
        f"{'layers':>6} {'ms/step':>8} {'t_succ s':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        k = "-" if r.active_layers is None else str(r.active_layers)
        lines.append(
            f"{r.task:6} {r.skip_mode or '-':8} {k:>3} {r.successes:>4}/{r.episodes:<4} "
            f"[{r.ci_low:.2f}, {r.ci_high:.2f}] {r.mean_latency_ms:>10.1f} {r.mean_flops / 1e9:>8.2f} "
            f"{r.mean_layers:>6.1f} {r.ms_per_control_step:>8.1f} {r.mean_seconds_to_success:>8.1f}"
        )
        per = "; ".join(f"{text!r} {ok}/{n}" for text, (ok, n) in r.by_instruction().items())
        lines.append(f"{'':19}by instruction: {per}")
        failures = r.failures()
        if failures:
            counts = ", ".join(f"{name} {n}" for name, n in failures.items())
            failed = [o for o in r.outcomes if not o.success]
            low = sum(math.isfinite(o.closest_target_mm) for o in failed)
            lines.append(
                f"{'':19}failures: {counts}; median closest to target when low "
                f"{r.median_failed_closest_target_mm():.0f} mm over {low} of {len(failed)} (reach = {REACH_MM:.0f} mm)"
            )
        else:
            lines.append(f"{'':19}failures: none")
        if r.distinct_layer_sets > 1:
            lines.append(
                f"{'':19}layer sets: {r.distinct_layer_sets} different; {100 * r.route_change_rate:.0f} % of "
                "consecutive inferences in an episode ran another set than the one before"
            )
    return "\n".join(lines)


def _gif_name(task: str, label: tuple[str, int | None], episode: int, success: bool) -> str:
    mode, k = label
    tag = f"{mode or 'policy'}" + (f"_k{k}" if k is not None else "")
    return f"{task}_{tag}_ep{episode:03d}_{'success' if success else 'failure'}.gif"


def save_gif(frames: list[np.ndarray], path: Path, sim_config: SimConfig) -> Path:
    """Write frames (HxWx3 uint8) as an animated GIF at the camera rate."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 * sim_config.control_dt), loop=0)
    log.info("wrote %s (%d frames)", path, len(images))
    return path
