"""`mole-vla sim record`: scripted episodes written through the recorder's own core, read back like real ones."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("franky_sim") is None:
    pytest.skip("simulator extra not installed (make venv installs mujoco and franky-sim)", allow_module_level=True)

from mole_vla_ros.cli import main as cli_main
from mole_vla_ros.data.episode import EpisodeReader, list_episodes
from mole_vla_ros.robot.franka import Topics, describe
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.sim.config import SimConfig
from mole_vla_ros.sim.record import record_episodes

FR3 = describe("fr3")
SIZE = 64


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim_episodes")
    results = record_episodes(out, "pick", 2, seed=8, sim_config=SimConfig(image_size=SIZE), progress=False)
    return out, results


def test_episodes_read_back_with_the_episode_reader(recorded):
    out, results = recorded
    paths = list_episodes(out)
    assert [p.name for p in paths] == ["sim_pick_seed000008", "sim_pick_seed000009"]
    for path, result in zip(paths, results):
        with EpisodeReader(path) as ep:
            assert ep.status == "complete"
            assert ep.success is result.success is True
            assert ep.instruction == result.instruction
            assert ep.metadata["source"] == "sim"
            assert ep.metadata["extra"]["sim"]["seed"] == result.seed
            assert ep.metadata["cameras"]["wrist"]["topic"] == "/camera/wrist/image_raw"
            expected = {
                "/" + t
                for t in (
                    Topics.JOINT_STATES,
                    Topics.CURRENT_POSE,
                    Topics.GRIPPER_JOINT_STATES,
                    Topics.TELEOP_TARGET_POSE,
                    Topics.TELEOP_GRIPPER,
                    Topics.INSTRUCTION,
                    Topics.camera_image("scene"),
                    Topics.camera_image("wrist"),
                    Topics.camera_info("scene"),
                    Topics.camera_info("wrist"),
                )
            } | {"/tf_static"}
            assert set(ep.topics) == expected
            frames = ep.message_counts["/camera/scene/image_raw"]
            assert frames == result.steps + 1  # one observation per control step plus the final one
            assert ep.message_counts["/teleop/target_pose"] == result.steps
            (instruction,) = [m.msg.data for m in ep.decoded(["/mole_vla/instruction"])]
            assert instruction == result.instruction


def test_recorded_messages_follow_the_robots_conventions(recorded):
    out, _ = recorded
    with EpisodeReader(list_episodes(out)[0]) as ep:
        stamps = []
        for m in ep.decoded(["/camera/wrist/image_raw"]):
            frame = conv.image_to_frame(m.msg, "wrist")
            assert frame.image.shape == (SIZE, SIZE, 3) and m.msg.encoding == "rgb8"
            assert m.log_time_ns == round(frame.stamp * 1e9)  # sim time is both the stamp and the receive time
            stamps.append(frame.stamp)
        np.testing.assert_allclose(np.diff(stamps), 0.1, atol=1e-6)  # 10 Hz control
        widths = [
            conv.joint_state_to_gripper(m.msg, FR3.finger_joint_names).width
            for m in ep.decoded(["/franka_gripper/joint_states"])
        ]
        assert max(widths) > 0.075 and min(widths) < 0.045  # opened, then closed on the 4 cm cube
        poses = [
            conv.pose_stamped_to_sample(m.msg) for m in ep.decoded(["/franka_robot_state_broadcaster/current_pose"])
        ]
        assert {p.frame_id for p in poses} == {"fr3_link0"}
        targets = [conv.pose_stamped_to_sample(m.msg) for m in ep.decoded(["/teleop/target_pose"])]
        # the commanded poses are tracked: by the end of the episode the TCP is near the last command
        assert np.linalg.norm(targets[-1].pose.position - poses[-1].pose.position) < 0.02
        gripper_cmd = [m.msg.data for m in ep.decoded(["/teleop/gripper"])]
        assert gripper_cmd[0] == 1.0 and gripper_cmd[-1] == 0.0


def test_bag_is_readable_by_the_independent_mcap_reader(recorded):
    pytest.importorskip("mcap_ros2")
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out, _ = recorded
    path = list_episodes(out)[0]
    (mcap_file,) = path.glob("*.mcap")
    with open(mcap_file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        names = set()
        for _schema, _channel, _message, decoded in reader.iter_decoded_messages(topics=["/joint_states"]):
            names.update(decoded.name)
    assert names == set(FR3.arm_joint_names + FR3.finger_joint_names)


def test_cli_record_writes_labelled_episodes(tmp_path, capsys):
    rc = cli_main(
        [
            "sim",
            "record",
            "--task",
            "stack",
            "--episodes",
            "1",
            "--seed",
            "1",
            "--out",
            str(tmp_path),
            "--image-size",
            "48",
            "--cameras",
            "wrist",
        ]
    )
    assert rc == 0
    (path,) = list_episodes(tmp_path)
    meta = json.loads((path / "episode.json").read_text())
    assert meta["success"] is True and meta["instruction"].startswith("put the ")
    assert set(meta["cameras"]) == {"wrist"}
    assert "1 successful" in capsys.readouterr().out


def test_recorded_episodes_pass_the_dataset_builder(recorded, tmp_path):
    """Sim episodes become training samples with no gaps, and each sample's action chunk decoded at its EE pose
    gives the expert's commanded targets (the default: the recorded /teleop/target_pose), or with
    action_source="state" replays the measured motion (the same paths real demonstrations take)."""
    from dataclasses import replace

    from mole_vla_ros.data.dataset import DatasetConfig, TrainingDataset, build_dataset
    from mole_vla_ros.interfaces import Pose
    from mole_vla_ros.runtime.action_space import get_action_space

    out, results = recorded
    config = DatasetConfig(rate_hz=10.0, image_size=32, cameras=("scene", "wrist"), chunk_size=4, val_fraction=0.0)
    report = build_dataset([out], tmp_path / "ds", config, progress=False)
    assert report.gaps == 0 and not report.skipped
    ds = TrainingDataset(tmp_path / "ds", "train", normalize_actions=False)
    # one sample per 10 Hz tick where every stream (teleop gripper included) has data: all but the edges
    assert len(ds) == report.samples["train"] >= sum(r.steps - 1 for r in results)
    assert set(ds.instructions) == {r.instruction for r in results}
    item = ds[5]
    assert item["images"].shape == (2, 32, 32, 3)
    space = get_action_space(ds.action_space)
    pose = ds.raw("ee_pose", 5)
    poses, gripper = space.decode_chunk(Pose(pose[:3], pose[3:]), item["actions"])
    assert set(np.unique(gripper)) <= {0.0, 1.0}
    # sample 5 is tick 5 of the first episode: its chunk ends at the target commanded at tick 5 + 3
    with EpisodeReader(list_episodes(out)[0]) as ep:
        targets = [conv.pose_stamped_to_sample(m.msg).pose for m in ep.decoded(["/teleop/target_pose"])]
    tick = int(ds.raw("frame_index", 5))
    np.testing.assert_allclose(poses[-1].position, targets[tick + len(poses) - 1].position, atol=1e-5)

    state = build_dataset([out], tmp_path / "ds_state", replace(config, action_source="state"), progress=False)
    assert state.gaps == 0
    ds = TrainingDataset(tmp_path / "ds_state", "train", normalize_actions=False)
    pose = ds.raw("ee_pose", 5)
    poses, _ = space.decode_chunk(Pose(pose[:3], pose[3:]), ds[5]["actions"])
    later = ds.raw("ee_pose", 5 + len(poses))
    assert np.linalg.norm(poses[-1].position - later[:3]) < 1e-3


def test_recording_the_same_seed_twice_is_refused_with_the_fix(recorded):
    out, _ = recorded
    with pytest.raises(FileExistsError, match="another --out"):
        record_episodes(out, "pick", 1, seed=8, sim_config=SimConfig(render=False), progress=False)


def test_cli_show_renders_both_cameras(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "cams.png"
    assert cli_main(["sim", "show", "--task", "stack", "--image-size", "40", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (80, 40)
    assert "put the" in capsys.readouterr().out


def test_same_seed_records_byte_identical_bags(tmp_path):
    bags = []
    for name in ("a", "b"):
        record_episodes(tmp_path / name, "pick", 1, seed=5, sim_config=SimConfig(image_size=32), progress=False)
        (bag,) = (tmp_path / name).glob("*/*.mcap")
        bags.append(bag.read_bytes())
    assert bags[0] == bags[1]


def test_a_busy_machine_records_the_same_bytes(tmp_path, monkeypatch):
    """The writer flushes (ends an MCAP chunk) on a timer: on a loaded CPU a wall-clock timer fires at other messages,
    so the same seed gave other bytes under a busy test run. Simulated time drives it: a wall clock that jumps 5 s
    at every reading changes nothing."""
    bags = []
    ticks = iter(range(0, 10**9, 5))
    for name in ("calm", "busy"):
        if name == "busy":
            monkeypatch.setattr(time, "monotonic", lambda: float(next(ticks)))
        record_episodes(tmp_path / name, "pick", 1, seed=5, sim_config=SimConfig(image_size=32), progress=False)
        (bag,) = (tmp_path / name).glob("*/*.mcap")
        bags.append(bag.read_bytes())
    assert bags[0] == bags[1]
