"""Marker colour and fade rules (plain functions; the MarkerArray built from them is tested in test_ros_outputs)."""

from __future__ import annotations

import itertools

import pytest

from mole_vla_ros.ros import markers
from mole_vla_ros.ros.markers import MarkerStyle


def test_alpha_fades_linearly_to_the_floor():
    style = MarkerStyle(fade_seconds=2.0, min_alpha=0.2)
    assert markers.age_alpha(0.0, style) == 1.0
    assert markers.age_alpha(-1.0, style) == 1.0  # a chunk stamped in the future (clock skew) is new, not brighter
    assert markers.age_alpha(1.0, style) == pytest.approx(0.6)
    assert markers.age_alpha(2.0, style) == pytest.approx(0.2)
    assert markers.age_alpha(50.0, style) == pytest.approx(0.2)
    ages = [0.1 * i for i in range(30)]
    alphas = [markers.age_alpha(a, style) for a in ages]
    assert all(a >= b for a, b in itertools.pairwise(alphas))


def test_gripper_colour_by_state_with_alpha():
    style = MarkerStyle(open_threshold=0.5)
    assert markers.gripper_color(1.0, 1.0, style) == markers.OPEN_COLOR
    assert markers.gripper_color(0.0, 1.0, style) == markers.CLOSED_COLOR
    assert markers.gripper_color(0.5, 1.0, style) == markers.OPEN_COLOR  # threshold itself counts as open
    r, g, b, a = markers.gripper_color(0.2, 0.25, style)
    assert (r, g, b) == markers.CLOSED_COLOR[:3] and a == pytest.approx(0.25)
    assert markers.line_color(0.5)[3] == pytest.approx(0.5)


def test_chunk_slots_cycle_through_history():
    style = MarkerStyle(history=3)
    assert [markers.chunk_slot(i, style) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_steps_not_executed_are_smaller():
    style = MarkerStyle(skipped_scale=0.4)
    assert markers.step_scale(True, style) == 1.0
    assert markers.step_scale(False, style) == 0.4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"history": 0}, "history must be >= 1"),
        ({"fade_seconds": 0.0}, "fade_seconds must be > 0"),
        ({"min_alpha": 1.5}, r"min_alpha must be in \[0, 1\]"),
        ({"sphere_diameter": 0.0}, "sizes must be > 0"),
        ({"skipped_scale": 0.0}, r"skipped_scale must be in \(0, 1\]"),
    ],
)
def test_style_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MarkerStyle(**kwargs)
