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
