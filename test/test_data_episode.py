"""Episodes: bytes written come back unchanged, other readers agree, a killed recorder leaves a recoverable episode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mole_vla_ros.data.episode import (
    INCOMPLETE_DIR,
    EpisodeMetadata,
    EpisodeReader,
    EpisodeWriter,
    IncompleteEpisodeError,
    InsufficientDiskSpace,
    QosSpec,
    TopicSpec,
    incomplete_episodes,
    list_episodes,
    recover_episode,
)
from mole_vla_ros.data.mcap_salvage import salvage_mcap
from mole_vla_ros.data.typestore import EXTRA_TYPES, default_message, get_typestore

JS = "sensor_msgs/msg/JointState"
IMG = "sensor_msgs/msg/Image"
TOPICS = [
    TopicSpec("/joint_states", JS, expected_hz=100.0),
    TopicSpec("camera/wrist/image_raw", IMG, QosSpec.sensor_data(), expected_hz=30.0),
    TopicSpec("/franka_robot_state_broadcaster/robot_state", "franka_msgs/msg/FrankaRobotState"),
]


def _joint(i: int) -> bytes:
    ts = get_typestore()
    msg = default_message(JS, name=[f"fr3_joint{k}" for k in range(1, 8)], position=np.arange(7) * 0.1 + i)
    return bytes(ts.serialize_cdr(msg, JS))


def _image(i: int, h: int = 6, w: int = 8) -> bytes:
    ts = get_typestore()
    data = (np.arange(h * w * 3) + i).astype(np.uint8)
    msg = default_message(IMG, height=h, width=w, encoding="rgb8", step=w * 3, data=data)
    return bytes(ts.serialize_cdr(msg, IMG))


def _record(root, name="ep", n=50, threaded=False, success=True):
    sent = []
    w = EpisodeWriter(
        root, name, TOPICS, EpisodeMetadata("put the cube in the bowl"), min_free_disk_gb=0, threaded=threaded
    )
    for i in range(n):
        t = 1_700_000_000_000_000_000 + i * 10_000_000
        sent.append(("/joint_states", t, _joint(i)))
        w.write("/joint_states", sent[-1][2], t)
        if i % 3 == 0:
            sent.append(("/camera/wrist/image_raw", t + 1, _image(i)))
            w.write("camera/wrist/image_raw", sent[-1][2], t + 1)
    state = default_message("franka_msgs/msg/FrankaRobotState", robot_mode=2, control_command_success_rate=0.97)
    w.write_message("/franka_robot_state_broadcaster/robot_state", state, 1_700_000_000_000_000_000 + n * 10_000_000)
    return w.finish(success), sent


def test_typestore_knows_franka_and_action_types():
    ts = get_typestore()
    for name in ("franka_msgs/msg/FrankaRobotState", "franka_msgs/action/Move_Goal", "franka_msgs/action/Grasp_Goal"):
        assert name in EXTRA_TYPES and name in ts.types
    goal = default_message("franka_msgs/action/Grasp_Goal", width=0.02, force=40.0)
    back = ts.deserialize_cdr(ts.serialize_cdr(goal, "franka_msgs/action/Grasp_Goal"), "franka_msgs/action/Grasp_Goal")
    assert back.width == 0.02 and back.force == 40.0 and back.epsilon.inner == 0.0
    with pytest.raises(ValueError, match="has no field"):
        default_message("franka_msgs/action/Move_Goal", widht=0.01)
    with pytest.raises(ValueError, match=r"Did you mean \['franka_msgs/msg/FrankaRobotState'\]"):
        default_message("FrankaRobotState")


def test_default_message_fills_and_coerces_like_the_replay_message_factory():
    from mole_vla_ros.ros.messages import RosbagsMessages

    ts = get_typestore()
    # a list for a float64[] field becomes the numpy array rosbags serializes (a plain list would not serialize)
    js = default_message(JS, name=["fr3_joint1", "fr3_joint2"], position=[0.5, 1])
    assert js.position.dtype == np.float64 and js.position.tolist() == [0.5, 1.0] and js.velocity.shape == (0,)
    back = ts.deserialize_cdr(ts.serialize_cdr(js, JS), JS)
    assert back.name == ["fr3_joint1", "fr3_joint2"] and back.position.tolist() == [0.5, 1.0]
    state = default_message("franka_msgs/msg/FrankaRobotState", robot_mode=2)
    same = RosbagsMessages(ts).make("franka_msgs/msg/FrankaRobotState", robot_mode=2)
    assert (
        ts.serialize_cdr(state, "franka_msgs/msg/FrankaRobotState").tobytes()
        == ts.serialize_cdr(same, "franka_msgs/msg/FrankaRobotState").tobytes()
    )
    assert state.ddq_d.shape == (7,) and state.ddq_d.dtype == np.float64 and state.current_errors.joint_reflex is False


@pytest.mark.parametrize("threaded", [False, True])
def test_record_then_read_back_identical_bytes(tmp_path, threaded):
    path, sent = _record(tmp_path, threaded=threaded)
    assert path == tmp_path / "ep" and not (tmp_path / INCOMPLETE_DIR).exists()
    with EpisodeReader(path) as r:
        assert r.instruction == "put the cube in the bowl" and r.success is True and r.status == "complete"
        got = [(m.topic, m.log_time_ns, m.data) for m in r.messages(["/joint_states", "/camera/wrist/image_raw"])]
        assert sorted(got) == sorted(sent)
        (state,) = [m.msg for m in r.decoded(["/franka_robot_state_broadcaster/robot_state"])]
        assert state.robot_mode == 2 and state.control_command_success_rate == pytest.approx(0.97)
    meta = json.loads((path / "episode.json").read_text())
    assert meta["topics"]["/joint_states"]["count"] == 50
    assert meta["topics"]["/joint_states"]["rate_hz"] == pytest.approx(100.0)
    assert meta["topics"]["/camera/wrist/image_raw"]["qos"]["reliability"] == "best_effort"
    assert meta["bag"]["version"] == 8
    assert "version: 8" in (path / "metadata.yaml").read_text()
    assert list_episodes(tmp_path) == [path]


def test_independent_mcap_reader_agrees(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    path, sent = _record(tmp_path)
    with open(path / "ep.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        got, decoded_positions = [], []
        for _schema, channel, message, decoded in reader.iter_decoded_messages():
            if channel.topic == "/joint_states":
                decoded_positions.append(list(decoded.position))
            if channel.topic != "/franka_robot_state_broadcaster/robot_state":
                got.append((channel.topic, message.log_time, bytes(message.data)))
            else:
                assert decoded.robot_mode == 2
    assert sorted(got) == sorted(sent)
    assert decoded_positions[5] == pytest.approx(list(np.arange(7) * 0.1 + 5))


def test_discard_leaves_nothing(tmp_path):
    w = EpisodeWriter(tmp_path, "gone", TOPICS, EpisodeMetadata("x"), min_free_disk_gb=0)
    w.write("/joint_states", _joint(0), 1)
    w.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="discarded"):
        w.write("/joint_states", _joint(1), 2)


def test_bad_topics_and_types_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown message type 'JointState'.*sensor_msgs/msg/JointState"):
        TopicSpec("/joint_states", "JointState")
    with pytest.raises(ValueError, match="invalid topic name"):
        TopicSpec("joint states", JS)
    with pytest.raises(ValueError, match="listed twice"):
        EpisodeWriter(tmp_path, "d", [TOPICS[0], TOPICS[0]], EpisodeMetadata("x"), min_free_disk_gb=0)
    w = EpisodeWriter(tmp_path, "e", TOPICS, EpisodeMetadata("x"), min_free_disk_gb=0)
    with pytest.raises(ValueError, match=r"'/tf' is not part of this episode; recorded topics are \["):
        w.write("/tf", b"\x00", 1)
    with pytest.raises(TypeError, match="records sensor_msgs/msg/JointState"):
        w.write_message("/joint_states", default_message(IMG), 1)
    with pytest.raises(TypeError, match="use write_message"):
        w.write("/joint_states", default_message(JS), 1)
    path = w.finish(None)
    with EpisodeReader(path) as r, pytest.raises(KeyError, match="no topic"):
        list(r.messages(["/camera/scene/image_raw"]))


def test_refuses_to_start_on_low_disk(tmp_path):
    with pytest.raises(InsufficientDiskSpace, match=r"GB free.*min_free_disk_gb"):
        EpisodeWriter(tmp_path, "big", TOPICS, EpisodeMetadata("x"), min_free_disk_gb=1e9)


_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r} + "/test")
    from test_data_episode import TOPICS, _joint, _image
    from mole_vla_ros.data.episode import EpisodeWriter, EpisodeMetadata
    w = EpisodeWriter({root!r}, "killed", TOPICS, EpisodeMetadata("wipe the table"), flush_interval_s=0.05,
                      min_free_disk_gb=0)
    i = 0
    while True:
        w.write("/joint_states", _joint(i), 1_000_000_000 + i * 1_000_000)
        w.write("/camera/wrist/image_raw", _image(i, 48, 64), 1_000_000_000 + i * 1_000_000 + 1)
        i += 1
        if i == 300:
            w.flush()
            print("FLUSHED", i, flush=True)
        time.sleep(0.0005)
    """
)

# The recorder as the node runs it: RecorderCore with the threaded writer and a periodic tick().
_CHILD_CORE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r} + "/test")
    from test_data_episode import _joint, _image
    from mole_vla_ros.data.recorder_core import RecorderConfig, RecorderCore
    cfg = RecorderConfig(output_dir={root!r}, min_free_disk_gb=0, threaded_writer=True, flush_interval_s=0.05,
                         topics=[dict(name="/joint_states", type="sensor_msgs/msg/JointState"),
                                 dict(name="/camera/wrist/image_raw", type="sensor_msgs/msg/Image", camera="wrist")])
    core = RecorderCore(cfg)
    assert core.handle_command("start wipe the table").ok
    i = 0
    while True:
        core.on_message("/joint_states", _joint(i), 1_000_000_000 + i * 1_000_000)
        core.on_message("/camera/wrist/image_raw", _image(i, 48, 64), 1_000_000_000 + i * 1_000_000 + 1)
        i += 1
        if i % 50 == 0:
            core.tick()
        if i == 300:
            time.sleep(0.2)  # the writer thread drains its queue
            core.tick()      # the node's timer: flushes what is due
            print("FLUSHED", i, flush=True)
        time.sleep(0.0005)
    """
)


@pytest.mark.parametrize("child_code", [_CHILD, _CHILD_CORE], ids=["episode_writer", "recorder_core_threaded"])
def test_killed_recorder_leaves_recoverable_episode(tmp_path, child_code):
    repo = str(Path(__file__).resolve().parent.parent)
    child = subprocess.Popen(
        [sys.executable, "-c", child_code.format(repo=repo, root=str(tmp_path))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("FLUSHED"), line
        flushed = int(line.split()[1])
        import time

        time.sleep(0.2)  # keep writing past the flush so the tail of the file is a partial chunk
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

    (incomplete,) = incomplete_episodes(tmp_path)
    assert json.loads((incomplete / "episode.json").read_text())["status"] == "recording"
    with pytest.raises(IncompleteEpisodeError, match="dataset recover"):
        EpisodeReader(incomplete)
    assert list_episodes(tmp_path) == []

    path = recover_episode(incomplete)
    assert path == tmp_path / incomplete.name and not (tmp_path / INCOMPLETE_DIR).exists()
    with EpisodeReader(path) as r:
        assert r.status == "recovered" and r.instruction == "wipe the table"
        joints = [m for m in r.messages(["/joint_states"])]
        assert len(joints) >= flushed
        # everything kept is byte-identical to what was sent, in order, with no holes
        for i, m in enumerate(joints):
            assert m.log_time_ns == 1_000_000_000 + i * 1_000_000 and m.data == _joint(i)
    meta = json.loads((path / "episode.json").read_text())
    assert meta["recovery"]["messages"] >= 2 * flushed
    assert meta["topics"]["/joint_states"]["count"] == len(joints)


def test_salvage_rejects_non_mcap(tmp_path):
    bad = tmp_path / "x.mcap"
    bad.write_bytes(b"not an mcap file")
    with pytest.raises(ValueError, match="not an MCAP file"):
        salvage_mcap(bad)


def test_salvage_stops_cleanly_at_a_truncated_chunk(tmp_path):
    w = EpisodeWriter(tmp_path, "cut", TOPICS, EpisodeMetadata("x"), min_free_disk_gb=0)
    for i in range(20):
        w.write("/joint_states", _joint(i), 1000 + i)
        if i in (9, 19):
            w.flush()  # two chunks: messages 0-9 and 10-19
    path = w.finish(None)
    raw = (path / "cut.mcap").read_bytes()
    full = salvage_mcap(path / "cut.mcap")
    assert full.has_footer and len(full.messages) == 20
    second_chunk_middle = raw.index(_joint(15))
    (tmp_path / "trunc.mcap").write_bytes(raw[:second_chunk_middle])
    part = salvage_mcap(tmp_path / "trunc.mcap")
    assert [m[2] for m in part.messages] == [_joint(i) for i in range(10)]
    assert part.lost_bytes > 0 and not part.has_footer


def test_bag_metadata_is_the_version_8_form_humble_reads(tmp_path):
    import yaml

    path, _ = _record(tmp_path)
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8 and info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == ["ep.mcap"] and (path / "ep.mcap").exists()
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    cam = topics["/camera/wrist/image_raw"]
    # version 8 stores offered QoS as a YAML string (version 9's list form breaks Humble's parser)
    qos = cam["topic_metadata"]["offered_qos_profiles"]
    assert isinstance(qos, str)
    (profile,) = yaml.safe_load(qos)
    assert profile["reliability"] == 2 and profile["durability"] == 2 and profile["depth"] == 5  # best effort
    assert cam["message_count"] == 17 and cam["topic_metadata"]["type"] == "sensor_msgs/msg/Image"
