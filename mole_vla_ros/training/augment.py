"""Image augmentation for training: random resized crop and colour jitter, per sample and per view.

Works on float images [B, V, 3, S, S] in [0, 1] and draws every random number from the `generator` it is given, so a
run (and a resumed run) sees the same augmented pixels for the same seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import AugmentConfig


def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def augment_images(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A new tensor of augmented images [B, V, 3, S, S] (float, [0, 1]); `images` is left untouched."""
    if images.ndim != 5 or images.shape[2] != 3 or not images.is_floating_point():
        raise ValueError(f"augment_images expects float images [B, V, 3, S, S] in [0, 1], got {list(images.shape)}.")
    b, v, _, s, _ = images.shape
    out = torch.empty_like(images)
    for i in range(b):
        for j in range(v):
            x = images[i, j]
            # square crop covering a random area fraction, resized back to S x S
            side = max(1, round(s * _uniform(*cfg.crop_scale, generator) ** 0.5))
            top = int(torch.randint(0, s - side + 1, (), generator=generator))
            left = int(torch.randint(0, s - side + 1, (), generator=generator))
            x = x[:, top : top + side, left : left + side]
            if side != s:
                x = F.interpolate(x[None], size=(s, s), mode="bilinear", align_corners=False, antialias=True)[0]
            if cfg.brightness > 0:
                x = x * _uniform(1 - cfg.brightness, 1 + cfg.brightness, generator)
            if cfg.contrast > 0:
                mean = _grayscale(x).mean()
                x = (x - mean) * _uniform(1 - cfg.contrast, 1 + cfg.contrast, generator) + mean
            if cfg.saturation > 0:
                gray = _grayscale(x)
                x = (x - gray) * _uniform(1 - cfg.saturation, 1 + cfg.saturation, generator) + gray
            out[i, j] = x.clamp(0.0, 1.0)
    return out
