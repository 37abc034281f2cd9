"""Colour and fade rules for the RViz view of predicted chunks, as plain functions (no ROS, tested directly).

A predicted chunk is drawn as a line strip through the predicted end-effector positions plus one sphere per step.
Sphere colour says what the gripper will do at that step (open = green, closed = red); older chunks stay on screen
for a while and fade out, so the operator sees how consecutive predictions agree. Colours are (r, g, b, a) in [0, 1]
as std_msgs/ColorRGBA wants them.
"""

from __future__ import annotations

from dataclasses import dataclass

Color = tuple[float, float, float, float]

OPEN_COLOR: Color = (0.10, 0.80, 0.25, 1.0)
CLOSED_COLOR: Color = (0.90, 0.15, 0.10, 1.0)
LINE_COLOR: Color = (0.15, 0.45, 0.95, 1.0)


@dataclass(frozen=True)
class MarkerStyle:
    """How predicted chunks look in RViz (the `markers.*` node parameters)."""

    # chunks kept on screen: the newest plus older ones, fading
    history: int = 5
    # seconds over which an older chunk fades from opaque to min_alpha
    fade_seconds: float = 2.0
    # opacity floor so the oldest visible chunk stays faintly visible
    min_alpha: float = 0.1
    # m, per-step spheres
    sphere_diameter: float = 0.012
    # m, the line strip through the chunk
    line_width: float = 0.004
    # gripper value >= this is drawn open (green), below closed (red); the action space uses 1 = open
    open_threshold: float = 0.5
    # size and opacity factor of steps the scheduler will not execute (already past, or beyond the execute horizon)
    skipped_scale: float = 0.5

    def __post_init__(self):
        if self.history < 1:
            raise ValueError(f"marker history must be >= 1 chunk, got {self.history}")
        if not self.fade_seconds > 0:
            raise ValueError(f"marker fade_seconds must be > 0 s, got {self.fade_seconds}")
        if not 0.0 <= self.min_alpha <= 1.0:
            raise ValueError(f"marker min_alpha must be in [0, 1], got {self.min_alpha}")
        if not 0.0 < self.skipped_scale <= 1.0:
            raise ValueError(f"marker skipped_scale must be in (0, 1], got {self.skipped_scale}")
        if not (self.sphere_diameter > 0 and self.line_width > 0):
            raise ValueError(
                f"marker sizes must be > 0 m, got sphere_diameter={self.sphere_diameter} line_width={self.line_width}"
            )


def age_alpha(age_s: float, style: MarkerStyle) -> float:
    """Opacity of a chunk predicted `age_s` seconds ago: 1 when new, linearly down to `min_alpha` at fade_seconds."""
    if age_s <= 0.0:
        return 1.0
    frac = min(age_s / style.fade_seconds, 1.0)
    return 1.0 - frac * (1.0 - style.min_alpha)


def gripper_color(gripper_value: float, alpha: float, style: MarkerStyle) -> Color:
    """Sphere colour for one step: green when the gripper is (to be) open, red when closed; `alpha` applied."""
    base = OPEN_COLOR if gripper_value >= style.open_threshold else CLOSED_COLOR
    return (base[0], base[1], base[2], base[3] * alpha)


def line_color(alpha: float) -> Color:
    return (LINE_COLOR[0], LINE_COLOR[1], LINE_COLOR[2], LINE_COLOR[3] * alpha)


def marker_lifetime(style: MarkerStyle) -> float:
    """Seconds RViz keeps a marker if no newer message replaces it (so a stopped node's markers disappear)."""
    return style.fade_seconds


def chunk_slot(chunk_index: int, style: MarkerStyle) -> int:
    """Which of the `history` marker-id slots a chunk uses; the oldest slot is overwritten by the newest chunk."""
    return chunk_index % style.history


def step_scale(executed: bool, style: MarkerStyle) -> float:
    """Size and opacity factor of one step's sphere: 1 for steps that will run, `skipped_scale` for the others."""
    return 1.0 if executed else style.skipped_scale
