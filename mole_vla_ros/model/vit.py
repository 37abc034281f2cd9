"""A plain ViT with timm's parameter names, for the cogact-base vision towers (no timm / torchvision needed).

timm depends on torchvision, whose PyPI wheels are built against CUDA torch and do not load with the CPU torch this
project installs, so the two towers are written out here. Parameter names match timm's VisionTransformer, so a timm
state dict (or a CogACT checkpoint's `vision_backbone.{dino,siglip}_featurizer.*`) loads by name:

    cls_token, reg_token, pos_embed, patch_embed.proj.{weight,bias},
    blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm

timm's `attn_pool.*` (SigLIP's MAP head) is not built: the featurizer never uses it.

`penultimate_patches(x)` is prismatic's featurizer: the output of the second-to-last block, prefix tokens dropped,
no final norm (timm `get_intermediate_layers(x, n={depth - 2})`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTSpec:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    patch_size: int = 14
    img_size: int = 224
    class_token: bool = True
    reg_tokens: int = 0
    layer_scale: float | None = None  # LayerScale init (DINOv2: 1e-5); None = no LayerScale
    gelu_tanh: bool = False


# timm vit_large_patch14_reg4_dinov2 (img_size=224) and vit_so400m_patch14_siglip_224
DINOV2_L14_REG4 = ViTSpec(1024, 24, 16, 4096, class_token=True, reg_tokens=4, layer_scale=1e-5)
SIGLIP_SO400M_14 = ViTSpec(1152, 27, 16, 4304, class_token=False)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, gelu_tanh: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.approximate = "tanh" if gelu_tanh else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        d = spec.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, spec.num_heads)
        self.ls1 = LayerScale(d, spec.layer_scale) if spec.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, spec.mlp_hidden, spec.gelu_tanh)
        self.ls2 = LayerScale(d, spec.layer_scale) if spec.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """timm-compatible ViT trunk (patch tokens out). Position embeddings cover patches only, as timm does for
    DINOv2 (`no_embed_class`) and SigLIP (no class token)."""

    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.spec = spec
        d = spec.embed_dim
        grid = spec.img_size // spec.patch_size
        self.patch_embed = PatchEmbed(spec.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if spec.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, spec.reg_tokens, d)) if spec.reg_tokens else None
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, d) * 0.02)
        self.blocks = nn.ModuleList([Block(spec) for _ in range(spec.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.num_prefix_tokens = int(spec.class_token) + spec.reg_tokens

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        return torch.cat([*prefix, x], dim=1) if prefix else x

    def penultimate_patches(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> patch tokens [N, (S/p)^2, D] after block depth-2 (the last block is not run)."""
        x = self._tokens(x)
        for blk in self.blocks[: len(self.blocks) - 1]:
            x = blk(x)
        return x[:, self.num_prefix_tokens :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full trunk: final-normed patch tokens."""
        x = self._tokens(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, self.num_prefix_tokens :]
