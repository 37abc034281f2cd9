"""`mole-vla train`: train MoLe-VLA on recorded (or simulated) episodes, stage 1 (full depth) then stage 2 (MoLe).

    # stage 1: full depth (the CogACT role); --data takes a built dataset or episode directories
    mole-vla train --preset sim-default --data data/sim_pick --out runs/pick/full --stage full
    # stage 2: STAR router at k = N/2 + CogKD from an EMA teacher initialised from stage 1
    mole-vla train --preset sim-default --data data/sim_pick --out runs/pick/mole --stage mole \\
        --init-from runs/pick/full/final --active-layers 4
    # the ablation without CogKD, a resumed run, two CPU processes, several GPUs
    mole-vla train ... --stage mole --no-cogkd
    # the skip baselines trained with the same recipe and budget: k random layers per sample, or the first k
    mole-vla train ... --stage mole --skip-mode random
    mole-vla train ... --stage mole --skip-mode early
    mole-vla train ... --resume auto
    mole-vla train ... --nproc 2
    torchrun --nproc_per_node 8 -m mole_vla_ros.cli train --preset cogact-base --strategy fsdp ...

Every option left out keeps the preset's value (`--print-config` shows the result). The final checkpoint is
<out>/final, loadable by MoLeVLAPolicy.from_checkpoint; <out>/metrics.jsonl and <out>/summary.json record the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from mole_vla_ros.config_dicts import parse_assignment

log = logging.getLogger(__name__)

# CLI flag -> TrainingConfig field, for the plain value options
_VALUE_OPTIONS = {
    "stage": str,
    "init_from": str,
    "init_normalization": str,
    "steps": int,
    "batch_size": int,
    "grad_accum": int,
    "lr": float,
    "weight_decay": float,
    "warmup_steps": int,
    "lr_schedule": str,
    "min_lr_ratio": float,
    "grad_clip": float,
    "active_layers": int,
    "skip_mode": str,
    "kd_weight": float,
    "mse_share": float,
    "kd_form": str,
    "balance_weight": float,
    "partition_weight": float,
    "ema_decay": float,
    "gumbel_anneal": float,
    "seed": int,
    "cache_vision_features": str,
    "feature_cache_dtype": str,
    "log_interval": int,
    "eval_interval": int,
    "eval_batches": int,
    "save_interval": int,
    "keep_checkpoints": int,
    "device": str,
    "precision": str,
    "strategy": str,
    "threads": int,
    "dataset_rate_hz": float,
    "dataset_image_size": int,
}


def config_from_args(args):
    """The TrainingConfig these arguments describe (preset, then --config JSON, then individual options)."""
    from .config import TrainingConfig

    config = TrainingConfig.preset(args.preset)
    if args.config:
        data = json.loads(Path(args.config).read_text(encoding="utf-8"))
        config = config.replace(**data)
    changes = {}
    for name in _VALUE_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if args.no_cogkd:
        changes["cogkd"] = False
    if args.train_vision:
        changes["freeze_vision"] = False
    if args.augment:
        changes["augment.enabled"] = True
    if args.model_override:
        overrides = dict(config.model_overrides)
        overrides.update(
            dict(parse_assignment(t, "--model-override", "llm.num_layers=12") for t in args.model_override)
        )
        changes["model_overrides"] = overrides
    return config.replace(**changes) if changes else config


def run(args) -> int:
    from .trainer import train, train_worker

    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"mole-vla train: {exc}") from exc
    if args.print_config:
        print(config.to_json())
        return 0
    if not args.data:
        raise SystemExit("mole-vla train: --data is required (a built dataset or episode directories).")
    resume = args.resume
    if args.nproc > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise SystemExit("mole-vla train: --nproc cannot be combined with torchrun; use one or the other.")
        from .distributed import spawn_local

        log.info("starting %d CPU processes (gloo)", args.nproc)
        spawn_local(args.nproc, train_worker, config.to_json(), args.data, args.out, resume, not args.no_progress)
        summary_path = Path(args.out) / "summary.json"
        if summary_path.is_file():
            from .trainer import TrainingSummary

            print(TrainingSummary(**json.loads(summary_path.read_text(encoding="utf-8"))).text())
        return 0
    try:
        summary = train(config, args.data, args.out, resume=resume, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:  # bad paths, data or checkpoints: one sentence, no traceback
        if getattr(args, "verbose", False):
            raise
        raise SystemExit(f"mole-vla train: {exc}") from exc
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.text())
    return 0


def register(sub) -> None:
    from .config import TRAINING_PRESETS

    p = sub.add_parser(
        "train",
        help="train MoLe-VLA (stage full: full depth; stage mole: STAR router + CogKD)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", nargs="+", help="a built dataset directory, or episode directories / recording roots")
    p.add_argument("--out", default="runs/train", help="run directory (checkpoints, metrics, final model)")
    p.add_argument("--preset", default="tiny", choices=sorted(TRAINING_PRESETS), help="training + model preset")
    p.add_argument("--config", help="JSON file with TrainingConfig fields (applied after the preset)")
    p.add_argument("--stage", choices=["full", "mole"], help="full: full depth (stage 1); mole: router + CogKD")
    p.add_argument("--init-from", dest="init_from", help="start from this checkpoint (stage 2: <stage-1 run>/final)")
    p.add_argument(
        "--init-normalization",
        dest="init_normalization",
        choices=["checkpoint", "dataset"],
        help="with --init-from and a dataset whose action range differs: keep the checkpoint's q01/q99 (default; "
        "actions outside them are clipped) or re-fit them to the dataset",
    )
    p.add_argument("--resume", nargs="?", const="auto", help="continue a run: 'auto' (latest in --out) or a checkpoint")
    p.add_argument("--steps", type=int, help="total optimizer steps of this stage")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="samples per process per micro-batch")
    p.add_argument("--grad-accum", dest="grad_accum", type=int, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, help="AdamW learning rate (2e-5 for fine-tuning as the paper)")
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int, help="linear LR warmup steps")
    p.add_argument(
        "--lr-schedule",
        dest="lr_schedule",
        choices=["constant", "cosine"],
        help="after the warmup: constant (the paper) or cosine down to --min-lr-ratio x lr at the last step",
    )
    p.add_argument("--min-lr-ratio", dest="min_lr_ratio", type=float, help="cosine schedule's final LR / lr (0.1)")
    p.add_argument("--grad-clip", dest="grad_clip", type=float, help="max global grad norm (0 = off)")
    p.add_argument("--active-layers", dest="active_layers", type=int, help="k, layers STAR runs (stage mole)")
    p.add_argument("--no-cogkd", action="store_true", help="stage mole without the EMA teacher (ablation)")
    p.add_argument(
        "--skip-mode",
        dest="skip_mode",
        choices=["star", "random", "early"],
        help="stage mole: star (MoLe, default), or train the random-skip / early-exit baseline at the same k",
    )
    p.add_argument("--kd-weight", dest="kd_weight", type=float, help="lambda2 (default 0.5)")
    p.add_argument("--mse-share", dest="mse_share", type=float, help="lambda1, MSE share of the KD loss (0.5)")
    p.add_argument(
        "--kd-form", dest="kd_form", choices=["code", "paper"], help="CogKD as the released code or as the paper"
    )
    p.add_argument("--balance-weight", dest="balance_weight", type=float, help="lambda3 (0.01 as the code; paper 0.1)")
    p.add_argument(
        "--partition-weight",
        dest="partition_weight",
        type=float,
        help="not in the paper: weight of the router's partition loss (decided per sample, spread over the batch); 0",
    )
    p.add_argument(
        "--gumbel-anneal",
        dest="gumbel_anneal",
        type=float,
        help="STAR with router.gumbel_noise: noise falls linearly to 0 over this fraction of the steps (0 = constant)",
    )
    p.add_argument("--ema-decay", dest="ema_decay", type=float, help="EMA teacher decay (0.999)")
    p.add_argument("--train-vision", action="store_true", help="train the vision tower too (default: frozen)")
    p.add_argument(
        "--cache-vision-features",
        dest="cache_vision_features",
        choices=["auto", "on", "off"],
        help="run the frozen tower once and train on its features (auto: when frozen and not augmenting)",
    )
    p.add_argument("--feature-cache-dtype", dest="feature_cache_dtype", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--augment", action="store_true", help="random resized crop + colour jitter (off in the paper)")
    p.add_argument("--seed", type=int)
    p.add_argument("--log-interval", dest="log_interval", type=int)
    p.add_argument("--eval-interval", dest="eval_interval", type=int, help="steps between validation losses")
    p.add_argument("--eval-batches", dest="eval_batches", type=int)
    p.add_argument("--save-interval", dest="save_interval", type=int, help="steps between resumable checkpoints")
    p.add_argument("--keep-checkpoints", dest="keep_checkpoints", type=int)
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto: bf16 autocast on CUDA")
    p.add_argument("--strategy", choices=["auto", "ddp", "fsdp"], help="multi-process strategy (fsdp: CUDA only)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--nproc", type=int, default=1, help="CPU processes on this machine (gloo DDP)")
    p.add_argument("--rate", dest="dataset_rate_hz", type=float, help="sample rate when --data holds raw episodes")
    p.add_argument("--image-size", dest="dataset_image_size", type=int, help="image size when building from episodes")
    p.add_argument(
        "--model-override", action="append", metavar="NAME=VALUE", help="model config override, e.g. llm.num_layers=12"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved training config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.set_defaults(func=run)
