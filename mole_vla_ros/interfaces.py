"""The small, dependency-free types every layer speaks: stamped observations, poses, and the policy contract.

The ROS layer converts messages into these; the runtime core, the simulator and replay consume them; the model
implements `Policy`. Times are seconds (float) taken from header stamps, never arrival time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Pose:
    """A rigid pose: position [3] (m) and unit quaternion [4] in (x, y, z, w) order, as geometry_msgs spells it."""

    position: np.ndarray
    quaternion: np.ndarray

    def __post_init__(self):
        p = np.asarray(self.position, dtype=np.float64).reshape(-1)
        q = np.asarray(self.quaternion, dtype=np.float64).reshape(-1)
        if p.shape != (3,) or q.shape != (4,):
            raise ValueError(f"Pose needs position [3] and quaternion [4] (x,y,z,w); got {p.shape} and {q.shape}")
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError(f"Pose has non-finite values: position={p.tolist()} quaternion={q.tolist()}")
        n = float(np.linalg.norm(q))
        if not 0.5 < n < 1.5:
            raise ValueError(f"Pose quaternion must be (close to) unit length, got norm {n:.3f}: {q.tolist()}")
        object.__setattr__(self, "position", p)
        object.__setattr__(self, "quaternion", q / n)


@dataclass(frozen=True)
class CameraFrame:
    """One camera image: `image` is HxWx3 uint8 RGB; `stamp` is the header stamp in seconds."""

    camera: str
    stamp: float
    image: np.ndarray
    frame_id: str = ""


@dataclass(frozen=True)
class JointStateSample:
    """Arm (and optionally finger) joint state, already ordered as the robot description's joint names."""

    stamp: float
    names: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray | None = None
    effort: np.ndarray | None = None


@dataclass(frozen=True)
class PoseSample:
    """A stamped end-effector pose expressed in `frame_id` (the base frame, e.g. fr3_link0)."""

    stamp: float
    pose: Pose
    frame_id: str
    child_frame_id: str = ""


@dataclass(frozen=True)
class GripperSample:
    """Measured gripper opening: total finger distance in metres."""

    stamp: float
    width: float


@dataclass(frozen=True)
class PolicyInput:
    """What a policy sees at one step. Images are keyed by camera name (HxWx3 uint8 RGB)."""

    images: Mapping[str, np.ndarray]
    instruction: str
    # Number of LLM layers STAR may run this step (None = the checkpoint's default). Runtime knob, not only training.
    active_layers: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class PolicyOutput:
    """One prediction: an action chunk in the checkpoint's action space plus what STAR chose.

    actions:       [chunk_size, action_dim] un-normalized actions (dims 0-5 pose, dim 6 gripper in {0, 1}).
    layer_indices: the LLM layers that actually ran, ascending.
    layer_probs:   [num_layers] router probabilities (uniform-free: what the softmax said).
    timings_ms:    per-stage wall time (vision, router, llm, action_head, total).
    """

    actions: np.ndarray
    layer_indices: tuple[int, ...]
    layer_probs: np.ndarray
    num_layers: int
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    flops: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """Anything that maps observations to an action chunk: the MoLe-VLA model, a scripted policy, a remote client."""

    camera_names: tuple[str, ...]
    chunk_size: int
    action_space: str  # name understood by mole_vla_ros.runtime.action_space
    control_dt: float  # seconds between consecutive actions of a chunk
    image_size: int

    def infer(self, inp: PolicyInput) -> PolicyOutput: ...


# The attributes of the `Policy` contract besides `infer`, in declaration order.
POLICY_ATTRIBUTES: tuple[str, ...] = ("camera_names", "chunk_size", "action_space", "control_dt", "image_size")


def copy_policy_attributes(source: object, target: object) -> None:
    """Set the `Policy` attributes on `target` from `source`: a policy being wrapped, or a model config that names
    them the same way. `camera_names` becomes a tuple; the others are copied as they are. A `source` that lacks any
    of them raises a TypeError naming the missing ones."""
    missing = [name for name in POLICY_ATTRIBUTES if not hasattr(source, name)]
    if missing:
        raise TypeError(
            f"{type(source).__name__} lacks the Policy attribute(s) {missing}; a policy (or the config it is built "
            f"from) needs all of {list(POLICY_ATTRIBUTES)}, see mole_vla_ros.interfaces.Policy"
        )
    for name in POLICY_ATTRIBUTES:
        value = getattr(source, name)
        setattr(target, name, tuple(value) if name == "camera_names" else value)
