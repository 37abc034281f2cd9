"""`mole-vla replay BAG`: run the policy node's core on a recorded bag, without ROS, and report what it would do.

    mole-vla replay models/samples/sim_pick_seed000000 --out out/replay
    mole-vla replay my_bag/ --checkpoint runs/pick/ckpt --instruction "pick up the red cube" --seed 1
    mole-vla replay bag.mcap --camera scene=/cam_high/color/image_raw --camera wrist=/cam_wrist/color/image_raw

Writes OUT/bag (MCAP: the input topics + everything the node would publish; `ros2 bag play OUT/bag`, or open it in
Foxglove / RViz), OUT/report.json, OUT/report.md and OUT/plots/*.png, and prints the summary table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mole_vla_ros.replay.errors import ReplayError

log = logging.getLogger(__name__)

# The `make demo` input among models/samples/ (a bag recorded with `mole-vla sim record`).
DEMO_BAG = "sim_pick_seed000000"


def execute(opts, policy: Any = None, label: str = "", plots: bool = True, echo: bool = True) -> dict:
    """Replay, score, write report.json/report.md (+ plots) into opts.out, print the table; returns the report."""
    from mole_vla_ros.replay.engine import run_replay
    from mole_vla_ros.replay.report import build_report, format_text, write_report

    result = run_replay(opts, policy=policy)
    report = build_report(result, model_label=label)
    if plots:
        from mole_vla_ros.replay.plots import write_plots

        write_plots(result, report, Path(opts.out) / "plots", title=label or "")
    write_report(report, opts.out)
    if echo:
        print(format_text(report))
    return report


def _camera_map(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, topic = item.partition("=")
        if not sep or not name or not topic:
            raise ReplayError(f"--camera expects NAME=TOPIC (e.g. scene=/camera/scene/image_raw), got {item!r}")
        out[name] = topic
    return out


def _label_for(checkpoint: str) -> str:
    from mole_vla_ros.replay.untrained import UNTRAINED_LABEL, is_untrained

    return UNTRAINED_LABEL if checkpoint and is_untrained(checkpoint) else ""


def run(args) -> int:
    import dataclasses

    from mole_vla_ros.replay.engine import ReplayOptions

    ks = list(dict.fromkeys(args.active_layers or [None]))
    try:
        opts = ReplayOptions(
            bag=args.bag,
            out=args.out,
            checkpoint=args.checkpoint or "",
            instruction=args.instruction or "",
            params=args.params,
            seed=args.seed,
            active_layers=ks[0],
            skip_mode=args.skip_mode or "",
            namespace=args.namespace or "",
            cameras=_camera_map(args.camera),
            dry_run=args.dry_run,
            enable=not args.no_enable,
            device=args.device or "",
            progress=not args.no_progress,
            start_s=args.start,
            duration_s=args.duration,
        )
        label = _label_for(opts.checkpoint)
        if len(ks) == 1:
            execute(opts, label=label, plots=not args.no_plots)
            return 0
        # several k: one policy, the same seeds, one replay per k into OUT/k<k>, then the comparison
        policy = load_replay_policy(opts)
        reports = {}
        for k in ks:
            print(f"\n=== k = {k} ===")
            opts_k = dataclasses.replace(opts, active_layers=k, out=Path(opts.out) / f"k{k}")
            reports[k] = execute(opts_k, policy=policy, label=label, plots=not args.no_plots)
        print()
        print(compare_layers(reports, Path(opts.out)))
    except ReplayError as exc:
        print(f"mole-vla replay: error: {exc}")
        return 2
    return 0


def load_replay_policy(opts):
    """The policy `run_replay` would load for `opts` (parameters file + overrides), loaded once for reuse."""
    from mole_vla_ros.replay.engine import _settings
    from mole_vla_ros.ros.policy_source import load_policy

    settings, _, _ = _settings(opts)
    try:
        return load_policy(settings.node.policy)
    except (ValueError, FileNotFoundError) as exc:
        raise ReplayError(f"cannot load the policy: {exc}") from None


def compare_layers(reports: dict, out: Path) -> str:
    """A table of error, latency and speed per number of active layers k; also written to OUT/compare.json."""
    import json

    rows = []
    for k, r in reports.items():
        e = r["errors"]
        lat = r["latency_ms"].get("model_call_ms", {})

        def mean(key: str, errors: dict = e) -> float | None:
            return errors.get(key, {}).get("executed", {}).get("mean")

        rows.append(
            {
                "k": k,
                "mean_active_layers": r["layers"].get("mean_active"),
                "translation_m_executed": mean("translation_m"),
                "rotation_rad_executed": mean("rotation_rad"),
                "gripper_accuracy_executed": mean("gripper_accuracy"),
                "model_ms_median": lat.get("median"),
                "llm_ms_median": r["latency_ms"].get("llm", {}).get("median"),
                "steps_per_s": r["speed"]["steps_per_s"],
                "chunks": r["counts"]["chunks"],
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")

    def f(v, scale=1.0, fmt=".1f"):
        return "-" if v is None else format(v * scale, fmt)

    lines = [
        f"{'k':>4}{'layers':>8}{'transl. mm':>12}{'rot. deg':>10}{'gripper %':>11}{'model ms':>10}{'llm ms':>9}"
        f"{'steps/s':>9}",
    ]
    for row in rows:
        lines.append(
            f"{row['k']!s:>4}{f(row['mean_active_layers']):>8}{f(row['translation_m_executed'], 1000):>12}"
            f"{f(row['rotation_rad_executed'], 57.29577951308232):>10}{f(row['gripper_accuracy_executed'], 100):>11}"
            f"{f(row['model_ms_median']):>10}{f(row['llm_ms_median']):>9}{f(row['steps_per_s']):>9}"
        )
    lines.append(f"(errors: executed actions vs the recorded motion; written to {out / 'compare.json'})")
    return "\n".join(lines)


def demo(root: Path, model_dir: Path, bag: Path, out: str | Path = "out/demo") -> int:
    """`make demo`: the sample bag through the bundled default model, or, while none is bundled, through an
    UNTRAINED tiny model built on the spot and labelled as such everywhere its output appears."""
    from mole_vla_ros.replay.engine import ReplayOptions
    from mole_vla_ros.replay.untrained import UNTRAINED_LABEL, build_untrained_checkpoint, is_untrained

    out = Path(out)
    if (model_dir / "config.json").is_file():
        checkpoint, label = model_dir, (UNTRAINED_LABEL if is_untrained(model_dir) else "")
        print(f"make demo: model {model_dir}")
    else:
        print(
            f"make demo: no trained default model yet ({model_dir} has no config.json; `mole-vla train` makes one).\n"
            f"make demo: using an {UNTRAINED_LABEL}."
        )
        from mole_vla_ros.replay.bag import InputBag

        with InputBag(bag) as b:
            cams = tuple(sorted({t.name.split("/")[-2] for t in b.topics.values() if t.name.endswith("/image_raw")}))
        checkpoint = build_untrained_checkpoint(out / "untrained_tiny_model", cams or ("scene",), bag_path=bag)
        label = UNTRAINED_LABEL
    print(f"make demo: replaying {bag}\n")
    try:
        execute(ReplayOptions(bag=bag, out=out, checkpoint=str(checkpoint), seed=0), label=label)
    except ReplayError as exc:
        print(f"make demo: error: {exc}")
        return 2
    print(f"\nmake demo: done. Output bag, report and plots are in {out.resolve()}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a rosbag2 bag through the policy node's core (no ROS needed) and report",
        description=__doc__,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or MCAP), episode directory, or .mcap file")
    p.add_argument(
        "--checkpoint", default="", help="checkpoint directory (default: policy.checkpoint, else models/default)"
    )
    p.add_argument("--instruction", default="", help="task text (default: the bag's instruction topic / episode.json)")
    p.add_argument("--out", default="out/replay", help="output directory for bag/, report.json, report.md, plots/")
    p.add_argument("--params", default=None, help="node parameter file (default: config/mole_vla.yaml)")
    p.add_argument("--seed", type=int, default=None, help="seed of the policy and the runtime (same seed, same result)")
    p.add_argument(
        "--active-layers",
        type=int,
        nargs="+",
        default=None,
        help="LLM layers STAR runs per step (default: checkpoint's); several values replay once per k and compare",
    )
    p.add_argument("--namespace", default="", help="robot namespace of the bag's topics (e.g. fr3)")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=TOPIC", help="camera topic (repeatable)")
    p.add_argument("--start", type=float, default=0.0, help="seconds into the bag where the replay starts")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to replay (default: to the end)")
    p.add_argument("--device", default="", help="torch device (default: policy.device of the parameters)")
    p.add_argument("--dry-run", action="store_true", help="keep the parameters' dry run: previews only, no commands")
    p.add_argument("--no-enable", action="store_true", help="never enable the runtime (as if nobody called ~/enable)")
    p.add_argument(
        "--skip-mode",
        default="",
        choices=["", "star", "full", "random", "early"],
        help="layer selection (default: params)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
