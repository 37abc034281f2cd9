"""CogACT's DiT action head (spec 1.4): eps-prediction diffusion over a chunk of actions, conditioned on f_c.

Network (parameter names follow CogACT's `action_model/models.py` so a key map stays short):
    x_embedder.linear          Linear(action_dim -> H)                       action tokens
    t_embedder.mlp             sinusoid(256) -> Linear -> SiLU -> Linear       timestep embedding
    z_embedder.linear          Linear(llm_hidden -> H); z_embedder.uncondition [llm_hidden] (CFG null condition)
    positional_embedding       [chunk+1, H] learnable
    blocks[i]                  pre-LN (no affine) attention (qkv bias) + pre-LN MLP (ratio 4, tanh-GELU); no adaLN
    final_layer                LN (no affine) -> Linear(H -> action_dim)
Sequence [c, x_1..x_chunk] with c = t_emb + z_emb; outputs are read at positions 1..chunk.

Diffusion: cosine (squaredcos_cap_v2) betas over T=100 steps; loss = MSE(eps_hat, eps) with each sample repeated R
times with independent (t, eps); CFG dropout swaps f_c for the learned null vector. Sampling: DDIM (eta = 0) over
`ddim_steps` evenly spaced steps, CFG with the conditional and unconditional halves in ONE batch, split along the
batch dimension (the MoLe repo split along time: spec 7.13).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import ActionHeadConfig
from .cuda_graphs import DropsGraphsWhenMoved, GraphedFunction
from .vit import Attention, Mlp  # the same blocks as the ViT towers, parameter names included (qkv, proj, fc1, fc2)


def cosine_betas(steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """squaredcos_cap_v2 schedule (improved-diffusion), float64."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor(
        [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)],
        dtype=torch.float64,
    )


def linear_betas(steps: int) -> torch.Tensor:
    scale = 1000 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)


def ddim_timesteps(total: int, steps: int) -> list[int]:
    """Evenly spaced steps as improved-diffusion's space_timesteps(total, 'ddimN'): 0, s, 2s, ... (ascending)."""
    stride = total // steps
    return list(range(0, stride * steps, stride))


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class ActionEmbedder(nn.Module):
    def __init__(self, action_dim: int, hidden: int):
        super().__init__()
        self.linear = nn.Linear(action_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class ConditionEmbedder(nn.Module):
    """Linear(f_c) with a learned null condition for classifier-free guidance (CogACT LabelEmbedder)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, hidden)
        self.uncondition = nn.Parameter(torch.randn(in_dim) / in_dim**0.5)
        self.dropout = dropout

    def forward(self, z: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """drop: bool [B]; True rows use the null condition."""
        if drop is not None:
            z = torch.where(drop[:, None], self.uncondition.to(z.dtype)[None].expand_as(z), z)
        return self.linear(z)


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), gelu_tanh=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm_final(x))


class DiTActionHead(DropsGraphsWhenMoved, nn.Module):
    """The denoiser plus its diffusion schedule. `loss()` for training, `sample()` for DDIM + CFG inference."""

    def __init__(self, cfg: ActionHeadConfig, cond_dim: int, action_dim: int, chunk_size: int):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.chunk_size = chunk_size
        h = cfg.hidden_size
        self.x_embedder = ActionEmbedder(action_dim, h)
        self.t_embedder = TimestepEmbedder(h)
        self.z_embedder = ConditionEmbedder(cond_dim, h, cfg.cfg_dropout)
        self.positional_embedding = nn.Parameter(torch.randn(chunk_size + 1, h) * 0.02)
        self.blocks = nn.ModuleList([DiTBlock(h, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(h, action_dim)
        self._init_weights()
        betas = (
            cosine_betas(cfg.diffusion_steps) if cfg.beta_schedule == "cosine" else linear_betas(cfg.diffusion_steps)
        )
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        # float64 schedule on the host side; per-call values are cast to the sample dtype
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        # the sampling loop as CUDA graphs (inference on a GPU); MoLeVLA switches it with config.cuda_graphs
        self.graphs = GraphedFunction(self._ddim, "the DiT sampling loop")

    @torch.no_grad()
    def _init_weights(self) -> None:
        # DiT init: xavier linears, zero biases, N(0, 0.02) timestep MLP, zero output layer
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    m.bias.zero_()
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor, drop: torch.Tensor | None = None):
        """eps prediction [B, chunk, action_dim] for noisy actions x [B, chunk, A], steps t [B], condition z [B, D]."""
        if x.shape[1] != self.chunk_size or x.shape[2] != self.action_dim:
            raise ValueError(f"actions must be [B, {self.chunk_size}, {self.action_dim}], got {list(x.shape)}.")
        c = self.t_embedder(t) + self.z_embedder(z, drop)
        seq = torch.cat([c[:, None], self.x_embedder(x)], dim=1) + self.positional_embedding[None]
        for blk in self.blocks:
            seq = blk(seq)
        return self.final_layer(seq)[:, 1:]

    def loss(self, actions: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None):
        """Diffusion MSE: each sample repeated R times with its own (t, eps) and CFG dropout draw."""
        r = self.cfg.repeated_diffusion_steps
        x0 = actions.repeat_interleave(r, dim=0)
        z = cond.repeat_interleave(r, dim=0)
        n = x0.shape[0]
        dev = x0.device
        t = torch.randint(0, self.cfg.diffusion_steps, (n,), device=dev, generator=generator)
        eps = torch.randn(x0.shape, device=dev, dtype=x0.dtype, generator=generator)
        ab = self.alphas_cumprod.to(dev)[t].to(x0.dtype)[:, None, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        drop = None
        if self.training and self.cfg.cfg_dropout > 0:
            drop = torch.rand(n, device=dev, generator=generator) < self.cfg.cfg_dropout
        return F.mse_loss(self.denoise(xt, t, z, drop), eps)

    def guided_eps(self, x: torch.Tensor, t: int, z_pair: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guided eps for x [B, chunk, A]: ONE denoiser call on [x; x] with z_pair = [cond; null]
        ([2B, D]), split along the batch dimension: eps_u + scale * (eps_c - eps_u) on every chunk step."""
        b = x.shape[0]
        tt = torch.full((2 * b,), t, device=x.device, dtype=torch.long)
        eps = self.denoise(torch.cat([x, x], dim=0), tt, z_pair)
        eps_c, eps_u = eps[:b], eps[b:]
        return eps_u + scale * (eps_c - eps_u)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        generator: torch.Generator | None = None,
        cfg_scale: float | None = None,
        ddim_steps: int | None = None,
    ) -> torch.Tensor:
        """DDIM (eta = 0) with classifier-free guidance -> normalized actions [B, chunk, A], clipped to [-1, 1].

        The initial noise is drawn here; the deterministic loop from it runs as one CUDA graph at inference on a GPU
        (`self.graphs`, see cuda_graphs.py), eagerly elsewhere: same kernels, same result."""
        scale = float(self.cfg.cfg_scale if cfg_scale is None else cfg_scale)
        steps = tuple(ddim_timesteps(self.cfg.diffusion_steps, ddim_steps or self.cfg.ddim_steps))
        b = cond.shape[0]
        gen_device = generator.device if generator is not None else cond.device
        # the DDIM state and coefficients stay float32 even for a bf16 network; only the denoiser runs in `dtype`
        x = torch.randn((b, self.chunk_size, self.action_dim), generator=generator, device=gen_device)
        x = x.to(device=cond.device, dtype=torch.float32)
        static = (scale, steps, self.alphas_cumprod.data_ptr())
        return self._ddim(x, cond, *static) if self.training else self.graphs(x, cond, static=static)

    def _ddim(self, x: torch.Tensor, cond: torch.Tensor, scale: float, steps: tuple[int, ...], schedule_ptr: int = 0):
        """The DDIM loop from noise x [B, chunk, A] (float32) for condition cond [B, D] (the denoiser's dtype).
        schedule_ptr: where alphas_cumprod lives, only part of the graph key (a replaced schedule gets a new graph)."""
        b = cond.shape[0]
        dev, dtype = cond.device, cond.dtype
        guided = scale != 1.0
        if guided:
            z = torch.cat([cond, self.z_embedder.uncondition.to(dtype)[None].expand(b, -1)], dim=0)
        else:
            z = cond
        ac = self.alphas_cumprod.to(dev, torch.float64)
        for j in reversed(range(len(steps))):
            t = steps[j]
            ab_t = ac[t].float()
            ab_prev = ac[steps[j - 1]].float() if j > 0 else torch.ones((), device=dev)
            xin = x.to(dtype)
            if guided:
                eps = self.guided_eps(xin, t, z, scale).float()
            else:
                eps = self.denoise(xin, torch.full((b,), t, device=dev, dtype=torch.long), z).float()
            x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x.clamp(-1.0, 1.0).to(dtype)
