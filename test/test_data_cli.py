"""`mole-vla dataset build|list|info|recover` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_data_dataset import write_episode
from test_data_episode import TOPICS, _joint

from mole_vla_ros.cli import main
from mole_vla_ros.data.episode import EpisodeMetadata, EpisodeWriter


def test_build_list_info(tmp_path, capsys):
    rng = np.random.default_rng(11)
    for i in range(3):
        write_episode(tmp_path / "rec", f"ep{i}", rng, k=10)
    out = tmp_path / "ds"
    args = ["dataset", "build", str(tmp_path / "rec"), "--out", str(out), "--rate", "10", "--image-size", "16"]
    assert main([*args, "--cameras", "wrist", "scene", "--val-fraction", "0.34", "--no-progress"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["cameras"] == ["wrist", "scene"] and meta["splits"]["val"]["episodes"] == 1
    assert "train:" in capsys.readouterr().out

    assert main(["dataset", "list", str(tmp_path / "rec")]) == 0
    listing = capsys.readouterr().out
    assert listing.count("complete") == 3 and "stack the cup" in listing
    assert main(["dataset", "info", str(tmp_path / "rec" / "ep0")]) == 0
    assert "/camera/scene/image_raw" in capsys.readouterr().out
    assert main(["dataset", "info", str(out)]) == 0
    assert "q99" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="--overwrite"):
        main([*args])


def test_recover_then_build_refuses_unfinished(tmp_path, capsys):
    w = EpisodeWriter(tmp_path, "crashed", TOPICS, EpisodeMetadata("x"), min_free_disk_gb=0)
    for i in range(5):
        w.write("/joint_states", _joint(i), 1000 + i)
    w.flush()  # then the process "dies": no finish()
    assert main(["dataset", "list", str(tmp_path)]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out
    with pytest.raises(Exception, match="dataset recover"):
        main(["dataset", "build", str(tmp_path / "_incomplete" / "crashed"), "--out", str(tmp_path / "ds")])
    assert main(["dataset", "recover", str(tmp_path)]) == 0
    assert "recovered" in capsys.readouterr().out and (tmp_path / "crashed" / "metadata.yaml").exists()


def test_plot_shows_the_dropped_stretch(tmp_path, capsys):
    rng = np.random.default_rng(12)
    write_episode(tmp_path / "rec", "gappy", rng, k=20, drop_scene=set(range(20, 30)))
    png = tmp_path / "t.png"
    assert main(["dataset", "plot", str(tmp_path / "rec" / "gappy"), "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 10_000
    scene = next(line for line in out.splitlines() if line.startswith("/camera/scene/image_raw"))
    assert "1 gaps (longest 0.3" in scene  # 10 frames at 30 Hz missing: ~0.37 s between neighbours
    wrist = next(line for line in out.splitlines() if line.startswith("/camera/wrist/image_raw"))
    assert "gaps" not in wrist


def test_build_from_plain_ros2_bag_recordings(tmp_path, capsys):
    """A bag recorded with `ros2 bag record` (here sqlite3, no episode.json) converts with named cameras."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from mole_vla_ros.data.episode import EpisodeReader
    from mole_vla_ros.data.typestore import get_typestore

    rng = np.random.default_rng(13)
    write_episode(tmp_path / "rec", "orig", rng, k=12)
    plain = tmp_path / "bags" / "rosbag2_2026_11_25-10_00_00"
    writer = Writer(plain, version=8, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    with EpisodeReader(tmp_path / "rec" / "orig") as r:
        conns = {t: writer.add_connection(t, mt, typestore=get_typestore()) for t, mt in r.topics.items()}
        for m in r.messages():
            writer.write(conns[m.topic], m.log_time_ns, m.data)
    writer.close()

    base = ["dataset", "build", "--rate", "10", "--image-size", "16", "--val-fraction", "0", "--no-progress"]
    with pytest.raises(ValueError, match="--camera-topic NAME=TOPIC"):
        main([*base, str(tmp_path / "bags"), "--out", str(tmp_path / "x")])
    cams = ["--camera-topic", "scene=/camera/scene/image_raw", "--camera-topic", "wrist=/camera/wrist/image_raw"]
    with pytest.raises(ValueError, match="--instruction"):
        main([*base, str(tmp_path / "bags"), "--out", str(tmp_path / "y"), *cams])
    assert main([*base, str(tmp_path / "bags"), "--out", str(tmp_path / "plain"), *cams, "--instruction", "stack"]) == 0
    assert main([*base, str(tmp_path / "rec"), "--out", str(tmp_path / "ref")]) == 0
    from mole_vla_ros.data.dataset import TrainingDataset

    a = TrainingDataset(tmp_path / "plain", "train", normalize_actions=False).column("actions")
    b = TrainingDataset(tmp_path / "ref", "train", normalize_actions=False).column("actions")
    np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "plain" / "meta.json").read_text())["instructions"] == ["stack"]
