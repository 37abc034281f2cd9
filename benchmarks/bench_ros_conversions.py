"""Per-message cost of the policy node's conversions (ROS-free: rosbags messages with the same fields as rclpy's).

Inbound: sensor_msgs/Image -> HxWx3 RGB for each encoding at 640x480 and 224x224, compared in the same run with the
floor (one plain copy of the pixel buffer) and with OpenCV's cvtColor path; CompressedImage (JPEG) decode; a
JointState matched by name. Outbound: the messages built per accepted chunk (16 steps: MultiDOFJointTrajectory,
Path, layer arrays) and the fading MarkerArray (5 chunks). Prints median / p95 in microseconds.

    .venv/bin/python benchmarks/bench_ros_conversions.py
"""

from __future__ import annotations

import statistics
import time

import cv2
import numpy as np

from mole_vla_ros.robot.franka import describe
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.markers import MarkerStyle
from mole_vla_ros.ros.messages import RosbagsMessages
from mole_vla_ros.ros.outputs import OutputBuilder
from mole_vla_ros.runtime.commands import ChunkPrediction


def timeit(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm caches
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    msgs = RosbagsMessages()
    rng = np.random.default_rng(0)
    rows: list[tuple[str, float, float, str]] = []

    for h, w in ((480, 640), (224, 224)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        floor_med, _ = timeit(lambda rgb=rgb: rgb.reshape(-1).copy(), 200)
        rows.append((f"floor: copy {w}x{h}x3 buffer", floor_med, floor_med, "1.00x"))
        bgr_cv = np.ascontiguousarray(rgb[:, :, ::-1])
        cv_med, cv_p95 = timeit(lambda b=bgr_cv: cv2.cvtColor(b, cv2.COLOR_BGR2RGB), 200)
        rows.append((f"baseline: cv2.cvtColor bgr->rgb {w}x{h}", cv_med, cv_p95, f"{cv_med / floor_med:.2f}x"))
        for encoding in ("rgb8", "bgr8", "mono8"):
            msg = conv.rgb_to_image_msg(msgs, rgb, 1.0, "cam", encoding=encoding)
            med, p95 = timeit(lambda m=msg: conv.image_to_rgb(m), 200)
            rows.append((f"image_to_rgb {encoding} {w}x{h}", med, p95, f"{med / floor_med:.2f}x"))
        # camera-like content (smooth gradients and edges); random noise would be JPEG's worst case
        yy, xx = np.mgrid[0:h, 0:w]
        scene = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], axis=2).astype(np.uint8)
        cv2.rectangle(scene, (w // 3, h // 3), (w // 2, h // 2), (200, 30, 30), -1)
        ok, jpg = cv2.imencode(".jpg", scene[:, :, ::-1])
        assert ok
        cmsg = msgs.make("sensor_msgs/msg/CompressedImage", format="jpeg", data=jpg.reshape(-1))
        med, p95 = timeit(lambda m=cmsg: conv.compressed_to_rgb(m), 100)
        rows.append((f"compressed_to_rgb jpeg {w}x{h}", med, p95, f"{med / floor_med:.2f}x"))

    fr3 = describe("fr3")
    names = [*reversed(fr3.arm_joint_names), *fr3.finger_joint_names]
    js = msgs.make("sensor_msgs/msg/JointState", name=names, position=np.zeros(9), velocity=np.zeros(9))
    med, p95 = timeit(lambda: conv.joint_state_to_sample(js, fr3.arm_joint_names), 500)
    rows.append(("joint_state_to_sample (9 joints, shuffled)", med, p95, ""))

    n = 16
    chunk = ChunkPrediction(
        obs_stamp=1.0,
        stamps=1.0 + 0.1 * np.arange(1, n + 1),
        positions=np.column_stack([np.linspace(0.4, 0.5, n), np.zeros(n), np.full(n, 0.3)]),
        quaternions=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
        gripper=np.r_[np.ones(8), np.zeros(8)],
        executed=np.ones(n, bool),
        frame_id="fr3_link0",
        layer_indices=tuple(range(0, 32, 2)),
        num_layers=32,
        latency_s=0.1,
    )
    builder = OutputBuilder(msgs, MarkerStyle(history=5), "fr3_hand_tcp")
    med, p95 = timeit(lambda: builder.chunk(chunk), 200)
    rows.append(("chunk messages (16 steps: MultiDOF, Path, layers)", med, p95, ""))
    med, p95 = timeit(lambda: builder.markers(1.5), 200)
    rows.append(("MarkerArray (5 chunks: line strip + sphere list)", med, p95, ""))
    marker_array = builder.markers(1.5)
    med, p95 = timeit(lambda: msgs.serialize(marker_array), 200)
    rows.append(("  + CDR serialize of that MarkerArray", med, p95, ""))

    try:  # the live node's backend, when rclpy is importable (ROS 2 sourced, or the ros-jazzy-* PyPI wheels)
        from rclpy.serialization import serialize_message

        from mole_vla_ros.ros.messages import RclpyMessages
    except ImportError:
        rows.append(("(rclpy not importable: rclpy rows skipped)", float("nan"), float("nan"), ""))
    else:
        live = OutputBuilder(RclpyMessages(), MarkerStyle(history=5), "fr3_hand_tcp")
        med, p95 = timeit(lambda: live.chunk(chunk), 200)
        rows.append(("rclpy: chunk messages (16 steps)", med, p95, ""))
        med, p95 = timeit(lambda: live.markers(1.5), 200)
        rows.append(("rclpy: MarkerArray (5 chunks: line strip + sphere list)", med, p95, ""))
        live_markers = live.markers(1.5)
        med, p95 = timeit(lambda: serialize_message(live_markers), 200)
        rows.append(("rclpy:   + serialize_message", med, p95, ""))
        rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        live_image = conv.rgb_to_image_msg(RclpyMessages(), rgb, 1.0, "cam", encoding="bgr8")
        med, p95 = timeit(lambda: conv.image_to_rgb(live_image), 200)
        rows.append(("rclpy: image_to_rgb bgr8 640x480 (array.array data)", med, p95, ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'median us':>10}  {'p95 us':>10}  {'vs floor':>8}")
    for name, med, p95, ratio in rows:
        print(f"{name:<{width}}  {med:>10.1f}  {p95:>10.1f}  {ratio:>8}")


if __name__ == "__main__":
    main()
