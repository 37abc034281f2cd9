"""Scoring a replay: predicted chunks against the motion the bag recorded, layer usage, latency statistics.

Prediction error (per accepted chunk, per action k of the chunk): the predicted EE pose due at
`obs_stamp + k * control_dt` is compared with the recorded EE pose at that time (position interpolated linearly,
orientation by normalized linear interpolation of the neighbouring quaternions, sign-aligned). Actions due outside
the recorded span are not scored. Translation error is the Euclidean distance (m); rotation error the geodesic
angle 2*acos(|<q_pred, q_rec>|) (rad). The gripper is scored as open/closed agreement: the prediction is open when
its value >= 0.5 (1 = open in every action space here); the reference is what the demonstrator commanded on
`teleop/gripper` when the bag has it (a step function: the last command at or before t), else the measured width
(open when above the middle of the widths seen in the bag).

Three aggregates per quantity: `first` (the first action of each chunk, the one-step error), `executed` (the actions
the runtime kept: inside the execute horizon and not already in the past), `chunk` (all actions of the chunk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mole_vla_ros.runtime.commands import ChunkPrediction


@dataclass
class RecordedMotion:
    """What the bag says happened: EE poses (header stamps), demonstrator gripper commands, gripper widths."""

    ee_stamps: list[float] = field(default_factory=list)
    ee_positions: list[np.ndarray] = field(default_factory=list)
    ee_quaternions: list[np.ndarray] = field(default_factory=list)
    gripper_cmd_stamps: list[float] = field(default_factory=list)
    gripper_cmd_values: list[float] = field(default_factory=list)
    width_stamps: list[float] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)

    def add_ee(self, stamp: float, position: np.ndarray, quaternion: np.ndarray) -> None:
        if self.ee_stamps and stamp <= self.ee_stamps[-1]:
            return  # out of order or duplicate: the runtime refuses those too
        self.ee_stamps.append(float(stamp))
        self.ee_positions.append(np.asarray(position, dtype=np.float64))
        self.ee_quaternions.append(np.asarray(quaternion, dtype=np.float64))

    def add_gripper_command(self, stamp: float, value: float) -> None:
        self.gripper_cmd_stamps.append(float(stamp))
        self.gripper_cmd_values.append(float(value))

    def add_width(self, stamp: float, width: float) -> None:
        self.width_stamps.append(float(stamp))
        self.widths.append(float(width))

    @property
    def has_motion(self) -> bool:
        return len(self.ee_stamps) >= 2

    @property
    def gripper_source(self) -> str:
        if self.gripper_cmd_stamps:
            return "teleop/gripper command"
        if self.widths:
            return "measured gripper width"
        return "none"

    def pose_at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions [M,3], quaternions [M,4], valid [M]) of the recorded EE at times `t`."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        if not self.has_motion:
            return np.full((t.size, 3), np.nan), np.full((t.size, 4), np.nan), np.zeros(t.size, bool)
        s = np.asarray(self.ee_stamps)
        p = np.asarray(self.ee_positions)
        q = np.asarray(self.ee_quaternions)
        valid = (t >= s[0]) & (t <= s[-1])
        i = np.clip(np.searchsorted(s, t, side="right") - 1, 0, len(s) - 2)
        w = np.clip((t - s[i]) / np.maximum(s[i + 1] - s[i], 1e-12), 0.0, 1.0)[:, None]
        pos = p[i] * (1 - w) + p[i + 1] * w
        q0, q1 = q[i], q[i + 1]
        q1 = np.where(np.sum(q0 * q1, axis=1, keepdims=True) < 0, -q1, q1)
        quat = q0 * (1 - w) + q1 * w
        quat /= np.linalg.norm(quat, axis=1, keepdims=True)
        return pos, quat, valid

    def gripper_open_at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(open [M] bool, valid [M] bool) of the reference gripper state at times `t`."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        if self.gripper_cmd_stamps:
            s, v = np.asarray(self.gripper_cmd_stamps), np.asarray(self.gripper_cmd_values)
            threshold = 0.5
        elif self.widths:
            s, v = np.asarray(self.width_stamps), np.asarray(self.widths)
            threshold = 0.5 * (v.min() + v.max()) if v.max() - v.min() > 0.005 else 0.04
        else:
            return np.zeros(t.size, bool), np.zeros(t.size, bool)
        order = np.argsort(s, kind="stable")
        s, v = s[order], v[order]
        i = np.searchsorted(s, t, side="right") - 1
        valid = (i >= 0) & (t <= s[-1] + 1.0)
        return v[np.clip(i, 0, None)] >= threshold, valid


def rotation_angle(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Geodesic angle (rad) between unit quaternions [..., 4] (x, y, z, w)."""
    dot = np.abs(np.sum(np.asarray(qa) * np.asarray(qb), axis=-1))
    return 2.0 * np.arccos(np.clip(dot, 0.0, 1.0))


@dataclass
class ChunkScore:
    """Errors of one chunk, one entry per action (NaN where the recorded motion does not cover it)."""

    obs_stamp: float
    stamps: np.ndarray
    translation_m: np.ndarray
    rotation_rad: np.ndarray
    gripper_correct: np.ndarray  # 1.0 / 0.0, NaN when unscored
    executed: np.ndarray


def score_chunks(chunks: Sequence[ChunkPrediction], motion: RecordedMotion) -> list[ChunkScore]:
    """Per-action errors of every chunk against the recorded motion (see the module docstring)."""
    scores = []
    for c in chunks:
        pos, quat, valid = motion.pose_at(c.stamps)
        trans = np.where(valid, np.linalg.norm(np.asarray(c.positions) - pos, axis=1), np.nan)
        rot = np.where(valid, rotation_angle(np.asarray(c.quaternions), quat), np.nan)
        ref_open, gvalid = motion.gripper_open_at(c.stamps)
        pred_open = np.asarray(c.gripper, dtype=np.float64) >= 0.5
        grip = np.where(gvalid, (pred_open == ref_open).astype(np.float64), np.nan)
        scores.append(ChunkScore(c.obs_stamp, np.asarray(c.stamps), trans, rot, grip, np.asarray(c.executed, bool)))
    return scores


def _stats(values: np.ndarray) -> dict[str, float | int]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p95": float(np.percentile(v, 95)),
        "max": float(v.max()),
    }


def summarize_errors(scores: Sequence[ChunkScore]) -> dict:
    """{quantity: {first|executed|chunk: stats}} plus the mean error per action index (`per_action`)."""
    if not scores:
        return {}
    out: dict = {}
    for name in ("translation_m", "rotation_rad", "gripper_correct"):
        first = np.array([getattr(s, name)[0] for s in scores])
        executed = np.concatenate([getattr(s, name)[s.executed] for s in scores])
        every = np.concatenate([getattr(s, name) for s in scores])
        key = "gripper_accuracy" if name == "gripper_correct" else name
        out[key] = {"first": _stats(first), "executed": _stats(executed), "chunk": _stats(every)}
        horizon = max(len(s.stamps) for s in scores)
        per_action = []
        for k in range(horizon):
            col = np.array([getattr(s, name)[k] for s in scores if len(s.stamps) > k])
            col = col[np.isfinite(col)]
            per_action.append(float(col.mean()) if col.size else None)
        out[key]["per_action"] = per_action
    return out


def layer_usage(chunks: Sequence[ChunkPrediction]) -> dict:
    """How often each LLM layer ran over the replay, and the distribution of k (layers per step)."""
    if not chunks:
        return {}
    n = max(int(c.num_layers) for c in chunks)
    hist = np.zeros(n, dtype=np.int64)
    ks: dict[int, int] = {}
    for c in chunks:
        for i in c.layer_indices:
            hist[int(i)] += 1
        k = len(c.layer_indices)
        ks[k] = ks.get(k, 0) + 1
    distinct = len({tuple(c.layer_indices) for c in chunks})
    probs = [np.asarray(c.layer_probs, dtype=np.float64) for c in chunks if getattr(c, "layer_probs", None) is not None]
    mean_probs = np.mean([p for p in probs if p.shape == (n,)], axis=0).round(4).tolist() if probs else None
    return {
        "mean_router_prob": mean_probs,
        "num_layers": n,
        "histogram": hist.tolist(),
        "share": (hist / len(chunks)).round(4).tolist(),
        "layers_per_step": {str(k): v for k, v in sorted(ks.items())},
        "mean_active": float(np.mean([len(c.layer_indices) for c in chunks])),
        "distinct_choices": distinct,
    }


def latency_stats(samples: dict[str, list[float]]) -> dict[str, dict]:
    """{stage: {n, mean, median, p95, max}} in milliseconds."""
    return {stage: _stats(np.asarray(v)) for stage, v in samples.items() if v}
