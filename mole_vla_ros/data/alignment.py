"""Time alignment of multi-rate streams: for each sample time, the newest message at or before it, within tolerance.

Never looks into the future (a sample at time t only uses data stamped <= t, as a live policy would see it) and never
invents data: a stream with nothing recent enough leaves the sample out, and the gap is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def tick_times(start_ns: int, end_ns: int, rate_hz: float) -> np.ndarray:
    """Sample times start, start + 1/rate, ... <= end (int64 ns). Empty when end < start."""
    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz!r}")
    if end_ns < start_ns:
        return np.zeros(0, dtype=np.int64)
    period = 1e9 / rate_hz
    # the tolerance keeps a tick that lands on `end` despite float error; the filter drops one it pushed 1 ns past it
    n = int(np.floor((end_ns - start_ns) / period + 1e-9)) + 1
    ticks = start_ns + np.round(np.arange(n) * period).astype(np.int64)
    return ticks[ticks <= end_ns]


def latest_at_or_before(stamps_ns: np.ndarray, ticks_ns: np.ndarray, tolerance_ns: int) -> np.ndarray:
    """Index of the newest stamp <= each tick whose age is <= tolerance, else -1. `stamps_ns` must be sorted."""
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    ticks = np.asarray(ticks_ns, dtype=np.int64)
    if stamps.size and np.any(np.diff(stamps) < 0):
        raise ValueError("stamps must be sorted ascending; sort the stream by its stamps first")
    idx = np.searchsorted(stamps, ticks, side="right") - 1
    ok = idx >= 0
    age = np.where(ok, ticks - stamps[np.clip(idx, 0, None)] if stamps.size else 0, np.iinfo(np.int64).max)
    return np.where(ok & (age <= tolerance_ns), idx, -1)


@dataclass(frozen=True)
class Gap:
    """A run of sample times [start_s, end_s] (seconds from the episode start) where `stream` had no fresh data."""

    stream: str
    start_s: float
    end_s: float
    ticks: int

    def as_dict(self) -> dict:
        return {
            "stream": self.stream,
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "ticks": self.ticks,
        }


def gap_runs(stream: str, missing: np.ndarray, ticks_ns: np.ndarray, origin_ns: int) -> list[Gap]:
    """Contiguous runs of True in `missing`, as Gap records."""
    return [
        Gap(stream, (ticks_ns[i] - origin_ns) / 1e9, (ticks_ns[j - 1] - origin_ns) / 1e9, j - i)
        for i, j in segments(missing)
    ]


def segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive True values."""
    v = np.asarray(valid, dtype=bool)
    out, i = [], 0
    while i < v.size:
        if not v[i]:
            i += 1
            continue
        j = i
        while j < v.size and v[j]:
            j += 1
        out.append((i, j))
        i = j
    return out
