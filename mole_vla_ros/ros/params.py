"""The policy node's parameters: one loader for config/mole_vla.yaml, used by the live node and by offline replay.

The file has the standard ROS 2 layout (`mole_vla_policy: ros__parameters: {...}`); ROS flattens nested keys into
dotted parameter names (`safety.dry_run`), and this loader accepts both spellings. Keys split into two validated
dataclass trees:

- `NodeConfig` (this module): where the policy comes from (`policy.*`), which topics to use (`topics.*`), how the
  RViz markers look (`markers.*`) and how often diagnostics go out.
- `RuntimeConfig` (mole_vla_ros/runtime/config.py): everything the ROS-free core does (frames, observation sync,
  scheduling, trajectory limits, gripper, safety, IK, output_mode, instruction).

`parameter_specs()` lists every parameter with its default, type and a description taken from the dataclasses
(their field comments), so the node declares each one with a ParameterDescriptor and the README table matches.
No rclpy here.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mole_vla_ros.config_dicts import build_dataclass, flatten, plain, unflatten
from mole_vla_ros.robot.franka import Topics
from mole_vla_ros.ros.markers import MarkerStyle
from mole_vla_ros.runtime.config import RuntimeConfig

NODE_NAME = "mole_vla_policy"
SKIP_MODES = ("star", "full", "random", "early")
POLICY_DTYPES = ("fp32", "bf16", "fp16")
CAMERA_TRANSPORTS = ("raw", "compressed")


@dataclass
class PolicySourceConfig:
    """Where the policy comes from."""

    # checkpoint directory (config.json + model.safetensors + normalization.json); "" = the bundled default model
    checkpoint: str = ""
    # torch device: "cpu", "cuda", "cuda:1" or "auto" (cuda when available); "cuda" without a GPU refuses to start
    device: str = "auto"
    # LLM layers STAR runs per step; 0 = the checkpoint's default k (settable at run time)
    active_layers: int = 0
    # layer selection: "star" (router), "full" (all layers), "random" (seeded), "early" (first k layers)
    skip_mode: str = "star"
    # seed of the diffusion sampler (same seed + same observation = same actions)
    seed: int = 0
    # weights and compute: "fp32", "bf16" or "fp16" (bf16 halves a cogact-base model's memory on a GPU; the bundled
    # model was trained and evaluated in fp32)
    dtype: str = "fp32"
    # GPU only: replay the vision tower, router and DDIM loop as CUDA graphs (2.5x faster predictions on an H200)
    cuda_graphs: bool = True

    def __post_init__(self):
        if self.dtype not in POLICY_DTYPES:
            raise ValueError(f"policy.dtype must be one of {POLICY_DTYPES}, got {self.dtype!r}")
        if not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"policy.cuda_graphs must be true or false, got {self.cuda_graphs!r}")
        if not isinstance(self.active_layers, int) or self.active_layers < 0:
            raise ValueError(f"policy.active_layers must be an integer >= 0 (0 = default), got {self.active_layers!r}")
        if self.skip_mode not in SKIP_MODES:
            raise ValueError(f"policy.skip_mode must be one of {SKIP_MODES}, got {self.skip_mode!r}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ValueError(f"policy.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {dev!r}")


@dataclass
class TopicsConfig:
    """Topic and action names, relative to the node's namespace (the robot namespace)."""

    # one image topic per observation.camera_names entry, same order
    cameras: tuple[str, ...] = (Topics.camera_image("front"),)
    # "raw" = sensor_msgs/Image, "compressed" = sensor_msgs/CompressedImage on <topic>/compressed
    camera_transport: str = "raw"
    # sensor_msgs/JointState with the arm joints (franka merged joint_states, 30 Hz by default)
    joint_states: str = Topics.JOINT_STATES
    # geometry_msgs/PoseStamped of the EE in the base frame; "" = TF lookup base_frame -> ee_frame instead
    # (neither is used with observation.ee_pose_source: fk)
    ee_pose: str = Topics.CURRENT_POSE
    # franka convenience topics are best effort (franka_ros2 >= 2.4); set false for a reliable pose publisher
    ee_pose_best_effort: bool = True
    # franka_msgs/FrankaRobotState for the robot-mode interlock; "" = not subscribed
    robot_state: str = Topics.ROBOT_STATE
    # sensor_msgs/JointState with the finger joints (gripper width); "" = take it from joint_states if present
    gripper_state: str = Topics.GRIPPER_JOINT_STATES
    # std_msgs/String, transient local: the task instruction
    instruction: str = Topics.INSTRUCTION
    # geometry_msgs/PoseStamped command stream (output_mode pose), e.g. a Cartesian impedance controller's target
    pose_command: str = Topics.CARTESIAN_TARGET_POSE
    # trajectory_msgs/JointTrajectory command stream (output_mode joint_trajectory), e.g. fr3_arm_controller
    joint_trajectory: str = Topics.JTC_COMMAND
    # namespace of the franka_gripper action servers (<ns>/move, <ns>/grasp); "" = no gripper commands
    gripper_actions: str = "franka_gripper"

    def __post_init__(self):
        self.cameras = tuple(self.cameras)
        if not self.cameras or not all(isinstance(t, str) and t for t in self.cameras):
            raise ValueError(f"topics.cameras must be a non-empty list of topic names, got {self.cameras!r}")
        if self.camera_transport not in CAMERA_TRANSPORTS:
            raise ValueError(
                f"topics.camera_transport must be one of {CAMERA_TRANSPORTS}, got {self.camera_transport!r}"
            )
        for name in ("joint_states", "instruction", "pose_command", "joint_trajectory"):
            if not getattr(self, name):
                raise ValueError(f"topics.{name} must be a topic name, got an empty string")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            for topic in value if isinstance(value, tuple) else [value]:
                if isinstance(topic, str) and (" " in topic or topic.endswith("/")):
                    raise ValueError(
                        f"topics.{f.name}={topic!r} is not a valid ROS topic name (no spaces, no trailing /)"
                    )


@dataclass
class NodeConfig:
    """Node-level settings (everything the ROS-free RuntimeConfig does not cover)."""

    policy: PolicySourceConfig = field(default_factory=PolicySourceConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    markers: MarkerStyle = field(default_factory=MarkerStyle)
    # seconds between /diagnostics messages
    diagnostics_period_s: float = 1.0
    # newest predicted chunk is re-published to RViz at most this often (Hz)
    visualization_rate_hz: float = 10.0
    # FrankaRobotState arrives at 1 kHz; the robot-mode interlock decodes at most this many per second (Hz)
    robot_state_rate_hz: float = 50.0
    # once at start-up, compare the EE pose topic with TF base_frame -> ee_frame; a mismatch above these (m, rad)
    # means a wrong frames.ee_frame (flange vs hand TCP is 10 cm) or base frame: logged and shown in diagnostics
    tf_check_tolerance: tuple[float, float] = (0.01, 0.05)

    def __post_init__(self):
        self.tf_check_tolerance = tuple(float(v) for v in self.tf_check_tolerance)
        if len(self.tf_check_tolerance) != 2 or not all(v > 0 for v in self.tf_check_tolerance):
            raise ValueError(
                f"tf_check_tolerance must be [metres > 0, radians > 0], got {list(self.tf_check_tolerance)}"
            )
        for name in ("diagnostics_period_s", "visualization_rate_hz", "robot_state_rate_hz"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node needs, validated together."""

    node: NodeConfig
    runtime: RuntimeConfig

    def __post_init__(self):
        cams, topics = self.runtime.observation.camera_names, self.node.topics.cameras
        if len(cams) != len(topics):
            raise ValueError(
                f"observation.camera_names {list(cams)} and topics.cameras {list(topics)} must have the same length "
                "(one image topic per camera, same order)"
            )

    def to_flat(self) -> dict[str, Any]:
        """Every parameter as {dotted name: value} (lists for tuples), the form ROS 2 parameters take."""
        return {**flatten(plain(dataclasses.asdict(self.node))), **self.runtime.to_flat()}


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> NodeSettings:
    """Settings from a ROS 2 params YAML (either `mole_vla_policy: ros__parameters:` or a plain mapping) plus
    `overrides` (dotted names, applied last). Raises ValueError naming the file, key, value and what is expected."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_params_file(path)
    data.update(flatten(overrides or {}))
    try:
        return settings_from_flat(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}" if path is not None else str(exc)) from None


def read_params_file(path: str | Path) -> dict[str, Any]:
    """The parameters of node `mole_vla_policy` in a ROS 2 params file, flattened to dotted names."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"parameter file {path} does not exist; pass params_file:=<path to mole_vla.yaml>")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for key in (NODE_NAME, f"/**/{NODE_NAME}", "/**"):
        if isinstance(data.get(key), dict) and "ros__parameters" in data[key]:
            data = data[key]["ros__parameters"] or {}
            break
    else:
        wrapped = [k for k, v in data.items() if isinstance(v, dict) and "ros__parameters" in v]
        if wrapped:
            raise ValueError(
                f"{path}: holds parameters for {wrapped} but not for node {NODE_NAME!r}; rename the top-level key "
                f"to {NODE_NAME!r} (or '/**')"
            )
    return flatten(data)


def settings_from_flat(flat: dict[str, Any]) -> NodeSettings:
    """NodeSettings from {dotted name: value}; unknown names are an error that lists the known sections."""
    node_sections = {f.name for f in dataclasses.fields(NodeConfig)}
    runtime_sections = {f.name for f in dataclasses.fields(RuntimeConfig)}
    node_part: dict[str, Any] = {}
    runtime_part: dict[str, Any] = {}
    for key, value in flat.items():
        head = key.split(".", 1)[0]
        if head in node_sections:
            node_part[key] = value
        elif head in runtime_sections:
            runtime_part[key] = value
        else:
            raise ValueError(
                f"unknown parameter {key!r}; parameters start with one of {sorted(node_sections | runtime_sections)} "
                "(see the Configuration reference in README.md)"
            )
    node = build_dataclass(NodeConfig, unflatten(node_part, "parameter"), "", "parameter")
    runtime = RuntimeConfig.from_dict(runtime_part)
    return NodeSettings(node=node, runtime=runtime)


# ----------------------------------------------------------------------------------------------------------------------
# Parameter specs (declaration + documentation)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterSpec:
    name: str  # dotted
    default: Any  # ROS-compatible: bool, int, float, str or a homogeneous list
    type_name: str  # bool | int | float | str | float[] | str[] | int[]
    description: str


def parameter_specs() -> list[ParameterSpec]:
    """Every node parameter (node + runtime), defaults from the dataclasses, descriptions from their comments."""
    specs: list[ParameterSpec] = []
    defaults = {**raw_defaults(NodeConfig), **raw_defaults(RuntimeConfig)}
    descriptions = {**_descriptions(NodeConfig, ""), **_descriptions(RuntimeConfig, "")}
    for name, default in defaults.items():
        specs.append(ParameterSpec(name, default, _type_name(default, name), descriptions.get(name, "")))
    return specs


def raw_defaults(cls, prefix: str = "") -> dict[str, Any]:
    """{dotted name: the field's declared default}, BEFORE __post_init__ fills derived values.

    Declared defaults must be the unresolved ones: frames.base_frame defaults to "" (= derive from robot_type), so a
    params file that only sets robot_type: panda does not meet a stale fr3_link0 default.
    """
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(raw_defaults(hints[f.name], name + "."))
            continue
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[name] = plain(value)
    return out


def _type_name(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list) and value:
        inner = {_type_name(v, name) for v in value}
        if len(inner) == 1:
            return f"{inner.pop()}[]"
    raise TypeError(f"parameter {name} has default {value!r}, which is not a ROS 2 parameter type")


def _descriptions(cls, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    doc = (inspect.getdoc(cls) or "").split("\n")[0]
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_descriptions(hints[f.name], name + "."))
        else:
            out[name] = comments.get(f.name) or doc
    return out


def field_comments(cls) -> dict[str, str]:
    """Field name -> the comment written above or beside it in the dataclass source ('' when there is none)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        parts = []
        i = node.lineno - 2
        above = []
        while i >= 0 and lines[i].strip().startswith("#"):
            above.insert(0, lines[i].strip().lstrip("#").strip())
            i -= 1
        parts.extend(above)
        line = lines[node.lineno - 1]
        if "#" in line:
            parts.append(line.split("#", 1)[1].strip())
        out[node.target.id] = " ".join(p for p in parts if p)
    return out


def markdown_table() -> str:
    """The README's parameter table (name, default, description)."""
    rows = ["| Parameter | Default | Description |", "|---|---|---|"]
    for spec in parameter_specs():
        default = f"`{spec.default!r}`" if not isinstance(spec.default, list) else f"`{spec.default}`"
        rows.append(f"| `{spec.name}` | {default.replace('|', '/')} | {spec.description.replace('|', '/')} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------------


def default_params_yaml() -> str:
    """A complete, commented ROS 2 params file with every parameter at its default (config/mole_vla.yaml's base)."""

    lines = [
        "# Parameters of the MoLe-VLA policy node (ros2 launch mole_vla_ros mole_vla.launch.py params_file:=...).",
        "# Every key is a ROS 2 parameter: nested keys become dotted names (safety.dry_run). Unknown keys and bad",
        "# values stop the node at start-up with a message naming them. Floats keep their decimal point: ROS 2 types",
        "# parameters from the YAML, and `100` would be an integer where a float is declared.",
        "# `/**/` makes the keys apply to the node in any namespace (namespace:=fr3_left).",
        f"/**/{NODE_NAME}:",
        "  ros__parameters:",
    ]
    tree: dict = {}
    specs = parameter_specs()
    for spec in specs:
        node = tree
        parts = spec.name.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = spec
    _emit(tree, lines, indent=4)
    return "\n".join(lines) + "\n"


def _emit(tree: dict, lines: list[str], indent: int) -> None:
    import yaml

    pad = " " * indent
    for key, value in tree.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            _emit(value, lines, indent + 2)
            continue
        if value.description:
            for chunk in textwrap.wrap(value.description, 116 - indent):
                lines.append(f"{pad}# {chunk}")
        rendered = yaml.safe_dump(value.default, default_flow_style=True, width=1000).strip()
        if rendered.endswith("\n...") or rendered.endswith("..."):
            rendered = rendered.rsplit("\n", 1)[0].strip()
        lines.append(f"{pad}{key}: {rendered}")


if __name__ == "__main__":
    # python -m mole_vla_ros.ros.params > config/mole_vla.yaml     regenerate the shipped defaults
    # python -m mole_vla_ros.ros.params --table                     the README's parameter table
    import sys

    sys.stdout.write(markdown_table() + "\n" if "--table" in sys.argv else default_params_yaml())
