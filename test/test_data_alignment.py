"""Alignment properties on random multi-rate streams: never a future message, never a stale one, always the newest."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mole_vla_ros.data.alignment import gap_runs, latest_at_or_before, segments, tick_times

stamps_st = st.lists(st.integers(0, 10_000), min_size=0, max_size=60).map(lambda v: np.array(sorted(v), np.int64))


@settings(max_examples=200, deadline=None)
@given(stamps=stamps_st, ticks=st.lists(st.integers(-100, 10_100), max_size=40), tol=st.integers(0, 2_000))
def test_latest_at_or_before_is_the_newest_fresh_message(stamps, ticks, tol):
    ticks = np.array(ticks, np.int64)
    idx = latest_at_or_before(stamps, ticks, tol)
    for t, i in zip(ticks, idx):
        candidates = np.nonzero((stamps <= t) & (stamps >= t - tol))[0]
        if candidates.size == 0:
            assert i == -1
        else:
            assert stamps[i] == stamps[candidates].max()  # newest (ties: any equal stamp)
            assert stamps[i] <= t and t - stamps[i] <= tol


@settings(max_examples=100, deadline=None)
@given(start=st.integers(0, 10**12), span=st.integers(0, 10**10), rate=st.floats(0.5, 1000))
@example(start=0, span=4_999_999_999, rate=1.0)  # found by hypothesis: the last tick fell 1 ns past the end
def test_ticks_are_evenly_spaced_inside_the_span(start, span, rate):
    t = tick_times(start, start + span, rate)
    assert t[0] == start and t[-1] <= start + span
    assert t[-1] + 1e9 / rate > start + span - 1  # no room for one more tick
    if t.size > 1:
        assert np.all(np.abs(np.diff(t) - 1e9 / rate) <= 1)


@given(mask=st.lists(st.booleans(), max_size=50))
def test_gap_runs_and_segments_partition_the_ticks(mask):
    m = np.array(mask, bool)
    ticks = np.arange(m.size, dtype=np.int64) * 100
    gaps = gap_runs("cam", m, ticks, 0)
    assert sum(g.ticks for g in gaps) == int(m.sum())
    rebuilt = np.zeros(m.size, bool)
    for g in gaps:  # each gap is one maximal run: its ticks all missing, the ticks just outside it present
        first, last = round(g.start_s * 1e7), round(g.end_s * 1e7)
        assert last - first + 1 == g.ticks and g.stream == "cam"
        assert (
            m[first : last + 1].all() and (first == 0 or not m[first - 1]) and (last == m.size - 1 or not m[last + 1])
        )
        rebuilt[first : last + 1] = True
    np.testing.assert_array_equal(rebuilt, m)
    segs = segments(~m)
    assert sum(e - s for s, e in segs) == int((~m).sum())
    assert all(not m[s:e].any() for s, e in segs)
