"""Offline replay end to end on generated bags: topics and counts, an independent reader, determinism, bag flavours.

The bags are made here with rosbags (mole_vla_ros.replay.synthetic); the policy is an untrained tiny MoLe-VLA
checkpoint (random weights: what is checked is the pipeline, not the predictions).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mole_vla_ros.replay.cli import execute  # noqa: E402
from mole_vla_ros.replay.engine import ReplayOptions, run_replay  # noqa: E402
from mole_vla_ros.replay.synthetic import write_synthetic_bag  # noqa: E402
from mole_vla_ros.replay.untrained import build_untrained_checkpoint  # noqa: E402

DURATION = 2.0


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return write_synthetic_bag(tmp_path_factory.mktemp("bags") / "synthetic", duration_s=DURATION)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, bag) -> Path:
    return build_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", ("scene", "wrist"), bag_path=bag)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, bag, checkpoint):
    out = tmp_path_factory.mktemp("replay")
    opts = ReplayOptions(bag=bag, out=out, checkpoint=str(checkpoint), seed=3, progress=False)
    report = execute(opts, label="test", plots=True, echo=False)
    return out, report


def _read_mcap(bag_dir: Path):
    """(topic, schema name, log_time, raw bytes, decoded) for every message, with the mcap package alone."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (path,) = sorted(bag_dir.glob("*.mcap"))
    out = []
    with path.open("rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            out.append((channel.topic, schema.name, message.log_time, bytes(message.data), decoded))
    return out


def _input_messages(bag_dir: Path):
    from mole_vla_ros.replay.bag import InputBag

    with InputBag(bag_dir) as b:
        return [(c.topic, t, bytes(raw)) for c, t, raw in b.messages()]


def test_replay_writes_every_node_output_with_expected_counts(replayed, bag):
    out, report = replayed
    counts = report["counts"]["output_messages"]
    steps = report["speed"]["control_steps"]
    # control timer at 100 Hz over the bag plus the tail (latency + one control period) after the last message
    assert steps == math.floor((DURATION + 0.1 + 0.1) * 100 + 1e-6)
    assert counts["/mole_vla_policy/target_pose_preview"] == steps
    # enabled after the first tick (warm-up done, EE pose present): one command per later tick
    assert counts["/replay/cartesian_impedance_controller/target_pose"] == steps - 1
    chunks = report["counts"]["chunks"]
    assert chunks >= 2
    for topic in ("predicted_trajectory", "predicted_path", "active_layers", "layer_probs"):
        assert counts[f"/mole_vla_policy/{topic}"] == chunks
    assert counts["/diagnostics"] == math.floor(DURATION + 0.2)  # 1 Hz diagnostics timer
    assert counts["/mole_vla_policy/markers"] >= 10 * DURATION - 10 * 0.1 - 2  # 10 Hz once the first chunk exists
    grip = report["counts"]["gripper_commands"]
    goals = counts.get("/replay/franka_gripper/move/goal", 0) + counts.get("/replay/franka_gripper/grasp/goal", 0)
    assert goals == len(grip)
    # every input message is copied
    inputs = Counter(t for t, _, _ in _input_messages(bag))
    for topic, n in inputs.items():
        assert counts[topic] == n
    assert report["bag"]["metadata_version"] == 8 and report["bag"]["storage"] == "mcap"
    assert report["replay"]["instruction"] == "pick up the red cube"
    # the report, its markdown and the plots exist and are not empty
    for name in ("report.json", "report.md", "plots/path.png", "plots/errors.png", "plots/layers.png"):
        assert (out / name).stat().st_size > 500, name
    # errors are scored against the recorded EE pose (synthetic motion, untrained model: finite, not small)
    e = report["errors"]["translation_m"]["executed"]
    assert e["n"] > 0 and 0.0 < e["mean"] < 1.0
    assert report["layers"]["mean_active"] == 4


def test_output_bag_reads_back_with_the_independent_mcap_reader(replayed, bag):
    out, report = replayed
    messages = _read_mcap(out / "bag")
    by_topic = Counter(m[0] for m in messages)
    assert dict(by_topic) == report["counts"]["output_messages"]
    # input bytes are copied unchanged, in order
    original = _input_messages(bag)
    copied = [(t, lt, raw) for t, _, lt, raw, _ in messages if t in {o[0] for o in original}]
    assert copied == original
    path = next(d for t, s, _, _, d in messages if t == "/mole_vla_policy/predicted_path")
    assert len(path.poses) == 16 and path.header.frame_id == "fr3_link0"
    schemas = {t: s for t, s, *_ in messages}
    assert schemas["/mole_vla_policy/markers"] == "visualization_msgs/msg/MarkerArray"
    markers = next(d for t, s, _, _, d in messages if t == "/mole_vla_policy/markers")
    assert markers.markers and all(m.header.frame_id == "fr3_link0" for m in markers.markers)
    line_strip = [m for m in markers.markers if m.type == 4]  # visualization_msgs/Marker.LINE_STRIP
    assert line_strip and len(line_strip[0].points) == 16  # the first chunk's 16 predicted positions
    layers = [d for t, s, _, _, d in messages if t == "/mole_vla_policy/active_layers"]
    assert all(len(m.data) == 4 and list(m.data) == sorted(m.data) for m in layers)
    # the router's softmax over the 8 layers reaches the bag (not a 0/1 placeholder)
    probs = [d for t, s, _, _, d in messages if t == "/mole_vla_policy/layer_probs"]
    assert all(len(m.data) == 8 and abs(sum(m.data) - 1.0) < 1e-4 and 0 < min(m.data) for m in probs)
    cmd = next(d for t, s, _, _, d in messages if t == "/replay/cartesian_impedance_controller/target_pose")
    q = cmd.pose.orientation
    assert abs(q.x**2 + q.y**2 + q.z**2 + q.w**2 - 1.0) < 1e-6
    diag = next(d for t, s, _, _, d in messages if t == "/diagnostics")
    keys = {kv.key for kv in diag.status[0].values}
    assert {"state", "dry_run", "active_layers"} <= keys
    # the output bag is version 8 (Humble, Iron and Jazzy play it)
    assert "version: 8" in (out / "bag" / "metadata.yaml").read_text()


def _non_diagnostic_messages(bag_dir: Path):
    # /diagnostics carries measured wall-clock latencies, which legitimately differ between runs
    return [(t, lt, raw) for t, _, lt, raw, _ in _read_mcap(bag_dir) if t != "/diagnostics"]


def test_same_seed_gives_identical_results_and_another_seed_does_not(tmp_path, bag, checkpoint, replayed):
    out1, report1 = replayed
    opts = ReplayOptions(bag=bag, out=tmp_path / "again", checkpoint=str(checkpoint), seed=3, progress=False)
    report2 = execute(opts, plots=False, echo=False)
    assert report2["per_chunk"] == report1["per_chunk"]
    assert report2["errors"] == report1["errors"]
    assert _non_diagnostic_messages(tmp_path / "again" / "bag") == _non_diagnostic_messages(out1 / "bag")

    # the seed really reaches the model: another seed predicts other chunks
    seed3 = run_replay(ReplayOptions(bag=bag, out=tmp_path / "a", checkpoint=str(checkpoint), seed=3, progress=False))
    seed4 = run_replay(ReplayOptions(bag=bag, out=tmp_path / "b", checkpoint=str(checkpoint), seed=4, progress=False))
    assert seed3.chunks and seed4.chunks
    assert any(not np.allclose(a.positions, b.positions) for a, b in zip(seed3.chunks, seed4.chunks))


@pytest.mark.parametrize(
    ("storage", "metadata"),
    [("sqlite3", "humble"), ("sqlite3", "jazzy"), ("mcap", "humble"), ("mcap", "jazzy9")],
)
def test_sqlite3_and_humble_bags_replay(tmp_path, checkpoint, storage, metadata):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=1.0, storage=storage, metadata=metadata)
    result = run_replay(
        ReplayOptions(bag=bag, out=tmp_path / "o", checkpoint=str(checkpoint), progress=False, write_bag=False)
    )
    assert result.bag_info["storage"] == storage
    assert result.bag_info["metadata_version"] == {"humble": 5, "jazzy": 8, "jazzy9": 9}[metadata]
    assert result.chunks and result.control_steps > 90


def test_compressed_cameras_namespace_and_params_file(tmp_path, checkpoint):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=1.0, encoding="jpeg", namespace="fr3_left")
    params = tmp_path / "params.yaml"
    params.write_text(
        "mole_vla_policy:\n  ros__parameters:\n"
        "    topics: {cameras: [camera/scene/image_raw, camera/wrist/image_raw], camera_transport: compressed}\n"
        "    observation: {camera_names: [scene, wrist], camera_rate_hz: 10.0}\n"
    )
    result = run_replay(
        ReplayOptions(
            bag=bag, out=tmp_path / "o", checkpoint=str(checkpoint), params=params, namespace="fr3_left", progress=False
        )
    )
    assert result.plan.cameras == {
        "scene": "/fr3_left/camera/scene/image_raw/compressed",
        "wrist": "/fr3_left/camera/wrist/image_raw/compressed",
    }
    assert result.chunks
    assert result.output_counts["/fr3_left/mole_vla_policy/predicted_path"] == len(result.chunks)
    assert "/replay/fr3_left/cartesian_impedance_controller/target_pose" in result.output_counts
    # without --namespace the namespace is found from the bag and reported
    found = run_replay(
        ReplayOptions(bag=bag, out=tmp_path / "o2", checkpoint=str(checkpoint), params=params, progress=False)
    )
    assert found.plan.ee_pose == "/fr3_left/franka_robot_state_broadcaster/current_pose"
    assert found.plan.namespace == "fr3_left"
    assert any("'fr3_left' taken from the bag" in a for a in found.adaptations)


def test_dry_run_writes_previews_but_no_commands(tmp_path, bag, checkpoint):
    result = run_replay(
        ReplayOptions(bag=bag, out=tmp_path / "o", checkpoint=str(checkpoint), dry_run=True, progress=False)
    )
    assert result.output_counts["/mole_vla_policy/target_pose_preview"] == result.control_steps
    assert not any(t.startswith("/replay/") for t in result.output_counts)
    assert result.gripper_commands == []


def test_instruction_override_and_active_layers(tmp_path, bag, checkpoint):
    result = run_replay(
        ReplayOptions(
            bag=bag,
            out=tmp_path / "o",
            checkpoint=str(checkpoint),
            instruction="stack the cubes",
            active_layers=2,
            progress=False,
            write_bag=False,
        )
    )
    assert result.instruction == "stack the cubes" and result.instruction_source == "--instruction"
    assert all(len(c.layer_indices) == 2 for c in result.chunks)


def test_cli_replay_and_demo_print_the_report(tmp_path, bag, checkpoint, capsys):
    from mole_vla_ros.cli import main
    from mole_vla_ros.replay.cli import demo
    from mole_vla_ros.replay.untrained import UNTRAINED_LABEL

    out = tmp_path / "cli"
    argv = ["replay", str(bag), "--checkpoint", str(checkpoint), "--out", str(out), "--seed", "1", "--no-progress"]
    assert main([*argv, "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "control steps" in text and "prediction error vs recorded motion" in text
    assert UNTRAINED_LABEL in text  # the checkpoint says it is untrained, so the report says it too
    assert (out / "report.json").is_file() and (out / "bag" / "metadata.yaml").is_file()

    # make demo without a trained default model: an untrained tiny model, labelled as such, and the outputs it names
    assert demo(tmp_path, tmp_path / "models" / "default", bag, out=tmp_path / "demo") == 0
    text = capsys.readouterr().out
    assert "no trained default model yet" in text and UNTRAINED_LABEL in text
    for name in (
        "report.json",
        "report.md",
        "plots/path.png",
        "bag/metadata.yaml",
        "untrained_tiny_model/MODEL_CARD.md",
    ):
        assert (tmp_path / "demo" / name).is_file(), name


def test_humble_sqlite3_bag_with_an_undefined_message_type(tmp_path, checkpoint):
    # Humble sqlite3 bags store no message definitions: a topic of a type nobody defines cannot be copied into a
    # playable bag. Replay skips it, says so, and replays everything else.
    bag = write_synthetic_bag(tmp_path / "b", duration_s=1.0, storage="sqlite3", metadata="humble", custom_topic=True)
    result = run_replay(ReplayOptions(bag=bag, out=tmp_path / "o", checkpoint=str(checkpoint), progress=False))
    assert result.chunks
    assert "/acme/status" not in result.output_counts
    assert any("/acme/status not copied" in a for a in result.adaptations)
    # the same type in an MCAP bag comes with its definition (the schema) and is copied unchanged
    mcap = write_synthetic_bag(tmp_path / "m", duration_s=1.0, custom_topic=True)
    copied = run_replay(ReplayOptions(bag=mcap, out=tmp_path / "o2", checkpoint=str(checkpoint), progress=False))
    assert copied.output_counts["/acme/status"] == copied.bag_info["topics"]["/acme/status"]["count"] == 11
    statuses = [d for t, _, _, _, d in _read_mcap(tmp_path / "o2" / "bag") if t == "/acme/status"]
    assert statuses[-1].note == "synthetic"


def test_a_slice_of_the_bag(tmp_path, bag, checkpoint, capsys):
    from mole_vla_ros.cli import main
    from mole_vla_ros.replay.errors import ReplayError

    result = run_replay(
        ReplayOptions(
            bag=bag, out=tmp_path / "o", checkpoint=str(checkpoint), start_s=0.5, duration_s=1.0, progress=False
        )
    )
    assert result.bag_info["replayed_s"] == pytest.approx(1.0)
    assert result.control_steps == math.floor((1.0 + 0.1 + 0.1) * 100 + 1e-6)
    # inputs inside [0.5 s, 1.5 s] only: 10 Hz cameras -> 11 frames each
    assert result.output_counts["/camera/scene/image_raw"] == 11
    assert result.chunks and min(c.obs_stamp for c in result.chunks) >= result.start_s - 1e-9
    assert result.instruction == "pick up the red cube"  # the latched instruction from before the slice
    with pytest.raises(ReplayError, match="past the end"):
        run_replay(ReplayOptions(bag=bag, out=tmp_path / "p", checkpoint=str(checkpoint), start_s=99.0))
    assert main(["replay", str(bag), "--duration", "-1", "--out", str(tmp_path / "q")]) == 2
    assert "--duration must be" in capsys.readouterr().out


def test_joint_trajectory_output_mode(tmp_path, checkpoint):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=1.0)
    params = tmp_path / "params.yaml"
    params.write_text(
        "mole_vla_policy:\n  ros__parameters:\n    output_mode: joint_trajectory\n"
        "    topics: {cameras: [camera/scene/image_raw, camera/wrist/image_raw]}\n"
        "    observation: {camera_names: [scene, wrist], camera_rate_hz: 10.0}\n"
    )
    out = tmp_path / "o"
    result = run_replay(ReplayOptions(bag=bag, out=out, checkpoint=str(checkpoint), params=params, progress=False))
    topic = "/replay/fr3_arm_controller/joint_trajectory"
    assert result.output_counts[topic] > 10
    assert "/replay/cartesian_impedance_controller/target_pose" not in result.output_counts
    trajectories = [d for t, _, _, _, d in _read_mcap(out / "bag") if t == topic]
    points = trajectories[-1].points
    assert trajectories[-1].joint_names == [f"fr3_joint{i}" for i in range(1, 8)]
    assert points and all(len(p.positions) == 7 and len(p.velocities) == 7 for p in points)


def test_a_reflex_in_the_bag_disables_the_runtime_as_on_the_robot(tmp_path, checkpoint):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=1.5, robot_state=True, reflex_at_s=0.8)
    result = run_replay(ReplayOptions(bag=bag, out=tmp_path / "o", checkpoint=str(checkpoint), progress=False))
    assert result.plan.robot_state == "/franka_robot_state_broadcaster/robot_state"
    diag = result.diagnostics
    assert not diag.enabled and diag.robot_mode == "REFLEX" and "REFLEX" in diag.disable_reason
    # commands stop at the reflex (the next robot-state sample at most 1/robot_state_rate_hz later)
    commands = [
        m for t, _, _, _, m in _read_mcap(tmp_path / "o" / "bag") if t.endswith("impedance_controller/target_pose")
    ]
    last = commands[-1].header.stamp
    assert last.sec + last.nanosec * 1e-9 - result.start_s <= 0.8 + 1 / 50 + 1e-6
    # without the reflex the same bag keeps commanding to the end
    calm = write_synthetic_bag(tmp_path / "c", duration_s=1.5, robot_state=True)
    ok = run_replay(ReplayOptions(bag=calm, out=tmp_path / "p", checkpoint=str(checkpoint), progress=False))
    assert ok.diagnostics.enabled and ok.diagnostics.robot_mode == "MOVE"


def test_camera_on_another_clock_is_named(tmp_path, checkpoint, capsys):
    from mole_vla_ros.replay.cli import execute

    bag = write_synthetic_bag(tmp_path / "b", duration_s=1.0, camera_clock_offset_s=-3600.0)
    opts = ReplayOptions(bag=bag, out=tmp_path / "o", checkpoint=str(checkpoint), progress=False)
    report = execute(opts, plots=False, echo=True)
    assert report["counts"]["chunks"] == 0  # every frame looks an hour old: the node would never predict
    text = capsys.readouterr().out
    assert "/camera/scene/image_raw: header stamps are -3600.000 s from the bag's log time" in text
    assert "not scored (no chunk was predicted; the runtime ended in state holding)" in text  # watchdog hold


def test_cli_compares_several_k(tmp_path, bag, checkpoint, capsys):
    import json

    from mole_vla_ros.cli import main

    out = tmp_path / "cmp"
    argv = ["replay", str(bag), "--checkpoint", str(checkpoint), "--out", str(out), "--no-plots", "--no-progress"]
    assert main([*argv, "--active-layers", "2", "8", "--duration", "1.0"]) == 0
    rows = json.loads((out / "compare.json").read_text())
    assert [r["k"] for r in rows] == [2, 8]
    assert [r["mean_active_layers"] for r in rows] == [2, 8]
    assert (out / "k2" / "report.json").is_file() and (out / "k8" / "bag" / "metadata.yaml").is_file()
    assert "transl. mm" in capsys.readouterr().out


def test_enable_waits_for_the_robot_mode_when_required(tmp_path, checkpoint):
    params = tmp_path / "params.yaml"
    params.write_text(
        "mole_vla_policy:\n  ros__parameters:\n    safety: {require_robot_mode: true}\n"
        "    topics: {cameras: [camera/scene/image_raw, camera/wrist/image_raw]}\n"
        "    observation: {camera_names: [scene, wrist], camera_rate_hz: 10.0}\n"
    )
    blind = write_synthetic_bag(tmp_path / "b", duration_s=1.0)  # no FrankaRobotState in the bag
    result = run_replay(
        ReplayOptions(bag=blind, out=tmp_path / "o", checkpoint=str(checkpoint), params=params, progress=False)
    )
    assert result.enabled_at is None
    assert not any(t.startswith("/replay/") and result.output_counts[t] for t in result.output_counts)
    refusals = [a for a in result.adaptations if a.startswith("enable refused")]
    assert refusals and len(refusals) <= 3  # retried once per second of bag time, reported briefly
    seen = write_synthetic_bag(tmp_path / "c", duration_s=1.0, robot_state=True)
    ok = run_replay(
        ReplayOptions(bag=seen, out=tmp_path / "p", checkpoint=str(checkpoint), params=params, progress=False)
    )
    assert ok.enabled_at is not None and ok.output_counts["/replay/cartesian_impedance_controller/target_pose"] > 50
