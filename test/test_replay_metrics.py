"""The replay's scoring: predictions that match the recording score zero, known offsets score exactly that offset."""

from __future__ import annotations

import numpy as np
import pytest

from mole_vla_ros.replay.metrics import (
    RecordedMotion,
    layer_usage,
    rotation_angle,
    score_chunks,
    summarize_errors,
)
from mole_vla_ros.runtime.commands import ChunkPrediction


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)])


def _motion(n: int = 50, dt: float = 0.05) -> RecordedMotion:
    m = RecordedMotion()
    for i in range(n):
        t = i * dt
        m.add_ee(t, np.array([0.4 + 0.1 * t, 0.0, 0.3]), _yaw_quat(0.2 * t))
    return m


def _chunk(t0: float, stamps: np.ndarray, positions, quats, gripper, executed=None, layers=(0, 2)) -> ChunkPrediction:
    return ChunkPrediction(
        obs_stamp=t0,
        stamps=stamps,
        positions=np.asarray(positions, dtype=float),
        quaternions=np.asarray(quats, dtype=float),
        gripper=np.asarray(gripper, dtype=float),
        executed=np.ones(len(stamps), bool) if executed is None else np.asarray(executed, bool),
        frame_id="fr3_link0",
        layer_indices=tuple(layers),
        num_layers=4,
        latency_s=0.1,
    )


def test_interpolation_between_samples_is_exact_for_linear_motion():
    m = _motion()
    t = np.array([0.125, 1.01, 2.3])
    pos, quat, valid = m.pose_at(t)
    assert valid.all()
    np.testing.assert_allclose(pos[:, 0], 0.4 + 0.1 * t, atol=1e-12)
    np.testing.assert_allclose(rotation_angle(quat, np.stack([_yaw_quat(0.2 * x) for x in t])), 0.0, atol=1e-4)
    _, _, valid = m.pose_at(np.array([-0.1, 100.0]))
    assert not valid.any()  # outside the recorded span: not scored


def test_perfect_prediction_scores_zero_and_offsets_score_their_size():
    m = _motion()
    stamps = np.arange(1, 5) * 0.1 + 0.5
    pos, quat, _ = m.pose_at(stamps)
    perfect = _chunk(0.5, stamps, pos, quat, [1, 1, 1, 1])
    shifted = _chunk(0.5, stamps, pos + np.array([0.0, 0.01, 0.0]), quat, [1, 1, 1, 1])
    turned = _chunk(0.5, stamps, pos, [_quat_mul(_yaw_quat(np.radians(10)), q) for q in quat], [1, 1, 1, 1])
    s_perfect, s_shifted, s_turned = score_chunks([perfect, shifted, turned], m)
    np.testing.assert_allclose(s_perfect.translation_m, 0.0, atol=1e-12)
    np.testing.assert_allclose(s_perfect.rotation_rad, 0.0, atol=1e-6)
    np.testing.assert_allclose(s_shifted.translation_m, 0.01, atol=1e-12)
    np.testing.assert_allclose(s_turned.rotation_rad, np.radians(10), atol=1e-6)


def _quat_mul(a, b):
    x1, y1, z1, w1 = a
    x2, y2, z2, w2 = b
    return np.array(
        [
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        ]
    )


def test_gripper_reference_is_the_last_demonstrator_command():
    m = _motion()
    m.add_gripper_command(0.0, 1.0)
    m.add_gripper_command(1.0, 0.0)  # closes at t = 1.0
    stamps = np.array([0.9, 1.0, 1.1, 1.2])
    c = _chunk(0.8, stamps, m.pose_at(stamps)[0], m.pose_at(stamps)[1], [1.0, 1.0, 0.0, 0.2])
    (s,) = score_chunks([c], m)
    np.testing.assert_array_equal(s.gripper_correct, [1.0, 0.0, 1.0, 1.0])
    assert m.gripper_source == "teleop/gripper command"


def test_gripper_reference_from_widths_when_no_command_was_recorded():
    m = _motion()
    for i, w in enumerate([0.08, 0.08, 0.02, 0.02]):
        m.add_width(i * 0.5, w)
    opened, valid = m.gripper_open_at(np.array([0.2, 1.2]))
    assert valid.all() and opened.tolist() == [True, False]


def test_summary_separates_first_executed_and_whole_chunk():
    m = _motion()
    stamps = np.arange(1, 5) * 0.1 + 0.5
    pos, quat, _ = m.pose_at(stamps)
    pos = pos + np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.002], [0.0, 0.0, 0.004], [0.0, 0.0, 0.1]])
    c = _chunk(0.5, stamps, pos, quat, [1, 1, 1, 1], executed=[True, True, True, False])
    summary = summarize_errors(score_chunks([c], m))
    t = summary["translation_m"]
    assert t["first"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert t["executed"]["mean"] == pytest.approx(0.002, abs=1e-12)
    assert t["chunk"]["mean"] == pytest.approx(0.0265, abs=1e-12)
    assert t["per_action"] == pytest.approx([0.0, 0.002, 0.004, 0.1], abs=1e-12)


def test_layer_usage_counts_each_layer_and_k():
    stamps = np.array([0.1])
    chunks = [
        _chunk(0.0, stamps, [[0.4, 0, 0.3]], [[0, 0, 0, 1.0]], [1], layers=(0, 2)),
        _chunk(0.1, stamps, [[0.4, 0, 0.3]], [[0, 0, 0, 1.0]], [1], layers=(1, 2, 3)),
    ]
    usage = layer_usage(chunks)
    assert usage["histogram"] == [1, 1, 2, 1]
    assert usage["layers_per_step"] == {"2": 1, "3": 1}
    assert usage["distinct_choices"] == 2 and usage["mean_active"] == 2.5
