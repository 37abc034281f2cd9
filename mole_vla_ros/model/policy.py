"""`MoLeVLAPolicy`: the checkpointed model behind the `mole_vla_ros.interfaces.Policy` contract.

    policy = MoLeVLAPolicy.from_checkpoint("runs/lift/ckpt", device="cuda", active_layers=8, skip_mode="star", seed=0)
    out = policy.infer(PolicyInput(images={"scene": rgb}, instruction="lift the cube"))
    out.actions          # [chunk, action_dim] un-normalized, in policy.action_space
    out.layer_indices    # the LLM layers STAR ran this step
    out.timings_ms       # preprocess, vision, router, llm, action_head, total
    out.flops            # analytic FLOPs per stage for this step (flops.py), "total" included

Determinism: the diffusion noise comes from a CPU torch.Generator. With `seed` the policy owns one generator seeded
once (two policies with the same seed produce the same sequence of chunks); `PolicyInput.seed` overrides it for one
call (same input + same seed -> same actions, on any device).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..interfaces import PolicyInput, PolicyOutput, copy_policy_attributes
from .checkpoint import load_checkpoint
from .configuration import SKIP_MODES
from .modeling import MoLeVLA
from .normalization import ActionNormalizer
from .processor import ImageProcessor


class MoLeVLAPolicy:
    """Policy protocol implementation around a MoLeVLA model and its normalization statistics."""

    def __init__(
        self,
        model: MoLeVLA,
        normalizer: ActionNormalizer,
        active_layers: int | None = None,
        skip_mode: str | None = None,
        seed: int | None = 0,
        cfg_scale: float | None = None,
    ):
        cfg = model.config
        if normalizer.action_dim != cfg.action_dim:
            raise ValueError(f"normalizer has {normalizer.action_dim} dims, the model predicts {cfg.action_dim}.")
        self.model = model.eval()
        self.normalizer = normalizer
        copy_policy_attributes(cfg, self)  # camera_names, chunk_size, action_space, control_dt, image_size
        self.num_layers = cfg.num_layers
        self.active_layers = self._check_k(cfg.active_layers if active_layers is None else active_layers)
        self.skip_mode = skip_mode or cfg.skip_mode
        if self.skip_mode not in SKIP_MODES:
            raise ValueError(f"skip_mode must be one of {list(SKIP_MODES)}, got {self.skip_mode!r}.")
        self.cfg_scale = cfg_scale
        self.processor = ImageProcessor(self.camera_names, self.image_size)
        self.generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        self._flops_cache: dict[tuple[int, int], dict[str, float]] = {}

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        device: str = "cpu",
        active_layers: int | None = None,
        skip_mode: str | None = None,
        seed: int | None = 0,
        dtype: torch.dtype | str = torch.float32,
        cfg_scale: float | None = None,
        cuda_graphs: bool | None = None,
    ) -> MoLeVLAPolicy:
        """Load a checkpoint directory (see checkpoint.py) onto `device` and wrap it. cuda_graphs: override the
        checkpoint's `cuda_graphs` (replay vision, router and DDIM loop as CUDA graphs on a GPU; None = keep it)."""
        if isinstance(dtype, str):
            names = {
                "float32": torch.float32,
                "fp32": torch.float32,
                "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16,
                "float16": torch.float16,
                "fp16": torch.float16,
            }
            if dtype not in names:
                raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}.")
            dtype = names[dtype]
        model, normalizer, _extra = load_checkpoint(path, device=device, dtype=dtype)
        if cuda_graphs is not None:
            model.reconfigure(model.config.replace(cuda_graphs=bool(cuda_graphs)))
        return cls(model, normalizer, active_layers, skip_mode, seed, cfg_scale)

    def _check_k(self, k) -> int:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= int(k) <= self.num_layers:
            raise ValueError(f"active_layers must be an integer in 1..{self.num_layers}, got {k!r}.")
        return int(k)

    def infer(self, inp: PolicyInput) -> PolicyOutput:
        """One action chunk for one observation (un-normalized), with the router's choice and stage timings."""
        t0 = time.perf_counter()
        images = self.processor(inp.images)
        timings: dict[str, float] = {"preprocess": (time.perf_counter() - t0) * 1e3}
        k = self.active_layers if inp.active_layers is None else self._check_k(inp.active_layers)
        gen = torch.Generator().manual_seed(int(inp.seed)) if inp.seed is not None else self.generator
        actions, choice = self.model.predict(
            images,
            [inp.instruction],
            active_layers=k,
            skip_mode=self.skip_mode,
            generator=gen,
            timings=timings,
            cfg_scale=self.cfg_scale,
        )
        normalized = actions[0].float().cpu().numpy()
        out = self.normalizer.unnormalize(normalized)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return PolicyOutput(
            actions=out,
            layer_indices=choice.indices[0],
            layer_probs=choice.probs[0].float().cpu().numpy(),
            num_layers=self.num_layers,
            timings_ms=timings,
            flops=self._flops(inp.instruction, len(choice.indices[0])),
        )

    def _flops(self, instruction: str, k: int) -> dict[str, float]:
        """Analytic FLOPs per stage of this step (flops.py), cached per (prompt length, k)."""
        text_tokens = 1 + len(self.model.tokenizer.encode(instruction))  # BOS + prompt + EOS
        key = (text_tokens, k)
        if key not in self._flops_cache:
            from .flops import estimate

            report = estimate(self.model.config, text_tokens, active_layers=k, cfg_scale=self.cfg_scale)
            self._flops_cache[key] = report.stage_flops()
        return dict(self._flops_cache[key])

    def warmup(self, instruction: str = "warm up", steps: int = 2) -> None:
        """Run a few throw-away predictions (allocator, kernels) without touching the policy's generator."""
        blank = {c: np.zeros((self.image_size, self.image_size, 3), np.uint8) for c in self.camera_names}
        for _ in range(steps):
            self.infer(PolicyInput(images=blank, instruction=instruction, seed=0))
