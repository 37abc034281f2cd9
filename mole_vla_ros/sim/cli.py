"""`mole-vla sim ...`: scripted demonstrations and closed-loop evaluation on the simulated FR3.

    mole-vla sim record --task pick --episodes 50 --out data/sim_pick --seed 0
    mole-vla sim eval --checkpoint runs/pick/ckpt --task pick --episodes 20 --active-layers 4 8 --skip-mode star random
    mole-vla sim eval --scripted --task stack --episodes 10     # the closed loop with the scripted expert as policy
    mole-vla sim show --task pick --seed 3 --out cameras.png    # what the cameras see (checks headless rendering)
    mole-vla sim compare a.json:star b.json:star --setting "full" a.json:full    # paired, pooled seed sets

mujoco is imported only when a sub-command runs, so `mole-vla --help` works without the `sim` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _sim_config(args):
    from mole_vla_ros.sim.config import SimConfig

    return SimConfig(
        robot_type=args.robot_type,
        control_hz=args.control_hz,
        image_size=args.image_size,
        cameras=tuple(args.cameras),
        render=bool(args.cameras),
    )


def _add_sim_args(p: argparse.ArgumentParser, image_size: int | None, seed: int) -> None:
    from mole_vla_ros.sim.tasks import TASKS

    p.add_argument("--task", required=True, choices=sorted(TASKS), help="pick (red/green cube) or stack")
    p.add_argument("--episodes", type=int, default=10, help="number of episodes (seeds seed..seed+N-1)")
    p.add_argument("--seed", type=int, default=seed, help="first episode seed (each episode is reproducible alone)")
    p.add_argument("--control-hz", type=float, default=10.0, help="camera / control rate of the simulator")
    p.add_argument(
        "--image-size",
        type=int,
        default=image_size,
        help="square camera resolution in pixels"
        + (f" (default {image_size})" if image_size else " (default: the checkpoint's training image size, else 224)"),
    )
    p.add_argument("--cameras", nargs="*", default=["scene", "wrist"], help="cameras to render (none: state only)")
    p.add_argument("--robot-type", default="fr3", choices=["fr3", "panda"], help="joint / frame name prefix")


def _takeover_factory(args):
    """`sim record --takeover-checkpoint`: the policy that drives each episode before the expert takes over."""
    if not args.takeover_checkpoint:
        return None
    from mole_vla_ros.sim.evaluate import load_policy
    from mole_vla_ros.sim.takeover import PolicyTakeover, TakeoverConfig

    if args.image_size != (size := _checkpoint_image_size(args.takeover_checkpoint)):
        log.warning(
            "recording at %d px but %s was trained on %d px: the policy sees resized frames (closed-loop behaviour "
            "depends on it); pass --image-size %d to record what it saw in training",
            args.image_size,
            args.takeover_checkpoint,
            size,
            size,
        )
    config = TakeoverConfig(
        after_s=tuple(args.takeover_after),
        active_layers=args.takeover_active_layers,
        keep_successes=args.takeover_keep_successes,
        runtime=_latency_overrides(args.latency),
    )
    factory = load_policy(args.takeover_checkpoint, device=args.device)

    def build(sim):
        policy = factory(args.takeover_active_layers, args.takeover_skip_mode, sim)
        return PolicyTakeover(policy, sim, config, source=str(args.takeover_checkpoint))

    return build


def run_record(args) -> int:
    from mole_vla_ros.sim.expert import ExpertConfig
    from mole_vla_ros.sim.record import record_episodes

    expert = ExpertConfig(mistake_prob=args.mistake_prob, command_noise_std=args.command_noise)
    takeover = _takeover_factory(args)
    results = record_episodes(
        args.out, args.task, args.episodes, args.seed, _sim_config(args), expert, takeover=takeover
    )
    recorded = [r for r in results if not r.skipped]
    ok = sum(r.success for r in recorded)
    retries = sum(r.retries for r in recorded)
    print(f"recorded {len(recorded)} episodes into {args.out}: {ok} successful, {retries} expert recoveries")
    if takeover is not None:
        held = sum(bool(r.takeover and r.takeover["policy_held"] == "target") for r in recorded)
        print(
            f"expert takeover of {args.takeover_checkpoint}: {len(results) - len(recorded)} of {len(results)} seeds "
            f"skipped (the policy succeeded before its takeover time); {held} recorded episodes start with the "
            "named cube in hand"
        )
    instructions = sorted({r.instruction for r in recorded})
    print("instructions: " + "; ".join(f"{i!r} x{sum(r.instruction == i for r in recorded)}" for i in instructions))
    return 0 if ok or not recorded else 1


def run_show(args) -> int:
    import numpy as np
    from PIL import Image

    from mole_vla_ros.sim.env import TabletopSim

    with TabletopSim(_sim_config(args), args.task) as sim:
        obs = sim.reset(args.seed)
        if not obs.images:
            raise SystemExit("sim show: no cameras to render; pass --cameras scene wrist")
        row = np.concatenate([obs.images[c].image for c in sim.config.cameras], axis=1)
        Image.fromarray(row).save(args.out)
        print(f"{args.out}: cameras {list(sim.config.cameras)} (MUJOCO_GL={sim_gl_backend()}); {sim.instruction!r}")
    return 0


def sim_gl_backend() -> str:
    from mole_vla_ros.sim import gl

    return gl.BACKEND


def _runtime_overrides(assignments: list[str] | None) -> dict:
    """--set scheduling.execute_horizon=4 ...: dotted runtime config keys (checked when the runtime config is built)."""
    from mole_vla_ros.config_dicts import parse_assignment

    return dict(parse_assignment(t, "--set", "scheduling.ensemble.enabled=true") for t in assignments or [])


def _latency_overrides(text: str) -> dict:
    """--latency: 'measured' (real compute time, not reproducible) or seconds of simulated inference latency."""
    if text == "measured":
        return {"scheduling.latency_mode": "measured"}
    try:
        seconds = float(text)
    except ValueError:
        raise SystemExit(f"sim eval: --latency must be 'measured' or seconds (e.g. 0.1), got {text!r}") from None
    return {"scheduling.latency_mode": "simulated", "scheduling.simulated_latency_s": seconds}


def _checkpoint_image_size(checkpoint: str) -> int:
    from mole_vla_ros.model.checkpoint import read_checkpoint_meta

    size = int(read_checkpoint_meta(checkpoint)["config"]["image_size"])
    log.info("rendering the cameras at %d px, the checkpoint's training image size (--image-size to change)", size)
    return size


def run_eval(args) -> int:
    from mole_vla_ros.sim.evaluate import (
        EvalSettings,
        PolicySpec,
        evaluate_grid,
        format_table,
        load_policy,
        scripted_policy_factory,
    )

    if args.image_size is None:
        # render at the resolution the checkpoint was trained on: a larger render resized down is a different image
        # (aliasing, cube edges), and closed-loop success moves with it
        args.image_size = _checkpoint_image_size(args.checkpoint) if args.checkpoint else 224
    settings = EvalSettings(
        task=args.task,
        episodes=args.episodes,
        seed=args.seed,
        sim=_sim_config(args),
        commands_per_frame=args.commands_per_frame,
        max_seconds=args.max_seconds,
        runtime={**_latency_overrides(args.latency), **_runtime_overrides(args.set)},
        gif_dir=Path(args.gif) if args.gif else None,
        gif_episodes=args.gif_episodes,
    )
    if args.scripted == bool(args.checkpoint):
        raise SystemExit("sim eval: pass exactly one of --checkpoint DIR or --scripted")
    if args.workers < 1:
        raise SystemExit(f"sim eval: --workers must be >= 1, got {args.workers}")
    if args.scripted:
        factory = scripted_policy_factory()
        ks, modes = [None], ["scripted"]
    else:
        factory = load_policy(args.checkpoint, device=args.device, cfg_scale=args.cfg_scale)
        ks = args.active_layers or [None]
        modes = args.skip_mode or [None]
    if args.workers > 1:  # each process loads the policy itself
        factory = PolicySpec(args.checkpoint, args.device, args.cfg_scale)
    results = evaluate_grid(factory, settings, ks, modes, workers=args.workers)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def run_compare(args) -> int:
    from mole_vla_ros.sim.compare import (
        compare_settings,
        comparison_dict,
        format_comparison,
        load_setting,
        plot_comparison,
        settings_from_files,
    )

    if not args.files and not args.setting:
        raise SystemExit("sim compare: name result files, or --setting LABEL FILE [FILE ...] (repeatable)")
    try:
        settings = settings_from_files(args.files or [])
        settings += [load_setting(label, specs) for label, *specs in args.setting or []]
        ref, comparisons = compare_settings(settings, args.reference)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"sim compare: {exc}") from exc
    print(format_comparison(settings, ref, comparisons))
    if args.json:
        Path(args.json).write_text(json.dumps(comparison_dict(settings, ref, comparisons), indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot_comparison(settings, args.plot, ref)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sim", help="simulated FR3: scripted demonstrations and closed-loop evaluation")
    sim_sub = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")

    rec = sim_sub.add_parser("record", help="record scripted expert episodes exactly as the recorder node does")
    _add_sim_args(rec, image_size=224, seed=0)
    rec.add_argument("--out", required=True, help="output directory (one sub-directory per episode)")
    rec.add_argument("--mistake-prob", type=float, default=0.3, help="chance the first grasp misses (recoveries)")
    rec.add_argument("--command-noise", type=float, default=0.0015, help="per-step command jitter std (m)")
    take = rec.add_argument_group(
        "expert takeover (DAgger-style data)",
        "a policy drives each episode through the runtime core, as in `sim eval`, until a takeover time drawn per "
        "episode; the expert then takes over from that state and only its part is recorded "
        "(episodes sim_<task>_takeover_seed<N>)",
    )
    take.add_argument("--takeover-checkpoint", help="checkpoint directory of the policy that drives first")
    take.add_argument(
        "--takeover-after",
        type=float,
        nargs=2,
        default=[1.0, 6.0],
        metavar=("LOW", "HIGH"),
        help="takeover time window in seconds (uniform per episode)",
    )
    take.add_argument("--takeover-active-layers", type=int, help="STAR k for the policy (default: checkpoint's)")
    take.add_argument(
        "--takeover-skip-mode", choices=["star", "random", "early", "full"], help="layer-skip mode for the policy"
    )
    take.add_argument(
        "--takeover-keep-successes",
        action="store_true",
        help="also record seeds the policy solved before the takeover (default: skip them)",
    )
    take.add_argument("--latency", default="0.1", help="inference latency the runtime assumes (as in sim eval)")
    take.add_argument("--device", default="cpu", help="torch device for the policy")
    rec.set_defaults(func=run_record)

    show = sim_sub.add_parser("show", help="render the cameras of one episode's start into a PNG (setup check)")
    _add_sim_args(show, image_size=224, seed=0)
    show.add_argument("--out", default="sim_cameras.png", help="PNG to write (cameras side by side)")
    show.set_defaults(func=run_show)

    ev = sim_sub.add_parser("eval", help="closed-loop success rate of a checkpoint through the runtime core")
    # seeds from 1000 on: scenes the recorded demonstrations (seeds 0, 1, ...) never showed
    _add_sim_args(ev, image_size=None, seed=1000)
    ev.add_argument("--checkpoint", help="checkpoint directory (model + normalization)")
    ev.add_argument("--scripted", action="store_true", help="use the scripted expert as the policy (sanity check)")
    ev.add_argument("--device", default="cpu", help="torch device for the model")
    ev.add_argument("--active-layers", type=int, nargs="*", help="STAR k values to compare (default: checkpoint's)")
    ev.add_argument(
        "--skip-mode", nargs="*", choices=["star", "random", "early", "full"], help="layer-skip modes to compare"
    )
    ev.add_argument("--commands-per-frame", type=int, default=5, help="runtime command ticks per camera frame")
    ev.add_argument(
        "--latency",
        default="0.1",
        help="inference latency the runtime assumes: seconds (simulated, reproducible) or 'measured' (real time)",
    )
    ev.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="runtime config override, as in the node's parameter file (repeatable), e.g. "
        "scheduling.execute_horizon=4 or scheduling.ensemble.enabled=true",
    )
    ev.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default: the checkpoint's)")
    ev.add_argument("--max-seconds", type=float, help="episode time limit (default: the task's)")
    ev.add_argument("--gif", help="directory for rollout GIFs (scene camera)")
    ev.add_argument("--gif-episodes", type=int, default=2, help="episodes per configuration saved as GIF")
    ev.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes running episodes in parallel, one torch thread each (the results of one process run with "
        "OMP_NUM_THREADS=1), e.g. --workers 16",
    )
    ev.add_argument("--json", help="also write the results as JSON here")
    ev.set_defaults(func=run_eval)

    cmp_ = sim_sub.add_parser(
        "compare",
        help="success rates of several sim eval results, pooled over seed sets and paired episode by episode",
        description="Each FILE is a `sim eval --json` file (FILE:MODE or FILE:MODE@K picks one of its rows). "
        "Settings are compared with the reference on the seeds both ran: the same seed is the same scene and "
        "diffusion noise, so the episodes only one setting solved decide (McNemar's exact test).",
    )
    cmp_.add_argument("files", nargs="*", help="result files; every row becomes a setting named after its file")
    cmp_.add_argument(
        "--setting",
        nargs="+",
        action="append",
        metavar="LABEL FILE",
        help="a named setting pooling one row of each FILE (e.g. two seed sets); repeatable",
    )
    cmp_.add_argument("--reference", help="label of the setting the others are paired with (default: the first)")
    cmp_.add_argument("--json", help="also write the comparison as JSON here")
    cmp_.add_argument("--plot", help="write a bar chart of the success rates with their intervals (PNG)")
    cmp_.set_defaults(func=run_compare)

    def _help(_args):
        p.print_help()
        return 2

    p.set_defaults(func=_help)
