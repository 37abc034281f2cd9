"""MoLe-VLA checkpoints: a directory, never a pickle.

    DIR/config.json          {"format": "mole_vla", "version": 1, "config": MoLeVLAConfig.to_dict(), "extra": {...}}
    DIR/model.safetensors    every tensor of model.state_dict()
    DIR/normalization.json   ActionNormalizer stats (q01, q99, mask)
    DIR/tokenizer/           saved HF tokenizer files (small / cogact-base), so loading needs no wheel or hub

`load_checkpoint` rebuilds the model from config.json WITHOUT pretrained backbones, compares every stored tensor's
name and shape against the model BEFORE loading anything, and raises naming each offending tensor.
"""

from __future__ import annotations

import json
import logging
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration import MoLeVLAConfig
from .modeling import MoLeVLA, build_model
from .normalization import ActionNormalizer
from .tokenizer import build_tokenizer

log = logging.getLogger(__name__)

FORMAT = "mole_vla"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORM_FILE = "normalization.json"


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or does not match the model its config describes."""


def save_checkpoint(directory: str, model: MoLeVLA, normalizer: ActionNormalizer, extra: dict | None = None) -> str:
    """Write config, weights, normalization stats (and tokenizer files) to `directory`; returns the directory."""
    if normalizer.action_dim != model.config.action_dim:
        raise CheckpointError(
            f"normalizer has {normalizer.action_dim} dims but the model predicts {model.config.action_dim}; "
            "compute the stats on the same action space."
        )
    os.makedirs(directory, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "extra": dict(extra or {})}
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    # clone: safetensors refuses views that share storage, and tensors must be contiguous
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(directory, WEIGHTS_FILE), metadata={"format": FORMAT, "version": str(VERSION)})
    normalizer.save(os.path.join(directory, NORM_FILE))
    model.tokenizer.save(directory)
    log.info("saved checkpoint to %s (%d tensors)", directory, len(state))
    return directory


def read_checkpoint_meta(directory: str) -> dict:
    """The parsed config.json of a checkpoint (format, version, config dict, extra)."""
    _require_files(directory)
    with open(os.path.join(directory, CONFIG_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{directory}/{CONFIG_FILE} is not a MoLe-VLA checkpoint config (format={meta.get('format')!r}); "
            "was it written by save_checkpoint?"
        )
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"checkpoint version {meta['version']} is newer than this code ({VERSION}); upgrade.")
    return meta


def load_checkpoint(
    directory: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[MoLeVLA, ActionNormalizer, dict]:
    """(model in eval mode, normalizer, extra) from a checkpoint directory. Shapes are validated before loading."""
    meta = read_checkpoint_meta(directory)
    config = MoLeVLAConfig.from_dict(meta["config"])
    normalizer = ActionNormalizer.load(os.path.join(directory, NORM_FILE))
    if normalizer.action_dim != config.action_dim:
        raise CheckpointError(
            f"{directory}/{NORM_FILE} has {normalizer.action_dim} dims, config.action_dim is {config.action_dim}."
        )
    tokenizer = build_tokenizer(config.llm, checkpoint_dir=directory)
    model = build_model(config, device=device, dtype=dtype, pretrained=False, tokenizer=tokenizer)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    path = os.path.join(directory, WEIGHTS_FILE)
    with safe_open(path, framework="pt", device="cpu") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        problems = []
        for name in sorted(set(expected) | set(stored)):
            if name not in stored:
                problems.append(f"missing tensor {name} (expected shape {list(expected[name])})")
            elif name not in expected:
                problems.append(f"unexpected tensor {name} (shape {list(stored[name])}) not in the model")
            elif stored[name] != expected[name]:
                problems.append(f"tensor {name}: expected shape {list(expected[name])}, got {list(stored[name])}")
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise CheckpointError(
                f"{path} does not match the model described by its config.json ({len(problems)} problem(s)):\n  "
                f"{shown}{more}\nThe weights and config.json must come from the same save_checkpoint call."
            )
        state = {k: f.get_tensor(k) for k in stored}
    model.load_state_dict(state, strict=True)
    model.eval()
    log.info("loaded checkpoint %s (preset %s) on %s", directory, config.preset_name, device)
    return model, normalizer, meta.get("extra", {})


def _require_files(directory: str) -> None:
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory!r} does not exist.")
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE, NORM_FILE) if not os.path.isfile(os.path.join(directory, n))]
    if missing:
        raise CheckpointError(
            f"checkpoint {directory!r} lacks {missing}; a checkpoint holds {CONFIG_FILE}, {WEIGHTS_FILE} and "
            f"{NORM_FILE} (written by save_checkpoint)."
        )
