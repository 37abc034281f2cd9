"""Bags replay cannot use fail with an error that names the problem and the fix, never a traceback from deep inside.

Covers: a missing path, a truncated MCAP, an unfinished recording (data file without metadata.yaml), a bag without
the needed topics (the message lists what the bag has), a topic of the wrong or an unknown message type, an image
encoding the node cannot read, and no instruction anywhere. The CLI turns each into exit status 2 and one message.
"""

from __future__ import annotations

import shutil

import pytest

from mole_vla_ros.cli import main
from mole_vla_ros.replay.engine import ReplayOptions, run_replay
from mole_vla_ros.replay.errors import (
    BagNotFoundError,
    CorruptBagError,
    ImageEncodingError,
    MissingTopicsError,
    ReplayError,
    UnknownMessageTypeError,
)
from mole_vla_ros.replay.synthetic import write_synthetic_bag
from mole_vla_ros.robot.franka import Topics


class _StillPolicy:
    """A plain Policy that predicts 'stay where you are' chunks (no model needed to reach the bag checks)."""

    camera_names = ("scene", "wrist")
    chunk_size = 4
    action_space = "delta_xyz_abs_rpy"
    control_dt = 0.1
    image_size = 16

    def infer(self, inp):
        import numpy as np

        from mole_vla_ros.interfaces import PolicyOutput

        actions = np.zeros((self.chunk_size, 7))
        actions[:, 3] = np.pi  # roll pi: gripper pointing down, as in the synthetic bag
        actions[:, 6] = 1.0
        return PolicyOutput(actions, (0,), np.ones(1), 1, {"total": 0.0})


def _replay(bag, tmp_path, **kw):
    return run_replay(ReplayOptions(bag=bag, out=tmp_path / "out", progress=False, **kw), policy=_StillPolicy())


def test_missing_bag(tmp_path, capsys):
    with pytest.raises(BagNotFoundError, match="does not exist"):
        _replay(tmp_path / "nope", tmp_path)
    assert main(["replay", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().out


def test_directory_without_a_bag(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagNotFoundError, match="holds no rosbag2 bag"):
        _replay(tmp_path / "empty", tmp_path)


def test_truncated_mcap(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=1.0)
    (data,) = bag.glob("*.mcap")
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptBagError, match="truncated or damaged") as info:
        _replay(bag, tmp_path)
    assert "mole-vla dataset recover" in str(info.value)


def test_sqlite3_data_without_metadata_is_an_unfinished_recording(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=0.5, storage="sqlite3")
    (bag / "metadata.yaml").unlink()
    with pytest.raises(CorruptBagError, match="never finished"):
        _replay(bag, tmp_path)


def test_bare_mcap_file_without_metadata_is_read_directly(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=1.0)
    (data,) = bag.glob("*.mcap")
    bare = tmp_path / "bare.mcap"
    shutil.copy(data, bare)
    result = _replay(bare, tmp_path)
    assert result.control_steps > 90 and result.chunks


def test_missing_topics_lists_what_the_bag_has(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=0.5, omit_topics=(Topics.CURRENT_POSE,))
    with pytest.raises(MissingTopicsError) as info:
        _replay(bag, tmp_path)
    msg = str(info.value)
    assert "/franka_robot_state_broadcaster/current_pose" in msg  # what is missing
    assert "/joint_states" in msg and "sensor_msgs/msg/Image" in msg  # what the bag has
    assert "--camera" in msg  # how to fix it


def test_missing_camera(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=0.5, cameras=("scene",))
    with pytest.raises(MissingTopicsError, match="camera 'wrist'"):
        _replay(bag, tmp_path)


def test_camera_mapped_to_a_topic_of_another_type(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=0.5)
    with pytest.raises(UnknownMessageTypeError, match="carries sensor_msgs/msg/JointState"):
        _replay(bag, tmp_path, cameras={"scene": "/joint_states", "wrist": "/camera/wrist/image_raw"})


def test_unknown_message_type_on_a_needed_topic_and_copied_elsewhere(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg("float64 x\nfloat64 y\n", "acme_msgs/msg/Thing"))
    path = tmp_path / "custom"
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        pose = w.add_connection("/" + Topics.CURRENT_POSE, "acme_msgs/msg/Thing", typestore=store)
        Thing = store.types["acme_msgs/msg/Thing"]
        for i in range(3):
            w.write(pose, 10**9 + i, store.serialize_cdr(Thing(x=1.0, y=2.0), "acme_msgs/msg/Thing"))
        img = w.add_connection("/camera/scene/image_raw", "sensor_msgs/msg/Image", typestore=store)
        w.add_connection("/camera/wrist/image_raw", "sensor_msgs/msg/Image", typestore=store)
        Image, Header, Time = (
            store.types["sensor_msgs/msg/Image"],
            store.types["std_msgs/msg/Header"],
            store.types["builtin_interfaces/msg/Time"],
        )
        import numpy as np

        msg = Image(Header(Time(1, 0), "cam"), 2, 2, "rgb8", 0, 6, np.zeros(12, np.uint8))
        w.write(img, 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    with pytest.raises(UnknownMessageTypeError, match="acme_msgs/msg/Thing"):
        _replay(path, tmp_path)


def test_unsupported_image_encoding(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=0.5, encoding="16UC1")
    with pytest.raises(ImageEncodingError) as info:
        _replay(bag, tmp_path)
    msg = str(info.value)
    assert "16UC1" in msg and "camera 'scene'" in msg and "rgb8" in msg


def test_no_instruction_anywhere(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=0.5, omit_topics=(Topics.INSTRUCTION,))
    with pytest.raises(ReplayError, match="--instruction"):
        _replay(bag, tmp_path)
    result = _replay(bag, tmp_path, instruction="pick up the red cube")
    assert result.instruction_source == "--instruction"


def test_bad_cli_values(tmp_path, capsys):
    bag = write_synthetic_bag(tmp_path / "b", duration_s=0.5)
    assert main(["replay", str(bag), "--camera", "scene", "--out", str(tmp_path / "o")]) == 2
    assert "NAME=TOPIC" in capsys.readouterr().out
    with pytest.raises(ReplayError, match="--active-layers"):
        ReplayOptions(bag=bag, active_layers=0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("mole_vla_policy:\n  ros__parameters:\n    safety: {dry_runn: true}\n")
    with pytest.raises(ReplayError, match="dry_runn"):
        _replay(bag, tmp_path, params=bad)


def test_replay_error_is_a_value_error():
    # callers that only know "bad input" (ValueError) still catch every replay error
    assert issubclass(ReplayError, ValueError) and issubclass(BagNotFoundError, FileNotFoundError)


def test_bag_without_messages(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from mole_vla_ros.data.typestore import get_typestore

    path = tmp_path / "empty_bag"
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=get_typestore())
    with pytest.raises(MissingTopicsError, match="holds no messages"):
        _replay(path, tmp_path)


def test_a_message_that_does_not_decode(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from mole_vla_ros.data.typestore import get_typestore

    ts = get_typestore()
    path = tmp_path / "garbled"
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        for topic, msgtype in (
            ("/camera/scene/image_raw", "sensor_msgs/msg/Image"),
            ("/camera/wrist/image_raw", "sensor_msgs/msg/Image"),
        ):
            w.add_connection(topic, msgtype, typestore=ts)
        pose = w.add_connection(
            "/franka_robot_state_broadcaster/current_pose", "geometry_msgs/msg/PoseStamped", typestore=ts
        )
        w.write(pose, 10**9, b"\x00\x01\x00\x00\x07")  # a CDR header and one byte: cut short
    with pytest.raises(CorruptBagError, match="does not decode as geometry_msgs/msg/PoseStamped"):
        _replay(path, tmp_path, instruction="pick up the red cube")
