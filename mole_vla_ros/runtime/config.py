"""`RuntimeConfig`: every knob of the runtime core, validated once, shared by the ROS node, replay and the simulator.

The tree mirrors the runtime's parts (frames, observation, scheduling, trajectory, gripper, safety, ik). Each part
is a dataclass whose `__post_init__` rejects bad values with a sentence naming the value, what was expected and how
to fix it. `RuntimeConfig.from_dict` takes the nested dict of `config/mole_vla.yaml` (or the flat dotted names ROS
parameters use, `safety.dry_run`) and rejects unknown keys by name; `to_dict` / `to_flat` write them back.

No field is ever None, so every value maps to a ROS parameter; "take it from the policy" is spelled 0 or "".
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mole_vla_ros.config_dicts import build_dataclass, flatten, plain, unflatten
from mole_vla_ros.robot.franka import ROBOT_TYPES, describe

OUTPUT_MODES = ("pose", "joint_trajectory")
ROBOT_MODES = ("OTHER", "IDLE", "MOVE", "GUIDING", "REFLEX", "USER_STOPPED", "AUTOMATIC_ERROR_RECOVERY")
# Commands stay below this fraction of the FR3/Panda hardware limits (libfranka aborts at the limits themselves).
MAX_LIMIT_FRACTION = 0.5


def _positive(owner: str, name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}.{name} must be a finite number {bound}, got {value!r}")


def _vec3(owner: str, name: str, value, positive: bool = True) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in value)
    except TypeError:
        vals = (float(value),) * 3  # one number means the same for x, y and z
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals) or (positive and min(vals) <= 0):
        what = "3 positive numbers (x, y, z)" if positive else "3 finite numbers (x, y, z)"
        raise ValueError(f"{owner}.{name} must be {what} or one number for all axes, got {value!r}")
    return vals


@dataclass
class FramesConfig:
    """Frame names. Empty means the franka_description default of `robot_type` (fr3_link0 / fr3_hand_tcp)."""

    robot_type: str = "fr3"  # "fr3" or "panda": joint names, limits and default frames
    base_frame: str = ""  # frame of every pose and action ("" = <robot_type>_link0)
    ee_frame: str = ""  # the controlled end-effector frame ("" = <robot_type>_hand_tcp)

    def __post_init__(self):
        if self.robot_type not in ROBOT_TYPES:
            raise ValueError(f"frames.robot_type must be one of {ROBOT_TYPES}, got {self.robot_type!r}")
        desc = describe(self.robot_type)
        other = [r for r in ROBOT_TYPES if r != self.robot_type]
        for name in ("base_frame", "ee_frame"):
            value = getattr(self, name)
            if any(value.startswith(f"{o}_") for o in other):
                raise ValueError(
                    f"frames.{name}={value!r} belongs to another robot type than robot_type={self.robot_type!r}; "
                    f"set it to a {self.robot_type}_* frame or leave it empty for the default"
                )
        self.base_frame = self.base_frame or desc.base_frame
        self.ee_frame = self.ee_frame or desc.tcp_frame


@dataclass
class ObservationConfig:
    """How camera frames, joint states and EE poses are paired into one policy observation (by header stamps)."""

    # cameras the runtime synchronises (must include every camera the policy was trained with)
    camera_names: tuple[str, ...] = ("front",)
    # |stamp(state) - stamp(camera)| and the spread between cameras must stay below this to form an observation
    sync_tolerance_s: float = 0.05
    # an observation older than this (by its newest stamp vs `now`) is stale: no new inference, watchdog counts
    max_age_s: float = 0.3
    # samples kept per stream to find partners (30 = 1 s of camera at 30 Hz)
    buffer_size: int = 30
    # where the EE pose comes from: the robot's pose topic or forward kinematics of the joint states
    ee_pose_source: str = "topic"
    # nominal camera rate: a frame gap longer than 1.5 periods counts the missing frames as drops
    camera_rate_hz: float = 30.0

    def __post_init__(self):
        self.camera_names = tuple(self.camera_names)
        if not self.camera_names or not all(isinstance(c, str) and c for c in self.camera_names):
            raise ValueError(f"observation.camera_names must be non-empty names, got {self.camera_names!r}")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"observation.camera_names has duplicates: {self.camera_names!r}")
        _positive("observation", "sync_tolerance_s", self.sync_tolerance_s)
        _positive("observation", "max_age_s", self.max_age_s)
        _positive("observation", "camera_rate_hz", self.camera_rate_hz)
        if not isinstance(self.buffer_size, int) or self.buffer_size < 2:
            raise ValueError(f"observation.buffer_size must be an integer >= 2, got {self.buffer_size!r}")
        if self.ee_pose_source not in ("topic", "fk"):
            raise ValueError(f"observation.ee_pose_source must be 'topic' or 'fk', got {self.ee_pose_source!r}")


@dataclass
class EnsembleConfig:
    """CogACT adaptive action ensemble: w_i ~ exp(alpha * cos(a_i, a_latest)) over the last `horizon` chunks."""

    enabled: bool = False  # average overlapping chunks (off = the newest chunk alone)
    alpha: float = 0.1  # CogACT adaptive_ensemble_alpha: > 0 favours predictions similar to the newest one
    horizon: int = 2  # chunks averaged (CogACT: 2 Google robot, 7 WidowX)

    def __post_init__(self):
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"scheduling.ensemble.horizon must be an integer >= 1, got {self.horizon!r}")
        if not math.isfinite(self.alpha):
            raise ValueError(f"scheduling.ensemble.alpha must be finite, got {self.alpha!r}")


@dataclass
class SchedulingConfig:
    """When predictions happen and which of their actions are executed."""

    # actions of a chunk executed before the next chunk takes over (receding horizon); 0 = the whole chunk
    execute_horizon: int = 8
    # seconds between consecutive actions of a chunk; 0 = the policy's control_dt
    control_dt: float = 0.0
    # seconds between inference requests; 0 = automatic: request when the plan has less than
    # (expected latency + control_dt) left, so the next chunk lands before the current one runs out
    inference_period_s: float = 0.0
    # inference calls run (and discarded) before the first motion, so cold-start latency never reaches the robot
    warmup_steps: int = 2
    # a chunk arriving later than this after its observation is dropped (counted as late), the robot holds
    max_latency_s: float = 1.0
    # inline executor only: "measured" = real compute time, "simulated" = `simulated_latency_s` (deterministic)
    latency_mode: str = "simulated"
    # inline executor with latency_mode "simulated": a chunk becomes available this long after its request
    simulated_latency_s: float = 0.1
    # seed of the first inference; request i gets seed + i, so replays with the same seed are identical
    seed: int = 0
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)  # CogACT adaptive action ensemble

    def __post_init__(self):
        if not isinstance(self.execute_horizon, int) or self.execute_horizon < 0:
            raise ValueError(f"scheduling.execute_horizon must be an integer >= 0, got {self.execute_horizon!r}")
        _positive("scheduling", "control_dt", self.control_dt, allow_zero=True)
        _positive("scheduling", "inference_period_s", self.inference_period_s, allow_zero=True)
        _positive("scheduling", "max_latency_s", self.max_latency_s)
        _positive("scheduling", "simulated_latency_s", self.simulated_latency_s, allow_zero=True)
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"scheduling.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if self.latency_mode not in ("measured", "simulated"):
            raise ValueError(f"scheduling.latency_mode must be 'measured' or 'simulated', got {self.latency_mode!r}")
        if isinstance(self.ensemble, dict):
            self.ensemble = build_dataclass(EnsembleConfig, self.ensemble, "scheduling.ensemble")


@dataclass
class TrajectoryConfig:
    """The smoothed EE trajectory: command rate and per-axis limits, kept below the hardware numbers."""

    command_rate_hz: float = 100.0  # samples per second of the commanded EE trajectory (call step() this often)
    max_lin_vel: tuple[float, float, float] = (0.3, 0.3, 0.3)  # m/s per base axis
    max_lin_acc: tuple[float, float, float] = (1.5, 1.5, 1.5)  # m/s^2
    max_rot_vel: tuple[float, float, float] = (0.6, 0.6, 0.6)  # rad/s per rotation-vector axis
    max_rot_acc: tuple[float, float, float] = (4.0, 4.0, 4.0)  # rad/s^2
    # joint_trajectory output: seconds of trajectory in each JointTrajectory message (JTC interpolates cubically
    # between its points from positions + velocities)
    joint_horizon_s: float = 0.2
    joint_point_dt: float = 0.04  # s between the message's points, and between messages

    def __post_init__(self):
        _positive("trajectory", "command_rate_hz", self.command_rate_hz)
        for name in ("max_lin_vel", "max_lin_acc", "max_rot_vel", "max_rot_acc"):
            setattr(self, name, _vec3("trajectory", name, getattr(self, name)))
        _positive("trajectory", "joint_horizon_s", self.joint_horizon_s)
        _positive("trajectory", "joint_point_dt", self.joint_point_dt)
        if self.joint_point_dt > self.joint_horizon_s:
            raise ValueError(
                f"trajectory.joint_point_dt ({self.joint_point_dt}) must not exceed trajectory.joint_horizon_s "
                f"({self.joint_horizon_s}); a JointTrajectory needs at least one point"
            )

    def check_against(self, robot_type: str) -> None:
        """Reject limits above MAX_LIMIT_FRACTION of the arm's Cartesian hardware limits."""
        lim = describe(robot_type).limits
        for name, hw in (
            ("max_lin_vel", lim.cart_trans_vel),
            ("max_lin_acc", lim.cart_trans_acc),
            ("max_rot_vel", lim.cart_rot_vel),
            ("max_rot_acc", lim.cart_rot_acc),
        ):
            # per-axis limits combine to at most sqrt(3) x the axis value along a diagonal
            worst = math.sqrt(sum(v * v for v in getattr(self, name)))
            if worst > MAX_LIMIT_FRACTION * hw:
                raise ValueError(
                    f"trajectory.{name}={getattr(self, name)} allows {worst:.3g} along a diagonal, above "
                    f"{MAX_LIMIT_FRACTION:.0%} of the {robot_type} hardware limit {hw}; lower it (margins keep "
                    f"libfranka from aborting with a discontinuity reflex)"
                )


@dataclass
class GripperConfig:
    """Turning the policy's continuous gripper value into rare, non-blocking open/close commands."""

    # value <= close_threshold means "close", >= open_threshold means "open"; in between keeps the state (hysteresis)
    close_threshold: float = 0.4
    open_threshold: float = 0.6  # policy value at or above this means open
    # consecutive scheduled values past a threshold needed before the state flips
    debounce_count: int = 2
    # no two commands closer than this (a Franka hand move/grasp takes ~0.5-1 s and blocks the action server)
    min_interval_s: float = 0.5
    open_width: float = 0.08  # m, both fingers
    close_mode: str = "grasp"  # "grasp" (force-hold an object) or "move" (position-only close)
    close_width: float = 0.0  # m: target width of a close (grasp: nominal object width)
    speed: float = 0.1  # m/s
    force: float = 20.0  # N (grasp)
    epsilon_inner: float = 0.005  # m: grasp succeeds down to close_width - epsilon_inner
    epsilon_outer: float = 0.08  # wide: a grasp on any object width between close_width and open_width succeeds

    def __post_init__(self):
        if not 0.0 <= self.close_threshold < self.open_threshold <= 1.0:
            raise ValueError(
                f"gripper thresholds need 0 <= close_threshold < open_threshold <= 1, got close="
                f"{self.close_threshold!r}, open={self.open_threshold!r}"
            )
        if not isinstance(self.debounce_count, int) or self.debounce_count < 1:
            raise ValueError(f"gripper.debounce_count must be an integer >= 1, got {self.debounce_count!r}")
        _positive("gripper", "min_interval_s", self.min_interval_s, allow_zero=True)
        if not 0.0 < self.open_width <= 0.08:
            raise ValueError(f"gripper.open_width must be in (0, 0.08] m (Franka hand), got {self.open_width!r}")
        if not 0.0 <= self.close_width < self.open_width:
            raise ValueError(
                f"gripper.close_width must be in [0, open_width={self.open_width}), got {self.close_width!r}"
            )
        if self.close_mode not in ("grasp", "move"):
            raise ValueError(f"gripper.close_mode must be 'grasp' or 'move', got {self.close_mode!r}")
        _positive("gripper", "speed", self.speed)
        _positive("gripper", "force", self.force)
        _positive("gripper", "epsilon_inner", self.epsilon_inner, allow_zero=True)
        _positive("gripper", "epsilon_outer", self.epsilon_outer, allow_zero=True)


@dataclass
class SafetyConfig:
    """The layer every command passes through. Dry run (compute and report, command nothing) is the default."""

    dry_run: bool = True  # compute and publish previews, command nothing (set false to move the robot)
    workspace_min: tuple[float, float, float] = (0.2, -0.5, 0.02)  # m, in the base frame
    workspace_max: tuple[float, float, float] = (0.8, 0.5, 0.8)  # m, in the base frame
    # largest change between two consecutive commanded samples (beyond what the trajectory limits allow = a bug)
    max_step_m: float = 0.01
    max_step_rad: float = 0.05  # rad, the same check for orientation
    # no fresh observation for this long while enabled -> hold the last commanded pose and count
    watchdog_timeout_s: float = 0.5
    # robot modes (FrankaRobotState.robot_mode) that disable the runtime until `enable()` is called again
    interlock_modes: tuple[str, ...] = ("REFLEX", "USER_STOPPED", "AUTOMATIC_ERROR_RECOVERY", "GUIDING")
    # refuse enable() until a robot mode outside interlock_modes has been received (real robot: set True)
    require_robot_mode: bool = False

    def __post_init__(self):
        self.workspace_min = _vec3("safety", "workspace_min", self.workspace_min, positive=False)
        self.workspace_max = _vec3("safety", "workspace_max", self.workspace_max, positive=False)
        if not all(lo < hi for lo, hi in zip(self.workspace_min, self.workspace_max)):
            raise ValueError(
                f"safety.workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max} on "
                f"every axis"
            )
        _positive("safety", "max_step_m", self.max_step_m)
        _positive("safety", "max_step_rad", self.max_step_rad)
        _positive("safety", "watchdog_timeout_s", self.watchdog_timeout_s)
        self.interlock_modes = tuple(self.interlock_modes)
        unknown = [m for m in self.interlock_modes if m not in ROBOT_MODES]
        if unknown:
            raise ValueError(f"safety.interlock_modes has unknown robot modes {unknown}; known: {ROBOT_MODES}")


@dataclass
class IKConfig:
    """Numerical IK (damped least squares) used by the joint_trajectory output."""

    damping: float = 0.05  # damped least squares factor, applied near singularities only
    max_iterations: int = 60  # Newton iterations before a pose is reported unreachable
    position_tolerance: float = 1e-4  # m
    rotation_tolerance: float = 1e-3  # rad
    # stay this far inside the joint position limits
    joint_limit_margin: float = 0.05
    # fraction of the hardware joint velocity limits a trajectory may use
    velocity_fraction: float = 0.5
    # pull toward the current configuration in the nullspace (keeps the elbow where it is)
    nullspace_gain: float = 0.1

    def __post_init__(self):
        _positive("ik", "damping", self.damping)
        if not isinstance(self.max_iterations, int) or self.max_iterations < 1:
            raise ValueError(f"ik.max_iterations must be an integer >= 1, got {self.max_iterations!r}")
        _positive("ik", "position_tolerance", self.position_tolerance)
        _positive("ik", "rotation_tolerance", self.rotation_tolerance)
        _positive("ik", "joint_limit_margin", self.joint_limit_margin, allow_zero=True)
        if not 0.0 < self.velocity_fraction <= 1.0:
            raise ValueError(f"ik.velocity_fraction must be in (0, 1], got {self.velocity_fraction!r}")
        _positive("ik", "nullspace_gain", self.nullspace_gain, allow_zero=True)


@dataclass
class RuntimeConfig:
    """The whole runtime. `action_space` "" = the policy's own; `output_mode` picks the command stream."""

    frames: FramesConfig = field(default_factory=FramesConfig)
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    scheduling: SchedulingConfig = field(default_factory=SchedulingConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    gripper: GripperConfig = field(default_factory=GripperConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    ik: IKConfig = field(default_factory=IKConfig)
    # "pose": target pose stream (Cartesian impedance); "joint_trajectory": IK -> JointTrajectory for JTC
    output_mode: str = "pose"
    action_space: str = ""  # name in runtime/action_space.py; "" = the checkpoint's own (a mismatch is an error)
    instruction: str = ""  # language instruction until one arrives on the instruction topic

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                setattr(self, f.name, build_dataclass(typing.get_type_hints(type(self))[f.name], value, f.name))
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {self.output_mode!r}")
        if self.action_space:
            from mole_vla_ros.runtime.action_space import get_action_space

            get_action_space(self.action_space)  # raises with the known names
        self.trajectory.check_against(self.frames.robot_type)
        # the tracker moves at most v_max / rate per sample; a max_step below that would refuse every moving sample
        tr, sf = self.trajectory, self.safety
        lin_step = max(tr.max_lin_vel) / tr.command_rate_hz
        rot_step = math.sqrt(sum(w * w for w in tr.max_rot_vel)) / tr.command_rate_hz
        if lin_step > sf.max_step_m or rot_step > sf.max_step_rad:
            raise ValueError(
                f"safety.max_step_m={sf.max_step_m} / max_step_rad={sf.max_step_rad} are below what one sample may "
                f"legitimately move at trajectory.command_rate_hz={tr.command_rate_hz} ({lin_step:.4f} m, "
                f"{rot_step:.4f} rad at full speed): raise command_rate_hz or the max_step values"
            )

    @property
    def robot_type(self) -> str:
        return self.frames.robot_type

    # -- (de)serialisation -------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict | None) -> RuntimeConfig:
        """A validated config from nested dicts (YAML) and/or flat dotted keys (`"safety.dry_run": true`)."""
        return build_dataclass(cls, unflatten(data or {}), "")

    def to_dict(self) -> dict:
        """Nested plain dict (lists instead of tuples) that from_dict reads back to an equal config."""
        return plain(dataclasses.asdict(self))

    def to_flat(self) -> dict:
        """Flat {"section.key": value} dict, the shape ROS 2 parameters take."""
        return flatten(self.to_dict())

    @classmethod
    def from_yaml(cls, path: str | Path) -> RuntimeConfig:
        """Load a YAML file: either the config itself or a ROS params file `{node: {ros__parameters: {...}}}`."""
        import yaml

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
        # a ROS 2 parameter file wraps the values in `<node name>: {ros__parameters: ...}`
        if len(data) == 1:
            (inner,) = data.values()
            if isinstance(inner, dict) and "ros__parameters" in inner:
                data = inner["ros__parameters"]
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
