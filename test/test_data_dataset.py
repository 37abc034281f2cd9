"""Dataset building on synthetic recordings: multi-rate streams with jitter and drops are aligned without looking
ahead, gaps are reported, and the actions recomputed from recorded poses are the actions that generated them."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mole_vla_ros.data.alignment import latest_at_or_before, tick_times
from mole_vla_ros.data.dataset import DatasetConfig, TrainingDataset, build_dataset, episode_samples, split_episodes
from mole_vla_ros.data.episode import EpisodeMetadata, EpisodeWriter, QosSpec, TopicSpec
from mole_vla_ros.data.typestore import default_message, get_typestore
from mole_vla_ros.interfaces import Pose
from mole_vla_ros.model.normalization import ActionNormalizer
from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.runtime.action_space import get_action_space

NS = 1_000_000_000
T0 = 1_760_000_000 * NS
TICK = NS // 10  # 10 Hz samples
SPACE = get_action_space("delta_xyz_abs_rpy")
TOPICS = [
    TopicSpec("/camera/scene/image_raw", "sensor_msgs/msg/Image", QosSpec.sensor_data(), 30),
    TopicSpec("/camera/wrist/image_raw", "sensor_msgs/msg/Image", QosSpec.sensor_data(), 15),
    TopicSpec("/franka_robot_state_broadcaster/current_pose", "geometry_msgs/msg/PoseStamped", expected_hz=100),
    TopicSpec("/franka_gripper/joint_states", "sensor_msgs/msg/JointState", expected_hz=20),
]
# the variant a user without current_pose records: the pose inside FrankaRobotState, gripper as teleop commands
ALT_TOPICS = [
    *TOPICS[:2],
    TopicSpec("/fr3/franka_robot_state_broadcaster/robot_state", "franka_msgs/msg/FrankaRobotState"),
    TopicSpec("/fr3/teleop/gripper", "std_msgs/msg/Float32"),
]


def joint_q(tick: int) -> np.ndarray:
    """The arm joint positions the synthetic robot holds during tick window `tick`."""
    return np.arange(7) * 0.1 + 0.01 * tick


def _stamp(msg, t_ns):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(t_ns), NS)


def lead_target(poses, i: int) -> Pose:
    """The synthetic operator's target at tick i: two ticks ahead of the arm, 5 mm further along x."""
    p = poses[min(i + 2, len(poses) - 1)]
    return Pose(p.position + np.array([0.005, 0.0, 0.0]), p.quaternion)


def _generating_trajectory(rng, k: int, roll0: float = np.pi - 0.05):
    """Poses P_0..P_k-1 (one per 10 Hz tick) from known actions, and the gripper state per tick."""
    poses = [Pose(np.array([0.4, 0.0, 0.3]), rot.rpy_to_quat(np.array([roll0, 0.1, 0.2])))]
    gripper = np.ones(k)
    gripper[k // 2 :] = 0.0  # closes half way
    for _ in range(k - 1):
        dp = rng.normal(0, 0.01, 3)
        rpy = rot.quat_to_rpy(poses[-1].quaternion) + rng.normal(0, 0.05, 3)
        poses.append(Pose(poses[-1].position + dp, rot.rpy_to_quat(rpy)))
    return poses, gripper


def write_episode(
    root,
    name,
    rng,
    k=30,
    drop_scene=(),
    instruction="stack the cup",
    success=True,
    roll0=np.pi - 0.05,
    alt=False,
    scene_clock_offset_ns=0,
    compressed_wrist=False,
    joints=False,
    drop_joint_ticks=(),
    targets=False,
):
    """A synthetic recording: pose 100 Hz (jittered, constant within each tick window), gripper 20 Hz, scene camera
    30 Hz and wrist camera 15 Hz (jittered, frames listed in drop_scene never arrive). Pixel values encode frame ids.
    With `targets`, a 10 Hz /teleop/target_pose stream leads the measured pose (see lead_target).
    Returns the generating poses, gripper states and each camera's (stamp, frame id) list."""
    ts = get_typestore()
    poses, grip = _generating_trajectory(rng, k, roll0)
    msgs = []  # (log time, topic, msg)
    for i in range(k):
        for j in range(10):
            t = T0 + i * TICK + j * 10_000_000 + (0 if j == 0 else int(rng.integers(0, 3_000_000)))
            p = poses[i]
            m = default_message("geometry_msgs/msg/PoseStamped")
            _stamp(m, t)
            m.header.frame_id = "fr3_link0"
            m.pose.position.x, m.pose.position.y, m.pose.position.z = p.position
            m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = p.quaternion
            if alt:
                state = default_message("franka_msgs/msg/FrankaRobotState", o_t_ee=m, robot_mode=2)
                _stamp(state, t)
                msgs.append((t + 300_000, ALT_TOPICS[2].name, state))
            else:
                msgs.append((t + 300_000, TOPICS[2].name, m))
        if targets:  # the commanded target at tick i, ahead of where the arm is
            tgt = lead_target(poses, i)
            m = default_message("geometry_msgs/msg/PoseStamped")
            _stamp(m, T0 + i * TICK)
            m.pose.position.x, m.pose.position.y, m.pose.position.z = tgt.position
            m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = tgt.quaternion
            msgs.append((T0 + i * TICK + 400_000, "/teleop/target_pose", m))
        if joints and i not in drop_joint_ticks:  # merged arm + finger joint_states, 50 Hz, constant per tick window
            for j in range(5):
                t = T0 + i * TICK + j * 20_000_000 + (0 if j == 0 else int(rng.integers(0, 2_000_000)))
                m = default_message(
                    "sensor_msgs/msg/JointState",
                    name=[f"fr3_joint{n}" for n in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"],
                    position=np.concatenate([joint_q(i), [0.02, 0.02]]),
                )
                _stamp(m, t)
                msgs.append((t + 200_000, "/joint_states", m))
        if alt:  # the operator's command at tick i is the gripper state it leads to
            cmd = default_message("std_msgs/msg/Float32", data=float(grip[min(i + 1, k - 1)]))
            msgs.append((T0 + i * TICK + 1_000_000, ALT_TOPICS[3].name, cmd))
            continue
        for j in range(2):
            t = T0 + i * TICK + j * 50_000_000 + (0 if j == 0 else int(rng.integers(0, 5_000_000)))
            width = 0.08 if grip[i] else 0.03
            m = default_message(
                "sensor_msgs/msg/JointState",
                name=["fr3_finger_joint1", "fr3_finger_joint2"],
                position=np.array([width / 2, width / 2]),
            )
            _stamp(m, t)
            msgs.append((t + 500_000, TOPICS[3].name, m))
    frames = {}
    for topic, hz, drops in ((TOPICS[0].name, 30, drop_scene), (TOPICS[1].name, 15, ())):
        frames[topic] = []
        n = int(k * TICK / (NS / hz)) + 2  # frames until past the last tick
        for f in range(n):
            t = T0 - 20_000_000 + int(f * NS / hz) + int(rng.integers(-3_000_000, 3_000_000))
            if f in drops:
                continue
            img = np.full((24, 32, 3), f % 250, dtype=np.uint8)
            if compressed_wrist and topic == TOPICS[1].name:
                png = cv2.imencode(".png", img)[1].reshape(-1)  # lossless, so pixel values survive
                m = default_message("sensor_msgs/msg/CompressedImage", format="png", data=png)
            else:
                m = default_message(
                    "sensor_msgs/msg/Image", height=24, width=32, encoding="rgb8", step=96, data=img.reshape(-1)
                )
            _stamp(m, t + (scene_clock_offset_ns if topic == TOPICS[0].name else 0))
            frames[topic].append((t, f % 250))
            msgs.append((t + 8_000_000, topic, m))
    cams = {"scene": {"topic": TOPICS[0].name}, "wrist": {"topic": TOPICS[1].name}}
    topics = list(ALT_TOPICS if alt else TOPICS)
    if compressed_wrist:
        topics[1] = TopicSpec(TOPICS[1].name, "sensor_msgs/msg/CompressedImage", QosSpec.sensor_data(), 15)
    if joints:
        topics.append(TopicSpec("/joint_states", "sensor_msgs/msg/JointState", expected_hz=50))
    if targets:
        topics.append(TopicSpec("/teleop/target_pose", "geometry_msgs/msg/PoseStamped", expected_hz=10))
    w = EpisodeWriter(root, name, topics, EpisodeMetadata(instruction, cameras=cams), min_free_disk_gb=0)
    for t, topic, m in sorted(msgs, key=lambda x: x[0]):
        w.write(topic, bytes(ts.serialize_cdr(m, m.__msgtype__)), t)
    w.finish(success)
    return poses, grip, frames


CFG = dict(rate_hz=10.0, image_size=16, cameras=("scene", "wrist"), image_tolerance_s=0.1, shard_size=16)


def test_alignment_takes_newest_earlier_within_tolerance():
    stamps = np.array([0, 10, 20, 50], dtype=np.int64)
    ticks = np.array([-1, 0, 15, 20, 45, 60, 61], dtype=np.int64)
    assert latest_at_or_before(stamps, ticks, 10).tolist() == [-1, 0, 1, 2, -1, 3, -1]
    assert tick_times(0, 25 * NS // 10, 1.0).tolist() == [0, NS, 2 * NS]
    assert tick_times(5, 4, 1.0).size == 0
    with pytest.raises(ValueError, match="sorted"):
        latest_at_or_before(np.array([2, 1]), ticks, 1)


def test_actions_recomputed_from_poses_match_generating_actions(tmp_path):
    rng = np.random.default_rng(0)
    poses, grip, _frames = write_episode(tmp_path, "ep0", rng, k=30)
    s = episode_samples(tmp_path / "ep0", DatasetConfig(**CFG))
    generating = np.stack([SPACE.encode(poses[t], poses[t + 1], grip[t + 1]) for t in range(len(poses) - 1)])
    generating[:, 3:6] = rot.unwrap_rpy(generating[:, 3:6])
    assert s.gaps == [] and s.n == 29 and s.gripper_source == "width"
    generating[:, 3:6] -= 2 * np.pi * np.round((generating[0, 3:6] - s.angle_center) / (2 * np.pi))
    np.testing.assert_allclose(s.step_actions, generating, atol=1e-9)
    for j in range(s.n):
        t = int(s.frame_index[j])
        n_real = int(s.action_mask[j].sum())
        assert n_real == min(16, 29 - t)
        np.testing.assert_allclose(s.actions[j, :n_real], generating[t : t + n_real], atol=1e-5)
        # decoding the chunk from the recorded pose replays the demonstration, and the hold padding stays put
        start = Pose(s.ee_pose[j, :3].astype(np.float64), s.ee_pose[j, 3:].astype(np.float64))
        targets, g = SPACE.decode_chunk(start, s.actions[j].astype(np.float64))
        for c in range(16):
            want = poses[min(t + 1 + c, len(poses) - 1)]
            np.testing.assert_allclose(targets[c].position, want.position, atol=1e-5)
            assert abs(abs(float(np.dot(targets[c].quaternion, want.quaternion))) - 1) < 1e-6
        assert g[-1] == grip[-1]


@pytest.mark.parametrize("alt", [False, True])
def test_actions_from_commanded_targets_decode_to_the_targets(tmp_path, alt):
    """With a recorded target stream, a chunk decoded at the measured pose gives the operator's targets (what the
    controller must be sent to move like the demonstration), not the lagging measured path."""
    rng = np.random.default_rng(11)
    k = 24
    poses, grip, _ = write_episode(tmp_path, "tgt", rng, k=k, alt=alt, targets=True)
    cfg = {**CFG, "pose_topic": "franka_robot_state_broadcaster/robot_state"} if alt else dict(CFG)
    s = episode_samples(tmp_path / "tgt", DatasetConfig(**cfg))
    state = episode_samples(tmp_path / "tgt", DatasetConfig(**cfg, action_source="state"))
    assert s.action_source == "command" and state.action_source == "state"
    assert s.n == state.n + 1  # the last tick has a target to go to, but no next measured pose
    targets = [lead_target(poses, i) for i in range(k)]
    first = int(s.frame_index[0])
    for j in range(s.n):
        t = int(s.frame_index[j])
        n_real = int(s.action_mask[j].sum())
        assert n_real == min(16, k - t)
        start = Pose(s.ee_pose[j, :3].astype(np.float64), s.ee_pose[j, 3:].astype(np.float64))
        np.testing.assert_allclose(start.position, poses[t].position, atol=1e-6)
        decoded, g = SPACE.decode_chunk(start, s.actions[j].astype(np.float64))
        for c in range(16):
            want = targets[min(t + c, k - 1)]  # then the hold padding stays at the last target
            np.testing.assert_allclose(decoded[c].position, want.position, atol=1e-5)
            assert abs(abs(float(np.dot(decoded[c].quaternion, want.quaternion))) - 1) < 1e-6
        # action c carries the gripper state the demonstration reached one tick later (as with measured poses)
        want_g = [grip[min(t + c + 1, k - 1)] for c in range(n_real)]
        assert g[:n_real].tolist() == want_g, (t, g[:n_real].tolist(), want_g)
    # the same gripper labels as the measured-pose actions where both exist
    common = int(state.frame_index[0]) - first
    np.testing.assert_array_equal(
        s.actions[common:-1, :, -1][state.action_mask], state.actions[:, :, -1][state.action_mask]
    )
    # statistics see every real action: the first (measured -> target) ones and the target-to-target steps
    assert len(s.step_actions) == s.n + (k - first - 1)
    with pytest.raises(ValueError, match="target pose"):
        write_episode(tmp_path, "plain", rng, k=8)
        episode_samples(tmp_path / "plain", DatasetConfig(**CFG, action_source="command"))


def test_images_are_the_newest_frames_at_or_before_each_sample(tmp_path):
    rng = np.random.default_rng(1)
    drops = set(range(40, 52))  # 0.4 s without scene frames -> a gap longer than the 0.1 s tolerance
    # wrist camera as CompressedImage (png): decoded on the way into the dataset
    _poses, _grip, frames = write_episode(tmp_path, "ep1", rng, k=30, drop_scene=drops, compressed_wrist=True)
    s = episode_samples(tmp_path / "ep1", DatasetConfig(**CFG))
    ticks = T0 + np.arange(30) * TICK
    for cam_i, topic in enumerate((TOPICS[0].name, TOPICS[1].name)):
        st = np.array([f[0] for f in frames[topic]])
        for j in range(s.n):
            t = ticks[s.frame_index[j]]
            ok = np.nonzero(st <= t)[0]
            newest = ok[np.argmax(st[ok])]
            assert t - st[newest] <= 0.1 * NS
            assert s.images[j, cam_i, 0, 0, 0] == frames[topic][newest][1]
    # the dropped stretch is reported and has no samples, the samples around it still carry full chunks
    scene_gaps = [g for g in s.gaps if g.stream == "camera scene"]
    assert len(scene_gaps) == 1 and scene_gaps[0].ticks >= 2
    gap_ticks = set(range(round(scene_gaps[0].start_s * 10), round(scene_gaps[0].end_s * 10) + 1))
    assert not gap_ticks & set(s.frame_index.tolist())
    assert s.n == 29 - len(gap_ticks)
    assert s.step_actions.shape[0] == 29  # state had no gap: every action exists for chunks


def test_build_split_stats_and_training_dataset(tmp_path):
    rng = np.random.default_rng(2)
    rec = tmp_path / "rec"
    gen = {}
    for i in range(4):
        poses, grip, _ = write_episode(rec, f"ep{i}", rng, k=12 + i, instruction=["stack the cup", "open it"][i % 2])
        acts = np.stack([SPACE.encode(poses[t], poses[t + 1], grip[t + 1]) for t in range(len(poses) - 1)])
        acts[:, 3:6] = rot.unwrap_rpy(acts[:, 3:6])
        gen[f"ep{i}"] = acts
    write_episode(rec, "bad", rng, k=10, success=False)
    report = build_dataset([rec], tmp_path / "ds", DatasetConfig(**CFG, val_fraction=0.25), progress=False)
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert [s["name"] for s in meta["skipped"]] == ["bad"]
    assert report.episodes == {"train": 3, "val": 1}
    train_eps = [e["name"] for e in meta["episodes"] if e["split"] == "train"]
    expected = ActionNormalizer.from_data(np.concatenate([gen[n] for n in train_eps]))
    np.testing.assert_allclose(meta["normalization"]["q01"], expected.q01)
    np.testing.assert_allclose(meta["normalization"]["q99"], expected.q99)
    assert meta["instructions"] == ["stack the cup", "open it"]

    train = TrainingDataset(tmp_path / "ds", "train")
    val = TrainingDataset(tmp_path / "ds", "val", normalize_actions=False)
    assert len(train) == report.samples["train"] and len(train.files) >= 2  # shards of 16 samples
    np.testing.assert_array_equal(np.concatenate(list(train.iter_column("frame_index"))), train.column("frame_index"))
    # no episode in both splits
    assert not set(train.column("episode_index").tolist()) & set(val.column("episode_index").tolist())
    item = train[len(train) - 1]
    assert item["images"].shape == (2, 16, 16, 3) and item["images"].dtype == np.uint8
    assert item["actions"].shape == (16, 7) and np.all(np.abs(item["actions"][:, :6]) <= 1.0)
    assert item["state"].shape == (8,) and abs(np.linalg.norm(item["state"][3:7]) - 1) < 1e-5
    raw = train.normalizer.unnormalize(item["actions"].astype(np.float64))
    np.testing.assert_allclose(raw[item["action_mask"]], train.raw("actions", len(train) - 1)[item["action_mask"]],
                               atol=1e-4)  # fmt: skip
    v = val[0]
    e = meta["episodes"][v["episode_index"]]
    np.testing.assert_allclose(v["actions"][v["action_mask"]], gen[e["name"]][v["frame_index"] :][:16], atol=1e-5)
    assert v["instruction"] in meta["instructions"]
    with pytest.raises(IndexError, match="out of range"):
        val[len(val)]


def test_split_is_by_episode_and_deterministic():
    names = [f"e{i}" for i in range(10)]
    a = split_episodes(names, 0.2, seed=3)
    assert a == split_episodes(names, 0.2, seed=3)
    assert sorted(a.values()).count("val") == 2
    assert list(split_episodes(["only"], 0.5, 0).values()) == ["train"]


def test_missing_topics_and_bad_options_are_explained(tmp_path):
    rng = np.random.default_rng(3)
    write_episode(tmp_path, "ep", rng, k=8)
    with pytest.raises(ValueError, match=r"no EE pose topic '/robot/ee'.*recorded topics are.*--pose-topic"):
        episode_samples(tmp_path / "ep", DatasetConfig(**{**CFG, "pose_topic": "/robot/ee"}))
    with pytest.raises(ValueError, match=r"has no camera\(s\) \['front'\]; it has \['scene', 'wrist'\]"):
        episode_samples(tmp_path / "ep", DatasetConfig(**{**CFG, "cameras": ("front",)}))
    with pytest.raises(ValueError, match="gripper command topic"):
        episode_samples(tmp_path / "ep", DatasetConfig(**{**CFG, "gripper_source": "command"}))
    with pytest.raises(ValueError, match="action_space must be one of"):
        DatasetConfig(action_space="joint")
    with pytest.raises(ValueError, match="rate_hz must be > 0"):
        DatasetConfig(rate_hz=0)
    with pytest.raises(FileExistsError, match="--overwrite"):
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "x").write_text("")
        build_dataset([tmp_path / "ep"], tmp_path / "out", DatasetConfig(**CFG), progress=False)


def test_roll_near_pi_lands_on_one_branch_for_every_episode(tmp_path):
    rng = np.random.default_rng(5)
    for i, roll0 in enumerate((np.pi - 0.02, -np.pi + 0.02, np.pi - 0.03, -np.pi + 0.01)):
        write_episode(tmp_path / "rec", f"e{i}", rng, k=10, roll0=roll0)
    meta_dir = tmp_path / "ds"
    build_dataset([tmp_path / "rec"], meta_dir, DatasetConfig(**CFG, val_fraction=0.0), progress=False)
    meta = json.loads((meta_dir / "meta.json").read_text())
    q01, q99 = np.array(meta["normalization"]["q01"]), np.array(meta["normalization"]["q99"])
    assert q99[3] - q01[3] < 1.0  # not the whole circle
    # the same rotation as the recording: decoding still reproduces the poses
    ds = TrainingDataset(meta_dir, "train", normalize_actions=False)
    for i in range(len(ds)):
        a = ds.raw("actions", i).astype(np.float64)
        assert abs(a[0, 3] - meta["angle_branch_center"][0]) < np.pi
    unbranched = tmp_path / "ds2"
    build_dataset([tmp_path / "rec"], unbranched, DatasetConfig(**CFG, val_fraction=0.0, consistent_angle_branch=False),
                  progress=False)  # fmt: skip
    meta2 = json.loads((unbranched / "meta.json").read_text())
    assert meta2["normalization"]["q99"][3] - meta2["normalization"]["q01"][3] > 5.0  # the pitfall it avoids


def test_pose_from_robot_state_and_gripper_from_commands(tmp_path):
    rng = np.random.default_rng(9)
    poses, grip, _ = write_episode(tmp_path, "alt", rng, k=20, alt=True)
    cfg = DatasetConfig(**{**CFG, "pose_topic": "franka_robot_state_broadcaster/robot_state"})  # namespace found
    s = episode_samples(tmp_path / "alt", cfg)
    assert s.gripper_source == "command" and s.n == 19
    generating = np.stack([SPACE.encode(poses[t], poses[t + 1], grip[t + 1]) for t in range(len(poses) - 1)])
    generating[:, 3:6] = rot.unwrap_rpy(generating[:, 3:6])
    generating[:, 3:6] -= 2 * np.pi * np.round((generating[0, 3:6] - s.angle_center) / (2 * np.pi))
    np.testing.assert_allclose(s.step_actions, generating, atol=1e-9)


def test_unsynchronized_camera_clock_is_reported(tmp_path):
    rng = np.random.default_rng(4)
    write_episode(tmp_path, "skew", rng, k=12, scene_clock_offset_ns=-3 * NS)  # camera clock 3 s behind
    s = episode_samples(tmp_path / "skew", DatasetConfig(**CFG))
    (warning,) = s.clock_warnings
    assert warning.startswith("/camera/scene/image_raw: header stamps are +3.0") and "--time-source receive" in warning
    fixed = episode_samples(tmp_path / "skew", DatasetConfig(**{**CFG, "time_source": "receive"}))
    assert fixed.clock_warnings == [] and fixed.gaps == []


def test_arm_joint_positions_are_stored_when_recorded(tmp_path):
    rng = np.random.default_rng(21)
    write_episode(tmp_path / "rec", "j", rng, k=20, joints=True, drop_joint_ticks={8, 9, 10})
    s = episode_samples(tmp_path / "rec" / "j", DatasetConfig(**CFG))
    # tick 8 still sees window 7's last message (~20 ms old, within the 50 ms tolerance); 9 and 10 see nothing
    assert [g.stream for g in s.gaps] == ["joints"] and s.gaps[0].ticks == 2
    assert not {9, 10} & set(s.frame_index.tolist()) and s.n == 19 - 2
    expected = np.stack([joint_q(7 if t == 8 else t) for t in s.frame_index])
    np.testing.assert_allclose(s.joint_positions, expected, atol=1e-6)
    assert s.step_actions.shape[0] == 19  # joints are observations only: actions still come from every EE pose
    build_dataset([tmp_path / "rec"], tmp_path / "ds", DatasetConfig(**CFG, val_fraction=0), progress=False)
    ds = TrainingDataset(tmp_path / "ds", "train")
    assert ds.meta["has_joint_positions"] is True
    np.testing.assert_allclose(ds[0]["joint_positions"], joint_q(int(ds[0]["frame_index"])), atol=1e-6)
    off = episode_samples(tmp_path / "rec" / "j", DatasetConfig(**{**CFG, "joint_topic": ""}))
    assert off.joint_positions is None and off.n == 19
