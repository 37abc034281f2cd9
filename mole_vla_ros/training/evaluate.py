"""Offline evaluation on held-out episodes: action error against compute, per layer-skipping method.

For each method (a checkpoint, a skip mode and k) every held-out sample is predicted with the same diffusion noise,
the predicted and demonstrated chunks are decoded from the sample's end-effector pose through the action space
(deltas chain along the chunk, as the robot would execute them), and compared on the valid (unpadded) steps:

    translation_m   mean distance between predicted and demonstrated target positions
    rotation_rad    mean geodesic angle between predicted and demonstrated target orientations
    gripper_acc     fraction of steps whose open/closed state matches
    first_*         the same for the first action only (the one a chunked controller runs first)
    reach_*         translation on the samples before their episode's first closing chunk: where the policy has
                    to find the object the instruction names (closed-loop success hinges on it)
    gflops          analytic compute of one prediction (model/flops.py: vision + projector + router + k layers +
                    DDIM action head), at the evaluated k
    *_by_instruction  on data with several instructions: translation per instruction, and each instruction's most
                    used layer set for STAR rows (does the router route by task?)

The methods of the paper's Table 1 and its ablation at the small scale:
    full depth (k = N) | MoLe (STAR) at k | random skip at k | early exit (first k layers) | MoLe without CogKD at k
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class Method:
    """One row of the comparison: which checkpoint, skip mode and k."""

    label: str
    checkpoint: str
    skip_mode: str
    active_layers: int


@dataclass
class MethodResult:
    label: str
    checkpoint: str
    skip_mode: str
    active_layers: int
    num_layers: int
    samples: int
    translation_m: float
    rotation_rad: float
    gripper_acc: float
    first_translation_m: float
    first_rotation_rad: float
    first_gripper_acc: float
    # reach phase: samples before the first chunk of their episode that closes the gripper (where the policy must
    # find the object the words name; the overall error averages it with the easier phases)
    reach_translation_m: float
    reach_samples: int
    gflops: float
    llm_gflops: float
    repeats: int = 1  # diffusion-noise seeds averaged; the *_std fields are the spread of their means
    translation_m_std: float = 0.0
    rotation_rad_std: float = 0.0
    gripper_acc_std: float = 0.0
    # STAR rows: how many distinct layer sets the router ran over the held-out samples, and its median logit margin
    # between the k-th and (k+1)-th layer (near 0: near-ties, the choice flips with small input changes)
    layer_sets: int | None = None
    router_margin: float | None = None
    # the most used of those sets, most used first: [[layers...], fraction of the held-out samples] (at most 3)
    top_layer_sets: list | None = None
    # data with several instructions: translation_m per instruction (mean over the noise seeds), and for STAR rows
    # each instruction's most used layer set [[layers...], fraction of that instruction's samples]; does the router
    # route by task?
    translation_by_instruction: dict | None = None
    layer_set_by_instruction: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeldOut:
    """Held-out samples: uint8 images [N, V, S, S, 3], raw action chunks [N, C, D], valid mask [N, C], start poses
    [N, 7] (x y z qx qy qz qw), instructions, and `reach` [N] (bool: before the episode's first closing chunk)."""

    images: np.ndarray
    actions: np.ndarray
    mask: np.ndarray
    ee_pose: np.ndarray
    instructions: list[str]
    action_space: str
    cameras: list[str]
    image_size: int
    reach: np.ndarray

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def load_held_out(dataset_dir, split: str = "val", max_samples: int | None = None, seed: int = 0) -> HeldOut:
    """The `split` of a built dataset (by default the validation episodes, never trained on)."""
    from .data import open_split

    ds = open_split(dataset_dir, split)
    n = len(ds)
    if n == 0:
        raise ValueError(
            f"the {split} split of {dataset_dir} is empty; build the dataset with --val-fraction > 0 (held-out "
            "episodes) or evaluate on another split with --split."
        )
    idx = np.arange(n)
    if max_samples is not None and max_samples < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
    iid = ds.column("instruction_id")[idx]
    actions = ds.column("actions")  # the whole split: the reach phase needs every chunk of an episode
    reach = reach_phase(ds.column("episode_index"), ds.column("frame_index"), actions)[idx]
    return HeldOut(
        images=ds.column("images")[idx],
        actions=actions[idx].astype(np.float64),
        mask=ds.column("action_mask")[idx].astype(bool),
        ee_pose=ds.column("ee_pose")[idx].astype(np.float64),
        instructions=[ds.instructions[int(i)] for i in iid],
        action_space=ds.action_space,
        cameras=list(ds.cameras),
        image_size=ds.image_size,
        reach=reach,
    )


def reach_phase(episode: np.ndarray, frame: np.ndarray, actions: np.ndarray, gripper_dim: int = -1) -> np.ndarray:
    """bool [N]: the sample comes before the first chunk of its episode that closes the gripper (action < 0.5)."""
    closes = (actions[:, :, gripper_dim] < 0.5).any(axis=1)
    reach = np.zeros(len(frame), dtype=bool)
    for e in np.unique(episode):
        rows = episode == e
        first = frame[rows & closes].min() if (rows & closes).any() else np.inf
        reach[rows] = frame[rows] < first
    return reach


def chunk_errors(pred: np.ndarray, true: np.ndarray, mask: np.ndarray, ee_pose: np.ndarray, space_name: str):
    """Per-step errors of predicted vs demonstrated chunks [N, C, D] decoded from start poses [N, 7].

    Returns translation [N, C] (m), rotation [N, C] (rad), gripper_match [N, C] (bool), and `mask` [N, C].
    """
    from mole_vla_ros.runtime import rotations as rot
    from mole_vla_ros.runtime.action_space import get_action_space

    space = get_action_space(space_name)
    n, c, _ = true.shape
    trans = np.zeros((n, c))
    angle = np.zeros((n, c))
    grip = np.zeros((n, c), dtype=bool)
    for i in range(n):
        p0, q0 = ee_pose[i, :3], ee_pose[i, 3:7]
        pp, qp, gp = space.decode_arrays(p0, q0, pred[i])
        pt, qt, gt = space.decode_arrays(p0, q0, true[i])
        trans[i] = np.linalg.norm(pp - pt, axis=-1)
        angle[i] = rot.quat_angle(qp, qt)
        grip[i] = (gp >= 0.5) == (gt >= 0.5)
    return trans, angle, grip, mask


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> float:
    return float((x * mask).sum() / max(mask.sum(), 1))


@torch.no_grad()
def predict_all(
    model, normalizer, data: HeldOut, skip_mode: str, k: int, batch_size: int, seed: int, choices: list | None = None
) -> np.ndarray:
    """Un-normalized predicted chunks [N, C, D] for every held-out sample. Batch i always draws the same noise
    (seed + i), so methods differ only in the layers they run. `choices`: a list that gets each batch's RouterChoice."""
    out = []
    model.eval()
    for b, start in enumerate(range(0, len(data), batch_size)):
        sl = slice(start, start + batch_size)
        gen = torch.Generator().manual_seed(seed + b)
        actions, choice = model.predict(
            torch.from_numpy(np.ascontiguousarray(data.images[sl])),
            data.instructions[sl],
            active_layers=k,
            skip_mode=skip_mode,
            generator=gen,
        )
        if choices is not None:
            choices.append(choice)
        out.append(normalizer.unnormalize(actions.float().cpu().numpy()))
    return np.concatenate(out)


def prediction_gflops(config, instruction: str, tokenizer, k: int) -> tuple[float, float]:
    """(whole prediction, LLM stage) GFLOPs of one prediction at k active layers."""
    from mole_vla_ros.model.flops import estimate

    text_tokens = len(tokenizer.encode(instruction)) + 1  # + BOS
    report = estimate(config, text_tokens=text_tokens, active_layers=k)
    return report.total_flops / 1e9, report.flops("llm") / 1e9


def evaluate_methods(
    methods: list[Method],
    data: HeldOut,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    repeats: int = 1,
) -> list[MethodResult]:
    """Run every method on `data` and return one MethodResult per method (same order).

    repeats: diffusion-noise seeds per method (seed, seed + 100003, ...), the same seeds for every method; metrics
    are their mean and the *_std fields their spread, so a difference smaller than that spread is noise.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer (noise seeds per method), got {repeats!r}.")
    from tqdm import tqdm

    from mole_vla_ros.model.checkpoint import load_checkpoint

    loaded: dict[str, tuple] = {}
    results = []
    texts = sorted(set(data.instructions))  # the per-instruction breakdown's order (as instruction_sensitivity's)
    of_text = np.searchsorted(texts, data.instructions)
    for m in tqdm(methods, desc="methods", unit="method", disable=not progress):
        if m.checkpoint not in loaded:
            model, normalizer, _ = load_checkpoint(m.checkpoint, device=device)
            cfg = model.config
            if list(cfg.camera_names) != data.cameras or cfg.image_size != data.image_size:
                raise ValueError(
                    f"{m.checkpoint} expects cameras {list(cfg.camera_names)} at {cfg.image_size} px, the held-out "
                    f"data has {data.cameras} at {data.image_size} px; evaluate on a dataset built for this model."
                )
            if cfg.action_space != data.action_space:
                raise ValueError(
                    f"{m.checkpoint} predicts {cfg.action_space!r} actions, the data holds {data.action_space!r}."
                )
            loaded[m.checkpoint] = (model, normalizer)
        model, normalizer = loaded[m.checkpoint]
        n_layers = model.config.num_layers
        k = n_layers if m.skip_mode == "full" else m.active_layers
        if not 1 <= k <= n_layers:
            raise ValueError(f"{m.label}: active_layers must be in 1..{n_layers}, got {k}.")
        per_seed, per_text, choices = [], [], []
        for r in range(repeats):
            # the router is noise-free at inference: every repeat makes the same choice, so the first one's suffice
            record = choices if r == 0 else None
            pred = predict_all(model, normalizer, data, m.skip_mode, k, batch_size, seed + 100_003 * r, record)
            trans, angle, grip, mask = chunk_errors(pred, data.actions, data.mask, data.ee_pose, data.action_space)
            first = np.zeros_like(mask)
            first[:, 0] = True
            reach = mask & data.reach[:, None]
            per_text.append([_masked_mean(trans, mask & (of_text == i)[:, None]) for i in range(len(texts))])
            per_seed.append(
                [
                    _masked_mean(trans, mask),
                    _masked_mean(angle, mask),
                    _masked_mean(grip, mask),
                    _masked_mean(trans, first),
                    _masked_mean(angle, first),
                    _masked_mean(grip, first),
                    _masked_mean(trans, reach),
                ]
            )
        routed = m.skip_mode == "star" and k < n_layers
        stats = np.asarray(per_seed)
        mean, std = stats.mean(0), stats.std(0)
        gf, llm_gf = prediction_gflops(model.config, data.instructions[0], model.tokenizer, k)
        results.append(
            MethodResult(
                label=m.label,
                checkpoint=m.checkpoint,
                skip_mode=m.skip_mode,
                active_layers=k,
                num_layers=n_layers,
                samples=len(data),
                translation_m=float(mean[0]),
                rotation_rad=float(mean[1]),
                gripper_acc=float(mean[2]),
                first_translation_m=float(mean[3]),
                first_rotation_rad=float(mean[4]),
                first_gripper_acc=float(mean[5]),
                reach_translation_m=float(mean[6]) if data.reach.any() else float("nan"),
                reach_samples=int(data.reach.sum()),
                gflops=gf,
                llm_gflops=llm_gf,
                repeats=repeats,
                translation_m_std=float(std[0]),
                rotation_rad_std=float(std[1]),
                gripper_acc_std=float(std[2]),
                **(_router_stats(choices) if routed else {}),
                **(
                    _by_instruction(texts, np.mean(per_text, 0), choices if routed else [], data.instructions)
                    if len(texts) > 1
                    else {}
                ),
            )
        )
        log.info("%s: translation %.4f m, rotation %.4f rad", m.label, mean[0], mean[1])
    return results


def instruction_sensitivity(
    checkpoint: str, data: HeldOut, k: int, skip_mode: str, batch_size: int = 32, seed: int = 0, device: str = "cpu"
) -> dict | None:
    """Does the policy listen? Every held-out sample is predicted with its own instruction and with another
    instruction of the data set (the next one in sorted order), with the same noise. Returns the mean distance (m)
    between the two predicted end points of each chunk (valid steps), next to the policy's own end-point error: a
    policy that ignores the words moves the same either way. None when the data holds a single instruction."""
    from mole_vla_ros.model.checkpoint import load_checkpoint

    texts = sorted(set(data.instructions))
    if len(texts) < 2:
        return None
    model, normalizer, _ = load_checkpoint(checkpoint, device=device)
    other = [texts[(texts.index(t) + 1) % len(texts)] for t in data.instructions]
    swapped = replace(data, instructions=other)  # shallow: the arrays are shared
    own = predict_all(model, normalizer, data, skip_mode, k, batch_size, seed)
    alt = predict_all(model, normalizer, swapped, skip_mode, k, batch_size, seed)
    from mole_vla_ros.runtime.action_space import get_action_space

    space = get_action_space(data.action_space)
    last = np.maximum(data.mask.sum(1).astype(int) - 1, 0)  # last valid step of each chunk

    def end_points(chunks: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                space.decode_arrays(data.ee_pose[i, :3], data.ee_pose[i, 3:7], chunks[i])[0][last[i]]
                for i in range(len(data))
            ]
        )

    p_own, p_alt, p_true = end_points(own), end_points(alt), end_points(data.actions)
    return {
        "skip_mode": skip_mode,
        "active_layers": k,
        "end_point_change_m": float(np.linalg.norm(p_alt - p_own, axis=1).mean()),
        "end_point_error_m": float(np.linalg.norm(p_own - p_true, axis=1).mean()),
        "instructions": texts,
    }


def standard_methods(
    checkpoint: str,
    k: int,
    baseline_checkpoint: str | None = None,
    ablation_checkpoint: str | None = None,
    random_checkpoint: str | None = None,
    early_checkpoint: str | None = None,
) -> list[Method]:
    """The comparison of the paper's Table 1 + ablation.

    random_checkpoint / early_checkpoint: stage-2 models trained with `--skip-mode random` / `--skip-mode early` (the
    same recipe, budget and teacher as MoLe), each evaluated in the mode it was trained for: the fair baselines.
    Training-free baselines (random skip, early exit) also run on the MoLe model itself and, when given, on the
    full-depth (stage-1) model."""
    base = baseline_checkpoint or checkpoint
    methods = [Method("full depth", base, "full", k)]
    if baseline_checkpoint:
        methods.append(Method("MoLe model at full depth", checkpoint, "full", k))
    methods.append(Method(f"MoLe (STAR) k={k}", checkpoint, "star", k))
    if ablation_checkpoint:
        methods.append(Method(f"MoLe w/o CogKD k={k}", ablation_checkpoint, "star", k))
    if random_checkpoint:
        methods.append(Method(f"random skip k={k} (trained)", random_checkpoint, "random", k))
    if early_checkpoint:
        methods.append(Method(f"early exit k={k} (trained)", early_checkpoint, "early", k))
    methods.append(Method(f"random skip k={k} (MoLe model)", checkpoint, "random", k))
    methods.append(Method(f"early exit k={k} (MoLe model)", checkpoint, "early", k))
    if baseline_checkpoint:
        methods.append(Method(f"random skip k={k} (full-depth model)", base, "random", k))
        methods.append(Method(f"early exit k={k} (full-depth model)", base, "early", k))
    return methods


def _router_stats(choices: list, top: int = 3) -> dict:
    """layer_sets, router_margin and top_layer_sets of a STAR method from its RouterChoices over the held-out
    samples."""
    sets = [ix for c in choices for ix in c.indices]
    margins = torch.cat([c.margins() for c in choices])
    return {
        "layer_sets": len(set(sets)),
        "router_margin": float(margins.median()),
        "top_layer_sets": _set_shares(sets, top),
    }


def _set_shares(sets: list[tuple[int, ...]], top: int) -> list:
    """The `top` most common layer sets of `sets` as [[layers...], fraction of `sets`], most common first."""
    return [[list(ix), n / len(sets)] for ix, n in Counter(sets).most_common(top)]


def _by_instruction(texts: list[str], translation: np.ndarray, choices: list, instructions: list[str]) -> dict:
    """translation_by_instruction, and layer_set_by_instruction when `choices` (a STAR row's RouterChoices, in
    sample order) are given."""
    out = {"translation_by_instruction": {t: float(e) for t, e in zip(texts, translation)}}
    if choices:
        sets = [ix for c in choices for ix in c.indices]
        out["layer_set_by_instruction"] = {
            t: _set_shares([ix for ix, text in zip(sets, instructions) if text == t], 1)[0] for t in texts
        }
    return out


def _set_label(layers: list[int], share: float) -> str:
    """'1,2,3,4 100%': a layer set and its share, as the table prints it."""
    return f"{','.join(map(str, layers))} {share:.0%}"


def format_table(results: list[MethodResult]) -> str:
    """A plain-text table, errors relative to the first row (full depth) in the last column."""
    ref = results[0].translation_m if results else float("nan")
    header = (
        f"{'method':<40} {'k/N':>6} {'GFLOPs':>8} {'LLM GF':>7} {'trans (mm)':>13} {'rot (deg)':>13} {'grip acc':>9} "
        f"{'1st trans':>10} {'1st rot':>8} {'reach (mm)':>10} {'vs full':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        rel = (r.translation_m / ref - 1.0) * 100 if ref and math.isfinite(ref) and ref > 0 else float("nan")
        lines.append(
            f"{r.label:<40} {f'{r.active_layers}/{r.num_layers}':>6} {r.gflops:>8.3f} {r.llm_gflops:>7.3f} "
            f"{f'{r.translation_m * 1e3:.2f}±{r.translation_m_std * 1e3:.2f}':>13} "
            f"{f'{math.degrees(r.rotation_rad):.2f}±{math.degrees(r.rotation_rad_std):.2f}':>13} "
            f"{r.gripper_acc:>9.3f} {r.first_translation_m * 1e3:>10.2f} "
            f"{math.degrees(r.first_rotation_rad):>8.3f} {r.reach_translation_m * 1e3:>10.2f} {rel:>+7.1f}%"
        )
    from mole_vla_ros.model.router import NEAR_TIE_MARGIN

    for r in (r for r in results if r.layer_sets is not None):
        tie = " (near-ties)" if r.router_margin < NEAR_TIE_MARGIN else ""
        used = "; ".join(_set_label(*share) for share in r.top_layer_sets or [])
        lines.append(
            f"router of {r.label}: {r.layer_sets} distinct layer sets, median margin {r.router_margin:.3g}{tie}"
            + (f"; most used: {used}" if used else "")
        )
    by_text = [r for r in results if r.translation_by_instruction]
    if by_text:
        texts = list(by_text[0].translation_by_instruction)
        lines.append("translation (mm) by instruction: " + "; ".join(f"[{i + 1}] {t!r}" for i, t in enumerate(texts)))
        for r in by_text:
            errors = "  ".join(f"[{i + 1}] {r.translation_by_instruction[t] * 1e3:6.2f}" for i, t in enumerate(texts))
            line = f"  {r.label:<40} {errors}"
            if r.layer_set_by_instruction:
                route = r.layer_set_by_instruction
                line += "   layers: " + "; ".join(f"[{i + 1}] {_set_label(*route[t])}" for i, t in enumerate(texts))
            lines.append(line)
    if results:
        lines.append(
            f"({results[0].samples} held-out samples x {results[0].repeats} noise seed(s); errors are means over the "
            "valid steps of each chunk, ± the spread over noise seeds; reach: the "
            f"{results[0].reach_samples} samples before their episode's first grasp)"
        )
    return "\n".join(lines)


def plot_results(results: list[MethodResult], path: str) -> str:
    """PNG of translation and rotation error against GFLOPs per prediction, one marker per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = "osD^v<>p*h"
    for i, r in enumerate(results):
        for ax, value in ((axes[0], r.translation_m * 1e3), (axes[1], math.degrees(r.rotation_rad))):
            ax.scatter(r.gflops, value, marker=markers[i % len(markers)], s=60, label=r.label)
    axes[0].set_ylabel("translation error (mm)")
    axes[1].set_ylabel("rotation error (deg)")
    for ax in axes:
        ax.set_xlabel("GFLOPs per prediction")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    n = results[0].samples if results else 0
    fig.suptitle(f"held-out action error vs compute ({n} samples)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
