"""Analytic compute cost of one MoLe-VLA prediction, per stage, from a `MoLeVLAConfig`.

Stages (the order a prediction runs them):

    vision       per-view encoder (patch conv | EfficientNet-Lite0 | DINOv2 ViT-L/14-reg4 + SigLIP SO400M/14)
    projector    fused GELU MLP F -> 4F (or vision.projector_hidden) -> D -> D on every visual token
    router       STAR: W_p on all tokens, spatial MLP on the pooled visual feature, 1-layer encoder over the text
    llm          k of N LLaMA decoder layers over the whole sequence (attention with the real length L, SwiGLU MLP)
    action_head  DiT denoiser x DDIM steps, batch doubled when classifier-free guidance is on (cfg_scale != 1)

Convention (the one `torch.utils.flop_counter.FlopCounterMode`, fvcore and most papers' "FLOPs" tables use):
- Only multiply-accumulates of matrix products and convolutions are counted: Linear, Conv2d (grouped/depthwise
  included), and the two products inside attention (Q K^T and A V). Norms, activations, softmax, RoPE, residual
  adds, biases and the DDIM update are elementwise and not counted (they are < 1% at these shapes).
- `macs` is the number of multiply-adds; `flops = 2 * macs`.
- Attention is counted dense, L x L, even though the mask is causal (that is what a dense kernel computes and what
  FlopCounterMode reports; a causal flash kernel does about half of that part).
- Skipped layers cost nothing: the model does not call them (at B > 1 each layer runs on the sub-batch that chose
  it, so every sample still costs exactly k layers).

How the paper's numbers relate (spec 5.1): MoLe-VLA Table 1 lists 1935.8 G for CogACT-Base and 985.8 G for MoLe at
k = 16. Those are MACs (not 2*MACs) of the LLaMA-2-7B forward over ~292 tokens INCLUDING the lm_head (292 x 4096 x
32064 = 38.3 G), excluding vision and action head. `cogact_base_reference()` reproduces them from the same formulas
used here; run `python -m mole_vla_ros.model.flops` to print the comparison. Our model never runs the lm_head
(the cognition feature is a hidden state), so `estimate()` leaves it out unless `include_lm_head=True`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .configuration import MoLeVLAConfig
from .vit import DINOV2_L14_REG4, SIGLIP_SO400M_14, ViTSpec

STAGES = ("vision", "projector", "router", "llm", "action_head")

# Paper numbers (spec 5.1 / 5.2), LLM only, in G MACs.
PAPER_COGACT_FULL_GMACS = 1935.8
PAPER_MOLE_K16_GMACS = 985.8
PAPER_TOKENS = 292  # typical multimodal sequence length (code comments in MoLe's modeling_llama.py)

# EfficientNet-Lite0 (= B0 stages without squeeze-excite, fixed stem/head): (expand, kernel, stride, in, out, repeats)
_LITE0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
_LITE0_STEM, _LITE0_HEAD = 32, 1280


# ---------------------------------------------------------------------------------------------- building blocks
def linear_macs(tokens: int, d_in: int, d_out: int) -> int:
    """A Linear(d_in -> d_out) applied to `tokens` vectors."""
    return tokens * d_in * d_out


def attention_core_macs(q_len: int, kv_len: int, width: int) -> int:
    """Q K^T plus A V for all heads together (width = heads * head_dim), dense."""
    return 2 * q_len * kv_len * width


def conv2d_macs(out_h: int, out_w: int, c_in: int, c_out: int, kernel: int, groups: int = 1) -> int:
    return out_h * out_w * c_out * (c_in // groups) * kernel * kernel


def llama_layer_macs(seq_len: int, hidden: int, heads: int, kv_heads: int, intermediate: int) -> int:
    """One LLaMA decoder layer for one sample: q/k/v/o projections (GQA-aware), attention, SwiGLU MLP."""
    head_dim = hidden // heads
    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    proj = linear_macs(seq_len, hidden, q_width) + 2 * linear_macs(seq_len, hidden, kv_width)
    proj += linear_macs(seq_len, q_width, hidden)
    attn = attention_core_macs(seq_len, seq_len, q_width)
    mlp = 3 * linear_macs(seq_len, hidden, intermediate)  # gate, up, down
    return proj + attn + mlp


def vit_block_macs(tokens: int, width: int, mlp_hidden: int) -> int:
    """timm ViT block: qkv + proj, dense attention, 2-layer MLP."""
    return (
        4 * linear_macs(tokens, width, width)
        + attention_core_macs(tokens, tokens, width)
        + 2 * linear_macs(tokens, width, mlp_hidden)
    )


def vit_macs(image_size: int, spec: ViTSpec, blocks_run: int) -> int:
    """Patch embedding plus `blocks_run` transformer blocks of a ViT (vit.ViTSpec) at `image_size`."""
    side = image_size // spec.patch_size
    prefix = int(spec.class_token) + spec.reg_tokens
    embed = conv2d_macs(side, side, 3, spec.embed_dim, spec.patch_size)
    return embed + blocks_run * vit_block_macs(side * side + prefix, spec.embed_dim, spec.mlp_hidden)


def efficientnet_lite0_macs(image_size: int, stride: int = 32) -> int:
    """EfficientNet-Lite0 `extract_features` (stem, 16 MBConv blocks, 1x1 head conv to 1280; no classifier), or with
    stride 16 the stem and the blocks of the stride-16 stages only (vision.feature_stride)."""

    def down(x: int, stride: int) -> int:
        return -(-x // stride)  # TF "same" padding: ceil(x / stride)

    side = down(image_size, 2)
    total = conv2d_macs(side, side, 3, _LITE0_STEM, 3)
    stages = _LITE0_STAGES if stride == 32 else _LITE0_STAGES[:5]
    for expand, kernel, s_stage, c_in, c_out, repeats in stages:
        for r in range(repeats):
            cin = c_in if r == 0 else c_out
            s = s_stage if r == 0 else 1
            mid = cin * expand
            if expand != 1:
                total += conv2d_macs(side, side, cin, mid, 1)
            side = down(side, s)
            total += conv2d_macs(side, side, mid, mid, kernel, groups=mid)
            total += conv2d_macs(side, side, mid, c_out, 1)
    if stride == 32:
        total += conv2d_macs(side, side, _LITE0_STAGES[-1][4], _LITE0_HEAD, 1)
    return total


def dit_forward_macs(batch: int, chunk: int, action_dim: int, hidden: int, depth: int, mlp_ratio: float, cond_dim: int):
    """One DiT denoiser call on `batch` rows: embeddings, blocks over chunk+1 tokens, final linear on every token."""
    seq = chunk + 1
    mlp_hidden = int(hidden * mlp_ratio)
    per_row = linear_macs(1, 256, hidden) + linear_macs(1, hidden, hidden)  # timestep MLP (256-d sinusoid)
    per_row += linear_macs(1, cond_dim, hidden)  # condition embedder (f_c or the null vector)
    per_row += linear_macs(chunk, action_dim, hidden)  # action tokens
    per_row += depth * vit_block_macs(seq, hidden, mlp_hidden)
    per_row += linear_macs(seq, hidden, action_dim)  # final layer runs on all tokens; position 0 is dropped after
    return batch * per_row


def star_router_macs(visual_tokens: int, text_tokens: int, hidden: int, rc, num_layers: int) -> int:
    """STAR router for one sample (spec 2.2, as `router.STARRouter.logits` computes it)."""
    d1 = rc.proj_dim
    # W_p on the pooled visual token (pooling commutes with the linear map) and on every text token
    macs = linear_macs(1 + text_tokens, hidden, d1)
    macs += linear_macs(1, d1, rc.spatial_hidden) + linear_macs(1, rc.spatial_hidden, num_layers)  # spatial MLP
    # temporal branch: one post-LN TransformerEncoderLayer over the text tokens, then time_proj on the pooled feature
    macs += 4 * linear_macs(text_tokens, d1, d1) + attention_core_macs(text_tokens, text_tokens, d1)
    macs += 2 * linear_macs(text_tokens, d1, rc.temporal_ff)
    macs += linear_macs(1, d1, num_layers) + linear_macs(1, d1, 1)  # time_proj, temp_controller
    return macs


# ---------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class StageCost:
    """Cost of one stage: multiply-adds (`macs`) and FLOPs (= 2 * macs)."""

    name: str
    macs: int
    detail: str = ""

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class FlopsReport:
    """Per-stage cost of one `predict()` call for `batch` samples. `stages` is keyed by STAGES."""

    stages: dict[str, StageCost]
    seq_len: int
    visual_tokens: int
    text_tokens: int
    num_views: int
    active_layers: int
    num_layers: int
    batch: int
    ddim_steps: int
    cfg_doubling: bool
    include_lm_head: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_macs(self) -> int:
        return sum(s.macs for s in self.stages.values())

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def macs(self, stage: str) -> int:
        return self.stages[stage].macs

    def flops(self, stage: str) -> int:
        return self.stages[stage].flops

    def stage_flops(self) -> dict[str, float]:
        """{stage: FLOPs, ..., "total": FLOPs}: the shape of `PolicyOutput.flops`."""
        return {name: float(s.flops) for name, s in self.stages.items()} | {"total": float(self.total_flops)}

    def as_dict(self) -> dict:
        """JSON-friendly summary (G = 1e9)."""
        return {
            "seq_len": self.seq_len,
            "visual_tokens": self.visual_tokens,
            "text_tokens": self.text_tokens,
            "num_views": self.num_views,
            "active_layers": self.active_layers,
            "num_layers": self.num_layers,
            "batch": self.batch,
            "ddim_steps": self.ddim_steps,
            "cfg_doubling": self.cfg_doubling,
            "stages_gmacs": {k: v.macs / 1e9 for k, v in self.stages.items()},
            "total_gmacs": self.total_macs / 1e9,
            "total_gflops": self.total_flops / 1e9,
        }

    def table(self) -> str:
        """A plain-text table: stage, G MACs, G FLOPs, share of total, detail."""
        total = max(self.total_macs, 1)
        rows = [f"{'stage':<12} {'GMACs':>10} {'GFLOPs':>10} {'share':>7}  detail"]
        for s in self.stages.values():
            rows.append(
                f"{s.name:<12} {s.macs / 1e9:>10.4f} {s.flops / 1e9:>10.4f} {100 * s.macs / total:>6.1f}%  {s.detail}"
            )
        rows.append(f"{'total':<12} {self.total_macs / 1e9:>10.4f} {self.total_flops / 1e9:>10.4f} {100.0:>6.1f}%")
        return "\n".join(rows)


def vision_macs_per_view(config: MoLeVLAConfig) -> tuple[int, str]:
    """(MACs, description) of the vision encoder on one view at config.image_size."""
    vc, size = config.vision, config.image_size
    if vc.backbone == "patch":
        side = size // vc.patch_size
        return conv2d_macs(side, side, 3, vc.feature_dim, vc.patch_size), f"conv {vc.patch_size}px patches"
    if vc.backbone == "efficientnet_lite0":
        detail = "EfficientNet-Lite0 features" + (" (stride 16)" if vc.feature_stride == 16 else "")
        return efficientnet_lite0_macs(size, vc.feature_stride), detail
    # dinosiglip: the featurizer stops after the second-to-last block of each tower (vit.penultimate_patches)
    dino = vit_macs(size, DINOV2_L14_REG4, DINOV2_L14_REG4.depth - 1)
    siglip = vit_macs(size, SIGLIP_SO400M_14, SIGLIP_SO400M_14.depth - 1)
    return dino + siglip, f"DINOv2 ({DINOV2_L14_REG4.depth - 1} blocks) + SigLIP ({SIGLIP_SO400M_14.depth - 1} blocks)"


def estimate(
    config: MoLeVLAConfig,
    text_tokens: int | None = None,
    *,
    seq_len: int | None = None,
    num_views: int | None = None,
    active_layers: int | None = None,
    batch: int = 1,
    ddim_steps: int | None = None,
    cfg_scale: float | None = None,
    include_lm_head: bool = False,
) -> FlopsReport:
    """Analytic cost of one prediction with `config`.

    text_tokens: non-visual tokens of one sample: BOS + prompt + EOS (+ right padding, which costs like real tokens).
                 Give either this or `seq_len` (= visual tokens + text tokens). Default: 36, the paper's 292 - 256.
    num_views / active_layers / ddim_steps / cfg_scale: override the config's values (k is a runtime setting).
    include_lm_head: add a vocab projection per token to the LLM stage, as the paper's FLOPs do (we never run it).
    """
    views = config.num_views if num_views is None else num_views
    k = config.active_layers if active_layers is None else active_layers
    n = config.llm.num_layers
    if not isinstance(views, int) or views < 1:
        raise ValueError(f"num_views must be a positive integer, got {views!r}.")
    if not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"active_layers must be an integer in 0..{n} (the LLM has {n} layers), got {k!r}.")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}.")
    visual = views * config.tokens_per_view
    if seq_len is not None and text_tokens is not None:
        raise ValueError("give either text_tokens or seq_len, not both (seq_len = visual tokens + text tokens).")
    if seq_len is not None:
        text_tokens = seq_len - visual
    elif text_tokens is None:
        text_tokens = PAPER_TOKENS - 256
    if text_tokens < 2:
        raise ValueError(
            f"text_tokens must be >= 2 (BOS and the EOS cognition token), got {text_tokens}; with {visual} visual "
            f"tokens ({views} view(s) x {config.tokens_per_view}) seq_len must be at least {visual + 2}."
        )
    length = visual + text_tokens
    lc, ah = config.llm, config.action_head
    steps = ah.ddim_steps if ddim_steps is None else ddim_steps
    scale = ah.cfg_scale if cfg_scale is None else cfg_scale
    doubled = scale != 1.0  # the model batches cond + uncond rows whenever guidance is on

    per_view, vision_detail = vision_macs_per_view(config)
    f, w = config.vision.feature_dim, config.vision.projector_width
    projector = linear_macs(visual, f, w) + linear_macs(visual, w, lc.hidden_size)
    projector += linear_macs(visual, lc.hidden_size, lc.hidden_size)
    router = star_router_macs(visual, text_tokens, lc.hidden_size, config.router, n)
    layer = llama_layer_macs(length, lc.hidden_size, lc.num_heads, lc.num_kv_heads, lc.intermediate_size)
    llm = k * layer + (linear_macs(length, lc.hidden_size, lc.vocab_size) if include_lm_head else 0)
    rows = 2 if doubled else 1
    dit = steps * dit_forward_macs(
        rows, config.chunk_size, config.action_dim, ah.hidden_size, ah.depth, ah.mlp_ratio, lc.hidden_size
    )
    stages = {
        "vision": StageCost("vision", batch * views * per_view, f"{views} view(s) x {vision_detail}"),
        "projector": StageCost("projector", batch * projector, f"{visual} tokens, {f}->{w}->{lc.hidden_size}"),
        "router": StageCost("router", batch * router, f"{visual} visual + {text_tokens} text tokens"),
        "llm": StageCost(
            "llm",
            batch * llm,
            f"{k}/{n} layers x L={length}" + (" + lm_head" if include_lm_head else ""),
        ),
        "action_head": StageCost(
            "action_head", batch * dit, f"{steps} DDIM steps x {rows} row(s) (CFG {'on' if doubled else 'off'})"
        ),
    }
    return FlopsReport(
        stages=stages,
        seq_len=length,
        visual_tokens=visual,
        text_tokens=text_tokens,
        num_views=views,
        active_layers=k,
        num_layers=n,
        batch=batch,
        ddim_steps=steps,
        cfg_doubling=doubled,
        include_lm_head=include_lm_head,
    )


def llm_layer_macs(config: MoLeVLAConfig, seq_len: int) -> int:
    """MACs of one decoder layer of `config` for one sample of length `seq_len` (the LLM stage is k times this)."""
    lc = config.llm
    return llama_layer_macs(seq_len, lc.hidden_size, lc.num_heads, lc.num_kv_heads, lc.intermediate_size)


# ---------------------------------------------------------------------------------------------- paper check
@dataclass(frozen=True)
class PaperReference:
    """Our LLaMA-2-7B count at the paper's shapes next to the paper's Table 1 values (all in G MACs)."""

    tokens: int
    full_gmacs: float  # 32 layers + lm_head, attention included
    k16_gmacs: float  # 16 layers + lm_head
    full_linear_only_gmacs: float  # without the attention products (some counters drop them)
    lm_head_gmacs: float
    paper_full_gmacs: float = PAPER_COGACT_FULL_GMACS
    paper_k16_gmacs: float = PAPER_MOLE_K16_GMACS

    @property
    def full_rel_error(self) -> float:
        return self.full_gmacs / self.paper_full_gmacs - 1.0

    @property
    def k16_rel_error(self) -> float:
        return self.k16_gmacs / self.paper_k16_gmacs - 1.0

    def summary(self) -> str:
        return "\n".join(
            [
                f"LLaMA-2-7B over {self.tokens} tokens, MACs incl. lm_head ({self.lm_head_gmacs:.1f} G):",
                f"  full depth (32 layers): ours {self.full_gmacs:8.1f} G   paper {self.paper_full_gmacs:8.1f} G"
                f"   ({100 * self.full_rel_error:+.2f}%)",
                f"  k = 16 layers:          ours {self.k16_gmacs:8.1f} G   paper {self.paper_k16_gmacs:8.1f} G"
                f"   ({100 * self.k16_rel_error:+.2f}%)",
                f"  full depth without the attention products: {self.full_linear_only_gmacs:8.1f} G",
                f"  in FLOPs (2 x MACs) our full-depth LLM is {2 * self.full_gmacs:8.1f} G",
            ]
        )


def cogact_base_reference(tokens: int = PAPER_TOKENS) -> PaperReference:
    """Our count at the paper's shapes (cogact-base preset, LLaMA-2-7B, `tokens` tokens incl. the lm_head)."""
    config = MoLeVLAConfig.preset("cogact-base")
    text = tokens - config.num_visual_tokens
    full = estimate(config, text, active_layers=32, include_lm_head=True).macs("llm")
    k16 = estimate(config, text, active_layers=16, include_lm_head=True).macs("llm")
    lc = config.llm
    lm_head = linear_macs(tokens, lc.hidden_size, lc.vocab_size)
    attn = lc.num_layers * attention_core_macs(tokens, tokens, lc.hidden_size)
    return PaperReference(
        tokens=tokens,
        full_gmacs=full / 1e9,
        k16_gmacs=k16 / 1e9,
        full_linear_only_gmacs=(full - attn) / 1e9,
        lm_head_gmacs=lm_head / 1e9,
    )


def main() -> None:
    print(cogact_base_reference().summary())
    for name in ("tiny", "small", "cogact-base"):
        config = MoLeVLAConfig.preset(name)
        n = config.llm.num_layers
        print(f"\n{name}: N={n}, {config.num_visual_tokens} visual tokens + 36 text tokens")
        for k in (n, n // 2):
            report = estimate(config, 36, active_layers=k)
            print(f"  k={k}: total {report.total_macs / 1e9:.4g} GMACs")
            print("    " + report.table().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
