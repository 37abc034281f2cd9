"""Training configuration: one validated dataclass, presets per model size, JSON round trip.

    TrainingConfig.preset("tiny", steps=50)                  # tests, CI: tiny random model, high LR
    TrainingConfig.preset("sim-default", stage="mole")       # the bundled models/default recipe (CPU, ~2 h)
    TrainingConfig.preset("small")                           # SmolLM2-135M + EfficientNet-Lite0 fine-tuning
    TrainingConfig.preset("cogact-base", strategy="fsdp")    # the paper's shapes (GPUs, FSDP, bf16)

Two stages (spec sections 2-4):
- stage "full": full-depth training or fine-tuning (the CogACT role). Every LLM layer runs, the router is frozen
  (it is not used) and there is no CogKD or balance term.
- stage "mole": STAR picks `active_layers` (k < N) layers per sample; an EMA teacher initialised from `init_from`
  (the stage-1 checkpoint) distils into the student; loss = diffusion + kd_weight * CogKD + balance_weight * L_lb.
  `cogkd=False` drops the teacher (the paper's "without CogKD" ablation).
Loss weights and EMA decay left at None come from the model config, whose defaults are the spec's values.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

STAGES = ("full", "mole")
TRAIN_SKIP_MODES = ("star", "random", "early")  # stage "mole": STAR, or a trained baseline at the same k
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("auto", "ddp", "fsdp")
CACHE_MODES = ("auto", "on", "off")
LR_SCHEDULES = ("constant", "cosine")
CACHE_DTYPES = ("float32", "float16", "bfloat16")


def _fail(msg: str) -> None:
    raise ValueError(msg)


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _number(name: str, value: Any, low: float, high: float | None = None, *, open_low: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"({low}" if open_low else f"[{low}"
        bound += f", {high}]" if high is not None else ", inf)"
        _fail(f"{name} must be a number in {bound}, got {value!r}.")


def lr_factor(step: int, cfg: TrainingConfig) -> float:
    """LR multiplier after `step` optimizer steps: linear warmup over warmup_steps, then 1 (constant) or half a
    cosine from 1 down to min_lr_ratio at the last step (cosine)."""
    warm = cfg.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, cfg.steps - 1 - warm))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def gumbel_noise_scale(step: int, cfg: TrainingConfig) -> float:
    """Scale of the router's Gumbel noise at optimizer step `step` (models with router.gumbel_noise): 1 throughout
    when gumbel_anneal is 0 (the paper's Eq. 12); otherwise falling linearly from 1 at step 0 to 0 at
    gumbel_anneal x steps, and 0 (no noise) after that."""
    if cfg.gumbel_anneal == 0:
        return 1.0
    return max(0.0, 1.0 - step / (cfg.gumbel_anneal * cfg.steps))


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(f"{name} must be one of {list(allowed)}, got {value!r}.")


@dataclass
class AugmentConfig:
    """Image augmentation (off by default, as in the paper: `image_aug false`). Applied per view, per sample."""

    enabled: bool = False
    crop_scale: tuple[float, float] = (0.9, 1.0)  # random resized crop: area fraction range, square crops
    brightness: float = 0.2  # colour jitter strengths (factor drawn from [1 - s, 1 + s])
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self):
        self.crop_scale = tuple(float(x) for x in self.crop_scale)
        if len(self.crop_scale) != 2 or not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            _fail(f"augment.crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.crop_scale!r}.")
        for name in ("brightness", "contrast", "saturation"):
            _number(f"augment.{name}", getattr(self, name), 0.0, 1.0)


@dataclass
class TrainingConfig:
    """Everything one `mole-vla train` run needs besides the data path. Validated on construction."""

    # ---- model
    model_preset: str = "tiny"  # MoLeVLAConfig preset used when not starting from a checkpoint
    model_overrides: dict[str, Any] = field(default_factory=dict)  # dotted MoLeVLAConfig overrides
    init_from: str | None = None  # checkpoint dir to start from (stage 1 output for stage "mole"; or a pretrained one)
    # with init_from, whose action statistics (q01/q99) the run trains with when the dataset's differ: "checkpoint"
    # keeps the outputs' meaning (actions outside its range are clipped), "dataset" re-fits them to the new data (the
    # outputs change meaning and fine-tuning has to adapt; use it when the new data moves outside the old range)
    init_normalization: str = "checkpoint"
    stage: str = "full"
    active_layers: int | None = None  # k for stage "mole" (None: the model config's default, N/2 in the presets)
    cogkd: bool = True  # stage "mole": distil from the EMA teacher (False = the ablation)
    # stage "mole": which layers run while training. "star" is MoLe; "random" (k random layers per sample) and
    # "early" (the first k layers) train the paper's skip baselines with the same recipe, budget and teacher
    skip_mode: str = "star"
    kd_weight: float | None = None  # None = model config (lambda2 = 0.5)
    mse_share: float | None = None  # None = model config (lambda1 = 0.5)
    kd_form: str | None = None  # None = model config ("code"); "paper": equations 14-17 (see model/cogkd.py)
    balance_weight: float | None = None  # None = model config (0.01, the code's effective lambda3)
    partition_weight: float | None = None  # None = model config (0: off); router.partition_loss, not the paper's
    ema_decay: float | None = None  # None = model config (0.999)
    # STAR training with router.gumbel_noise (no effect otherwise): 0 keeps the noise for the whole run (Eq. 12);
    # f in (0, 1] lets its scale fall linearly to 0 over the first f of the steps, so the rest trains the layer sets
    # the router picks at inference (with constant noise most samples train on other sets than the noise-free choice)
    gumbel_anneal: float = 0.0
    freeze_vision: bool = True  # the paper freezes the towers and trains the projector
    # ---- optimisation (AdamW; by default a constant LR after an optional linear warmup, as the paper's code)
    steps: int = 1000
    batch_size: int = 8  # samples per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    # after the warmup: "constant" (the paper's code) or "cosine" (half a cosine from lr down to min_lr_ratio x lr at
    # the last step: training from scratch settles better than at a constant rate)
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    seed: int = 0
    # ---- data
    cache_vision_features: str = "auto"  # auto: on when the vision tower is frozen and augmentation is off
    feature_cache_dtype: str = "float16"  # storage of cached features (float32 makes cached == uncached exactly)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dataset_rate_hz: float = 10.0  # only used when --data names episodes that must be built first
    dataset_image_size: int | None = None  # idem; None = the model preset's image size
    # ---- bookkeeping
    log_interval: int = 10  # steps between metrics.jsonl / TensorBoard rows
    eval_interval: int = 0  # steps between validation losses (0 = only at the end)
    eval_batches: int = 4  # validation micro-batches per evaluation
    save_interval: int = 500  # steps between resumable checkpoints (the final one is always written)
    keep_checkpoints: int = 2  # resumable checkpoints kept on disk (oldest removed first)
    # ---- hardware
    device: str = "auto"  # auto: cuda when available
    precision: str = "auto"  # auto: bf16 autocast on CUDA with bf16 support, fp32 elsewhere
    strategy: str = "auto"  # multi-process: ddp (default) or fsdp (cogact-base on GPUs)
    threads: int | None = None  # torch CPU threads per process (None: torch's default)

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if not isinstance(self.model_preset, str) or not self.model_preset:
            _fail(f"model_preset must be a model preset name, got {self.model_preset!r}.")
        if not isinstance(self.model_overrides, dict):
            _fail(f"model_overrides must be a dict of dotted config names, got {type(self.model_overrides).__name__}.")
        _one_of("stage", self.stage, STAGES)
        _one_of("init_normalization", self.init_normalization, ("checkpoint", "dataset"))
        _one_of("skip_mode", self.skip_mode, TRAIN_SKIP_MODES)
        if self.skip_mode != "star" and self.stage != "mole":
            _fail(
                f"skip_mode={self.skip_mode!r} trains a layer-skipping baseline and needs stage='mole' (stage 'full' "
                "runs every layer); use --stage mole --skip-mode random|early."
            )
        if self.active_layers is not None:
            _positive_int("active_layers", self.active_layers)
        for name in ("kd_weight", "balance_weight", "partition_weight"):
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), 0.0)
        if self.mse_share is not None:
            _number("mse_share", self.mse_share, 0.0, 1.0)
        if self.kd_form is not None:
            _one_of("kd_form", self.kd_form, ("code", "paper"))
        _number("gumbel_anneal", self.gumbel_anneal, 0.0, 1.0)
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            _fail(f"ema_decay must be in [0, 1), got {self.ema_decay!r}; 0.999 is the paper's value.")
        _positive_int("steps", self.steps)
        _positive_int("batch_size", self.batch_size)
        _positive_int("grad_accum", self.grad_accum)
        _number("lr", self.lr, 0.0, open_low=True)
        _number("weight_decay", self.weight_decay, 0.0)
        _positive_int("warmup_steps", self.warmup_steps, minimum=0)
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _number("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _number("grad_clip", self.grad_clip, 0.0)
        _positive_int("seed", self.seed, minimum=0)
        _one_of("cache_vision_features", self.cache_vision_features, CACHE_MODES)
        _one_of("feature_cache_dtype", self.feature_cache_dtype, CACHE_DTYPES)
        if self.cache_vision_features == "on" and not self.freeze_vision:
            _fail(
                "cache_vision_features='on' needs freeze_vision=True: features of a vision tower that trains change "
                "every step. Freeze the tower or set cache_vision_features to 'auto'/'off'."
            )
        if self.cache_vision_features == "on" and self.augment.enabled:
            _fail(
                "cache_vision_features='on' cannot be combined with augmentation: augmented images give new features "
                "every step. Turn augmentation off or set cache_vision_features to 'auto'/'off'."
            )
        _number("dataset_rate_hz", self.dataset_rate_hz, 0.0, open_low=True)
        if self.dataset_image_size is not None:
            _positive_int("dataset_image_size", self.dataset_image_size, minimum=16)
        _positive_int("log_interval", self.log_interval)
        _positive_int("eval_interval", self.eval_interval, minimum=0)
        _positive_int("eval_batches", self.eval_batches)
        _positive_int("save_interval", self.save_interval)
        _positive_int("keep_checkpoints", self.keep_checkpoints)
        _one_of("device", self.device.split(":")[0] if isinstance(self.device, str) else self.device, DEVICES)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("strategy", self.strategy, STRATEGIES)
        if self.threads is not None:
            _positive_int("threads", self.threads)

    # ---- derived
    @property
    def use_teacher(self) -> bool:
        """Stage "mole" with CogKD on and a non-zero KD weight."""
        return self.stage == "mole" and self.cogkd and (self.kd_weight is None or self.kd_weight > 0)

    def cache_features(self, vision_frozen: bool) -> bool:
        """Whether this run trains on cached vision features (see cache_vision_features)."""
        if self.cache_vision_features == "off":
            return False
        if self.cache_vision_features == "on":
            return True
        return vision_frozen and not self.augment.enabled

    # ---- serialization
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["augment"]["crop_scale"] = list(self.augment.crop_scale)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            _fail(f"training config has unknown field(s) {unknown}; valid fields are {sorted(names)}.")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainingConfig:
        """A validated copy with `changes` applied (`augment.enabled=True` style dotted names reach augment)."""
        d = self.to_dict()
        for key, value in changes.items():
            if key.startswith("augment."):
                sub = key.split(".", 1)[1]
                if sub not in d["augment"]:
                    _fail(f"no augmentation option {sub!r}; valid options are {sorted(d['augment'])}.")
                d["augment"][sub] = value
            else:
                if key not in d:
                    _fail(f"no training option {key!r}; valid options are {sorted(d)}.")
                d[key] = value
        return TrainingConfig.from_dict(d)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> TrainingConfig:
        """One of TRAINING_PRESETS with `changes` applied on top."""
        if name not in TRAINING_PRESETS:
            _fail(f"unknown training preset {name!r}; choose one of {sorted(TRAINING_PRESETS)}.")
        return TRAINING_PRESETS[name]().replace(**changes)


def _tiny() -> TrainingConfig:
    # random-init model trained from scratch in seconds: high LR, trainable patchifier
    return TrainingConfig(
        model_preset="tiny", steps=200, batch_size=8, lr=1e-3, freeze_vision=False, log_interval=5, save_interval=100
    )


# The bundled models/default: EfficientNet-Lite0 (real ImageNet weights, frozen, features cached) in front of a small
# randomly initialised LLaMA (8 layers) and DiT; two 128 px views. Sized so both stages fit ~2 h on a 2-core CPU.
SIM_DEFAULT_MODEL = {
    "vision.backbone": "efficientnet_lite0",
    # the stride-16 map (8 x 8 tokens of 112 channels per 128 px view) instead of the head's 4 x 4 x 1280: a 4 x 4
    # grid cell of the scene camera spans ~30 cm of table, and policies trained on it went for the cubes' average
    # position (0-1 of 10 closed-loop picks in our runs)
    "vision.feature_stride": 16,
    "vision.feature_dim": 112,
    "vision.freeze": True,
    # 112 -> 256 -> 128 (Prismatic's default would be 4 x 112 = 448 wide)
    "vision.projector_hidden": 256,
    # the byte tokenizer pays one token per character: the bare instruction (21 tokens) instead of the CogACT prompt
    # (69) keeps the sequence at 128 visual + 22 text tokens
    "llm.prompt_template": "{instruction}",
    "llm.num_layers": 8,
    "llm.hidden_size": 128,
    "llm.intermediate_size": 344,
    "llm.num_heads": 4,
    "llm.num_kv_heads": 4,
    "router.proj_dim": 64,
    "router.spatial_hidden": 64,
    "router.temporal_heads": 4,
    "router.temporal_ff": 128,
    # the paper's Eq. 12 Gumbel noise on the router logits while training (off at inference): without it this router's
    # probabilities stayed within 0.002 of uniform and its choice flipped between layer sets every other inference in
    # closed loop; with it the router settles on a set (models/default/MODEL_CARD.md, "Tried after"). The near-uniform
    # probabilities came from the balance loss (weight 0.01; the previous bundled router's margin was 2e-5), which
    # the preset's stage 2 replaces with the partition loss (below; MODEL_CARD.md, "Is the router deciding anything?")
    "router.gumbel_noise": True,
    "action_head.depth": 3,
    "action_head.hidden_size": 128,
    "action_head.num_heads": 4,
    "active_layers": 4,
}


def _sim_default() -> TrainingConfig:
    return TrainingConfig(
        model_preset="tiny",
        model_overrides=dict(SIM_DEFAULT_MODEL),
        steps=1500,
        batch_size=32,
        lr=3e-4,
        weight_decay=0.01,
        warmup_steps=50,
        freeze_vision=True,
        log_interval=25,
        eval_interval=250,
        save_interval=250,
        dataset_image_size=128,
        # the paper's CogKD equations: the released code's form measured ~1e-5 of the diffusion loss on this model
        # (no effect either way), the paper's form pulls with the size of the feature mismatch
        kd_form="paper",
        # STAR's Gumbel noise falls to zero over the first half of stage 2, so the second half trains the layer sets
        # the router runs at inference: held-out error at k = 4 went from +13.6 % to +8.6 % of full depth from the
        # same stage-1 model, closed loop from 38 to 42/200 (one training seed; three average +12.1 %: MODEL_CARD.md)
        gumbel_anneal=0.5,
        # stage 2's router loss: the partition loss (router.partition_loss, not the paper's) at 0.002 in place of the
        # balance loss, which held this router's scores at near-ties (margin 2e-5). Over stage-2 seeds 0-2 STAR at
        # k = 4 went from +12.1 % to +0.5 % of full depth in held-out error, below trained early exit at every seed,
        # and from 42 to 45/200 in closed loop at seed 0 (mean 52.7 over the three): MODEL_CARD.md, "A partition
        # loss". Stage 1 and the random/early baselines have no router loss, so only STAR runs change.
        balance_weight=0.0,
        partition_weight=0.002,
        # one thread per process: on a busy 2-core machine two OpenMP threads spin against other processes and
        # ran 25x slower in our measurements; stage 2 and its ablation then train side by side on the two cores
        threads=1,
        # fp32 on a GPU too: the model was trained in fp32 (CPU), and at its size bf16 autocast's casts cost more than
        # they save (H200: 41 ms per step in fp32, 56-68 ms in bf16; benchmarks/results/h200-2026-12-04)
        precision="fp32",
    )


def _small() -> TrainingConfig:
    # pretrained SmolLM2 + EfficientNet-Lite0: fine-tuning LR, frozen vision with cached features
    return TrainingConfig(
        model_preset="small", steps=2000, batch_size=8, lr=5e-5, freeze_vision=True, save_interval=500
    )


def _cogact_base() -> TrainingConfig:
    # the paper's recipe (spec 4): LR 2e-5 constant, wd 0, clip 1.0, 64 per GPU, bf16, FSDP, ~800-1000 steps
    return TrainingConfig(
        model_preset="cogact-base",
        steps=1000,
        batch_size=64,
        lr=2e-5,
        weight_decay=0.0,
        grad_clip=1.0,
        freeze_vision=True,
        strategy="fsdp",
        precision="bf16",
        save_interval=800,
        seed=32,
    )


TRAINING_PRESETS = {"tiny": _tiny, "sim-default": _sim_default, "small": _small, "cogact-base": _cogact_base}
