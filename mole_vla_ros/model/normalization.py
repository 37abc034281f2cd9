"""BOUNDS_Q99 action normalization (spec 1.5): dims in `mask` map [q01, q99] -> [-1, 1] (clipped); others stay raw.

    normalize:    a' = clip(2 (a - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)     where mask
    unnormalize:  a  = 0.5 (a' + 1) (q99 - q01) + q01                        where mask (as CogACT)
The default mask normalizes every dim except the last one (the gripper, already in {0, 1}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

EPS = 1e-8


@dataclass
class ActionNormalizer:
    """q01/q99 bounds per action dim plus the mask of normalized dims. Works on numpy arrays [..., A]."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    def __post_init__(self):
        self.q01 = np.asarray(self.q01, dtype=np.float64).reshape(-1)
        self.q99 = np.asarray(self.q99, dtype=np.float64).reshape(-1)
        self.mask = np.asarray(self.mask, dtype=bool).reshape(-1)
        if not (self.q01.shape == self.q99.shape == self.mask.shape) or self.q01.size == 0:
            raise ValueError(
                f"q01, q99 and mask must have the same non-zero length (the action dim), got "
                f"{self.q01.size}, {self.q99.size}, {self.mask.size}."
            )
        if not (np.all(np.isfinite(self.q01)) and np.all(np.isfinite(self.q99))):
            raise ValueError(
                f"normalization bounds must be finite, got q01={self.q01.tolist()} q99={self.q99.tolist()}."
            )
        bad = np.nonzero(self.mask & (self.q99 < self.q01))[0]
        if bad.size:
            raise ValueError(f"q99 < q01 on dim(s) {bad.tolist()}: q01={self.q01.tolist()} q99={self.q99.tolist()}.")

    @property
    def action_dim(self) -> int:
        return int(self.q01.size)

    @classmethod
    def default_mask(cls, action_dim: int) -> np.ndarray:
        """All dims but the last (gripper) are normalized."""
        return np.array([True] * (action_dim - 1) + [False])

    @classmethod
    def from_data(cls, actions, mask=None) -> ActionNormalizer:
        """Bounds from data: actions [N, A] (or [..., A]); the 1st / 99th percentiles per dim."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim < 2 or a.shape[0] == 0:
            raise ValueError(f"need actions of shape [N, action_dim] with N >= 1, got {a.shape}.")
        a = a.reshape(-1, a.shape[-1])
        if not np.all(np.isfinite(a)):
            raise ValueError("actions contain NaN or inf; clean the data before computing statistics.")
        m = cls.default_mask(a.shape[1]) if mask is None else mask
        return cls(np.quantile(a, 0.01, axis=0), np.quantile(a, 0.99, axis=0), m)

    @classmethod
    def identity(cls, action_dim: int) -> ActionNormalizer:
        """Bounds [-1, 1] on the normalized dims: normalize/unnormalize leave values in [-1, 1] unchanged."""
        return cls(-np.ones(action_dim), np.ones(action_dim), cls.default_mask(action_dim))

    def _check(self, a: np.ndarray) -> None:
        if a.shape[-1] != self.action_dim:
            raise ValueError(f"actions have {a.shape[-1]} dims in the last axis, the normalizer {self.action_dim}.")

    def normalize(self, actions) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)
        self._check(a)
        n = np.clip(2.0 * (a - self.q01) / (self.q99 - self.q01 + EPS) - 1.0, -1.0, 1.0)
        return np.where(self.mask, n, a)

    def fraction_clipped(self, actions) -> float:
        """Share of the normalized dims' values in `actions` [..., D] that fall outside [q01, q99] (and so are
        clipped by `normalize`): ~2 % on the data the bounds came from, more on data that moves elsewhere. Dims
        whose bounds are one value (a constant, e.g. roll = pi when the TCP points down) are left out."""
        a = np.asarray(actions, dtype=np.float64)
        self._check(a)
        dims = self.mask & (self.q99 - self.q01 > 1e-6)
        outside = ((a < self.q01) | (a > self.q99))[..., dims]
        return float(outside.mean()) if outside.size else 0.0

    def unnormalize(self, actions) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)
        self._check(a)
        u = 0.5 * (a + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.mask, u, a)

    def to_dict(self) -> dict:
        return {"kind": "bounds_q99", "q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ActionNormalizer:
        if d.get("kind", "bounds_q99") != "bounds_q99":
            raise ValueError(f"unsupported normalization kind {d.get('kind')!r}; expected 'bounds_q99'.")
        missing = [k for k in ("q01", "q99", "mask") if k not in d]
        if missing:
            raise ValueError(f"normalization stats lack {missing}; expected keys q01, q99, mask.")
        return cls(d["q01"], d["q99"], d["mask"])

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def load(cls, path: str) -> ActionNormalizer:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
