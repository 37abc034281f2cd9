"""Export a built dataset (`mole-vla dataset build`) as a LeRobotDataset v3.0 directory (parquet, images as PNG).

    mole-vla dataset build ~/mole_vla_episodes --out data/drawer --lerobot data/drawer_lerobot

Layout written (LeRobot v3.0 conventions):
    meta/info.json                             codebase_version v3.0, fps, features, splits, path templates
    meta/stats.json                            min/max/mean/std/count (+ q01/q99) per feature, images per channel
    meta/tasks.parquet                         task (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet   episode_index, tasks, length, data file, dataset_from/to_index
    data/chunk-000/file-NNN.parquet            one row per frame: observation.images.<camera> (PNG struct),
                                               observation.state [x y z qx qy qz qw gripper_open], action [D],
                                               observation.joint_positions [7] (when every episode has them),
                                               timestamp, frame_index, episode_index, index, task_index
Per frame, `action` is the first action of the sample's chunk (LeRobot builds chunks itself from delta_timestamps).
LeRobot requires frames 1/fps apart inside an episode, so a recording with gaps becomes one LeRobot episode per
contiguous stretch (meta/episodes records the source episode of each). Train episodes come first; `splits` in
info.json gives the train and val ranges. Images are stored as PNG (no video encoder needed).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mole_vla_ros.data.dataset import META_JSON, TrainingDataset

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STATE_NAMES = ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper_open"]
JOINT_NAMES = [f"joint{i}" for i in range(1, 8)]


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "the LeRobot export needs pyarrow: pip install 'mole_vla_ros[lerobot]' (or pip install pyarrow)"
        ) from exc
    return pa, pq


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not PNG-encode an image of shape {image.shape}")
    return buf.tobytes()


def _stats(x: np.ndarray) -> dict[str, list]:
    x = np.asarray(x, dtype=np.float64)
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [int(x.shape[0])],
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
    }


def _image_stats(sum_c: np.ndarray, sq_c: np.ndarray, mn: np.ndarray, mx: np.ndarray, n_pix: int, n: int) -> dict:
    mean = sum_c / n_pix
    std = np.sqrt(np.maximum(sq_c / n_pix - mean**2, 0))
    as_c11 = lambda v: [[[float(c)]] for c in v]  # noqa: E731  LeRobot keeps image stats as [3, 1, 1]
    return {"min": as_c11(mn), "max": as_c11(mx), "mean": as_c11(mean), "std": as_c11(std), "count": [n]}


def _contiguous_runs(frame_index: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) row ranges whose frame indices increase by exactly one."""
    if frame_index.size == 0:
        return []
    breaks = np.nonzero(np.diff(frame_index) != 1)[0] + 1
    edges = [0, *breaks.tolist(), int(frame_index.size)]
    return list(itertools.pairwise(edges))


def _tasks_table(pa, tasks: list[str]):
    """tasks.parquet with pandas metadata so pandas.read_parquet restores `task` as the index (as LeRobot expects)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
             "metadata": {"encoding": "UTF-8"}}
        ],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }  # fmt: skip
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(
    dataset_dir: str | Path, out_dir: str | Path, repo_id: str = "local/mole_vla", overwrite: bool = False
) -> Path:
    """Write `dataset_dir` (a built mole_vla dataset) as a LeRobotDataset v3.0 at `out_dir`. Returns out_dir."""
    pa, pq = _pyarrow()
    src = Path(dataset_dir)
    if not (src / META_JSON).exists():
        raise FileNotFoundError(f"{src} is not a built dataset (no {META_JSON}); run `mole-vla dataset build` first")
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; choose another directory or pass --overwrite")
        shutil.rmtree(out)
    meta = json.loads((src / META_JSON).read_text(encoding="utf-8"))
    cams = list(meta["cameras"])
    fps = float(meta["rate_hz"])
    S, D = int(meta["image_size"]), int(meta["action_dim"])
    tasks = list(meta["instructions"])
    src_episodes = {e["index"]: e for e in meta["episodes"]}
    with_joints = bool(meta.get("has_joint_positions"))

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            *((f"observation.images.{c}", image_type) for c in cams),
            ("observation.state", pa.list_(pa.float32(), len(STATE_NAMES))),
            *([("observation.joint_positions", pa.list_(pa.float32(), 7))] if with_joints else []),
            ("action", pa.list_(pa.float32(), D)),
            ("timestamp", pa.float32()),
            ("frame_index", pa.int64()),
            ("episode_index", pa.int64()),
            ("index", pa.int64()),
            ("task_index", pa.int64()),
        ]
    )
    (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (out / "data" / "chunk-000").mkdir(parents=True)

    episodes_rows: list[dict[str, Any]] = []
    split_ranges: dict[str, list[int]] = {}
    states_all, actions_all, joints_all = [], [], []
    img_acc = {c: [np.zeros(3), np.zeros(3), np.full(3, 255.0), np.zeros(3)] for c in cams}
    n_frames = 0
    file_index, file_rows, file_bytes = 0, [], 0

    def flush_file():
        nonlocal file_index, file_rows, file_bytes
        if not file_rows:
            return
        cols = {name: [r[name] for r in file_rows] for name in schema.names}
        pq.write_table(pa.table(cols, schema=schema), out / DATA_PATH.format(chunk_index=0, file_index=file_index))
        file_index, file_rows, file_bytes = file_index + 1, [], 0

    for split in ("train", "val"):
        if meta["splits"][split]["samples"] == 0:
            continue
        ds = TrainingDataset(src, split, normalize_actions=False)
        ep_col = ds.column("episode_index")
        fr_col = ds.column("frame_index")
        first_episode = len(episodes_rows)
        for ep in sorted(set(ep_col.tolist()), key=lambda e: np.nonzero(ep_col == e)[0][0]):
            rows = np.nonzero(ep_col == ep)[0]
            for a, b in _contiguous_runs(fr_col[rows]):
                run = rows[a:b]
                if file_bytes > DATA_FILE_MB * 1e6:
                    flush_file()
                lerobot_ep = len(episodes_rows)
                start = n_frames
                for k, r in enumerate(run):
                    images = ds.raw("images", int(r))
                    state = np.concatenate([ds.raw("ee_pose", int(r)), [ds.raw("gripper_open", int(r))]])
                    action = ds.raw("actions", int(r))[0]
                    row = {
                        "observation.state": state.astype(np.float32).tolist(),
                        "action": action.astype(np.float32).tolist(),
                        "timestamp": float(k / fps),
                        "frame_index": k,
                        "episode_index": lerobot_ep,
                        "index": n_frames,
                        "task_index": int(ds.raw("instruction_id", int(r))),
                    }
                    if with_joints:
                        jp = ds.raw("joint_positions", int(r)).astype(np.float32)
                        row["observation.joint_positions"] = jp.tolist()
                        joints_all.append(jp)
                    for v, c in enumerate(cams):
                        png = _png(images[v])
                        row[f"observation.images.{c}"] = {"bytes": png, "path": None}
                        file_bytes += len(png)
                        px = images[v].reshape(-1, 3).astype(np.float64) / 255.0
                        acc = img_acc[c]
                        acc[0] += px.sum(0)
                        acc[1] += (px**2).sum(0)
                        acc[2] = np.minimum(acc[2], px.min(0))
                        acc[3] = np.maximum(acc[3], px.max(0))
                    states_all.append(state)
                    actions_all.append(action)
                    file_rows.append(row)
                    n_frames += 1
                src_ep = src_episodes[int(ep)]
                episodes_rows.append(
                    {
                        "episode_index": lerobot_ep,
                        "tasks": [tasks[src_ep["instruction_id"]]],
                        "length": n_frames - start,
                        "data/chunk_index": 0,
                        "data/file_index": file_index,
                        "dataset_from_index": start,
                        "dataset_to_index": n_frames,
                        "meta/episodes/chunk_index": 0,
                        "meta/episodes/file_index": 0,
                        "source_episode": src_ep["name"],
                        "success": src_ep["success"],
                    }
                )
        split_ranges[split] = [first_episode, len(episodes_rows)]
    flush_file()
    if not episodes_rows:
        raise ValueError(f"{src} holds no samples to export")

    ep_cols = {k: [r[k] for r in episodes_rows] for k in episodes_rows[0]}
    ep_table = pa.table(
        {
            **{
                k: pa.array(v, pa.int64())
                for k, v in ep_cols.items()
                if k not in ("tasks", "source_episode", "success")
            },
            "tasks": pa.array(ep_cols["tasks"], pa.list_(pa.string())),
            "source_episode": pa.array(ep_cols["source_episode"], pa.string()),
            "success": pa.array(ep_cols["success"], pa.bool_()),
        }
    )
    pq.write_table(ep_table, out / EPISODES_PATH.format(chunk_index=0, file_index=0))
    pq.write_table(_tasks_table(pa, tasks), out / "meta" / "tasks.parquet")

    n_pix = n_frames * S * S
    stats = {
        "observation.state": _stats(np.stack(states_all)),
        "action": _stats(np.stack(actions_all)),
        **({"observation.joint_positions": _stats(np.stack(joints_all))} if with_joints else {}),
        **{f"observation.images.{c}": _image_stats(*img_acc[c], n_pix, n_frames) for c in cams},
        "timestamp": _stats(np.zeros((1, 1))),
    }
    scalar = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": meta.get("robot_type") if isinstance(meta.get("robot_type"), str) else None,
        "total_episodes": len(episodes_rows),
        "total_frames": n_frames,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB,
        "video_files_size_in_mb": 200,
        "fps": int(fps) if float(fps).is_integer() else fps,
        "splits": {s: f"{a}:{b}" for s, (a, b) in split_ranges.items()},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": {
            **{
                f"observation.images.{c}": {
                    "dtype": "image",
                    "shape": [S, S, 3],
                    "names": ["height", "width", "channels"],
                }
                for c in cams
            },
            "observation.state": {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": STATE_NAMES},
            **(
                {"observation.joint_positions": {"dtype": "float32", "shape": [7], "names": JOINT_NAMES}}
                if with_joints
                else {}
            ),
            "action": {"dtype": "float32", "shape": [D], "names": [f"{meta['action_space']}_{i}" for i in range(D)]},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": scalar,
            "episode_index": scalar,
            "index": scalar,
            "task_index": scalar,
        },
        "repo_id": repo_id,
        "mole_vla": {"action_space": meta["action_space"], "source_dataset": str(src.resolve())},
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4) + "\n", encoding="utf-8")
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=4) + "\n", encoding="utf-8")
    log.info("LeRobot v3 export: %d episodes, %d frames -> %s", len(episodes_rows), n_frames, out)
    return out
