"""Offline replay: a recorded bag played through the node's own core on a clock taken from the bag.

    result = run_replay(ReplayOptions(bag="models/samples/sim_pick_seed000000", out="out/replay"))

What runs is what the live node runs: the same parameters file (`ros.params.load_settings`), the same policy loader
(`ros.policy_source.load_policy`), the same `PolicyRuntime` (inline executor: inference runs synchronously and its
result is released after `scheduling.simulated_latency_s` of bag time, so two replays with one seed are identical),
the same message conversions and the same `OutputBuilder`, all through `ros.node_io.NodeIO`, the very object the
node's callbacks and timers call. Only the shell differs: instead of rclpy timers and subscriptions, messages are
handed over in log-time order and the node's three timers (control at `trajectory.command_rate_hz`, diagnostics,
visualization) fire on bag time, the clock a node sees under `ros2 bag play --clock` with `use_sim_time`.

Differences from the live node, on purpose:
- the runtime is enabled as soon as it allows (an operator calling `~/enable` at the first possible moment) and
  dry run is off, so the bag shows the command streams; they are written under /replay/... (see topics.py) and no
  robot is connected. `--dry-run` keeps the parameters' dry run (previews only, as the node's default).
- the instruction topic is transient-local on a robot, so its first message is applied before playback starts.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mole_vla_ros.interfaces import Policy
from mole_vla_ros.replay.bag import InputBag
from mole_vla_ros.replay.errors import ImageEncodingError, MissingTopicsError, ReplayError
from mole_vla_ros.replay.metrics import RecordedMotion
from mole_vla_ros.replay.topics import InputPlan, OutputTopics, output_topics, plan_inputs
from mole_vla_ros.replay.writer import OutputBag
from mole_vla_ros.robot.franka import Topics
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.node_io import NodeIO
from mole_vla_ros.ros.params import NodeSettings, load_settings, settings_from_flat
from mole_vla_ros.runtime.commands import ChunkPrediction, Diagnostics, GripperCommand
from mole_vla_ros.runtime.metered_policy import MeteredPolicy

log = logging.getLogger(__name__)


@dataclass
class ReplayOptions:
    """What to replay and how. Paths may be str or Path; `cameras` maps camera name -> topic (overrides params)."""

    bag: str | Path
    out: str | Path = "out/replay"
    checkpoint: str = ""
    instruction: str = ""
    params: str | Path | None = None
    seed: int | None = None
    active_layers: int | None = None
    skip_mode: str = ""  # "" = the parameters' policy.skip_mode
    namespace: str = ""
    cameras: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    enable: bool = True
    device: str = ""
    progress: bool = True
    write_bag: bool = True
    start_s: float = 0.0  # seconds after the bag's first message where the replay starts
    duration_s: float = 0.0  # seconds to replay from there; 0 = to the end

    def __post_init__(self):
        for name in ("start_s", "duration_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                flag = "--start" if name == "start_s" else "--duration"
                raise ReplayError(f"{flag} must be a number of seconds >= 0, got {value!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ReplayError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if self.active_layers is not None and (not isinstance(self.active_layers, int) or self.active_layers < 1):
            raise ReplayError(f"--active-layers must be an integer >= 1, got {self.active_layers!r}")
        for name, topic in self.cameras.items():
            if not name or not topic:
                raise ReplayError(f"--camera needs NAME=TOPIC with both parts non-empty, got {name!r}={topic!r}")


@dataclass
class ReplayResult:
    """Everything a replay produced, in memory; `report.build_report` turns it into report.json / markdown."""

    options: ReplayOptions
    settings: NodeSettings
    plan: InputPlan
    bag_info: dict[str, Any]
    policy_info: dict[str, Any]
    out_dir: Path
    bag_path: Path | None
    instruction: str
    instruction_source: str
    adaptations: list[str]
    chunks: list[ChunkPrediction]
    motion: RecordedMotion
    command_stamps: list[float]
    command_positions: list[np.ndarray]
    gripper_commands: list[GripperCommand]
    diagnostics: Diagnostics | None
    control_steps: int
    enabled_at: float | None
    output_counts: dict[str, int]
    input_errors: dict[str, int]
    wall_s: dict[str, float]
    model_calls_s: list[float]
    stage_ms: dict[str, list[float]]
    warmup_s: float
    start_s: float  # bag time of the first message (report times are relative to it)


class _Timer:
    """A node timer on bag time, in integer nanoseconds like a ROS clock: fires at start + k * period, k = 1, 2, ...
    (rclpy fires one period after creation). Computed from the start, never accumulated, so nothing drifts and a
    tick and a message at the same instant compare exactly."""

    __slots__ = ("count", "name", "next_ns", "order", "period_ns", "start_ns")

    def __init__(self, name: str, period_s: float, start_ns: int, order: int):
        self.name, self.order, self.start_ns = name, order, start_ns
        self.period_ns = round(period_s * 1e9)
        self.count = 1
        self.next_ns = start_ns + self.period_ns

    def advance(self) -> None:
        self.count += 1
        self.next_ns = self.start_ns + self.count * self.period_ns


def _settings(opts: ReplayOptions) -> tuple[NodeSettings, Path | None, list[str]]:
    """NodeSettings from the params file with replay's overrides, and the list of adaptations made (for the report)."""
    from mole_vla_ros.info import package_root

    adaptations: list[str] = []
    params = Path(opts.params) if opts.params else None
    if params is None:
        default = package_root() / "config" / "mole_vla.yaml"
        params = default if default.is_file() else None
    overrides: dict[str, Any] = {}
    if opts.checkpoint:
        overrides["policy.checkpoint"] = str(opts.checkpoint)
    if opts.device:
        overrides["policy.device"] = opts.device
    if opts.seed is not None:
        overrides["policy.seed"] = opts.seed
        overrides["scheduling.seed"] = opts.seed
    if opts.active_layers is not None:
        overrides["policy.active_layers"] = opts.active_layers
    if opts.skip_mode:
        overrides["policy.skip_mode"] = opts.skip_mode
    if not opts.dry_run:
        overrides["safety.dry_run"] = False
    try:
        settings = load_settings(params, overrides)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None
    return settings, params, adaptations


def _adapt_cameras(
    settings: NodeSettings, opts: ReplayOptions, bag: InputBag, policy_cameras: tuple[str, ...], adaptations: list[str]
) -> NodeSettings:
    """Match the camera list to the policy: --camera wins; without --params, the policy's cameras on their default
    topics (camera/<name>/image_raw) at the rate the bag recorded them."""
    flat = settings.to_flat()
    if opts.cameras:
        flat["observation.camera_names"] = list(opts.cameras)
        flat["topics.cameras"] = list(opts.cameras.values())
        adaptations.append(f"cameras from --camera: {opts.cameras}")
    elif opts.params is None and not set(policy_cameras) <= set(settings.runtime.observation.camera_names):
        flat["observation.camera_names"] = list(policy_cameras)
        flat["topics.cameras"] = [Topics.camera_image(c) for c in policy_cameras]
        adaptations.append(
            f"cameras {list(policy_cameras)} (the checkpoint's) on topics {flat['topics.cameras']} instead of the "
            f"parameter file's {list(settings.runtime.observation.camera_names)}"
        )
    else:
        return settings
    rate = _camera_rate(bag, flat["topics.cameras"])
    if rate and abs(rate - flat["observation.camera_rate_hz"]) > 0.5:
        adaptations.append(f"observation.camera_rate_hz {flat['observation.camera_rate_hz']} -> {rate:.1f} (bag rate)")
        flat["observation.camera_rate_hz"] = round(rate, 1)
    try:
        return settings_from_flat(flat)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None


def _camera_rate(bag: InputBag, topics: list[str]) -> float:
    for t in bag.topics.values():
        if any(t.name.endswith("/" + c.strip("/")) for c in topics) and t.count > 1 and bag.duration_s > 0:
            return (t.count - 1) / bag.duration_s
    return 0.0


def _episode_instruction(bag: InputBag) -> str:
    for d in (bag.path, bag.path.parent):
        meta = d / "episode.json"
        if meta.is_file():
            try:
                return str(json.loads(meta.read_text(encoding="utf-8")).get("instruction", "")).strip()
            except (json.JSONDecodeError, AttributeError):
                return ""
    return ""


def _first_instruction(bag: InputBag, topic: str) -> str:
    for conn, t, raw in bag.messages([topic]):
        msg = bag.deserialize(raw, conn.msgtype, topic, t)
        text = str(msg.data).strip()
        if text:
            return text
    return ""


def run_replay(opts: ReplayOptions, policy: Policy | None = None) -> ReplayResult:
    """Replay `opts.bag` through the node core; writes the output bag (unless write_bag=False) and returns the data
    for the report. `policy` replaces the checkpoint (tests, benchmarks, a scripted policy)."""
    from mole_vla_ros.ros.messages import RosbagsMessages
    from mole_vla_ros.ros.outputs import OutputBuilder
    from mole_vla_ros.runtime.node_core import PolicyRuntime

    wall: dict[str, float] = defaultdict(float)
    t_start = time.perf_counter()
    bag = InputBag(opts.bag)
    try:
        if bag.message_count == 0:
            raise MissingTopicsError(f"bag {str(bag.path)!r} holds no messages:\n{bag.describe()}")
        if opts.start_s >= bag.duration_s and opts.start_s > 0:
            raise ReplayError(f"--start {opts.start_s} s is past the end of the bag ({bag.duration_s:.2f} s long)")
        settings, params_path, adaptations = _settings(opts)
        t0 = time.perf_counter()
        if policy is None:
            from mole_vla_ros.ros.policy_source import load_policy

            try:
                policy = load_policy(settings.node.policy)
            except (ValueError, FileNotFoundError) as exc:
                raise ReplayError(f"cannot load the policy: {exc}") from None
        wall["load_policy"] = time.perf_counter() - t0
        metered = MeteredPolicy(policy)
        settings = _adapt_cameras(settings, opts, bag, metered.camera_names, adaptations)
        plan = plan_inputs(bag, settings, opts.namespace)
        adaptations.extend(plan.notes)

        # instruction: --instruction, else the bag's (latched) instruction topic, else episode.json, else the params
        if opts.instruction.strip():
            instruction, source = opts.instruction.strip(), "--instruction"
            plan.instruction = None  # an explicit instruction wins over the recorded one
        else:
            instruction, source = "", ""
            if plan.instruction:
                instruction, source = _first_instruction(bag, plan.instruction), f"bag topic {plan.instruction}"
            if not instruction:
                instruction, source = _episode_instruction(bag), "episode.json"
            if not instruction:
                instruction, source = settings.runtime.instruction.strip(), "parameter `instruction`"
        if not instruction:
            raise ReplayError(
                f"no instruction for the policy: the bag has no instruction topic ({Topics.INSTRUCTION}) or "
                "episode.json, and the parameters set none; pass --instruction 'pick up the red cube'"
            )

        try:
            runtime = PolicyRuntime(settings.runtime, metered, executor="inline")
        except ValueError as exc:
            raise ReplayError(f"the runtime refuses these settings: {exc}") from None
        if opts.active_layers is not None:
            runtime.set_active_layers(opts.active_layers)
        t0 = time.perf_counter()
        runtime.warmup()
        warmup_s = time.perf_counter() - t0
        metered.reset()
        runtime.set_instruction(instruction)

        factory = RosbagsMessages(bag.typestore)
        outputs = OutputBuilder(
            factory,
            settings.node.markers,
            settings.runtime.frames.ee_frame,
            node_name=f"/{plan.namespace.strip('/')}/mole_vla_policy".replace("//", "/"),
            hardware_id=settings.runtime.frames.robot_type,
        )
        io = NodeIO(settings, runtime, outputs)
        names = output_topics(settings, plan.namespace)
        out_dir = Path(opts.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = _open_writer(out_dir / "bag", bag, names, settings, opts) if opts.write_bag else None
        if writer is not None:
            adaptations.extend(f"input topic {t} not copied ({why})" for t, why in writer.skipped.items())
        try:
            state = _Loop(opts, settings, bag, plan, io, runtime, metered, writer, names, wall)
            t0 = time.perf_counter()
            state.run()
            wall["loop"] = time.perf_counter() - t0
            adaptations.extend(f"WARNING {w}" for w in state.stamp_warnings())
            adaptations.extend(f"enable refused at {r}" for r in state.enable_refusals[:3])
        finally:
            if writer is not None:
                t0 = time.perf_counter()
                writer.close()
                wall["close_bag"] = time.perf_counter() - t0
        wall["total"] = time.perf_counter() - t_start
        bag_info = {
            "path": str(bag.requested_path),
            "opened": str(bag.path),
            "storage": bag.storage,
            "metadata_version": bag.metadata_version,
            "duration_s": bag.duration_s,
            "replayed_s": state.replayed_s,
            "start_offset_s": opts.start_s,
            "messages": bag.message_count,
            "topics": {t.name: {"type": t.msgtype, "count": t.count} for t in bag.topics.values()},
            "params_file": str(params_path) if params_path else "(built-in defaults)",
        }
        return ReplayResult(
            options=opts,
            settings=settings,
            plan=plan,
            bag_info=bag_info,
            policy_info={
                **_policy_info(policy, settings),
                **({"active_layers": opts.active_layers} if opts.active_layers else {}),
            },
            out_dir=out_dir,
            bag_path=(out_dir / "bag") if writer is not None else None,
            instruction=instruction,
            instruction_source=source,
            adaptations=adaptations,
            chunks=state.chunks,
            motion=state.motion,
            command_stamps=state.command_stamps,
            command_positions=state.command_positions,
            gripper_commands=state.gripper_commands,
            diagnostics=state.last_diag,
            control_steps=state.control_steps,
            enabled_at=state.enabled_at,
            output_counts=dict(writer.counts) if writer is not None else dict(state.counts),
            input_errors=dict(io.input_errors),
            wall_s=dict(wall),
            model_calls_s=[c.wall_s for c in metered.calls],
            stage_ms=state.stage_ms,
            warmup_s=warmup_s,
            start_s=bag.start_ns * 1e-9,
        )
    finally:
        bag.close()


def _open_writer(
    path: Path, bag: InputBag, names: OutputTopics, settings: NodeSettings, opts: ReplayOptions
) -> OutputBag:
    writer = OutputBag(path, bag.typestore)
    for conn in bag.connections:
        writer.copy_connection(conn)
    dry = settings.runtime.safety.dry_run
    mode = settings.runtime.output_mode
    for key, (topic, msgtype) in names.topics.items():
        if key == "pose_command" and (dry or mode != "pose"):
            continue
        if key == "joint_trajectory" and (dry or mode != "joint_trajectory"):
            continue
        if key.startswith("gripper/") and dry:
            continue
        writer.add_topic(topic, msgtype)
    return writer


def _policy_info(policy: Any, settings: NodeSettings) -> dict[str, Any]:
    info: dict[str, Any] = {
        "class": type(policy).__name__,
        "camera_names": list(policy.camera_names),
        "image_size": int(policy.image_size),
        "chunk_size": int(policy.chunk_size),
        "control_dt": float(policy.control_dt),
        "action_space": policy.action_space,
        "checkpoint": settings.node.policy.checkpoint or "(bundled default)",
    }
    for attr in ("num_layers", "active_layers", "skip_mode"):
        if hasattr(policy, attr):
            value = getattr(policy, attr)
            info[attr] = value if isinstance(value, (int, str, float)) else str(value)
    model = getattr(policy, "model", None)
    cfg = getattr(model, "config", None)
    if cfg is not None:
        info["preset"] = getattr(cfg, "preset_name", "")
    return info


class _Loop:
    """The replay's shell: feeds messages in log-time order and fires the node's timers on bag time."""

    def __init__(self, opts, settings, bag, plan, io, runtime, metered, writer, names, wall):
        self.opts, self.settings, self.bag, self.plan = opts, settings, bag, plan
        self.io, self.runtime, self.metered, self.writer = io, runtime, metered, writer
        self.names, self.wall = names, wall
        self.counts: Counter[str] = Counter()
        self.chunks: list[ChunkPrediction] = []
        self.motion = RecordedMotion()
        self.command_stamps: list[float] = []
        self.command_positions: list[np.ndarray] = []
        self.gripper_commands: list[GripperCommand] = []
        self.stage_ms: dict[str, list[float]] = defaultdict(list)
        self.last_diag: Diagnostics | None = None
        self.control_steps = 0
        self.enabled_at: float | None = None
        self._next_enable_try = -math.inf
        self.enable_refusals: list[str] = []
        self.camera_of = {topic: name for name, topic in plan.cameras.items()}
        base = settings.runtime.frames
        self._tf_pair = (base.base_frame, base.ee_frame)
        self._tf_hits = 0
        self.stamp_offsets: dict[str, float] = {}
        self.replayed_s = 0.0
        self._now_ns = 0

    # -- timers ----------------------------------------------------------------------------------------------------
    def _timers(self, start_ns: int) -> list[_Timer]:
        node = self.settings.node
        return [
            _Timer("control", 1.0 / self.settings.runtime.trajectory.command_rate_hz, start_ns, 0),
            _Timer("diagnostics", node.diagnostics_period_s, start_ns, 1),
            _Timer("visualization", 1.0 / node.visualization_rate_hz, start_ns, 2),
        ]

    def _fire_until(self, timers: list[_Timer], t_end_ns: int, inclusive: bool) -> None:
        """Fire every timer due before t_end_ns (at or before when `inclusive`), in time order; a message at the
        same instant as a tick is handed over first (the caller fires `inclusive=False` before each message)."""
        while True:
            timer = min(timers, key=lambda x: (x.next_ns, x.order))
            due = timer.next_ns <= t_end_ns if inclusive else timer.next_ns < t_end_ns
            if not due:
                return
            self._now_ns = timer.next_ns
            getattr(self, f"_on_{timer.name}")(timer.next_ns * 1e-9)  # what node.get_clock().now() gives
            self.control_steps += timer.name == "control"
            timer.advance()

    def _emit(self, key: str, msg: Any, now: float) -> None:
        topic = self.names[key][0]
        t0 = time.perf_counter()
        if self.writer is not None:
            self.writer.write(topic, msg, self._now_ns)
        else:
            self.counts[topic] += 1
        self.wall["write"] += time.perf_counter() - t0

    def _on_control(self, now: float) -> None:
        t0 = time.perf_counter()
        n_calls = len(self.metered.calls)
        tick = self.io.control_tick(now)
        model_s = sum(c.wall_s for c in self.metered.calls[n_calls:])
        runtime_s = tick.step_s - model_s
        self.wall["model"] += model_s
        self.wall["runtime"] += runtime_s
        self.wall["messages"] += time.perf_counter() - t0 - tick.step_s
        self.stage_ms["step"].append(runtime_s * 1e3)
        step = tick.step
        self.last_diag = step.diagnostics
        if step.preview is not None:
            self.command_stamps.append(step.preview.stamp)
            self.command_positions.append(step.preview.pose.position)
        if step.chunk is not None:
            self.chunks.append(step.chunk)
            for stage, ms in step.chunk.timings_ms.items():
                self.stage_ms[f"model/{stage}"].append(float(ms))
        for key, msg in tick.messages.items():
            self._emit(key, msg, now)
        if tick.gripper_goal is not None:
            kind, goal = tick.gripper_goal
            self.gripper_commands.append(step.gripper_command)
            if f"gripper/{kind}" in self.names.topics:  # the bag stands in for the franka_gripper action server
                self._emit(f"gripper/{kind}", goal, now)
                self.io.gripper_event(f"sent/{kind}")
        if self.opts.enable and self.enabled_at is None and now >= self._next_enable_try and self._can_enable():
            # like an operator calling ~/enable once the robot's state is there; a refusal (e.g. no robot mode yet
            # with safety.require_robot_mode) is retried once per second of bag time, as an operator would
            refusal = self.io.enable()
            if refusal:
                self._next_enable_try = now + 1.0
                self.enable_refusals.append(f"{now - self.bag.start_ns * 1e-9:.2f} s: {refusal}")
            else:
                self.enabled_at = now
                log.info("runtime enabled at bag time %.3f s", now)

    def _can_enable(self) -> bool:
        sync = self.runtime.sync
        if sync.latest_ee_pose() is None:
            return False
        return self.settings.runtime.output_mode != "joint_trajectory" or sync.latest_joint_positions() is not None

    def _on_diagnostics(self, now: float) -> None:
        t0 = time.perf_counter()
        msg = self.io.diagnostics_tick()
        self.wall["diagnostics"] += time.perf_counter() - t0
        if msg is not None:
            self._emit("diagnostics", msg, now)

    def _on_visualization(self, now: float) -> None:
        t0 = time.perf_counter()
        msg = self.io.visualization_tick(now)
        self.wall["markers"] += time.perf_counter() - t0
        if msg is not None:
            self._emit("markers", msg, now)

    # -- inputs ----------------------------------------------------------------------------------------------------
    def _check_stamp(self, topic: str, msg: Any, t_ns: int) -> None:
        """Remember, per topic, how far the first header stamp is from the log time: the runtime compares header
        stamps with the clock (= log time), so a camera on another clock looks permanently stale."""
        if topic in self.stamp_offsets or not hasattr(msg, "header"):
            return
        self.stamp_offsets[topic] = conv.header_seconds(msg) - t_ns * 1e-9

    def stamp_warnings(self) -> list[str]:
        """One sentence per input whose header stamps sit further from the bag's log time than observation.max_age_s."""
        limit = self.settings.runtime.observation.max_age_s
        return [
            f"{topic}: header stamps are {off:+.3f} s from the bag's log time (observation.max_age_s = {limit} s): "
            "the node would treat it as stale; the publisher's clock differs from the recording machine's"
            for topic, off in sorted(self.stamp_offsets.items())
            if abs(off) > limit
        ]

    def _dispatch(self, topic: str, msg: Any, t_ns: int) -> None:
        plan = self.plan
        self._check_stamp(topic, msg, t_ns)
        if topic in self.camera_of:
            name = self.camera_of[topic]
            if not self.io.on_camera(name, msg, plan.compressed):
                error = self.io.last_error.get(f"camera/{name}", "")
                raise ImageEncodingError(
                    f"camera {name!r} on {topic!r}: the node cannot use this image ({error}). The bag at log time "
                    f"{t_ns * 1e-9:.3f} s"
                )
            return
        if topic == plan.joint_states:
            self.io.on_joint_state(msg)
            if not self.settings.node.topics.gripper_state:
                self._record_width(msg)
        if topic == plan.gripper_state:
            self.io.on_gripper_state(msg)
            self._record_width(msg)
        if topic == plan.ee_pose:
            if self.io.on_ee_pose(msg):
                p, o = msg.pose.position, msg.pose.orientation
                self.motion.add_ee(conv.header_seconds(msg), np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w]))
        if topic == plan.tf:
            for tf in msg.transforms:
                if (tf.header.frame_id.lstrip("/"), tf.child_frame_id.lstrip("/")) == self._tf_pair:
                    self._tf_hits += 1
                    if self.io.on_transform(tf):
                        r, q = tf.transform.translation, tf.transform.rotation
                        self.motion.add_ee(
                            conv.header_seconds(tf), np.array([r.x, r.y, r.z]), np.array([q.x, q.y, q.z, q.w])
                        )
        if topic == plan.robot_state:
            self.io.on_robot_state(msg)
        if topic == plan.instruction:
            self.io.on_instruction(msg)
        if topic == plan.teleop_gripper:
            self.motion.add_gripper_command(t_ns * 1e-9, float(msg.data))

    def _record_width(self, msg: Any) -> None:
        try:
            g = conv.joint_state_to_gripper(msg, self.io.robot.finger_joint_names)
        except ValueError:
            return
        if g is not None:
            self.motion.add_width(g.stamp, g.width)

    def run(self) -> None:
        bag, plan = self.bag, self.plan
        decode = plan.dispatch_topics()
        if plan.teleop_gripper:
            decode.add(plan.teleop_gripper)
        start_ns = bag.start_ns + round(self.opts.start_s * 1e9)
        end_ns = bag.end_ns
        if self.opts.duration_s:
            end_ns = min(end_ns, start_ns + round(self.opts.duration_s * 1e9))
        start = start_ns * 1e-9
        self.replayed_s = (end_ns - start_ns) * 1e-9
        timers = self._timers(start_ns)
        progress = None
        if self.opts.progress:
            from tqdm import tqdm

            progress = tqdm(
                total=round(self.replayed_s, 2),
                desc="replay",
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of bag [{elapsed}<{remaining}]",
            )
        last_shown = start
        t_read = time.perf_counter()
        try:
            for conn, t_ns, raw in bag.messages(start_ns=start_ns, stop_ns=end_ns + 1):
                self.wall["read"] += time.perf_counter() - t_read
                t = t_ns * 1e-9
                self._fire_until(timers, t_ns, inclusive=False)
                if self.writer is not None:
                    t0 = time.perf_counter()
                    self.writer.write_raw(conn.topic, t_ns, raw)
                    self.wall["write"] += time.perf_counter() - t0
                if conn.topic == plan.robot_state and not self.io.robot_state_due(t):
                    pass  # rate-limited like the node: not decoded
                elif conn.topic in decode:
                    t0 = time.perf_counter()
                    msg = bag.deserialize(raw, conn.msgtype, conn.topic, t_ns)
                    t1 = time.perf_counter()
                    self.wall["decode"] += t1 - t0
                    self._dispatch(conn.topic, msg, t_ns)
                    self.wall["dispatch"] += time.perf_counter() - t1
                if progress is not None and t - last_shown >= 0.1:
                    progress.update(round(t - last_shown, 2))
                    last_shown = t
                t_read = time.perf_counter()
            # let the last chunk play out: the node keeps ticking after the bag ends, until the plan is done
            tail = max(self.settings.runtime.scheduling.simulated_latency_s, 0.0) + self.runtime.control_dt
            self._fire_until(timers, end_ns + round(tail * 1e9), inclusive=True)
        finally:
            if progress is not None:
                progress.close()
        if plan.tf and not self._tf_hits:
            log.warning(
                "the bag's /tf never holds %s -> %s directly; replay reads only direct transforms (no TF tree)",
                *self._tf_pair,
            )
        for warning in self.stamp_warnings():
            log.warning(warning)
        if math.isfinite(start) and not self.chunks:
            log.warning(
                "no chunk was predicted: runtime state %s",
                self.last_diag.state if self.last_diag else "no control step",
            )
