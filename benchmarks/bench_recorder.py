"""Recorder write path: can it keep two 640x480 rgb8 cameras at 30 Hz plus joint states at 1 kHz without drops?

    .venv/bin/python benchmarks/bench_recorder.py [--seconds 5] [--repeats 3] [--dir /path/on/the/recording/disk]

Three measurements, all through `RecorderCore.on_message` (what the ROS node calls for every serialized message):
  1. burst, inline writer:   N seconds of traffic pushed as fast as possible; headroom = data seconds / wall seconds
  2. burst, threaded writer: same through the background writer thread (the node's default), until fully on disk
  3. real time, threaded:    traffic paced at its nominal rates for N seconds; reports drops and the writer backlog
Baseline in the same run: the same bytes written with plain file.write (what the disk alone sustains).
Rates are medians over --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mole_vla_ros.data.recorder_core import RecorderConfig, RecorderCore
from mole_vla_ros.data.typestore import default_message, get_typestore

CAM_HZ, JOINT_HZ, W, H = 30, 1000, 640, 480
CAMS = ("/camera/scene/image_raw", "/camera/wrist/image_raw")
JOINTS = "/franka_robot_state_broadcaster/measured_joint_states"


def _messages():
    ts = get_typestore()
    rng = np.random.default_rng(0)
    img = default_message(
        "sensor_msgs/msg/Image",
        height=H,
        width=W,
        encoding="rgb8",
        step=W * 3,
        data=rng.integers(0, 255, W * H * 3, dtype=np.uint8),
    )
    js = default_message(
        "sensor_msgs/msg/JointState",
        name=[f"fr3_joint{i}" for i in range(1, 8)],
        position=rng.normal(size=7),
        velocity=rng.normal(size=7),
        effort=rng.normal(size=7),
    )
    return bytes(ts.serialize_cdr(img, "sensor_msgs/msg/Image")), bytes(
        ts.serialize_cdr(js, "sensor_msgs/msg/JointState")
    )


def _schedule(seconds: float):
    """(time offset ns, topic) for every message of `seconds` of traffic, in time order."""
    events = [(int(k * 1e9 / JOINT_HZ), JOINTS) for k in range(int(seconds * JOINT_HZ))]
    for c, topic in enumerate(CAMS):
        events += [(int(k * 1e9 / CAM_HZ) + c * 1_000_000, topic) for k in range(int(seconds * CAM_HZ))]
    return sorted(events)


def _core(root: Path, threaded: bool) -> RecorderCore:
    cfg = RecorderConfig(
        output_dir=str(root),
        min_free_disk_gb=1.0,
        threaded_writer=threaded,
        max_queue_mb=512,
        topics=[
            {"name": CAMS[0], "type": "sensor_msgs/msg/Image", "qos": "sensor_data", "expected_hz": CAM_HZ, "camera": "scene"},
            {"name": CAMS[1], "type": "sensor_msgs/msg/Image", "qos": "sensor_data", "expected_hz": CAM_HZ, "camera": "wrist"},
            {"name": JOINTS, "type": "sensor_msgs/msg/JointState", "qos": "best_effort", "expected_hz": JOINT_HZ},
        ],
    )  # fmt: skip
    return RecorderCore(cfg)


def burst(root: Path, seconds: float, threaded: bool, img: bytes, js: bytes) -> tuple[float, int, int]:
    """Wall seconds to record `seconds` of traffic (until finished on disk), bytes, dropped."""
    core = _core(root, threaded)
    events = _schedule(seconds)
    t_base = time.time_ns()
    core.handle_command("start benchmark")
    t0 = time.perf_counter()
    for off, topic in events:
        core.on_message(topic, img if topic in CAMS else js, t_base + off)
    assert core.handle_command("save").ok
    wall = time.perf_counter() - t0
    dropped = sum(m.dropped for m in core.monitors.values())
    meta = core.last_saved / "episode.json"
    info = json.loads(meta.read_text())
    total_bytes = sum(t["bytes"] for t in info["topics"].values())
    dropped += info["dropped_total"]
    shutil.rmtree(core.last_saved)
    return wall, total_bytes, dropped


def realtime(root: Path, seconds: float, img: bytes, js: bytes) -> tuple[int, int, float, float]:
    """Pace traffic at nominal rates through the threaded writer: (messages, dropped, max backlog MB, finish s)."""
    core = _core(root, threaded=True)
    events = _schedule(seconds)
    core.handle_command("start benchmark realtime")
    writer = core.writer
    max_backlog = 0.0
    t0 = time.perf_counter_ns()
    base = time.time_ns()
    for off, topic in events:
        while time.perf_counter_ns() - t0 < off:
            time.sleep(0.0002)
        core.on_message(topic, img if topic in CAMS else js, base + off)
        max_backlog = max(max_backlog, writer._queued_bytes / 1e6)
    t_finish = time.perf_counter()
    assert core.handle_command("save").ok
    finish_s = time.perf_counter() - t_finish
    info = json.loads((core.last_saved / "episode.json").read_text())
    shutil.rmtree(core.last_saved)
    return info["message_count"], info["dropped_total"], max_backlog, finish_s


def plain_write(root: Path, seconds: float, img: bytes, js: bytes) -> float:
    """Baseline: the same bytes with file.write, flushed + fsynced once per wall second and at the end (the
    recorder's flush policy), without any bag format, indexing or bookkeeping."""
    path = root / "baseline.bin"
    t0 = last = time.perf_counter()
    with open(path, "wb") as f:
        for _off, topic in _schedule(seconds):
            f.write(img if topic in CAMS else js)
            if time.perf_counter() - last >= 1.0:
                f.flush()
                os.fsync(f.fileno())
                last = time.perf_counter()
        f.flush()
        os.fsync(f.fileno())
    wall = time.perf_counter() - t0
    path.unlink()
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds of traffic per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="directory on the disk to test (default: a temp dir)")
    args = ap.parse_args()
    img, js = _messages()
    root = Path(tempfile.mkdtemp(prefix="bench_recorder_", dir=args.dir))
    nominal_mb_s = (2 * CAM_HZ * len(img) + JOINT_HZ * len(js)) / 1e6
    print(f"traffic: 2 x {W}x{H} rgb8 @ {CAM_HZ} Hz + JointState @ {JOINT_HZ} Hz = {nominal_mb_s:.1f} MB/s "
          f"({len(img) / 1e6:.2f} MB per image); {args.seconds:g} s per run, {args.repeats} runs, dir {root}")  # fmt: skip
    try:
        rows = []
        # interleaved, so disk cache and background writeback affect every variant alike
        base, runs = [], {False: [], True: []}
        for _ in range(args.repeats):
            base.append(plain_write(root, args.seconds, img, js))
            for threaded in (False, True):
                runs[threaded].append(burst(root, args.seconds, threaded, img, js))
        for name, threaded in (("recorder, inline writer", False), ("recorder, threaded writer", True)):
            walls = [r[0] for r in runs[threaded]]
            rows.append((name, statistics.median(walls), runs[threaded][0][1], max(r[2] for r in runs[threaded])))
        base_wall = statistics.median(base)
        total = rows[0][2]
        print()
        print(f"{'write path (burst)':<28}{'median s':>10}{'MB/s':>10}{'headroom':>10}{'vs disk':>9}{'dropped':>9}")
        print(f"{'plain file.write baseline':<28}{base_wall:>10.2f}{total / base_wall / 1e6:>10.1f}"
              f"{args.seconds / base_wall:>9.1f}x{1.0:>8.2f}x{'-':>9}")  # fmt: skip
        for name, wall, nbytes, dropped in rows:
            print(f"{name:<28}{wall:>10.2f}{nbytes / wall / 1e6:>10.1f}{args.seconds / wall:>9.1f}x"
                  f"{base_wall / wall:>8.2f}x{dropped:>9d}")  # fmt: skip
        rt = [realtime(root, args.seconds, img, js) for _ in range(args.repeats)]
        print()
        print(f"{'real time, threaded writer':<28}{'messages':>10}{'dropped':>10}{'backlog MB':>12}{'save s':>9}")
        for i, (n, dropped, backlog, fin) in enumerate(rt):
            print(f"{'run ' + str(i + 1):<28}{n:>10d}{dropped:>10d}{backlog:>12.1f}{fin:>9.2f}")
        ok = all(r[1] == 0 for r in rt) and all(r[3] == 0 for r in rows)
        print(
            f"\nverdict: {'no drops' if ok else 'DROPS'}; threaded headroom {args.seconds / rows[1][1]:.1f}x real time"
        )
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
