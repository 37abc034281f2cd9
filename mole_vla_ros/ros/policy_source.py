"""Finding and loading the policy the node runs (ROS-free; replay and tests use it too).

`policy.checkpoint` names a checkpoint directory (config.json + model.safetensors + normalization.json, written by
mole_vla_ros.model.checkpoint.save_checkpoint). Empty means the bundled model: the package's `models/` folder (in
share/mole_vla_ros/models when installed by colcon, or the source tree), picking `models/default` or the only
checkpoint there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mole_vla_ros.ros.params import PolicySourceConfig

log = logging.getLogger(__name__)
CHECKPOINT_MARKER = "config.json"


def model_search_dirs() -> list[Path]:
    """Where a bundled model may live: the ament share directory (colcon install), then the source tree."""
    dirs = []
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        get_package_share_directory = None
    if get_package_share_directory is not None:
        try:
            dirs.append(Path(get_package_share_directory("mole_vla_ros")) / "models")
        except (LookupError, OSError, ValueError):  # not installed by colcon, or AMENT_PREFIX_PATH unset
            pass
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    return dirs


def resolve_checkpoint(path: str, search_dirs: list[Path] | None = None) -> Path:
    """The checkpoint directory to load. Raises ValueError saying what was looked for and how to fix it."""
    if path:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise ValueError(f"policy.checkpoint={path!r} is not a directory; pass the folder save_checkpoint wrote")
        if not (p / CHECKPOINT_MARKER).is_file():
            raise ValueError(
                f"policy.checkpoint={path!r} has no {CHECKPOINT_MARKER}; it must be a MoLe-VLA checkpoint directory "
                "(config.json, model.safetensors, normalization.json)"
            )
        return p
    searched = search_dirs if search_dirs is not None else model_search_dirs()
    for base in searched:
        if (base / "default" / CHECKPOINT_MARKER).is_file():
            return base / "default"
        found = sorted(d for d in base.glob("*") if (d / CHECKPOINT_MARKER).is_file()) if base.is_dir() else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(
                f"policy.checkpoint is empty and {base} holds several checkpoints {[d.name for d in found]}; "
                "choose one with policy.checkpoint:=<dir>"
            )
    raise ValueError(
        f"policy.checkpoint is empty and no bundled model was found in {[str(d) for d in searched]}; "
        "pass checkpoint:=<checkpoint directory> (see `mole-vla train`)"
    )


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'. An explicit CUDA device without CUDA is an error (a
    silent CPU fallback would run a 7B model at seconds per step on a robot)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"policy.device={device!r} but torch sees no CUDA device; use device:=cpu or auto")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"policy.device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("policy.device='mps' but MPS is not available; use device:=cpu or auto")
    return device


def load_policy(cfg: PolicySourceConfig, search_dirs: list[Path] | None = None) -> Any:
    """A MoLeVLAPolicy from the configured checkpoint on the configured device (the Policy protocol)."""
    path = resolve_checkpoint(cfg.checkpoint, search_dirs)  # before the slow torch import: fail fast on a typo
    device = resolve_device(cfg.device)
    from mole_vla_ros.model.policy import MoLeVLAPolicy

    log.info("loading MoLe-VLA checkpoint %s on %s", path, device)
    return MoLeVLAPolicy.from_checkpoint(
        str(path),
        device=device,
        active_layers=cfg.active_layers or None,
        skip_mode=cfg.skip_mode,
        seed=cfg.seed,
        dtype=cfg.dtype,
        cuda_graphs=cfg.cuda_graphs,
    )
