"""Episodes -> time-aligned training samples with action chunks, q01/q99 statistics and a train/val split by episode.

    mole-vla dataset build ~/mole_vla_episodes --out data/drawer --rate 10 --image-size 224 --cameras scene wrist

For every sample time t (a grid at `rate_hz` over the span where all streams have data):
  - images: per camera, the newest frame stamped <= t and at most `image_tolerance_s` old;
  - state:  the newest EE pose <= t within `state_tolerance_s`, the newest gripper reading within `gripper_tolerance_s`
    (a gripper *command* topic, when used, holds its last value);
  - a time missing any of these is left out and reported as a gap (never filled with stale or invented data).
Actions come from the recorded EE poses and gripper through `runtime.action_space`. With `action_source` "command"
(the default "auto" picks it when the episode recorded the teleop target pose, as the recorder and the simulator do),
the chunk at t takes the measured pose_t to the *commanded* targets target_t, target_t+1, ...: decoding it at pose_t
gives the operator's targets, which is what the controller must be sent to move like the demonstration (the arm lags
its target by one or two control periods; actions made from measured poses alone ask for that lagging motion and run
slower than the demonstration). With "state" (no target stream recorded), action t takes pose_t to pose_t+1
(`encode_trajectory`) and carries the gripper state it leads to, so decoding a chunk at pose_t replays the motion.
Chunks hold `chunk_size` (16) consecutive actions; past the end of a recording they are padded with the *hold* action
(zero deltas, last absolute values, last gripper), marked in `action_mask`. CogACT pads with normalized 0, which decodes
to the middle of the q01/q99 range, not to "stay" (a known chunk-seam pitfall); hold padding decodes to staying put.

Output directory:
    meta.json                   config, cameras, instructions, action space, normalization (q01/q99), episodes + gaps
    train-00000.safetensors ... images uint8 [N,V,S,S,3], actions float32 [N,C,D] (raw, un-normalized),
    val-00000.safetensors       action_mask uint8 [N,C], episode_index / frame_index / instruction_id int32 [N],
                                timestamp float64 [N] (s from episode start), ee_pose float32 [N,7], gripper_open [N],
                                joint_positions float32 [N,7] (arm joints, when recorded)
Read it with `TrainingDataset(dir, split)`.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mole_vla_ros import __version__
from mole_vla_ros.data.alignment import Gap, gap_runs, latest_at_or_before, segments, tick_times
from mole_vla_ros.data.episode import (
    EPISODE_JSON,
    INCOMPLETE_DIR,
    EpisodeReader,
    IncompleteEpisodeError,
    list_episodes,
    normalize_topic,
)
from mole_vla_ros.data.recorder_core import has_header, header_stamp_ns
from mole_vla_ros.data.typestore import get_typestore
from mole_vla_ros.interfaces import Pose
from mole_vla_ros.robot.franka import ROBOT_TYPES, Topics, describe
from mole_vla_ros.runtime.action_space import ACTION_SPACES, DEFAULT_ACTION_SPACE, get_action_space

log = logging.getLogger(__name__)

DATASET_FORMAT = "mole_vla_dataset"
DATASET_FORMAT_VERSION = 1
META_JSON = "meta.json"
SPLITS = ("train", "val")
CLOCK_WARN_S = 0.5  # median receive-minus-stamp latency beyond this (or a stamp in the future) is suspicious
_POSE_TYPES = (
    "geometry_msgs/msg/PoseStamped",
    "franka_msgs/msg/FrankaRobotState",
    "geometry_msgs/msg/TransformStamped",
)
_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class DatasetConfig:
    """How episodes become samples. Every field is a `mole-vla dataset build` option."""

    rate_hz: float = 10.0
    image_size: int = 224
    cameras: tuple[str, ...] = ()  # () = every camera the first episode lists, sorted by name
    chunk_size: int = 16
    action_space: str = DEFAULT_ACTION_SPACE
    pose_topic: str = Topics.CURRENT_POSE  # PoseStamped, FrankaRobotState (o_t_ee) or TransformStamped
    # where action targets come from: 'command' (the recorded target pose stream), 'state' (the next measured pose),
    # or 'auto' (command when the target topic has messages, else state)
    action_source: str = "auto"
    target_pose_topic: str = Topics.TELEOP_TARGET_POSE  # PoseStamped commanded by the teleop device / expert
    gripper_topic: str = Topics.GRIPPER_JOINT_STATES  # JointState with the finger joints (width = sum)
    gripper_command_topic: str = Topics.TELEOP_GRIPPER  # std_msgs/Float32 in [0, 1], 1 = open
    gripper_source: str = "auto"  # 'command', 'width', or 'auto' (command when recorded, else width)
    # Arm joint positions as extra proprioception (other policies, LeRobot export). Used when the topic is recorded;
    # then a sample needs a joint state within state_tolerance_s too. "" = never.
    joint_topic: str = Topics.JOINT_STATES
    gripper_open_fraction: float = 0.9  # width >= this fraction of the episode's widest opening counts as open
    image_tolerance_s: float = 0.1
    state_tolerance_s: float = 0.05
    gripper_tolerance_s: float = 0.2
    time_source: str = "header"  # 'header' stamps (falls back to receive time for header-less types) or 'receive'
    val_fraction: float = 0.1
    seed: int = 0
    include_failures: bool = False
    include_unlabelled: bool = True
    shard_size: int = 1024
    # Plain rosbag2 bags (`ros2 bag record`, MCAP or sqlite3) have no episode.json: name their cameras and task here.
    camera_topics: dict[str, str] = field(default_factory=dict)  # camera name -> image topic (overrides episode.json)
    instruction: str = ""  # for episodes that carry none
    # Absolute roll/pitch/yaw: put every episode on the 2pi-branch of the first one. A Franka pointing down has
    # roll near +-pi; without this one episode says +3.1 and the next -3.1, and q01/q99 span the whole circle.
    consistent_angle_branch: bool = True

    def __post_init__(self):
        self.cameras = tuple(self.cameras)
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0 (samples per second), got {self.rate_hz!r}")
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 1024):
            raise ValueError(f"image_size must be an int in [16, 1024] pixels, got {self.image_size!r}")
        if not (isinstance(self.chunk_size, int) and self.chunk_size >= 1):
            raise ValueError(f"chunk_size must be an int >= 1, got {self.chunk_size!r}")
        if self.action_space not in ACTION_SPACES:
            raise ValueError(f"action_space must be one of {sorted(ACTION_SPACES)}, got {self.action_space!r}")
        if self.action_source not in ("auto", "command", "state"):
            raise ValueError(f"action_source must be 'auto', 'command' or 'state', got {self.action_source!r}")
        if self.gripper_source not in ("auto", "command", "width"):
            raise ValueError(f"gripper_source must be 'auto', 'command' or 'width', got {self.gripper_source!r}")
        if not 0 < self.gripper_open_fraction <= 1:
            raise ValueError(f"gripper_open_fraction must be in (0, 1], got {self.gripper_open_fraction!r}")
        for key in ("image_tolerance_s", "state_tolerance_s", "gripper_tolerance_s"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key} must be >= 0 seconds, got {getattr(self, key)!r}")
        if self.time_source not in ("header", "receive"):
            raise ValueError(f"time_source must be 'header' or 'receive', got {self.time_source!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not (isinstance(self.shard_size, int) and self.shard_size >= 1):
            raise ValueError(f"shard_size must be an int >= 1 samples per file, got {self.shard_size!r}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras listed twice: {list(self.cameras)}")


@dataclass
class EpisodeSamples:
    """The samples of one episode (arrays share the first dimension N) plus what was left out."""

    name: str
    instruction: str
    success: bool | None
    images: np.ndarray  # uint8 [N, V, S, S, 3]
    actions: np.ndarray  # float32 [N, C, D]
    action_mask: np.ndarray  # bool [N, C]
    frame_index: np.ndarray  # int32 [N]: tick index within the episode
    timestamp: np.ndarray  # float64 [N]: seconds from the first tick
    ee_pose: np.ndarray  # float32 [N, 7] (x y z qx qy qz qw)
    gripper_open: np.ndarray  # float32 [N]
    step_actions: np.ndarray  # float64 [M, D]: every real action once (for statistics)
    joint_positions: np.ndarray | None = None  # float32 [N, 7] arm joints, None when the episode has none
    ticks: int = 0
    gaps: list[Gap] = field(default_factory=list)
    gripper_source: str = ""
    action_source: str = ""
    angle_center: np.ndarray | None = None  # branch centre used for absolute angles (None: not applicable)
    clock_warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.actions.shape[0])


# ---------------------------------------------------------------------------------------------------- topics
def resolve_topic(available: Iterable[str], wanted: str, what: str, option: str) -> str:
    """The recorded topic matching `wanted`: exact, or the unique one ending in it (recorded under a namespace)."""
    available = sorted(available)
    w = normalize_topic(wanted)
    if w in available:
        return w
    hits = [t for t in available if t.endswith(w)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValueError(
            f"{what} topic {wanted!r} matches several recorded topics {hits}; pass the full name with {option}"
        )
    raise ValueError(
        f"no {what} topic {wanted!r} in the episode; recorded topics are {available}. Set it with {option}"
    )


def _stamp_ns(raw: bytes, log_ns: int, with_header: bool, time_source: str) -> int:
    if time_source == "header" and with_header:
        t = header_stamp_ns(raw)
        if t:  # publishers that leave the stamp at zero: fall back to the receive time
            return t
    return log_ns


def _pose_of(msg: Any, msgtype: str) -> np.ndarray:
    if msgtype == "geometry_msgs/msg/PoseStamped":
        p, o = msg.pose.position, msg.pose.orientation
    elif msgtype == "franka_msgs/msg/FrankaRobotState":
        p, o = msg.o_t_ee.pose.position, msg.o_t_ee.pose.orientation
    else:  # TransformStamped
        p, o = msg.transform.translation, msg.transform.rotation
    return np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w], dtype=np.float64)


def _gripper_value(msg: Any, topic: str, msgtype: str, source: str, fingers: Sequence[str]) -> float:
    """A gripper command in [0, 1] (source 'command', std_msgs/Float32) or the finger width in m (JointState)."""
    if source == "command":
        if msgtype != "std_msgs/msg/Float32":
            raise ValueError(f"gripper command topic {topic} must be std_msgs/msg/Float32, got {msgtype}")
        return float(np.clip(msg.data, 0.0, 1.0))
    if msgtype != "sensor_msgs/msg/JointState":
        raise ValueError(f"gripper topic {topic} must be sensor_msgs/msg/JointState, got {msgtype}")
    names = list(msg.name)
    idx = [names.index(f) for f in fingers if f in names] or [i for i, n in enumerate(names) if "finger_joint" in n]
    if not idx:
        raise ValueError(f"gripper topic {topic} has no finger joints {list(fingers)}; its joints are {names}")
    # franka_description: each finger joint is half the opening
    return float(np.sum(np.asarray(msg.position, dtype=np.float64)[idx])) * (2 / len(idx))


def _image_of(msg: Any, msgtype: str) -> np.ndarray:
    from mole_vla_ros.ros.conversions import compressed_to_rgb, image_to_rgb

    return image_to_rgb(msg) if msgtype == "sensor_msgs/msg/Image" else compressed_to_rgb(msg)


def _recorded_topic(reader, name: str, what: str, option: str, required: bool) -> str | None:
    """The episode's topic for `name` when it holds messages; None (or, when `required`, a ValueError) otherwise."""
    try:
        topic = resolve_topic(reader.topics, name, what, option)
    except ValueError:
        if required:
            raise
        return None
    if reader.message_counts.get(topic, 0) == 0:
        if required:
            raise ValueError(f"{what} topic {topic} has no messages in episode {reader.name}")
        return None
    return topic


def _hold_action(space, last_action: np.ndarray, last_pose: Pose) -> np.ndarray:
    """The action that keeps the robot where the recording ended: zero deltas, last absolute values, last gripper."""
    hold = last_action.copy()
    still = space.encode(last_pose, last_pose, float(last_action[-1]))
    if space.position == "delta":
        hold[:3] = still[:3]
    if space.rotation == "delta":
        hold[3:-1] = still[3:-1]
    return hold


# ---------------------------------------------------------------------------------------------------- one episode
def _angle_dims(space) -> list[int]:
    """Action dims holding absolute Euler angles (where a 2pi shift changes the number, not the rotation)."""
    return [3, 4, 5] if space.rotation == "absolute" and space.rotation_repr == "rpy" else []


def episode_samples(
    path: str | Path,
    config: DatasetConfig,
    cameras: Sequence[str] | None = None,
    angle_center: np.ndarray | None = None,
) -> EpisodeSamples:
    """Align one episode and compute its action chunks (see the module docstring). Raises ValueError naming missing
    topics or cameras.

    angle_center: absolute Euler angles are shifted by multiples of 2pi so the episode starts within pi of it
    (None: taken from this episode's first action, wrapped to [-pi, pi)). The centre used is returned.
    """
    from mole_vla_ros.model.processor import ImageProcessor

    space = get_action_space(config.action_space)
    store = get_typestore()
    with EpisodeReader(path) as reader:
        meta = reader.metadata
        cam_meta = {**(meta.get("cameras") or {}), **{c: {"topic": t} for c, t in config.camera_topics.items()}}
        cams = list(cameras or config.cameras or sorted(cam_meta))
        if not cams:
            raise ValueError(
                f"episode {reader.name} lists no cameras (no episode.json cameras); name them with "
                "--camera-topic NAME=TOPIC, or record with 'camera: <name>' in the recorder config"
            )
        instruction = reader.instruction or config.instruction
        if not instruction:
            raise ValueError(f"episode {reader.name} has no instruction; pass one with --instruction")
        missing = [c for c in cams if c not in cam_meta]
        if missing:
            raise ValueError(f"episode {reader.name} has no camera(s) {missing}; it has {sorted(cam_meta)}")
        cam_topics = {
            c: resolve_topic(reader.topics, cam_meta[c]["topic"], f"camera {c}", "the recorder config") for c in cams
        }
        for c, t in cam_topics.items():
            if reader.topics[t] not in _IMAGE_TYPES:
                raise ValueError(f"camera {c} topic {t} has type {reader.topics[t]}, expected one of {_IMAGE_TYPES}")
        pose_topic = resolve_topic(reader.topics, config.pose_topic, "EE pose", "--pose-topic")
        if reader.topics[pose_topic] not in _POSE_TYPES:
            raise ValueError(
                f"EE pose topic {pose_topic} has type {reader.topics[pose_topic]}; expected one of {_POSE_TYPES}"
            )

        action_source, target_topic = config.action_source, None
        if action_source in ("auto", "command"):
            target_topic = _recorded_topic(
                reader, config.target_pose_topic, "target pose", "--target-topic", action_source == "command"
            )
            if target_topic is not None and reader.topics[target_topic] not in _POSE_TYPES:
                raise ValueError(
                    f"target pose topic {target_topic} has type {reader.topics[target_topic]}; expected one of "
                    f"{_POSE_TYPES}"
                )
            action_source = "command" if target_topic else "state"

        source = config.gripper_source
        cmd_topic = None
        if source in ("auto", "command"):
            cmd_topic = _recorded_topic(
                reader, config.gripper_command_topic, "gripper command", "--gripper-command-topic", source == "command"
            )
            source = "command" if cmd_topic else "width"
        grip_topic = cmd_topic or resolve_topic(reader.topics, config.gripper_topic, "gripper state", "--gripper-topic")

        joint_topic = None
        if config.joint_topic:
            try:
                joint_topic = resolve_topic(reader.topics, config.joint_topic, "joint state", "--joint-topic")
            except ValueError:
                joint_topic = None  # optional: actions come from EE poses
            if joint_topic is not None and reader.topics[joint_topic] != "sensor_msgs/msg/JointState":
                raise ValueError(
                    f"joint topic {joint_topic} must be sensor_msgs/msg/JointState, got {reader.topics[joint_topic]}"
                )

        # pass 1: stamps of every stream, decoded state
        robot_type = meta.get("robot_type", "fr3")
        description = describe(robot_type if robot_type in ROBOT_TYPES else "fr3")
        fingers = description.finger_joint_names
        arm_joints = description.arm_joint_names
        joint_t, joints = [], []
        cam_stamps: dict[str, list[int]] = {t: [] for t in cam_topics.values()}
        pose_t, poses, grip_t, grips, target_t, targets = [], [], [], [], [], []
        wanted = [*cam_topics.values(), pose_topic, grip_topic, *([joint_topic] if joint_topic else [])]
        wanted += [target_topic] if target_topic else []
        offsets: dict[str, list[int]] = {}  # header stamp - receive time, per topic
        for m in reader.messages(wanted):
            t = _stamp_ns(m.data, m.log_time_ns, has_header(m.msgtype), config.time_source)
            if t != m.log_time_ns:
                offsets.setdefault(m.topic, []).append(m.log_time_ns - t)
            if m.topic in cam_stamps:
                cam_stamps[m.topic].append(t)  # images are decoded in pass 2, only those samples use
                continue
            msg = store.deserialize_cdr(m.data, m.msgtype)
            if m.topic == pose_topic:
                pose_t.append(t)
                poses.append(_pose_of(msg, m.msgtype))
            if m.topic == target_topic:
                target_t.append(t)
                targets.append(_pose_of(msg, m.msgtype))
            if m.topic == joint_topic:
                names = list(msg.name)
                if all(j in names for j in arm_joints):  # merged joint_states may also carry finger-only messages
                    joint_t.append(t)
                    joints.append(np.asarray(msg.position, dtype=np.float64)[[names.index(j) for j in arm_joints]])
            if m.topic == grip_topic:
                grip_t.append(t)
                grips.append(_gripper_value(msg, m.topic, m.msgtype, source, fingers))

        # Header stamps from an unsynchronized clock (camera hardware clock, robot PC without PTP/NTP) put streams
        # seconds apart; alignment would then pair unrelated messages. Say so instead of building silently.
        clock_warnings = []
        for topic, off in offsets.items():
            latency = float(np.median(off)) / 1e9
            if not -0.05 <= latency <= CLOCK_WARN_S:
                clock_warnings.append(
                    f"{topic}: header stamps are {latency:+.3f} s from receive time (clocks not synchronized? "
                    "sync them (PTP/NTP) or rebuild with --time-source receive)"
                )
                log.warning("episode %s: %s", reader.name, clock_warnings[-1])

        streams = {"pose": (pose_t, pose_topic), "gripper": (grip_t, grip_topic)}
        if target_topic:
            streams["target pose"] = (target_t, target_topic)
        streams.update({f"camera {c}": (cam_stamps[t], t) for c, t in cam_topics.items()})
        empty = [f"{k} ({topic})" for k, (ts, topic) in streams.items() if not ts]
        if empty:
            raise ValueError(f"episode {reader.name}: no messages on {empty}")

        def sort_stream(ts):
            order = np.argsort(np.asarray(ts, dtype=np.int64), kind="stable")
            return np.asarray(ts, dtype=np.int64)[order], order

        pose_ts, pose_order = sort_stream(pose_t)
        grip_ts, grip_order = sort_stream(grip_t)
        poses_arr = np.asarray(poses)[pose_order]
        grips_arr = np.asarray(grips)[grip_order]
        cam_sorted = {t: sort_stream(ts) for t, ts in cam_stamps.items()}

        start = max(int(pose_ts[0]), int(grip_ts[0]), *(int(s[0][0]) for s in cam_sorted.values()))
        end = min(int(pose_ts[-1]), int(grip_ts[-1]), *(int(s[0][-1]) for s in cam_sorted.values()))
        ticks = tick_times(start, end, config.rate_hz)
        tol = lambda s: round(s * 1e9)  # noqa: E731
        pose_idx = latest_at_or_before(pose_ts, ticks, tol(config.state_tolerance_s))
        grip_tol = np.iinfo(np.int64).max // 4 if source == "command" else tol(config.gripper_tolerance_s)
        grip_idx = latest_at_or_before(grip_ts, ticks, grip_tol)
        cam_idx = {t: latest_at_or_before(s[0], ticks, tol(config.image_tolerance_s)) for t, s in cam_sorted.items()}

        gaps = gap_runs("pose", pose_idx < 0, ticks, start) + gap_runs("gripper", grip_idx < 0, ticks, start)
        if target_topic:
            # a target stream holds its last value (a teleop device that stops sending means "stay there"); ticks
            # before the first target are gaps
            target_ts, target_order = sort_stream(target_t)
            targets_arr = np.asarray(targets)[target_order]
            target_idx = latest_at_or_before(target_ts, ticks, np.iinfo(np.int64).max // 4)
            gaps += gap_runs("target pose", target_idx < 0, ticks, start)
        for c, t in cam_topics.items():
            gaps += gap_runs(f"camera {c}", cam_idx[t] < 0, ticks, start)
        state_ok = (pose_idx >= 0) & (grip_idx >= 0)
        if target_topic:
            state_ok &= target_idx >= 0
        images_ok = np.all(np.stack([cam_idx[t] >= 0 for t in cam_topics.values()]), axis=0) if ticks.size else state_ok
        joint_idx = None
        if joint_t:
            joint_ts, joint_order = sort_stream(joint_t)
            joints_arr = np.asarray(joints)[joint_order]
            joint_idx = latest_at_or_before(joint_ts, ticks, tol(config.state_tolerance_s))
            gaps += gap_runs("joints", joint_idx < 0, ticks, start)
            images_ok = images_ok & (joint_idx >= 0)  # a sample needs every observation it stores

        if source == "command":
            g_ticks = np.where(grip_idx >= 0, grips_arr[np.clip(grip_idx, 0, None)], 0.0)
        else:
            widths = np.where(grip_idx >= 0, grips_arr[np.clip(grip_idx, 0, None)], 0.0)
            threshold = config.gripper_open_fraction * float(np.max(grips_arr))
            g_ticks = (widths >= threshold).astype(np.float64)

        C, D = config.chunk_size, space.dim
        rows: list[tuple[int, np.ndarray, np.ndarray]] = []  # (tick, chunk [C, D], mask [C])
        step_actions = []
        dims = _angle_dims(space) if config.consistent_angle_branch else []

        def on_branch(acts: np.ndarray) -> np.ndarray:
            """Shift absolute angles onto the 2pi-branch of the episode's (or dataset's) first action."""
            nonlocal angle_center
            if dims:
                if angle_center is None:
                    angle_center = (acts[0, dims] + np.pi) % (2 * np.pi) - np.pi
                acts[:, dims] -= 2 * np.pi * np.round((acts[0, dims] - angle_center) / (2 * np.pi))
            return acts

        def pose_at(arr: np.ndarray, idx: np.ndarray, k: int) -> Pose:
            return Pose(arr[idx[k], :3], arr[idx[k], 3:])

        for s, e in segments(state_ok):
            if e - s < 2:
                continue
            g_seg = g_ticks[s:e]
            if source == "command":
                # a command acts on the NEXT state: action k (tick k -> k+1) carries the command issued at tick k
                g_seg = np.concatenate([g_seg[:1], g_seg[:-1]])
            if action_source == "command":
                # sample at tick i: measured pose_i -> target_i -> target_i+1 ... (action j carries the gripper
                # command issued with target_i+j); every real action is counted once for the statistics: each
                # sample's first action and the target-to-target steps of the segment
                tgt = [pose_at(targets_arr, target_idx, k) for k in range(s, e)]
                # g_ext[j + 1]: the gripper value an action leaving tick j carries (as g_seg), one past the segment
                g_ext = np.concatenate([g_seg, g_ticks[e - 1 : e]])
                step_actions.append(on_branch(space.encode_trajectory(tgt, g_ext[1:])))
                for k in range(e - s):
                    if not images_ok[s + k]:
                        continue
                    n_real = min(C, e - s - k)
                    chunk_poses = [pose_at(poses_arr, pose_idx, s + k), *tgt[k : k + n_real]]
                    g = g_ext[k : k + n_real + 1]
                    acts = on_branch(space.encode_trajectory(chunk_poses, g))
                    step_actions.append(acts[:1])
                    hold = _hold_action(space, acts[-1], chunk_poses[-1])
                    chunk = np.concatenate([acts, np.repeat(hold[None], C - n_real, axis=0)])
                    rows.append((s + k, chunk, np.arange(C) < n_real))
                continue
            seg_poses = [pose_at(poses_arr, pose_idx, k) for k in range(s, e)]
            acts = on_branch(space.encode_trajectory(seg_poses, g_seg))  # [L-1, D]
            step_actions.append(acts)
            hold = _hold_action(space, acts[-1], seg_poses[-1])
            padded = np.concatenate([acts, np.repeat(hold[None], C, axis=0)])
            for k in range(e - s - 1):
                if images_ok[s + k]:
                    n_real = min(C, len(acts) - k)
                    rows.append((s + k, padded[k : k + C], np.arange(C) < n_real))

        # pass 2: decode only the frames that samples use
        needed = {t: {int(cam_sorted[t][1][cam_idx[t][r[0]]]) for r in rows} for t in cam_topics.values()}
        processor = ImageProcessor(cams, config.image_size)
        frames: dict[str, dict[int, np.ndarray]] = {t: {} for t in cam_topics.values()}
        counters = dict.fromkeys(cam_topics.values(), 0)
        if rows:
            for m in reader.messages(list(cam_topics.values())):
                i = counters[m.topic]
                counters[m.topic] += 1
                if i in needed[m.topic]:
                    rgb = _image_of(store.deserialize_cdr(m.data, m.msgtype), m.msgtype)
                    frames[m.topic][i] = processor.resize(rgb, m.topic)

        n, V, S = len(rows), len(cams), config.image_size
        images = np.zeros((n, V, S, S, 3), dtype=np.uint8)
        for j, (k, _, _) in enumerate(rows):
            for v, c in enumerate(cams):
                t = cam_topics[c]
                images[j, v] = frames[t][int(cam_sorted[t][1][cam_idx[t][k]])]
        ticks_used = np.array([r[0] for r in rows], dtype=np.int64)
        ee = poses_arr[pose_idx[ticks_used]] if n else np.zeros((0, 7))
        return EpisodeSamples(
            name=reader.name,
            instruction=instruction,
            success=reader.success,
            images=images,
            actions=np.stack([r[1] for r in rows]).astype(np.float32) if n else np.zeros((0, C, D), np.float32),
            action_mask=np.stack([r[2] for r in rows]) if n else np.zeros((0, C), bool),
            frame_index=ticks_used.astype(np.int32),
            timestamp=(ticks[ticks_used] - start) / 1e9 if n else np.zeros(0),
            ee_pose=ee.astype(np.float32),
            gripper_open=g_ticks[ticks_used].astype(np.float32) if n else np.zeros(0, np.float32),
            step_actions=np.concatenate(step_actions) if step_actions else np.zeros((0, D)),
            ticks=int(ticks.size),
            gaps=gaps,
            gripper_source=source,
            action_source=action_source,
            angle_center=None if angle_center is None else np.asarray(angle_center, dtype=np.float64),
            clock_warnings=clock_warnings,
            joint_positions=(
                joints_arr[joint_idx[ticks_used]].astype(np.float32) if n else np.zeros((0, 7), np.float32)
            )
            if joint_idx is not None
            else None,
        )


# ---------------------------------------------------------------------------------------------------- writing
class _ShardWriter:
    """Buffers samples of one split and writes them as <split>-NNNNN.safetensors files of `shard_size` samples."""

    KEYS = (
        "images",
        "actions",
        "action_mask",
        "episode_index",
        "frame_index",
        "instruction_id",
        "timestamp",
        "ee_pose",
        "gripper_open",
        "joint_positions",
    )

    def __init__(self, out: Path, split: str, shard_size: int):
        self.out, self.split, self.shard_size = out, split, shard_size
        self.buf: dict[str, list[np.ndarray]] = {k: [] for k in self.KEYS}
        self.buffered = 0
        self.files: list[dict[str, Any]] = []
        self.total = 0

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["actions"])
        pos = 0
        while pos < n:
            take = min(n - pos, self.shard_size - self.buffered)
            for k in self.KEYS:
                self.buf[k].append(arrays[k][pos : pos + take])
            self.buffered += take
            pos += take
            if self.buffered == self.shard_size:
                self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        from safetensors.numpy import save_file

        name = f"{self.split}-{len(self.files):05d}.safetensors"
        tensors = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in self.buf.items()}
        save_file(tensors, str(self.out / name), metadata={"format": DATASET_FORMAT, "split": self.split})
        self.files.append({"file": name, "samples": self.buffered, "offset": self.total})
        self.total += self.buffered
        self.buf = {k: [] for k in self.KEYS}
        self.buffered = 0


def expand_episode_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Episode directories from a mix of episode directories and recording roots (which hold episodes)."""
    out: list[Path] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist (expected an episode directory or a recording root)")
        if p.parent.name == INCOMPLETE_DIR or ((p / EPISODE_JSON).exists() and not (p / "metadata.yaml").exists()):
            raise IncompleteEpisodeError(f"{p} is an unfinished episode; run `mole-vla dataset recover {p}` first")
        if (p / "metadata.yaml").exists():
            out.append(p)
            continue
        found = list_episodes(p) or sorted(d for d in p.iterdir() if (d / "metadata.yaml").exists())  # plain bags
        if not found:
            raise FileNotFoundError(
                f"{p} holds no finished episodes or rosbag2 bags (directories with metadata.yaml); pass episode "
                "directories or the recording root"
            )
        pending = (p / INCOMPLETE_DIR).is_dir() and any((p / INCOMPLETE_DIR).iterdir())
        if pending:
            log.warning(
                "%s/%s holds unfinished episodes; they are skipped (mole-vla dataset recover)", p, INCOMPLETE_DIR
            )
        out.extend(found)
    unique = sorted(set(out))
    return unique


def split_episodes(names: Sequence[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Episode name -> 'train' | 'val'. Deterministic for a seed; at least one val episode when val_fraction > 0 and
    there are two or more episodes; never every episode in val."""
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_val = round(val_fraction * len(order))
    if val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    else:
        n_val = 0
    val = set(order[:n_val])
    return {n: ("val" if n in val else "train") for n in names}


@dataclass
class BuildReport:
    out_dir: Path
    samples: dict[str, int]
    episodes: dict[str, int]
    skipped: list[tuple[str, str]]
    gaps: int

    def summary(self) -> str:
        return (
            f"wrote {self.out_dir}: train {self.samples['train']} samples / {self.episodes['train']} episodes, "
            f"val {self.samples['val']} / {self.episodes['val']}; {len(self.skipped)} episodes skipped, "
            f"{self.gaps} gaps"
        )


def build_dataset(
    episodes: Iterable[str | Path],
    out_dir: str | Path,
    config: DatasetConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Convert episodes into a training dataset directory (see the module docstring). Returns what was written."""
    from mole_vla_ros.model.normalization import ActionNormalizer

    config = config or DatasetConfig()
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output directory {out} is not empty; choose another --out or pass --overwrite")
        for f in out.iterdir():
            if f.is_file() and (f.name == META_JSON or f.suffix == ".safetensors"):
                f.unlink()
    out.mkdir(parents=True, exist_ok=True)

    paths = expand_episode_paths(episodes)
    chosen, skipped = [], []
    for p in paths:
        meta = json.loads((p / EPISODE_JSON).read_text(encoding="utf-8")) if (p / EPISODE_JSON).exists() else {}
        success = meta.get("success")
        if success is False and not config.include_failures:
            skipped.append((p.name, "labelled failure (pass --include-failures to keep)"))
        elif success is None and not config.include_unlabelled:
            skipped.append((p.name, "unlabelled (drop --exclude-unlabelled to keep)"))
        else:
            chosen.append((p, meta))
    if not chosen:
        raise ValueError(f"no episodes to convert out of {len(paths)}: {skipped}")
    names = [p.name for p, _ in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"episode names must be unique across inputs, got duplicates in {names}")

    cameras = list(config.cameras) or sorted({**(chosen[0][1].get("cameras") or {}), **config.camera_topics})
    if not cameras:
        raise ValueError(
            f"episode {chosen[0][0]} lists no cameras; name them with --camera-topic NAME=TOPIC (plain bags) or "
            "record camera topics with 'camera: <name>' in the recorder config"
        )
    split_of = split_episodes(names, config.val_fraction, config.seed)
    writers = {s: _ShardWriter(out, s, config.shard_size) for s in SPLITS}
    instructions: list[str] = []
    episode_records, train_actions = [], []
    total_gaps = 0
    robot_types = set()

    iterator = chosen
    if progress:
        from tqdm import tqdm

        iterator = tqdm(chosen, desc="episodes", unit="ep")
    angle_center = None
    for index, (path, meta) in enumerate(iterator):
        samples = episode_samples(path, config, cameras, angle_center)
        angle_center = samples.angle_center if angle_center is None else angle_center
        robot_types.add(meta.get("robot_type", "fr3"))
        if samples.instruction not in instructions:
            instructions.append(samples.instruction)
        iid = instructions.index(samples.instruction)
        split = split_of[path.name]
        writers[split].add(
            {
                "images": samples.images,
                "actions": samples.actions,
                "action_mask": samples.action_mask.astype(np.uint8),
                "episode_index": np.full(samples.n, index, np.int32),
                "frame_index": samples.frame_index,
                "instruction_id": np.full(samples.n, iid, np.int32),
                "timestamp": samples.timestamp.astype(np.float64),
                "ee_pose": samples.ee_pose,
                "gripper_open": samples.gripper_open,
                # zeros where an episode recorded no arm joints (meta.json episodes[].joint_positions says which)
                "joint_positions": samples.joint_positions
                if samples.joint_positions is not None
                else np.zeros((samples.n, 7), np.float32),
            }
        )
        if split == "train":
            train_actions.append(samples.step_actions)
        total_gaps += len(samples.gaps)
        for g in samples.gaps:
            log.info(
                "episode %s: gap in %s from %.3f s to %.3f s (%d samples)",
                path.name,
                g.stream,
                g.start_s,
                g.end_s,
                g.ticks,
            )
        episode_records.append(
            {
                "index": index,
                "name": path.name,
                "path": os.path.abspath(path),
                "split": split,
                "instruction_id": iid,
                "success": samples.success,
                "samples": samples.n,
                "ticks": samples.ticks,
                "gripper_source": samples.gripper_source,
                "action_source": samples.action_source,
                "joint_positions": samples.joint_positions is not None,
                "gaps": [g.as_dict() for g in samples.gaps],
                "clock_warnings": samples.clock_warnings,
                "source": meta.get("source", "real"),
            }
        )
    for w in writers.values():
        w.flush()

    acts = np.concatenate(train_actions) if train_actions else np.zeros((0, get_action_space(config.action_space).dim))
    if acts.shape[0] == 0:
        raise ValueError(
            "the training split has no actions: every episode was too short or had gaps everywhere; lower --rate, "
            "raise the tolerances, or check the recordings with `mole-vla dataset info`"
        )
    normalizer = ActionNormalizer.from_data(acts)
    space = get_action_space(config.action_space)
    meta_out = {
        "format": DATASET_FORMAT,
        "format_version": DATASET_FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "builder_version": __version__,
        "action_space": space.name,
        "action_dim": space.dim,
        "chunk_size": config.chunk_size,
        "rate_hz": config.rate_hz,
        "control_dt": 1.0 / config.rate_hz,
        "image_size": config.image_size,
        "cameras": cameras,
        "robot_type": sorted(robot_types)[0] if len(robot_types) == 1 else sorted(robot_types),
        "instructions": instructions,
        "normalization": normalizer.to_dict(),
        "action_stats": {
            "mean": acts.mean(0).tolist(),
            "std": acts.std(0).tolist(),
            "min": acts.min(0).tolist(),
            "max": acts.max(0).tolist(),
            "count": int(acts.shape[0]),
        },
        "padding": "hold",
        "has_joint_positions": all(e["joint_positions"] for e in episode_records),
        "angle_branch_center": None if angle_center is None else angle_center.tolist(),
        "splits": {
            s: {
                "samples": writers[s].total,
                "episodes": sum(1 for e in episode_records if e["split"] == s),
                "files": writers[s].files,
            }
            for s in SPLITS
        },
        "episodes": episode_records,
        "skipped": [{"name": n, "reason": r} for n, r in skipped],
        "config": {**asdict(config), "cameras": cameras},
    }
    (out / META_JSON).write_text(json.dumps(meta_out, indent=2) + "\n", encoding="utf-8")
    report = BuildReport(
        out,
        {s: writers[s].total for s in SPLITS},
        {s: meta_out["splits"][s]["episodes"] for s in SPLITS},
        skipped,
        total_gaps,
    )
    log.info(report.summary())
    return report


# ---------------------------------------------------------------------------------------------------- reading
class TrainingDataset:
    """A built dataset split as a map-style dataset (works with torch.utils.data.DataLoader's default collate).

    item = {"images": uint8 [V,S,S,3], "actions": float32 [C,D] (q01/q99-normalized when normalize_actions, gripper
    raw), "action_mask": bool [C], "instruction": str, "instruction_id", "episode_index", "frame_index": int,
    "state": float32 [8] (EE pose x y z qx qy qz qw, gripper_open), "joint_positions": float32 [7]}
    Attributes: meta (meta.json), normalizer (ActionNormalizer), cameras, instructions, chunk_size, action_dim,
    action_space, image_size.
    """

    def __init__(self, root: str | Path, split: str = "train", normalize_actions: bool = True):
        from mole_vla_ros.model.normalization import ActionNormalizer

        self.root = Path(root)
        meta_path = self.root / META_JSON
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{self.root} is not a built dataset (no {META_JSON}); run `mole-vla dataset build`"
            )
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != DATASET_FORMAT:
            raise ValueError(f"{meta_path} is not a {DATASET_FORMAT} file (format={self.meta.get('format')!r})")
        if split not in self.meta["splits"]:
            raise ValueError(f"split must be one of {sorted(self.meta['splits'])}, got {split!r}")
        self.split = split
        self.files = self.meta["splits"][split]["files"]
        self.offsets = np.array([f["offset"] for f in self.files] + [self.meta["splits"][split]["samples"]])
        self.normalizer = ActionNormalizer.from_dict(self.meta["normalization"])
        self.normalize_actions = normalize_actions
        self.cameras = list(self.meta["cameras"])
        self.instructions = list(self.meta["instructions"])
        self.chunk_size = int(self.meta["chunk_size"])
        self.action_dim = int(self.meta["action_dim"])
        self.action_space = self.meta["action_space"]
        self.image_size = int(self.meta["image_size"])
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _handle(self, shard: int):
        if os.getpid() != self._pid:  # DataLoader workers: open files anew in each process
            self._handles, self._pid = {}, os.getpid()
        h = self._handles.get(shard)
        if h is None:
            from safetensors import safe_open

            h = safe_open(str(self.root / self.files[shard]["file"]), framework="numpy")
            self._handles[shard] = h
        return h

    def _locate(self, index: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.split} split of {n} samples")
        index %= n
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return shard, index - int(self.offsets[shard])

    def raw(self, key: str, index: int) -> np.ndarray:
        """One stored array row (`key` in images, actions, action_mask, ..., ee_pose, gripper_open)."""
        shard, row = self._locate(index)
        return self._handle(shard).get_slice(key)[row : row + 1][0]

    def iter_column(self, key: str):
        """A stored column shard by shard (bounded memory for images): yields numpy arrays in sample order."""
        for i in range(len(self.files)):
            yield self._handle(i).get_tensor(key)

    def column(self, key: str) -> np.ndarray:
        """A whole stored column of this split (e.g. 'episode_index'); images can be large."""
        if not self.files:
            return np.zeros(0)
        return np.concatenate([self._handle(i).get_tensor(key) for i in range(len(self.files))])

    def __getitem__(self, index: int) -> dict[str, Any]:
        shard, row = self._locate(int(index))
        h = self._handle(shard)
        get = lambda k: h.get_slice(k)[row : row + 1][0]  # noqa: E731
        actions = get("actions").astype(np.float64)
        if self.normalize_actions:
            actions = self.normalizer.normalize(actions)
        iid = int(get("instruction_id"))
        return {
            "images": get("images"),
            "actions": actions.astype(np.float32),
            "action_mask": get("action_mask").astype(bool),
            "instruction": self.instructions[iid],
            "instruction_id": iid,
            "episode_index": int(get("episode_index")),
            "frame_index": int(get("frame_index")),
            # proprioception (MoLe-VLA does not use it; other policies may): EE pose x y z qx qy qz qw + gripper_open
            "state": np.concatenate([get("ee_pose"), [get("gripper_open")]]).astype(np.float32),
            # arm joint positions [7] (zeros for episodes recorded without them: meta["has_joint_positions"])
            "joint_positions": get("joint_positions"),
        }


def dataset_summary(root: str | Path) -> str:
    """A few lines describing a built dataset (for `mole-vla dataset info`)."""
    meta = json.loads((Path(root) / META_JSON).read_text(encoding="utf-8"))
    lines = [
        f"dataset {root}: action space {meta['action_space']} (dim {meta['action_dim']}), chunk {meta['chunk_size']}, "
        f"{meta['rate_hz']} Hz, images {meta['image_size']}px, cameras {meta['cameras']}",
        *(f"  {s}: {v['samples']} samples from {v['episodes']} episodes" for s, v in meta["splits"].items()),
        f"  instructions: {meta['instructions']}",
        f"  q01: {[round(x, 4) for x in meta['normalization']['q01']]}",
        f"  q99: {[round(x, 4) for x in meta['normalization']['q99']]}",
    ]
    gaps = sum(len(e["gaps"]) for e in meta["episodes"])
    if gaps:
        lines.append(f"  gaps: {gaps} (see meta.json episodes[].gaps)")
    if meta.get("skipped"):
        lines.append(f"  skipped: {meta['skipped']}")
    return "\n".join(lines)
