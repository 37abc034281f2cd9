"""The training loop behind `mole-vla train`: both stages, one process or many, resumable.

    summary = train(TrainingConfig.preset("tiny", steps=100), data=["data/pick"], output_dir="runs/pick_full")
    summary = train(TrainingConfig.preset("tiny", stage="mole", init_from="runs/pick_full/final"), ...)

What a step does (global batch = batch_size x grad_accum x world_size samples):
- every micro-batch m of step s takes stream positions [s*G + m*b, s*G + (m+1)*b) of `SampleOrder` and draws all its
  randomness (diffusion t and noise, CFG dropout, router dropout, augmentation) from a seed derived from (seed, s, m);
  micro-batch m runs on process m % world_size. So the same global batch gives the same loss however it is split
  over processes and accumulation, and a resumed run repeats an uninterrupted one bit for bit;
- loss = model.compute_loss(...)["total"] / grad_accum; DDP averages gradients over processes;
- clip the global grad norm, AdamW step, LR schedule step, then the EMA teacher follows the student (spec 3.3);
- rank 0 logs metrics.jsonl (and TensorBoard when installed), shows a tqdm bar with loss and samples/s, writes
  resumable checkpoints every `save_interval` steps and `final/` (a MoLeVLAPolicy checkpoint) at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import TrainingConfig, gumbel_noise_scale, lr_factor
from .data import SampleOrder, SplitData, cached_vision_features, open_split, resolve_dataset
from .distributed import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed, resolve_device
from .state import (
    latest_checkpoint,
    load_model_weights,
    load_teacher_weights,
    load_training_state,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)

log = logging.getLogger(__name__)

FINAL_DIR = "final"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "train_config.json"
PROBE_SAMPLES = 16  # fixed train samples whose router choice is reported before and after training


@dataclass
class TrainingSummary:
    """What a finished run reports (also written to <run>/summary.json)."""

    stage: str
    steps: int
    start_step: int
    samples_seen: int
    seconds: float
    samples_per_s: float
    final_loss: float
    first_loss: float | None
    final_diffusion: float
    final_cogkd: float
    final_balance: float
    val_loss: float | None
    active_layers: int
    num_layers: int
    layer_usage: list[float]
    router_probe_initial: list[list[int]]
    router_probe_final: list[list[int]]
    checkpoint: str
    dataset: str
    world_size: int
    losses: list[float] = field(default_factory=list)  # per-step total loss (rank-averaged)
    device: str = ""  # where it trained ("cuda:0", "cpu"), its compute precision and multi-process strategy
    precision: str = ""
    strategy: str = ""
    peak_gpu_memory_gib: float | None = None  # this process's peak CUDA allocation (weights, optimizer, activations)
    # median over the probe samples of the router's logit gap between its k-th and (k+1)-th layer, for runs that
    # train the router (None otherwise): how decided STAR's choice is. Far below 1 it is a near-tie
    router_margin_initial: float | None = None
    router_margin_final: float | None = None
    # the last logged partition loss (router.partition_loss) for runs that weight it (None otherwise)
    final_partition: float | None = None

    def text(self) -> str:
        usage = " ".join(f"{u:.2f}" for u in self.layer_usage)
        changed = sum(a != b for a, b in zip(self.router_probe_initial, self.router_probe_final))
        lines = [
            f"training summary ({self.stage} stage, {self.world_size} process(es))",
            f"  steps {self.start_step} -> {self.steps}, {self.samples_seen} samples in {self.seconds:.1f} s "
            f"({self.samples_per_s:.1f} samples/s)",
            f"  loss {self.first_loss if self.first_loss is not None else float('nan'):.4f} -> {self.final_loss:.4f} "
            f"(diffusion {self.final_diffusion:.4f}, cogkd {self.final_cogkd:.3g}, balance {self.final_balance:.4f}"
            + ("" if self.final_partition is None else f", partition {self.final_partition:.4f}")
            + ")",
            f"  validation diffusion loss: {'n/a' if self.val_loss is None else f'{self.val_loss:.4f}'}",
            f"  layers: k={self.active_layers} of N={self.num_layers}; usage per layer: {usage}",
            f"  router choice changed on {changed}/{len(self.router_probe_final)} probe samples",
            *self._margin_lines(),
            f"  checkpoint: {self.checkpoint}",
        ]
        if self.device:
            memory = "" if self.peak_gpu_memory_gib is None else f", peak GPU memory {self.peak_gpu_memory_gib:.1f} GiB"
            lines.insert(1, f"  hardware: {self.device}, {self.precision}, {self.strategy or 'single process'}{memory}")
        return "\n".join(lines)

    def _margin_lines(self) -> list[str]:
        from mole_vla_ros.model.router import NEAR_TIE_MARGIN

        if self.router_margin_final is None:  # full depth, or a baseline that does not train the router
            return []
        before = "n/a" if self.router_margin_initial is None else f"{self.router_margin_initial:.3g}"
        line = f"  router margin (k-th vs next layer's logit, median): {before} -> {self.router_margin_final:.3g}"
        if self.router_margin_final < NEAR_TIE_MARGIN:
            line += " (near-ties: the choice follows tiny score differences, not a clear preference)"
        return [line]


class _LossModule(nn.Module):
    """model.compute_loss as a forward(), so DDP/FSDP see (and synchronise) it."""

    def __init__(self, model, teacher):
        super().__init__()
        self.model = model
        object.__setattr__(self, "teacher", teacher)  # not a submodule: never wrapped, synced or optimised

    def forward(self, batch: dict, generator: torch.Generator) -> dict:
        # batch holds "images" or the frozen tower's cached "vision_tokens"; compute_loss takes either
        return self.model.compute_loss(batch, teacher=self.teacher, generator=generator)


def micro_seed(seed: int, step: int, micro: int) -> int:
    """Seed of micro-batch `micro` of optimizer step `step` (independent of process count)."""
    return (seed * 1_000_003 + step * 10_007 + micro) % (2**63 - 1)


class Trainer:
    """Sets up model, teacher, data and optimizer for one run; `run()` trains and returns a TrainingSummary."""

    def __init__(
        self,
        config: TrainingConfig,
        data: list[str],
        output_dir: str | Path,
        resume: str | None = None,
        progress: bool = True,
    ):
        self.config = config
        self.output_dir = Path(output_dir)
        self.progress = progress
        self.device = resolve_device(config.device.split(":")[0] if config.device != "auto" else "auto")
        import os

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.device.type == "cuda":
            self.device = torch.device("cuda", local_rank)
        # FSDP wraps only inside a process group: one GPU joins a group of one rather than silently dropping it
        fsdp_alone = config.strategy == "fsdp" and self.device.type == "cuda"
        self.dist: DistInfo = init_distributed(self.device, single_process_group=fsdp_alone)
        if config.threads:
            torch.set_num_threads(config.threads)
        elif self.dist.enabled and self.device.type == "cpu":
            # N processes on one CPU: split the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.dist.world_size))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.use_bf16 = self._bf16()
        self._build(data, resume)

    # ------------------------------------------------------------------ setup
    def _bf16(self) -> bool:
        p = self.config.precision
        if p == "fp32":
            return False
        if self.device.type != "cuda":
            if p == "bf16":
                log.warning("precision bf16 is only used on CUDA here; training in fp32 on %s", self.device)
            return False
        supported = torch.cuda.is_bf16_supported()
        if p == "bf16" and not supported:
            raise RuntimeError("precision bf16 was requested but this GPU has no bf16 support; use --precision fp32.")
        return supported

    def _model_config(self, ds):
        from mole_vla_ros.model.configuration import MoLeVLAConfig

        overrides = dict(self.config.model_overrides)
        overrides.update(
            {
                "camera_names": list(ds.cameras),
                "image_size": ds.image_size,
                "chunk_size": ds.chunk_size,
                "action_dim": ds.action_dim,
                "action_space": ds.action_space,
                "control_dt": float(ds.meta.get("control_dt", 1.0 / float(ds.meta.get("rate_hz", 10.0)))),
                "vision.freeze": self.config.freeze_vision,
            }
        )
        return MoLeVLAConfig.preset(self.config.model_preset, **overrides)

    def _check_matches_data(self, mc, ds) -> None:
        want = {
            "camera_names": tuple(ds.cameras),
            "image_size": ds.image_size,
            "chunk_size": ds.chunk_size,
            "action_dim": ds.action_dim,
            "action_space": ds.action_space,
        }
        got = {k: getattr(mc, k) for k in want}
        bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        if bad:
            detail = "; ".join(f"{k}: checkpoint {a!r} vs dataset {b!r}" for k, (a, b) in bad.items())
            raise ValueError(
                f"the checkpoint {self.config.init_from} does not match the dataset ({detail}); rebuild the dataset "
                "with the checkpoint's cameras / image size / action space, or train from a preset instead."
            )

    def _build(self, data: list[str], resume: str | None) -> None:
        from mole_vla_ros.model.checkpoint import load_checkpoint
        from mole_vla_ros.model.cogkd import EMATeacher
        from mole_vla_ros.model.configuration import MoLeVLAConfig
        from mole_vla_ros.model.modeling import build_model

        cfg = self.config
        torch.manual_seed(cfg.seed)  # same initial weights in every process
        # dataset: rank 0 builds it when episodes are given, the others wait and read it
        image_size = cfg.dataset_image_size or MoLeVLAConfig.preset(cfg.model_preset, **cfg.model_overrides).image_size
        if self.dist.is_main:
            self.dataset_dir = resolve_dataset(data, self.output_dir, cfg.dataset_rate_hz, image_size)
        barrier(self.dist)
        if not self.dist.is_main:
            self.dataset_dir = resolve_dataset(data, self.output_dir, cfg.dataset_rate_hz, image_size)
        train_ds = open_split(self.dataset_dir, "train")
        val_ds = open_split(self.dataset_dir, "val")
        self.normalizer = train_ds.normalizer

        # model: from a checkpoint (stage 2, fine-tuning) or a preset
        if cfg.init_from:
            model, ckpt_norm, _ = load_checkpoint(cfg.init_from, device=self.device)
            self._check_matches_data(model.config, train_ds)
            same = (ckpt_norm.q01 == self.normalizer.q01).all() and (ckpt_norm.q99 == self.normalizer.q99).all()
            if not same and cfg.init_normalization == "checkpoint":
                actions = train_ds.column("actions")  # read once for both shares
                log.warning(
                    "the dataset's action statistics differ from %s's; training continues with the checkpoint's so "
                    "its outputs keep their meaning: %.1f %% of the dataset's action values fall outside its range "
                    "and are clipped (%.1f %% with the dataset's own); --init-normalization dataset re-fits them",
                    cfg.init_from,
                    100 * ckpt_norm.fraction_clipped(actions),
                    100 * self.normalizer.fraction_clipped(actions),
                )
                self.normalizer = ckpt_norm
            elif not same:
                log.warning(
                    "the dataset's action statistics differ from %s's; re-fitting them to the dataset "
                    "(--init-normalization dataset): the checkpoint's outputs change meaning until training adapts",
                    cfg.init_from,
                )
            model.reconfigure(model.config.replace(**{"vision.freeze": cfg.freeze_vision}))
            self._apply_overrides_to_checkpoint(model)
        else:
            model = build_model(self._model_config(train_ds), device=self.device, pretrained=True)
        # no CUDA graphs while training (validation and probes included; the saved config keeps its cuda_graphs)
        model.allow_cuda_graphs(False)
        self.model = model
        mc = model.config
        # the training choices the saved checkpoint should carry
        changes = {}
        for name in ("kd_weight", "mse_share", "kd_form", "balance_weight", "partition_weight", "ema_decay"):
            value = getattr(cfg, name)
            if value is not None:
                changes[f"loss.{name}"] = value
        if cfg.stage == "mole":
            k = cfg.active_layers or mc.active_layers
            if k >= mc.num_layers:
                log.warning("stage 'mole' with k=%d of N=%d layers skips nothing", k, mc.num_layers)
            changes.update({"active_layers": k, "skip_mode": cfg.skip_mode})
        else:
            # a full-depth checkpoint runs every layer when loaded (node, sim eval, replay): its router is untrained,
            # so the preset's "star" would pick k layers by an untrained router's whim
            changes["skip_mode"] = "full"
        if changes:
            model.reconfigure(mc.replace(**changes))
        mc = model.config
        self.k = mc.active_layers if cfg.stage == "mole" else mc.num_layers

        # what trains: vision tower frozen or not; router only in stage "mole"
        model.vision.frozen = cfg.freeze_vision
        model.vision.encoder.requires_grad_(not cfg.freeze_vision)
        star = cfg.stage == "mole" and cfg.skip_mode == "star"
        model.router.requires_grad_(star)
        # STAR trains with the router's Gumbel noise (its scale follows gumbel_anneal; logged with the metrics)
        self.router_noise = star and mc.router.gumbel_noise
        self.router_trains = star
        model.train()
        self.teacher = EMATeacher(model, decay=mc.loss.ema_decay) if cfg.use_teacher else None
        if cfg.stage == "mole" and not cfg.init_from:
            log.warning(
                "stage 'mole' without --init-from: the EMA teacher starts from the same random weights as the "
                "student; the paper initialises both from the stage-1 (full depth) checkpoint"
            )

        # data in memory (cached vision features when the tower is frozen)
        self.cache_features = cfg.cache_features(cfg.freeze_vision)
        dtype = cfg.feature_cache_dtype
        feats_train = feats_val = None
        if self.cache_features:
            for turn in (0, 1):  # rank 0 computes and caches, the others then read the cache
                if (turn == 0) == self.dist.is_main:
                    feats_train = cached_vision_features(model, train_ds, dtype, self.output_dir, self.progress)
                    if len(val_ds):
                        feats_val = cached_vision_features(model, val_ds, dtype, self.output_dir, self.progress)
                barrier(self.dist)
        self.train_data = SplitData.load(train_ds, self.normalizer, feats_train)
        self.val_data = SplitData.load(val_ds, self.normalizer, feats_val) if len(val_ds) else None
        self.order = SampleOrder(len(self.train_data), cfg.seed)
        self.probe = torch.arange(min(PROBE_SAMPLES, len(self.train_data)))

        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen; check freeze_vision and the stage.")
        self.wrapped = self._wrap(_LossModule(model, self.teacher))
        train_params = [p for p in self.wrapped.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(train_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.step = 0
        self.resumed_from = None
        if resume:
            self._resume(resume)
        n_train = sum(p.numel() for p in params)
        log.info(
            "stage %s (%s): %s preset, k=%d of N=%d layers, %d trainable parameters, %d train / %d val samples, "
            "cached vision features: %s, teacher: %s, device %s%s",
            cfg.stage,
            mc.skip_mode if cfg.stage == "mole" else "full",
            mc.preset_name,
            self.k,
            mc.num_layers,
            n_train,
            len(self.train_data),
            len(self.val_data) if self.val_data else 0,
            self.cache_features,
            "EMA" if self.teacher is not None else "none",
            self.device,
            " (bf16 autocast)" if self.use_bf16 else "",
        )
        if self.router_noise and cfg.gumbel_anneal:
            end = math.ceil(cfg.gumbel_anneal * cfg.steps)
            log.info("router Gumbel noise: falls linearly to 0 by step %d of %d, none after", end, cfg.steps)
        elif self.router_noise:
            log.info("router Gumbel noise: on for all %d steps (Eq. 12)", cfg.steps)
        elif star and cfg.gumbel_anneal:
            log.warning(
                "gumbel_anneal=%s has nothing to anneal: this model's router.gumbel_noise is off (turn it on with "
                "--model-override router.gumbel_noise=true)",
                cfg.gumbel_anneal,
            )
        if self.router_trains and mc.router.depth_prior and mc.loss.balance_weight:
            # the balance loss, mean(M * p), lowers the probability of whatever layers run: under a prior those are
            # the first k, so it works against the prior itself
            log.warning(
                "router.depth_prior=%g with balance weight %g: the balance loss pushes down the layers the router "
                "runs, the prior's first layers, and in the depth-prior study it turned the choice to the last "
                "layers (models/default/MODEL_CARD.md, 'A depth prior'); use --balance-weight 0 with the prior",
                mc.router.depth_prior,
                mc.loss.balance_weight,
            )

    def _apply_overrides_to_checkpoint(self, model) -> None:
        """--model-override on a run that starts from a checkpoint: options that leave the weights' shapes and
        meanings alone (CHECKPOINT_TUNABLE_OPTIONS, e.g. router.gumbel_noise) are applied and logged; any other
        option that differs from the checkpoint's is ignored with a warning (the weights were trained for it)."""
        from mole_vla_ros.model.configuration import CHECKPOINT_TUNABLE_OPTIONS, config_value

        applied, ignored = {}, []
        for key, value in self.config.model_overrides.items():
            have = config_value(model.config, key)
            want = tuple(value) if isinstance(value, list) else value
            if have == want:
                continue
            if key in CHECKPOINT_TUNABLE_OPTIONS:
                applied[key] = value
            else:
                ignored.append(f"{key}={value!r} (the checkpoint has {have!r})")
        if applied:
            model.reconfigure(model.config.replace(**applied))
            log.info("model options changed from %s: %s", self.config.init_from, applied)
        if ignored:
            log.warning(
                "model options ignored: training starts from %s, whose weights fix them: %s; options that can "
                "change on a checkpoint: %s",
                self.config.init_from,
                ", ".join(ignored),
                ", ".join(CHECKPOINT_TUNABLE_OPTIONS),
            )

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.dist.enabled:
            return module
        strategy = self.config.strategy
        if strategy == "fsdp":
            return self._wrap_fsdp(module)
        from torch.nn.parallel import DistributedDataParallel as DDP

        # STAR leaves the layers nobody chose unused in a micro-batch; stage 1 uses every trainable parameter
        # (the router is frozen there), and skipping the unused-parameter search saves a graph traversal per step
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids, find_unused_parameters=self.config.stage == "mole")

    def _wrap_fsdp(self, module: nn.Module) -> nn.Module:
        """FSDP full-shard with one unit per LLaMA decoder layer, bf16 compute (cogact-base on several GPUs).

        Written for CUDA machines and not exercised by the CPU test-suite.
        """
        import functools

        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        if self.device.type != "cuda":
            raise ValueError("strategy 'fsdp' needs CUDA devices; use --strategy ddp on CPU.")
        layer_cls = type(self.model.llm.layers[0])
        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={layer_cls})
        mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)
        self._fsdp = True
        return FSDP(
            module,
            auto_wrap_policy=policy,
            mixed_precision=mp if self.use_bf16 else None,
            sharding_strategy=ShardingStrategy.FULL_SHARD,
            device_id=self.device,
            use_orig_params=True,  # keeps the model's parameter names (EMA teacher, router freezing)
        )

    @property
    def is_fsdp(self) -> bool:
        return getattr(self, "_fsdp", False)

    # ------------------------------------------------------------------ checkpoints
    def _resume(self, resume: str) -> None:
        directory = latest_checkpoint(self.output_dir) if resume == "auto" else Path(resume)
        if directory is None:
            log.info("no checkpoint under %s to resume from; starting at step 0", self.output_dir)
            return
        state = load_training_state(directory)
        if state.get("stage") != self.config.stage:
            raise ValueError(
                f"{directory} was written by stage {state.get('stage')!r}, this run is stage {self.config.stage!r}; "
                "resume with the same stage (or start stage 2 with --init-from <stage-1 run>/final)."
            )
        if self.is_fsdp:
            raise NotImplementedError("resuming an FSDP run is not supported yet; restart from its final checkpoint.")
        load_model_weights(directory, self.model)
        if self.teacher is not None:
            load_teacher_weights(directory, self.teacher)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.resumed_from = str(directory)
        log.info("resumed from %s at step %d", directory, self.step)

    def _trainer_state(self) -> dict:
        return {
            "step": self.step,
            "stage": self.config.stage,
            "samples_seen": self.step * self.global_batch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "config": self.config.to_json(),
        }

    def _checkpoint_info(self, extra: dict | None = None) -> dict:
        return {
            "training": {
                "stage": self.config.stage,
                "step": self.step,
                "active_layers": self.k,
                "cogkd": self.teacher is not None,
                "dataset": str(self.dataset_dir),
                "init_from": self.config.init_from,
                **(extra or {}),
            }
        }

    def _full_state(self) -> dict | None:
        if not self.is_fsdp:
            return None
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with FSDP.state_dict_type(self.wrapped, StateDictType.FULL_STATE_DICT, cfg):
            state = self.wrapped.state_dict()
        return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}

    def save(self) -> Path | None:
        full = self._full_state()
        path = None
        if self.dist.is_main:
            path = save_training_checkpoint(
                self.output_dir,
                self.step,
                self.model,
                self.normalizer,
                self.teacher,
                self._trainer_state() if not self.is_fsdp else {"step": self.step, "stage": self.config.stage},
                self._checkpoint_info(),
                self.config.keep_checkpoints,
                model_state=full,
            )
        barrier(self.dist)
        return path

    # ------------------------------------------------------------------ one step
    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.config.grad_accum * self.dist.world_size

    def _stage_fields(self) -> dict:
        if self.config.stage == "mole":
            return {"active_layers": self.k, "skip_mode": self.config.skip_mode}
        return {"skip_mode": "full"}

    def _micro_batch(self, step: int, micro: int) -> dict:
        b = self.config.batch_size
        idx = self.order.take(step * self.global_batch + micro * b, b)
        return self.train_data.batch(idx)

    def _prepare(self, batch: dict, generator: torch.Generator) -> dict:
        """Move a batch to the device, augment images when enabled, add the stage's routing fields."""
        from .augment import augment_images

        out = {"actions": batch["actions"].to(self.device), "instructions": batch["instructions"]}
        if "vision_tokens" in batch:
            out["vision_tokens"] = batch["vision_tokens"]
        else:
            images = batch["images"]
            if self.config.augment.enabled:
                cpu_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
                images = images.permute(0, 1, 4, 2, 3).float().div_(255.0)
                images = augment_images(images, self.config.augment, cpu_gen)
            out["images"] = images.to(self.device)
        out.update(self._stage_fields())
        return out

    def _autocast(self):
        if self.use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict:
        """One optimizer step. Returns rank-averaged scalars and this process's layer usage."""
        cfg = self.config
        self.wrapped.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(5, dtype=torch.float64)
        usage = torch.zeros(self.model.config.num_layers, dtype=torch.float64)
        self.model.router.noise_scale = gumbel_noise_scale(self.step, cfg)
        for a in range(cfg.grad_accum):
            micro = a * self.dist.world_size + self.dist.rank
            seed = micro_seed(cfg.seed, self.step, micro)
            torch.manual_seed(seed)  # router dropout and anything else that draws from the global RNG
            gen = torch.Generator(device=self.device).manual_seed(seed)
            batch = self._prepare(self._micro_batch(self.step, micro), gen)
            sync = a == cfg.grad_accum - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.wrapped.no_sync()
            with ctx:
                with self._autocast():
                    out = self.wrapped(batch, gen)
                (out["total"] / cfg.grad_accum).backward()
            sums += torch.tensor(
                [
                    float(out["total"].detach()),
                    float(out["diffusion"]),
                    float(out["cogkd"]),
                    float(out["balance"]),
                    float(out["partition"]),
                ],
                dtype=torch.float64,
            )
            usage += out["router"].selected.detach().to("cpu", torch.float64).mean(0)
        if cfg.grad_clip > 0:
            params = [p for p in self.wrapped.parameters() if p.requires_grad]
            if self.is_fsdp:
                grad_norm = self.wrapped.clip_grad_norm_(cfg.grad_clip)
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            grad_norm = float(grad_norm)
        else:
            grad_norm = float("nan")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if self.teacher is not None:
            self._update_teacher()
        self.step += 1
        means = all_reduce_mean(sums / cfg.grad_accum, self.dist)
        return {
            "loss": float(means[0]),
            "diffusion": float(means[1]),
            "cogkd": float(means[2]),
            "balance": float(means[3]),
            "partition": float(means[4]),
            "grad_norm": grad_norm,
            "lr": lr,
            "usage": (usage / cfg.grad_accum).tolist(),
        }

    def _full_params(self):
        """Context in which self.model holds its full (unsharded) parameters: a no-op unless FSDP shards them."""
        if not self.is_fsdp:
            return contextlib.nullcontext()
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.summon_full_params(self.wrapped, writeback=False)

    def _update_teacher(self) -> None:
        with self._full_params():
            self.teacher.update(self.model)

    # ------------------------------------------------------------------ evaluation helpers
    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Mean diffusion loss on the val split (fixed noise; the stage's routing). None without a val split."""
        if self.val_data is None:
            return None
        self.wrapped.eval()
        b = self.config.batch_size
        n = len(self.val_data)
        total, count = 0.0, 0
        # the plain module, not the DDP/FSDP wrapper: ranks may run different numbers of validation batches, and
        # wrapper forwards are collective calls (FSDP gathers the full parameters once, on every rank)
        with self._full_params():
            for i in range(self.config.eval_batches):
                start = (i * self.dist.world_size + self.dist.rank) * b
                if start >= n:
                    break
                idx = torch.arange(start, min(start + b, n))
                gen = torch.Generator(device=self.device).manual_seed(micro_seed(self.config.seed, 10**9, i))
                batch = self._prepare(self.val_data.batch(idx), gen)
                with self._autocast():
                    out = _LossModule(self.model, self.teacher)(batch, gen)
                total += float(out["diffusion"]) * len(idx)
                count += len(idx)
        self.wrapped.train()
        stats = all_reduce_mean(torch.tensor([total, count], dtype=torch.float64), self.dist)
        return float(stats[0] / stats[1]) if stats[1] > 0 else None

    @torch.no_grad()
    def router_probe(self) -> tuple[list[list[int]], float | None]:
        """(layers STAR picks at the run's k for the fixed probe samples, in eval mode; their median logit margin
        between the k-th and the (k+1)-th layer, None at k = N)."""
        was = self.model.training
        self.model.eval()
        batch = self._prepare(self.train_data.batch(self.probe), torch.Generator(device=self.device).manual_seed(0))
        tokens = batch.get("vision_tokens")
        images = batch.get("images") if tokens is None else None
        with self._full_params(), self._autocast():
            out = self.model.forward(
                images, self.model.text_batch(batch["instructions"]), self.k, "star", vision_tokens=tokens
            )
        self.model.train(was)
        margins = out.choice.margins()
        return [list(ix) for ix in out.choice.indices], None if margins is None else float(margins.median())

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainingSummary:
        cfg = self.config
        main = self.dist.is_main
        if main:
            (self.output_dir / CONFIG_FILE).write_text(cfg.to_json() + "\n", encoding="utf-8")
        writer = self._tensorboard() if main else None
        metrics = open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") if main else None
        probe_initial = self.router_probe()
        start_step, t0 = self.step, time.perf_counter()
        losses: list[float] = []
        window: dict[str, float] = {}
        usage_total = torch.zeros(self.model.config.num_layers, dtype=torch.float64)
        val_loss = None
        bar = None
        if main and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train ({cfg.stage})", unit="step")
        try:
            t_window, n_window = time.perf_counter(), 0
            while self.step < cfg.steps:
                row = self.train_step()
                losses.append(row["loss"])
                usage_total += torch.tensor(row["usage"], dtype=torch.float64)
                n_window += 1
                for key in ("loss", "diffusion", "cogkd", "balance", "partition", "grad_norm"):
                    window[key] = window.get(key, 0.0) + row[key]
                if not math.isfinite(row["loss"]):
                    raise FloatingPointError(
                        f"loss became {row['loss']} at step {self.step}; lower --lr or check the data statistics."
                    )
                if bar is not None:
                    sps = n_window * self.global_batch / max(time.perf_counter() - t_window, 1e-9)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{sps:.1f}")
                    bar.update(1)
                if self.step % cfg.log_interval == 0 or self.step == cfg.steps:
                    dt = time.perf_counter() - t_window
                    record = {
                        "step": self.step,
                        "epoch": self.step * self.global_batch / len(self.train_data),
                        **{k: v / n_window for k, v in window.items()},
                        "lr": row["lr"],
                        "samples_per_s": n_window * self.global_batch / max(dt, 1e-9),
                        "layer_usage": row["usage"],
                        **({"gumbel_noise_scale": self.model.router.noise_scale} if self.router_noise else {}),
                    }
                    if cfg.eval_interval and self.step % cfg.eval_interval == 0:
                        record["val_loss"] = val_loss = self.validation_loss()
                        if self.router_trains:
                            record["router_margin"] = self.router_probe()[1]
                    if main:
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                        if writer is not None:
                            keys = ("loss", "diffusion", "cogkd", "balance", "partition", "grad_norm", "lr")
                            for k in (*keys, "samples_per_s"):
                                writer.add_scalar(f"train/{k}", record[k], self.step)
                            if record.get("val_loss") is not None:
                                writer.add_scalar("val/diffusion", record["val_loss"], self.step)
                            if record.get("router_margin") is not None:
                                writer.add_scalar("val/router_margin", record["router_margin"], self.step)
                    window, t_window, n_window = {}, time.perf_counter(), 0
                elif cfg.eval_interval and self.step % cfg.eval_interval == 0:
                    val_loss = self.validation_loss()
                if self.step % cfg.save_interval == 0 and self.step < cfg.steps:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        if not cfg.eval_interval or cfg.steps % cfg.eval_interval:
            val_loss = self.validation_loss()
        if not self.is_fsdp:
            # a last resumable checkpoint lets `--resume auto --steps <more>` go on; FSDP checkpoints hold weights only
            # (not resumable yet), so under FSDP it would be a second full copy of final/ (27 GB for cogact-base)
            self.save()
        final_dir = self.output_dir / FINAL_DIR
        summary = self._summary(start_step, seconds, losses, usage_total, val_loss, probe_initial, final_dir)
        full = self._full_state()
        if main:
            from .state import _save_with_state

            info = self._checkpoint_info({"summary": asdict(summary) | {"losses": []}})
            if full is not None:
                _save_with_state(str(final_dir), self.model, self.normalizer, info, full)
            else:
                from mole_vla_ros.model.checkpoint import save_checkpoint

                save_checkpoint(str(final_dir), self.model, self.normalizer, extra=info)
            (self.output_dir / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
            metrics.close()
            if writer is not None:
                writer.close()
            log.info("finished %s stage at step %d; final checkpoint %s", cfg.stage, self.step, final_dir)
        barrier(self.dist)
        return summary

    def _summary(self, start_step, seconds, losses, usage_total, val_loss, probe_initial, final_dir):
        probe_final = self.router_probe()
        n = max(len(losses), 1)
        tail = losses[-max(1, min(len(losses), self.config.log_interval)) :] or [float("nan")]
        last = self._last_components()
        return TrainingSummary(
            stage=self.config.stage,
            steps=self.step,
            start_step=start_step,
            samples_seen=(self.step - start_step) * self.global_batch,
            seconds=seconds,
            samples_per_s=(self.step - start_step) * self.global_batch / max(seconds, 1e-9),
            final_loss=float(sum(tail) / len(tail)),
            first_loss=losses[0] if losses else None,
            final_diffusion=last.get("diffusion", float("nan")),
            final_cogkd=last.get("cogkd", float("nan")),
            final_balance=last.get("balance", float("nan")),
            final_partition=last.get("partition") if self.model.config.loss.partition_weight else None,
            val_loss=val_loss,
            active_layers=self.k,
            num_layers=self.model.config.num_layers,
            layer_usage=(usage_total / n).tolist(),
            router_probe_initial=probe_initial[0],
            router_probe_final=probe_final[0],
            router_margin_initial=probe_initial[1] if self.router_trains else None,
            router_margin_final=probe_final[1] if self.router_trains else None,
            checkpoint=str(final_dir),
            dataset=str(self.dataset_dir),
            world_size=self.dist.world_size,
            losses=losses,
            device=str(self.device),
            precision="bf16 autocast" if self.use_bf16 else "fp32",
            strategy=("fsdp" if self.is_fsdp else "ddp") if self.dist.enabled else "",
            peak_gpu_memory_gib=(
                torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
            ),
        )

    def _last_components(self) -> dict:
        path = self.output_dir / METRICS_FILE
        if not self.dist.is_main or not path.is_file():
            return {}
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        return json.loads(lines[-1]) if lines else {}

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: metrics go to %s only", self.output_dir / METRICS_FILE)
            return None
        return SummaryWriter(str(self.output_dir / "tensorboard"))

    def close(self) -> None:
        cleanup(self.dist)


def train(
    config: TrainingConfig,
    data: list[str],
    output_dir: str | Path,
    resume: str | None = None,
    progress: bool = True,
) -> TrainingSummary:
    """Run one training stage end to end (see the module docstring); returns its summary."""
    trainer = Trainer(config, data, output_dir, resume=resume, progress=progress)
    try:
        return trainer.run()
    finally:
        trainer.close()


def train_worker(config_json: str, data: list[str], output_dir: str, resume: str | None, progress: bool) -> None:
    """Entry point of a spawned process (`mole-vla train --nproc N` on CPU)."""
    train(TrainingConfig.from_dict(json.loads(config_json)), data, output_dir, resume, progress)
