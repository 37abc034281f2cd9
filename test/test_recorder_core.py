"""The recorder's behaviour without ROS: episode commands, labels, rate/stall warnings, drop counting, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mole_vla_ros.data.episode import EpisodeReader, list_episodes
from mole_vla_ros.data.recorder_core import KEYMAP, RecorderConfig, RecorderCore, header_stamp_ns
from mole_vla_ros.data.typestore import default_message, get_typestore

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_750_000_000_000_000_000


class FakeClock:
    def __init__(self):
        self.now = T0

    def __call__(self) -> int:
        return self.now


def _config(tmp_path, **kw) -> RecorderConfig:
    return RecorderConfig.from_dict(
        {
            "output_dir": str(tmp_path),
            "namespace": "fr3",
            "min_free_disk_gb": 0,
            "threaded_writer": False,
            "topics": [
                {
                    "name": "camera/wrist/image_raw",
                    "type": "sensor_msgs/msg/Image",
                    "qos": "sensor_data",
                    "expected_hz": 30,
                    "camera": "wrist",
                },
                {"name": "joint_states", "type": "sensor_msgs/msg/JointState", "expected_hz": 100},
                {"name": "camera/wrist/camera_info", "type": "sensor_msgs/msg/CameraInfo", "required": False},
                {"name": "/mole_vla/instruction", "type": "std_msgs/msg/String", "qos": "latched", "required": False},
            ],
            **kw,
        }
    )


def _image(stamp_ns: int) -> bytes:
    ts = get_typestore()
    msg = default_message(
        "sensor_msgs/msg/Image", height=2, width=2, encoding="rgb8", step=6, data=np.arange(12, dtype=np.uint8)
    )
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def _joint(stamp_ns: int) -> bytes:
    ts = get_typestore()
    msg = default_message("sensor_msgs/msg/JointState", position=np.zeros(7))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def _feed(core: RecorderCore, clock: FakeClock, seconds: float, cam_hz=30.0, joint_hz=100.0, skip_frames=()):
    """Advance the fake clock in 1 ms steps, publishing camera and joint messages at their rates."""
    start = clock.now
    n_cam = n_joint = 0
    for ms in range(int(seconds * 1000)):
        clock.now = start + ms * 1_000_000
        if cam_hz and ms >= n_cam * 1000 / cam_hz:
            if n_cam not in skip_frames:
                core.on_message("/fr3/camera/wrist/image_raw", _image(clock.now - 2_000_000), clock.now)
            n_cam += 1
        if joint_hz and ms >= n_joint * 1000 / joint_hz:
            core.on_message("/fr3/joint_states", _joint(clock.now), clock.now)
            n_joint += 1


def test_start_stop_save_label_discard(tmp_path):
    clock = FakeClock()
    core = RecorderCore(_config(tmp_path), clock=clock)
    assert not core.handle_command("start").ok  # no instruction yet
    assert core.handle_command("start open the drawer").ok and core.state == "recording"
    info = default_message(
        "sensor_msgs/msg/CameraInfo", width=2, height=2, k=np.array([600.0, 0, 1, 0, 600, 1, 0, 0, 1])
    )
    info.header.frame_id = "wrist_optical"
    core.on_message("/fr3/camera/wrist/camera_info", bytes(get_typestore().serialize_cdr(info, info.__msgtype__)), T0)
    assert not core.handle_command("start again").ok
    _feed(core, clock, 0.5)
    assert core.handle_command("stop").ok and core.state == "stopped"
    _feed(core, clock, 0.2)  # arrives after stop: not recorded
    result = core.handle_command("save success")
    assert result.ok and core.state == "idle"
    (ep,) = list_episodes(tmp_path)
    with EpisodeReader(ep) as r:
        assert r.success is True and r.instruction == "open the drawer"
        assert r.message_counts["/fr3/joint_states"] == 50
        assert r.message_counts["/fr3/camera/wrist/image_raw"] == 15
        wrist = r.metadata["cameras"]["wrist"]
        assert (
            wrist["topic"] == "/fr3/camera/wrist/image_raw" and wrist["info_topic"] == "/fr3/camera/wrist/camera_info"
        )
        assert (wrist["width"], wrist["height"], wrist["encoding"]) == (2, 2, "rgb8")
        assert wrist["intrinsics"]["k"][0] == 600.0 and wrist["intrinsics"]["frame_id"] == "wrist_optical"
        assert r.metadata["topics"]["/fr3/camera/wrist/image_raw"]["latency_ms"]["mean"] == pytest.approx(2.0)
    # label after saving relabels the last episode
    assert core.handle_command("failure").ok
    assert json.loads((ep / "episode.json").read_text())["success"] is False
    # the same instruction carries over; discard deletes
    assert core.handle_command("start").ok
    _feed(core, clock, 0.1)
    assert core.handle_command("discard").ok
    assert list_episodes(tmp_path) == [ep] and not (tmp_path / "_incomplete").exists()


def test_unknown_or_malformed_commands_are_explained(tmp_path):
    core = RecorderCore(_config(tmp_path), clock=FakeClock())
    r = core.handle_command("record")
    assert not r.ok and "unknown command 'record'" in r.message and "start [instruction]" in r.message
    assert "nothing to save" in core.handle_command("save").message
    assert "save takes 'success' or 'failure'" in core.handle_command("save maybe").message
    assert core.handle_command("instruction stack the blocks").ok and core.instruction == "stack the blocks"
    assert set(KEYMAP.values()) >= {"start", "stop", "save success", "save failure", "discard"}
    with pytest.raises(ValueError, match="not configured"):
        core.on_message("/tf", b"\x00\x01\x00\x00", T0)


def test_rate_and_stall_warnings(tmp_path):
    clock = FakeClock()
    core = RecorderCore(_config(tmp_path), clock=clock)
    _feed(core, clock, 2.5, joint_hz=50.0)  # joints at half their expected rate
    warnings = core.tick()
    assert any("/fr3/joint_states: 50.0 Hz, expected 100 Hz" in w for w in warnings)
    assert not any("camera" in w for w in warnings)
    clock.now += 800_000_000  # no frame for 0.8 s
    warnings = core.tick()
    assert any(w.startswith("camera wrist (/fr3/camera/wrist/image_raw) stalled") for w in warnings)


def test_dropped_frames_are_counted_from_header_stamps(tmp_path):
    clock = FakeClock()
    core = RecorderCore(_config(tmp_path), clock=clock)
    core.handle_command("start wipe")
    _feed(core, clock, 1.0, skip_frames={10, 11, 12, 20})
    core.handle_command("save")
    (ep,) = list_episodes(tmp_path)
    meta = json.loads((ep / "episode.json").read_text())
    cam = meta["topics"]["/fr3/camera/wrist/image_raw"]
    assert cam["dropped"] == 4 and cam["stamp_gap_dropped"] == 4
    assert meta["topics"]["/fr3/joint_states"]["dropped"] == 0
    assert meta["dropped_total"] == 4 and meta["success"] is None


def test_max_episode_length_stops_recording(tmp_path):
    clock = FakeClock()
    core = RecorderCore(_config(tmp_path, max_episode_s=0.3), clock=clock)
    core.handle_command("start push")
    _feed(core, clock, 0.4)
    assert any("max_episode_s" in w for w in core.tick())
    assert core.state == "stopped"


def test_header_stamp_parsing():
    assert header_stamp_ns(_image(T0 + 123)) == T0 + 123
    assert header_stamp_ns(b"\x00\x01") is None


def test_shipped_config_is_valid():
    cfg = RecorderConfig.from_yaml(ROOT / "config" / "recorder.yaml")
    assert set(cfg.cameras()) == {"scene", "wrist"}
    assert all(s.name.startswith("/") for s in cfg.topic_specs())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"topics": []}, "lists no topics"),
        ({"bogus": 1}, r"unknown recorder config key\(s\) \['bogus'\]"),
        ({"topics": [{"name": "a", "type": "sensor_msgs/msg/Image", "qos": "fast"}]}, "qos must be one of"),
        ({"topics": [{"name": "a", "type": "sensor_msgs/msg/JointState", "camera": "c"}]}, "needs type sensor_msgs"),
        ({"topics": [{"name": "a", "type": "Image"}]}, "unknown message type 'Image'"),
        (
            {"topics": [{"name": "a", "type": "std_msgs/msg/String"}, {"name": "/a", "type": "std_msgs/msg/String"}]},
            "more than once",
        ),
        ({"topics": [{"name": "a"}]}, r"misses \['type'\]"),
        ({"rate_warn_fraction": 2}, "rate_warn_fraction"),
    ],
)
def test_config_errors_name_the_problem(change, match):
    base = {"topics": [{"name": "a", "type": "std_msgs/msg/String"}]}
    with pytest.raises(ValueError, match=match):
        RecorderConfig.from_dict({**base, **change})


def test_writer_failure_stops_recording_without_raising(tmp_path):
    clock = FakeClock()
    core = RecorderCore(_config(tmp_path), clock=clock)
    core.handle_command("start fold the towel")
    _feed(core, clock, 0.1)

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    core.writer.write = broken
    core.on_message("/fr3/joint_states", _joint(clock.now), clock.now)  # must not raise into the ROS callback
    assert core.state == "stopped" and "No space left" in core.status()["error"]
    assert any("recording stopped" in w for w in core.tick())
    assert core.handle_command("save failure").ok  # what reached the disk is kept
    (ep,) = list_episodes(tmp_path)
    assert json.loads((ep / "episode.json").read_text())["success"] is False


def test_clock_jumping_back_does_not_hide_later_drops(tmp_path):
    clock = FakeClock()
    core = RecorderCore(_config(tmp_path), clock=clock)
    _feed(core, clock, 0.5)
    clock.now = T0 - 10 * 1_000_000_000  # e.g. a bag restarted from its beginning
    core.handle_command("start loop")
    _feed(core, clock, 1.0, skip_frames={5, 6})
    assert core.monitors["/fr3/camera/wrist/image_raw"].dropped == 2


def test_readme_documents_every_recorder_key():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Recorder `mole_vla_recorder`", 1)[1].split("\n## ", 1)[0]
    missing = [k for k in RecorderConfig.__dataclass_fields__ if f"`{k}`" not in section]
    assert not missing, f"README recorder section lacks {missing}"


def test_start_on_a_full_disk_is_refused_with_the_reason(tmp_path):
    core = RecorderCore(_config(tmp_path, min_free_disk_gb=1e9), clock=FakeClock())
    r = core.handle_command("start pour water")
    assert not r.ok and "GB free" in r.message and "min_free_disk_gb" in r.message and core.state == "idle"
