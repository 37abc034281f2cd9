"""Resumable training checkpoints: a model checkpoint directory plus the trainer's state, never a pickle of objects.

    <run>/checkpoints/step_0000500/
        config.json, model.safetensors, normalization.json   model checkpoint (save_checkpoint; MoLeVLAPolicy loads it)
        teacher.safetensors                                   EMA teacher LLM weights (stage "mole" with CogKD)
        trainer_state.pt                                      optimizer, LR schedule, RNG states, step (tensors and
                                                              plain containers: loaded with weights_only=True)
        trainer_state.json                                    the same bookkeeping, readable (step, config)

Checkpoints are written to a temporary directory and renamed, so a killed run never leaves a half-written one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TEACHER_FILE = "teacher.safetensors"
STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def rng_state() -> dict:
    """The global RNGs (torch CPU/CUDA, python) as tensors and plain containers.

    The loop itself reseeds from (seed, step, micro-batch) before every micro-batch, so resuming is exact without
    them; they are restored anyway so code that draws from the global RNGs between steps resumes the same way.
    numpy's global RNG is never used by the loop (augmentation and sampling draw from torch generators).
    """
    state = {
        "torch": torch.get_rng_state(),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Resumable checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def save_training_checkpoint(
    run_dir: str | Path,
    step: int,
    model,
    normalizer,
    teacher,
    trainer_state: dict,
    info: dict,
    keep: int,
    model_state: dict | None = None,
) -> Path:
    """Write a resumable checkpoint for `step` and prune all but the newest `keep`. Returns its directory.

    model_state: a full state dict to store instead of model.state_dict() (FSDP gathers one on rank 0).
    """
    from safetensors.torch import save_file

    from mole_vla_ros.model.checkpoint import save_checkpoint

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if model_state is not None:
        _save_with_state(str(tmp), model, normalizer, info, model_state)
    else:
        save_checkpoint(str(tmp), model, normalizer, extra=info)
    if teacher is not None:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in teacher.llm.state_dict().items()}
        save_file(state, str(tmp / TEACHER_FILE))
    torch.save(trainer_state, tmp / STATE_FILE)
    readable = {k: v for k, v in trainer_state.items() if k in ("step", "samples_seen", "config", "stage")}
    (tmp / STATE_JSON).write_text(json.dumps(readable, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("removed old checkpoint %s (keep_checkpoints=%d)", old, keep)
    log.info("saved resumable checkpoint %s", final)
    return final


def _save_with_state(directory: str, model, normalizer, info: dict, state: dict) -> None:
    """save_checkpoint's layout with a given (gathered) state dict."""
    from safetensors.torch import save_file

    from mole_vla_ros.model.checkpoint import CONFIG_FILE, FORMAT, NORM_FILE, VERSION, WEIGHTS_FILE

    os.makedirs(directory, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "extra": dict(info)}
    Path(directory, CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    save_file(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()},
        os.path.join(directory, WEIGHTS_FILE),
        metadata={"format": FORMAT, "version": str(VERSION)},
    )
    normalizer.save(os.path.join(directory, NORM_FILE))
    model.tokenizer.save(directory)


def load_training_state(directory: str | Path) -> dict:
    """trainer_state.pt of a checkpoint (tensors and plain containers only: weights_only=True)."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a resumable checkpoint (no {STATE_FILE}); resume from a directory under "
            f"<run>/{CHECKPOINTS}/ or pass --resume auto."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model_weights(directory: str | Path, model) -> None:
    """Load model.safetensors of a checkpoint into `model` (strict: names and shapes must match)."""
    from safetensors.torch import load_file

    from mole_vla_ros.model.checkpoint import WEIGHTS_FILE

    state = load_file(str(Path(directory) / WEIGHTS_FILE))
    model.load_state_dict(state, strict=True)


def load_teacher_weights(directory: str | Path, teacher) -> None:
    from safetensors.torch import load_file

    path = Path(directory) / TEACHER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} has no {TEACHER_FILE} but this run trains with an EMA teacher; resume with the same "
            "stage and CogKD setting the checkpoint was written with."
        )
    teacher.llm.load_state_dict(load_file(str(path)), strict=True)
