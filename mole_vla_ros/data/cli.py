"""`mole-vla dataset ...`: build training data from recorded episodes, recover crashed recordings, inspect both.

mole-vla dataset list ~/mole_vla_episodes
mole-vla dataset recover ~/mole_vla_episodes/_incomplete/episode_20261125_101500_000001
mole-vla dataset info ~/mole_vla_episodes/episode_20261125_101500_000001
mole-vla dataset build ~/mole_vla_episodes --out data/drawer --rate 10 --image-size 224 --cameras scene wrist
mole-vla dataset build ~/mole_vla_episodes --out data/drawer --lerobot data/drawer_lerobot
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _build(args) -> int:
    from mole_vla_ros.data.dataset import DatasetConfig, build_dataset, dataset_summary

    camera_topics = {}
    for item in args.camera_topic or ():
        name, sep, topic = item.partition("=")
        if not sep or not name or not topic:
            raise SystemExit(f"--camera-topic takes NAME=TOPIC (e.g. scene=/camera/scene/image_raw), got {item!r}")
        camera_topics[name] = topic
    config = DatasetConfig(
        rate_hz=args.rate,
        image_size=args.image_size,
        cameras=tuple(args.cameras or ()),
        chunk_size=args.chunk_size,
        action_space=args.action_space,
        pose_topic=args.pose_topic,
        action_source=args.action_source,
        target_pose_topic=args.target_topic,
        gripper_topic=args.gripper_topic,
        gripper_command_topic=args.gripper_command_topic,
        gripper_source=args.gripper_source,
        image_tolerance_s=args.image_tolerance,
        state_tolerance_s=args.state_tolerance,
        gripper_tolerance_s=args.gripper_tolerance,
        time_source=args.time_source,
        val_fraction=args.val_fraction,
        seed=args.seed,
        include_failures=args.include_failures,
        include_unlabelled=not args.exclude_unlabelled,
        shard_size=args.shard_size,
        gripper_open_fraction=args.gripper_open_fraction,
        joint_topic=args.joint_topic,
        consistent_angle_branch=not args.no_angle_branch,
        camera_topics=camera_topics,
        instruction=args.instruction or "",
    )
    report = build_dataset(args.episodes, args.out, config, overwrite=args.overwrite, progress=not args.no_progress)
    print(report.summary())
    print(dataset_summary(args.out))
    if args.lerobot:
        from mole_vla_ros.data.lerobot_export import export_lerobot

        path = export_lerobot(args.out, args.lerobot, repo_id=args.lerobot_repo_id, overwrite=args.overwrite)
        print(f"LeRobotDataset v3 written to {path}")
    return 0


def _recover(args) -> int:
    from mole_vla_ros.data.episode import INCOMPLETE_DIR, incomplete_episodes, recover_episode

    targets: list[Path] = []
    for p in map(Path, args.paths):
        if (p / INCOMPLETE_DIR).is_dir():
            targets += incomplete_episodes(p)
        else:
            targets.append(p)
    if not targets:
        print("nothing to recover")
        return 0
    failed = 0
    for t in targets:
        try:
            path = recover_episode(t)
        except (OSError, ValueError) as exc:
            failed += 1
            print(f"could not recover {t}: {exc}")
            continue
        meta = json.loads((path / "episode.json").read_text())
        rec = meta.get("recovery", {})
        print(f"recovered {path}: {rec.get('messages', '?')} messages, {rec.get('lost_tail_bytes', 0)} bytes lost")
    return 1 if failed else 0


def _info(args) -> int:
    from mole_vla_ros.data.dataset import META_JSON, dataset_summary
    from mole_vla_ros.data.episode import EpisodeReader

    p = Path(args.path)
    if (p / META_JSON).exists():
        print(dataset_summary(p))
        return 0
    with EpisodeReader(p) as r:
        m = r.metadata
        print(f"episode {r.name}: {m.get('status')} success={m.get('success')} instruction={r.instruction!r}")
        print(f"  robot {m.get('robot_type')}, source {m.get('source')}, duration {m.get('duration_s', 0):.2f} s, "
              f"cameras {sorted(m.get('cameras') or {})}, dropped {m.get('dropped_total', 0)}")  # fmt: skip
        for topic, msgtype in sorted(r.topics.items()):
            t = (m.get("topics") or {}).get(topic, {})
            rate = t.get("rate_hz")
            exp = t.get("expected_hz")
            line = f"  {topic} [{msgtype}] {r.message_counts.get(topic, 0)} msgs"
            if rate:
                line += f", {rate:.1f} Hz" + (f" (expected {exp:g})" if exp else "")
            if t.get("dropped"):
                line += f", {t['dropped']} dropped"
            print(line)
    return 0


def _list(args) -> int:
    from mole_vla_ros.data.episode import incomplete_episodes, list_episodes

    for p in list_episodes(args.root):
        m = json.loads((p / "episode.json").read_text())
        print(
            f"{p.name}\t{m.get('status')}\tsuccess={m.get('success')}\t{m.get('duration_s', 0):.1f}s\t{m.get('instruction')!r}"
        )
    for p in incomplete_episodes(args.root):
        print(f"{p.name}\tINCOMPLETE (mole-vla dataset recover {p})")
    return 0


def _plot(args) -> int:
    from mole_vla_ros.data.timeline import plot_episode_timeline

    out = Path(args.out or f"{Path(args.episode).name}_timeline.png")
    for tl in plot_episode_timeline(args.episode, out):
        gaps = f", {len(tl.gaps)} gaps (longest {max(b - a for a, b in tl.gaps):.3f} s)" if tl.gaps else ""
        print(f"{tl.topic}: {tl.stamps_s.size} msgs, {tl.rate_hz or 0:.1f} Hz{gaps}")
    print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    """Add `dataset` and its sub-commands to the `mole-vla` parser."""
    from mole_vla_ros.robot.franka import Topics
    from mole_vla_ros.runtime.action_space import ACTION_SPACES, DEFAULT_ACTION_SPACE

    parser = subparsers.add_parser(
        "dataset", help="recorded episodes -> training data; recover and inspect episodes", description=__doc__
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", help="episodes -> aligned samples + action chunks + q01/q99 stats (safetensors)")
    b.add_argument("episodes", nargs="+", help="episode directories or recording roots holding episodes")
    b.add_argument("--out", required=True, help="output dataset directory")
    b.add_argument("--rate", type=float, default=10.0, help="samples per second (the policy's control rate)")
    b.add_argument("--image-size", type=int, default=224, help="square image side in pixels")
    b.add_argument("--cameras", nargs="+", help="camera names in view order (default: all recorded, sorted)")
    b.add_argument(
        "--camera-topic",
        action="append",
        metavar="NAME=TOPIC",
        help="camera image topic for bags without episode.json (repeat per camera)",
    )
    b.add_argument("--instruction", help="instruction for episodes that carry none (plain ros2 bag recordings)")
    b.add_argument("--chunk-size", type=int, default=16, help="actions per chunk (CogACT: 16)")
    b.add_argument("--action-space", default=DEFAULT_ACTION_SPACE, choices=sorted(ACTION_SPACES))
    b.add_argument("--pose-topic", default=Topics.CURRENT_POSE, help="EE pose (PoseStamped/FrankaRobotState)")
    b.add_argument("--gripper-topic", default=Topics.GRIPPER_JOINT_STATES, help="gripper JointState (finger joints)")
    b.add_argument(
        "--joint-topic",
        default=Topics.JOINT_STATES,
        help="JointState with the arm joints, stored as extra proprioception when recorded ('' = never)",
    )
    b.add_argument("--gripper-command-topic", default=Topics.TELEOP_GRIPPER, help="std_msgs/Float32 in [0,1]")
    b.add_argument(
        "--action-source",
        default="auto",
        choices=["auto", "command", "state"],
        help="action targets: the recorded target pose (command), the next measured pose (state); auto: command "
        "when --target-topic has messages",
    )
    b.add_argument("--target-topic", default=Topics.TELEOP_TARGET_POSE, help="commanded target pose (PoseStamped)")
    b.add_argument("--gripper-source", default="auto", choices=["auto", "command", "width"])
    b.add_argument(
        "--gripper-open-fraction",
        type=float,
        default=0.9,
        help="width source: open when width >= this fraction of the episode's widest opening",
    )
    b.add_argument(
        "--no-angle-branch",
        action="store_true",
        help="keep each episode's absolute Euler angles as encoded (no common 2pi branch)",
    )
    b.add_argument("--image-tolerance", type=float, default=0.1, help="max image age at a sample (s)")
    b.add_argument("--state-tolerance", type=float, default=0.05, help="max EE pose age at a sample (s)")
    b.add_argument("--gripper-tolerance", type=float, default=0.2, help="max gripper state age at a sample (s)")
    b.add_argument("--time-source", default="header", choices=["header", "receive"])
    b.add_argument("--val-fraction", type=float, default=0.1, help="share of EPISODES held out for validation")
    b.add_argument("--seed", type=int, default=0, help="seed of the episode split")
    b.add_argument("--include-failures", action="store_true", help="keep episodes labelled failure")
    b.add_argument("--exclude-unlabelled", action="store_true", help="drop episodes without a success label")
    b.add_argument("--shard-size", type=int, default=1024, help="samples per safetensors file")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    b.add_argument("--lerobot", metavar="DIR", help="also export a LeRobotDataset v3 to DIR (needs pyarrow)")
    b.add_argument("--lerobot-repo-id", default="local/mole_vla", help="repo_id written into the LeRobot metadata")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_build)

    r = sub.add_parser("recover", help="salvage episodes whose recorder died (root or _incomplete/<name>)")
    r.add_argument("paths", nargs="+")
    r.set_defaults(func=_recover)

    i = sub.add_parser("info", help="summary of one episode or one built dataset")
    i.add_argument("path")
    i.set_defaults(func=_info)

    pl = sub.add_parser("plot", help="timeline of one episode: message stamps, gaps, rates (PNG)")
    pl.add_argument("episode")
    pl.add_argument("--out", help="PNG path (default: <episode>_timeline.png in the current directory)")
    pl.set_defaults(func=_plot)

    lst = sub.add_parser("list", help="episodes under a recording root (and unfinished ones)")
    lst.add_argument("root")
    lst.set_defaults(func=_list)
