"""`mole-vla evaluate`: held-out action error and FLOPs of full depth, MoLe, random skip, early exit, no-CogKD.

    mole-vla evaluate --checkpoint runs/pick/mole/final --data runs/pick/full/dataset \\
        --baseline-checkpoint runs/pick/full/final --ablation-checkpoint runs/pick/mole_nokd/final \\
        --random-checkpoint runs/pick/random/final --early-checkpoint runs/pick/early/final --out runs/pick/eval

--data is a built dataset (its validation split holds the held-out episodes) or raw episode directories, which
are then all held out: they are built into <out>/dataset with every episode in one split.
Prints the table, writes <out>/eval.json and the error-vs-FLOPs plot <out>/eval.png.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _held_out_dir(paths: list[str], out: Path, image_size: int, rate_hz: float) -> tuple[Path, str]:
    from .data import is_built_dataset

    if len(paths) == 1 and is_built_dataset(paths[0]):
        return Path(paths[0]), "val"
    from mole_vla_ros.data.dataset import DatasetConfig, build_dataset

    target = out / "dataset"
    if not is_built_dataset(target):
        # every given episode is held out: put them all in "train" (val_fraction 0) and evaluate that split
        build_dataset(paths, target, DatasetConfig(rate_hz=rate_hz, image_size=image_size, val_fraction=0.0))
    return target, "train"


def run(args) -> int:
    from mole_vla_ros.model.checkpoint import read_checkpoint_meta

    from .evaluate import (
        evaluate_methods,
        format_table,
        instruction_sensitivity,
        load_held_out,
        plot_results,
        standard_methods,
    )

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_checkpoint_meta(args.checkpoint)["config"]
    k = args.active_layers or int(meta["active_layers"])
    n = int(meta["llm"]["num_layers"])
    if not 1 <= k <= n:
        raise SystemExit(f"mole-vla evaluate: --active-layers must be in 1..{n} for this checkpoint, got {k}.")
    dataset_dir, split = _held_out_dir(args.data, out, int(meta["image_size"]), args.rate)
    split = args.split or split
    data = load_held_out(dataset_dir, split, args.max_samples, args.seed)
    methods = standard_methods(
        args.checkpoint,
        k,
        args.baseline_checkpoint,
        args.ablation_checkpoint,
        args.random_checkpoint,
        args.early_checkpoint,
    )
    results = evaluate_methods(
        methods, data, args.batch_size, args.seed, args.device, not args.no_progress, args.repeats
    )
    table = format_table(results)
    listening = instruction_sensitivity(args.checkpoint, data, k, "star", args.batch_size, args.seed, args.device)
    if listening:
        table += (
            f"\ninstruction swap (MoLe k={k}): chunk end points move {listening['end_point_change_m'] * 1e3:.1f} mm when "
            f"each sample gets another instruction ({' / '.join(listening['instructions'])}); their error is "
            f"{listening['end_point_error_m'] * 1e3:.1f} mm. Near zero = the policy ignores the words."
        )
    print(f"held-out data: {dataset_dir} (split {split}, {len(data)} samples), k={k} of N={n}")
    print(table)
    payload = {
        "dataset": str(dataset_dir),
        "split": split,
        "samples": len(data),
        "active_layers": k,
        "num_layers": n,
        "results": [r.to_dict() for r in results],
        "instruction_swap": listening,
    }
    (out / "eval.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "eval.txt").write_text(table + "\n", encoding="utf-8")
    plot = plot_results(results, str(out / "eval.png"))
    print(f"wrote {out / 'eval.json'}, {out / 'eval.txt'} and {plot}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="held-out action error vs FLOPs: full depth, MoLe, random skip, early exit, no CogKD",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="the MoLe (stage 2) checkpoint directory")
    p.add_argument("--data", nargs="+", required=True, help="a built dataset (val split) or held-out episodes")
    p.add_argument("--baseline-checkpoint", help="the full-depth (stage 1) checkpoint: full-depth row + baselines")
    p.add_argument("--ablation-checkpoint", help="a stage-2 checkpoint trained with --no-cogkd")
    p.add_argument("--random-checkpoint", help="a stage-2 checkpoint trained with --skip-mode random (fair baseline)")
    p.add_argument("--early-checkpoint", help="a stage-2 checkpoint trained with --skip-mode early (fair baseline)")
    p.add_argument("--active-layers", type=int, help="k (default: the checkpoint's)")
    p.add_argument("--split", choices=["train", "val"], help="dataset split to evaluate (default: val)")
    p.add_argument("--max-samples", type=int, help="evaluate a fixed random subset of this many samples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="diffusion noise seed (the same for every method)")
    p.add_argument("--repeats", type=int, default=1, help="diffusion-noise seeds per method (mean ± spread)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    p.add_argument("--rate", type=float, default=10.0, help="sample rate when --data holds raw episodes")
    p.add_argument("--out", default="runs/eval", help="directory for eval.json, eval.txt and eval.png")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
