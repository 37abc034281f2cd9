"""An UNTRAINED tiny MoLe-VLA checkpoint, built on the spot, for running the replay pipeline when no trained model
is available (the demo before models/default exists, tests, benchmarks).

Its actions are noise shaped by the bag's own action statistics: the pipeline, timings, layer routing mechanics
and the output bag are real; the predictions mean nothing. Everything that shows its output says so
(`UNTRAINED_LABEL`, MODEL_CARD.md in the directory, `extra.untrained` in config.json).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

UNTRAINED_LABEL = "UNTRAINED tiny model (random weights): predictions are meaningless, the pipeline is real"


def recorded_actions(bag_path: str | Path, action_space: str, control_dt: float) -> np.ndarray | None:
    """Actions [N, D] encoded from the bag's EE pose topic at `control_dt` spacing (None if it has no EE pose)."""
    from mole_vla_ros.interfaces import Pose
    from mole_vla_ros.replay.bag import InputBag
    from mole_vla_ros.robot.franka import Topics
    from mole_vla_ros.ros.conversions import header_seconds, pose_msg_to_pose
    from mole_vla_ros.runtime.action_space import get_action_space

    with InputBag(bag_path) as bag:
        topic = next((t for t in bag.topics if t.endswith("/" + Topics.CURRENT_POSE)), None)
        if topic is None:
            return None
        stamps, poses = [], []
        for conn, t, raw in bag.messages([topic]):
            msg = bag.deserialize(raw, conn.msgtype, topic, t)
            stamp = header_seconds(msg)
            if not stamps or stamp >= stamps[-1] + control_dt - 1e-6:
                stamps.append(stamp)
                poses.append(pose_msg_to_pose(msg.pose))
    if len(poses) < 3:
        return None
    space = get_action_space(action_space)
    grip = np.ones(len(poses))
    return space.encode_trajectory([Pose(p.position, p.quaternion) for p in poses], grip)


def build_untrained_checkpoint(
    out_dir: str | Path, camera_names: tuple[str, ...], bag_path: str | Path | None = None, seed: int = 0
) -> Path:
    """Write a random-init `tiny` checkpoint for `camera_names` to `out_dir` (reused if it is already there).

    Normalization bounds come from the bag's recorded EE motion when `bag_path` is given (so the untrained model's
    actions have a plausible scale), else [-1, 1]."""
    import torch

    from mole_vla_ros.model.checkpoint import save_checkpoint
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import build_model
    from mole_vla_ros.model.normalization import ActionNormalizer

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "MODEL_CARD.md").is_file():
        return out
    cfg = MoLeVLAConfig.preset("tiny", camera_names=tuple(camera_names))
    torch.manual_seed(seed)
    model = build_model(cfg, pretrained=False)
    actions = recorded_actions(bag_path, cfg.action_space, cfg.control_dt) if bag_path else None
    if actions is not None and len(actions) >= 2:
        normalizer = ActionNormalizer.from_data(actions)
        # a standing-still bag has q01 == q99 on some dims: widen so unnormalize keeps a finite, small range
        span = np.maximum(normalizer.q99 - normalizer.q01, 1e-3)
        normalizer = ActionNormalizer(normalizer.q01, normalizer.q01 + span, normalizer.mask)
        source = f"q01/q99 of the actions recorded in {bag_path}"
    else:
        normalizer = ActionNormalizer.identity(cfg.action_dim)
        source = "identity ([-1, 1])"
    save_checkpoint(str(out), model, normalizer, extra={"untrained": True, "label": UNTRAINED_LABEL, "seed": seed})
    (out / "MODEL_CARD.md").write_text(
        f"# {UNTRAINED_LABEL}\n\n"
        f"- preset: tiny (random initialisation, torch seed {seed}); cameras {list(camera_names)}\n"
        f"- action normalization: {source}\n"
        "- built by mole_vla_ros.replay.untrained for running the replay pipeline without a trained model.\n"
        "- Do not use it on a robot. Train one with `mole-vla train` (see README).\n",
        encoding="utf-8",
    )
    log.info("wrote an untrained tiny checkpoint to %s", out)
    return out


def is_untrained(checkpoint_dir: str | Path) -> bool:
    """True when config.json marks the checkpoint as untrained."""
    import json

    try:
        meta = json.loads((Path(checkpoint_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return bool(meta.get("extra", {}).get("untrained"))
