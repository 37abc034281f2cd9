"""LeRobotDataset v3 export: the parquet files hold the same frames, actions and images as the built dataset."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from test_data_dataset import CFG, write_episode  # noqa: E402

from mole_vla_ros.data.dataset import DatasetConfig, TrainingDataset, build_dataset  # noqa: E402
from mole_vla_ros.data.lerobot_export import export_lerobot  # noqa: E402


def test_export_matches_built_dataset(tmp_path):
    rng = np.random.default_rng(7)
    write_episode(tmp_path / "rec", "a", rng, k=14, instruction="open the drawer", joints=True)
    write_episode(
        tmp_path / "rec", "b", rng, k=20, drop_scene=set(range(25, 37)), instruction="close the drawer", joints=True
    )
    build_dataset([tmp_path / "rec"], tmp_path / "ds", DatasetConfig(**CFG, val_fraction=0.0), progress=False)
    out = export_lerobot(tmp_path / "ds", tmp_path / "lr")

    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["features"]["observation.images.scene"]["dtype"] == "image"
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pylist()
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    tasks = pq.read_table(out / "meta" / "tasks.parquet").to_pylist()
    assert sorted(t["task"] for t in tasks) == ["close the drawer", "open the drawer"]
    # episode b has a camera gap: it becomes two LeRobot episodes, each with frames exactly 1/fps apart
    assert [e["source_episode"] for e in episodes] == ["a", "b", "b"]
    assert info["total_episodes"] == 3 and info["total_frames"] == len(data)
    assert info["splits"] == {"train": "0:3"}
    for e in episodes:
        rows = data[e["dataset_from_index"] : e["dataset_to_index"]]
        assert [r["frame_index"] for r in rows] == list(range(e["length"]))
        np.testing.assert_allclose([r["timestamp"] for r in rows], np.arange(e["length"]) / 10, atol=1e-6)
        assert all(r["episode_index"] == e["episode_index"] for r in rows)
    assert [r["index"] for r in data] == list(range(len(data)))

    ds = TrainingDataset(tmp_path / "ds", "train", normalize_actions=False)
    assert len(ds) == len(data)
    for i in (0, len(data) // 2, len(data) - 1):
        np.testing.assert_allclose(data[i]["action"], ds.raw("actions", i)[0], atol=1e-6)
        png = np.frombuffer(data[i]["observation.images.wrist"]["bytes"], np.uint8)
        img = cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(img, ds.raw("images", i)[1])
        assert tasks[data[i]["task_index"]]["task"] == ds[i]["instruction"]
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert np.array(stats["observation.images.scene"]["mean"]).shape == (3, 1, 1)
    assert info["features"]["observation.joint_positions"]["shape"] == [7]
    np.testing.assert_allclose(data[3]["observation.joint_positions"], ds.raw("joint_positions", 3), atol=1e-6)
    assert stats["action"]["count"] == [len(data)]
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_lerobot(tmp_path / "ds", tmp_path / "lr")
