"""A picture of one recording: when each topic's messages were stamped, where they stopped, how fast they came.

    mole-vla dataset plot ~/mole_vla_episodes/episode_20261125_101500_000001 --out timeline.png

Top panel: one row per topic, a tick per message (header stamp, or receive time for header-less types), red spans
where the gap between two messages exceeded `gap_factor` periods of the topic's expected rate. Bottom panel: each
topic's rate over 0.5 s bins divided by its expected rate (1.0 = nominal). `episode_timeline` returns the same facts
as numbers for scripts and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mole_vla_ros.data.episode import EpisodeReader
from mole_vla_ros.data.recorder_core import has_header, header_stamp_ns


@dataclass
class TopicTimeline:
    topic: str
    msgtype: str
    stamps_s: np.ndarray  # seconds from the episode's first message
    expected_hz: float | None
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start_s, end_s)

    @property
    def rate_hz(self) -> float | None:
        span = self.stamps_s[-1] - self.stamps_s[0] if self.stamps_s.size > 1 else 0.0
        return (self.stamps_s.size - 1) / span if span > 0 else None


def episode_timeline(path: str | Path, gap_factor: float = 1.5) -> list[TopicTimeline]:
    """Per-topic stamps (s from the first message) and gaps longer than gap_factor expected periods."""
    with EpisodeReader(path) as reader:
        expected = {t: (info or {}).get("expected_hz") for t, info in (reader.metadata.get("topics") or {}).items()}
        raw: dict[str, list[int]] = {t: [] for t in reader.topics}
        for m in reader.messages():
            t = header_stamp_ns(m.data) if has_header(m.msgtype) else None
            raw[m.topic].append(t if t else m.log_time_ns)
        topics = dict(reader.topics)
    present = [v for v in raw.values() if v]
    if not present:
        raise ValueError(f"episode {path} holds no messages")
    origin = min(min(v) for v in present)
    out = []
    for topic, ts in sorted(raw.items()):
        s = (np.sort(np.asarray(ts, dtype=np.int64)) - origin) / 1e9
        tl = TopicTimeline(topic, topics[topic], s, expected.get(topic))
        if tl.expected_hz and s.size > 1:
            d = np.diff(s)
            for i in np.nonzero(d > gap_factor / tl.expected_hz)[0]:
                tl.gaps.append((float(s[i]), float(s[i + 1])))
        out.append(tl)
    return out


def plot_episode_timeline(path: str | Path, out_png: str | Path, gap_factor: float = 1.5) -> list[TopicTimeline]:
    """Draw the timeline of `path` into `out_png`; returns the timelines drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timelines = episode_timeline(path, gap_factor)
    fig, (ax, ax_rate) = plt.subplots(
        2, 1, figsize=(12, 1.2 + 0.45 * len(timelines) + 2.5), sharex=True, height_ratios=[len(timelines) + 1, 4]
    )
    for row, tl in enumerate(timelines):
        s = tl.stamps_s
        shown = s if s.size <= 4000 else s[np.linspace(0, s.size - 1, 4000).astype(int)]  # 1 kHz topics
        ax.plot(shown, np.full(shown.size, row), "|", markersize=8, color="tab:blue")
        for a, b in tl.gaps:
            ax.axvspan(a, b, ymin=(row + 0.1) / len(timelines), ymax=(row + 0.9) / len(timelines), color="red")
        if tl.expected_hz and s.size > 1:
            bins = np.arange(0.0, s[-1], 0.5)  # full bins only: a partial last bin would fake a rate drop
            if bins.size > 1:
                counts, _ = np.histogram(s, bins)
                ax_rate.plot(bins[:-1] + 0.25, counts / 0.5 / tl.expected_hz, label=tl.topic)
    ax.set_yticks(range(len(timelines)))
    ax.set_yticklabels([f"{t.topic} ({t.rate_hz or 0:.1f} Hz)" for t in timelines], fontsize=8)
    ax.set_title(f"{Path(path).name}: message stamps (red: gaps > {gap_factor:g} expected periods)")
    ax_rate.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    ax_rate.set_ylabel("rate / expected")
    ax_rate.set_xlabel("time since first message (s)")
    if ax_rate.lines[1:]:
        ax_rate.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return timelines
