"""Pairing camera frames with the robot state by HEADER STAMPS into one policy observation.

Each stream (every camera, joint states, EE pose, gripper) is a short time-indexed buffer. `latest(now)` walks the
reference camera's frames from the newest back and returns the first set in which every other camera and the EE
pose lie within `sync_tolerance_s` of it (nearest stamp for cameras; the faster state streams are interpolated to
the camera's stamp when samples bracket it); the joint state and gripper width are attached when that close too. The observation's stamp is the OLDEST capture stamp of its parts: the chunk's timing must start
from the oldest information the policy saw (4paradigm/phanthymotus PR #221 design note).

Refused and counted, never silently used: samples older than (or equal to) the newest of their stream
("out_of_order" / "duplicate"), non-finite states, poses in another frame than the base frame, unknown cameras.
Frame drops: a camera gap longer than 1.5 nominal periods counts the frames that should have been there.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass

import numpy as np

from mole_vla_ros.interfaces import CameraFrame, GripperSample, JointStateSample, Pose, PoseSample
from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.runtime.config import ObservationConfig

# State streams keep this many seconds (bounded by _MAX_STATE_SAMPLES) so a 30 Hz camera finds its partner
# in a 1 kHz joint-state stream even when frames arrive late.
_STATE_RETENTION_S = 2.0
_MAX_STATE_SAMPLES = 4096


@dataclass(frozen=True)
class Observation:
    """One synchronised observation.

    stamp: oldest capture stamp of the parts (what chunk timing starts from); newest_stamp: the newest one.
    images: {camera: HxWx3 uint8}; ee_pose in the base frame; joint_positions [7] and gripper_width when synced.
    """

    stamp: float
    newest_stamp: float
    images: dict[str, np.ndarray]
    camera_stamps: dict[str, float]
    ee_pose: Pose
    ee_stamp: float
    joint_positions: np.ndarray | None
    gripper_width: float | None


def _blend_pose(a: Pose, b: Pose, u: float) -> Pose:
    return Pose(a.position + u * (b.position - a.position), rot.quat_slerp(a.quaternion, b.quaternion, float(u)))


def _blend_array(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    return a + u * (b - a)


class StampedBuffer:
    """Samples in stamp order with nearest-stamp lookup; refuses out-of-order samples."""

    def __init__(self, max_samples: int, retention_s: float | None = None):
        self.max_samples = max_samples
        self.retention_s = retention_s
        self.stamps: list[float] = []
        self.items: list = []

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def newest_stamp(self) -> float:
        return self.stamps[-1] if self.stamps else -np.inf

    def add(self, stamp: float, item) -> str:
        """ "" when stored, else "out_of_order" / "duplicate" / "non_finite_stamp"."""
        if not np.isfinite(stamp):
            return "non_finite_stamp"
        if self.stamps:
            if stamp == self.stamps[-1]:
                return "duplicate"
            if stamp < self.stamps[-1]:
                return "out_of_order"
        self.stamps.append(stamp)
        self.items.append(item)
        # trim in batches (amortised O(1)) by count and age
        if len(self.stamps) > 2 * self.max_samples:
            del self.stamps[: -self.max_samples], self.items[: -self.max_samples]
        if self.retention_s is not None and self.stamps[0] < stamp - 2 * self.retention_s:
            cut = bisect.bisect_left(self.stamps, stamp - self.retention_s)
            del self.stamps[:cut], self.items[:cut]
        return ""

    def nearest(self, stamp: float, tolerance: float):
        """(stamp, item) closest to `stamp` within tolerance, else None."""
        if not self.stamps:
            return None
        i = bisect.bisect_left(self.stamps, stamp)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self.stamps):
                d = abs(self.stamps[j] - stamp)
                if d <= tolerance and (best is None or d < best[0]):
                    best = (d, j)
        if best is None:
            return None
        return self.stamps[best[1]], self.items[best[1]]

    def interpolated(self, stamp: float, tolerance: float, blend):
        """(stamp, item) AT `stamp` via blend(a, b, u) when samples within tolerance bracket it, else nearest()."""
        i = bisect.bisect_left(self.stamps, stamp)
        if 0 < i < len(self.stamps):
            t0, t1 = self.stamps[i - 1], self.stamps[i]
            if stamp - t0 <= tolerance and t1 - stamp <= tolerance:
                return stamp, blend(self.items[i - 1], self.items[i], (stamp - t0) / (t1 - t0))
        return self.nearest(stamp, tolerance)

    def latest(self):
        return (self.stamps[-1], self.items[-1]) if self.stamps else None

    def newest_first(self, limit: int):
        n = len(self.stamps)
        for j in range(n - 1, max(-1, n - 1 - limit), -1):
            yield self.stamps[j], self.items[j]

    def clear(self) -> None:
        self.stamps.clear()
        self.items.clear()


class ObservationSync:
    """Buffers every input stream and builds synchronised observations. Counters are in `self.counters`."""

    def __init__(self, config: ObservationConfig, base_frame: str, arm_joint_names: tuple[str, ...], fk=None):
        self.config = config
        self.base_frame = base_frame
        self.arm_joint_names = tuple(arm_joint_names)
        self.fk = fk  # callable q[7] -> Pose, required when ee_pose_source == "fk"
        if config.ee_pose_source == "fk" and fk is None:
            raise ValueError("observation.ee_pose_source='fk' needs a kinematics model; pass fk=...")
        self.cameras = {name: StampedBuffer(config.buffer_size) for name in config.camera_names}
        self.joints = StampedBuffer(_MAX_STATE_SAMPLES, _STATE_RETENTION_S)
        self.ee = StampedBuffer(_MAX_STATE_SAMPLES, _STATE_RETENTION_S)
        self.gripper = StampedBuffer(_MAX_STATE_SAMPLES, _STATE_RETENTION_S)
        self.counters: Counter[str] = Counter()
        self._rate_period: dict[str, float] = {}
        self._joint_index: tuple[tuple[str, ...], np.ndarray] | None = None

    # -- inputs ----------------------------------------------------------------------------------------------------
    def _store(self, stream: str, buf: StampedBuffer, stamp: float, item) -> bool:
        prev = buf.newest_stamp
        why = buf.add(float(stamp), item)
        if why:
            self.counters[f"rejected/{why}/{stream}"] += 1
            return False
        if np.isfinite(prev):
            gap = float(stamp) - prev
            old = self._rate_period.get(stream)
            self._rate_period[stream] = gap if old is None else 0.9 * old + 0.1 * gap
        return True

    def add_camera(self, frame: CameraFrame) -> bool:
        """Store a camera frame; False when refused (unknown camera, bad image, out of order)."""
        buf = self.cameras.get(frame.camera)
        if buf is None:
            self.counters[f"rejected/unknown_camera/{frame.camera}"] += 1
            return False
        img = frame.image
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
            self.counters[f"rejected/bad_image/{frame.camera}"] += 1
            return False
        prev = buf.newest_stamp
        if not self._store(f"camera/{frame.camera}", buf, frame.stamp, img):
            return False
        if np.isfinite(prev):
            period = 1.0 / self.config.camera_rate_hz
            gap = float(frame.stamp) - prev
            if gap > 1.5 * period:
                self.counters[f"drops/{frame.camera}"] += round(gap / period) - 1
        return True

    def add_joint_state(self, sample: JointStateSample) -> bool:
        """Store the arm joint positions (reordered to joint1..7); also the FK pose when ee_pose_source == 'fk'."""
        q = self._arm_positions(sample)
        if q is None:
            return False
        if not self._store("joint_states", self.joints, sample.stamp, q):
            return False
        if self.config.ee_pose_source == "fk":
            self._store("ee_pose", self.ee, sample.stamp, self.fk(q))
        return True

    def add_ee_pose(self, sample: PoseSample) -> bool:
        """Store an EE pose; refused when it is in another frame than the base frame."""
        if self.config.ee_pose_source == "fk":
            return False  # the pose comes from joint states; a second source would interleave two clocks
        if sample.frame_id and sample.frame_id != self.base_frame:
            self.counters["rejected/wrong_frame/ee_pose"] += 1
            return False
        return self._store("ee_pose", self.ee, sample.stamp, sample.pose)

    def add_gripper(self, sample: GripperSample) -> bool:
        if not np.isfinite(sample.width):
            self.counters["rejected/non_finite/gripper"] += 1
            return False
        return self._store("gripper", self.gripper, sample.stamp, float(sample.width))

    def _arm_positions(self, sample: JointStateSample) -> np.ndarray | None:
        names = tuple(sample.names)
        if self._joint_index is None or self._joint_index[0] != names:
            try:
                idx = np.array([names.index(n) for n in self.arm_joint_names])
            except ValueError:
                missing = [n for n in self.arm_joint_names if n not in names]
                self.counters["rejected/missing_joints/joint_states"] += 1
                self.counters[f"missing_joint/{missing[0]}"] += 1
                return None
            self._joint_index = (names, idx)
        pos = np.asarray(sample.position, dtype=np.float64)
        if pos.shape[0] != len(names):
            self.counters["rejected/bad_length/joint_states"] += 1
            return None
        q = pos[self._joint_index[1]]
        if not np.all(np.isfinite(q)):
            self.counters["rejected/non_finite/joint_states"] += 1
            return None
        return q

    # -- outputs ---------------------------------------------------------------------------------------------------
    def latest_joint_positions(self) -> np.ndarray | None:
        last = self.joints.latest()
        return None if last is None else last[1]

    def latest_ee_pose(self) -> tuple[float, Pose] | None:
        return self.ee.latest()

    def latest_gripper_width(self) -> float | None:
        last = self.gripper.latest()
        return None if last is None else last[1]

    def rate_hz(self, stream: str) -> float:
        period = self._rate_period.get(stream)
        return 1.0 / period if period and period > 0 else 0.0

    def latest(self, now: float) -> tuple[Observation | None, str]:
        """The newest synchronised observation and "" , or (None, reason) with reason one of
        "no_camera:<name>", "no_ee_pose", "unsynced", "stale"."""
        cfg = self.config
        tol = cfg.sync_tolerance_s
        names = cfg.camera_names
        for name in names:
            if not len(self.cameras[name]):
                return None, f"no_camera:{name}"
        if not len(self.ee):
            return None, "no_ee_pose"
        ref = self.cameras[names[0]]
        for ref_stamp, ref_img in ref.newest_first(cfg.buffer_size):
            images = {names[0]: ref_img}
            stamps = {names[0]: ref_stamp}
            for name in names[1:]:
                hit = self.cameras[name].nearest(ref_stamp, tol)
                if hit is None:
                    break
                stamps[name], images[name] = hit
            else:
                # state streams are faster than cameras: interpolate them to the reference camera's stamp
                ee = self.ee.interpolated(ref_stamp, tol, _blend_pose)
                if ee is None:
                    continue
                joints = self.joints.interpolated(ref_stamp, tol, _blend_array)
                grip = self.gripper.nearest(ref_stamp, max(tol, 0.1))  # 15 Hz hand state: a looser match is fine
                all_stamps = [*stamps.values(), ee[0]]
                obs = Observation(
                    stamp=min(all_stamps),
                    newest_stamp=max(all_stamps),
                    images=images,
                    camera_stamps=stamps,
                    ee_pose=ee[1],
                    ee_stamp=ee[0],
                    joint_positions=None if joints is None else joints[1],
                    gripper_width=None if grip is None else grip[1],
                )
                if now - obs.stamp > cfg.max_age_s:
                    return None, "stale"
                return obs, ""
            if now - ref_stamp > cfg.max_age_s:
                break  # older frames are stale anyway
        newest = ref.newest_stamp
        return None, "stale" if now - newest > cfg.max_age_s else "unsynced"

    def clear(self) -> None:
        for buf in (*self.cameras.values(), self.joints, self.ee, self.gripper):
            buf.clear()
