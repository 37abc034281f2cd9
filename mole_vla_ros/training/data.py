"""Training data: find or build the dataset, hold a split in memory, cache frozen vision features, order samples.

- `resolve_dataset(path, ...)`: a built dataset directory (meta.json, from `mole-vla dataset build`) is used as is;
  episode directories or recording roots are built first through `mole_vla_ros.data.dataset.build_dataset`.
- `SplitData`: one split (train / val) as tensors: normalized action chunks, instruction ids and either the uint8
  images or the cached vision features.
- `cached_vision_features(model, dataset, ...)`: runs the frozen vision tower once over a split and stores the tokens
  in `<dataset>/vision_cache/` (keyed by a fingerprint of the tower's weights and the image size) so stage 1, stage 2
  and later runs reuse them.
- `SampleOrder`: the global sample order, a fresh permutation per epoch from (seed, epoch). Sample g of the run is a
  pure function of g, so resuming at step s continues with exactly the samples an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CACHE_DIR = "vision_cache"
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def is_built_dataset(path: str | Path) -> bool:
    return (Path(path) / "meta.json").is_file()


def resolve_dataset(
    paths: list[str | Path], out_dir: str | Path, rate_hz: float, image_size: int, cameras: list[str] | None = None
) -> Path:
    """The built dataset directory to train on.

    paths: one built dataset, or any number of episode directories / recording roots (built into
    `out_dir/dataset`, reused when it already exists).
    """
    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        raise ValueError("no training data given; pass --data DIR (a built dataset or recorded episodes).")
    built = [p for p in paths if is_built_dataset(p)]
    if built:
        if len(paths) != 1:
            raise ValueError(
                f"--data mixes a built dataset ({built[0]}) with other paths {[str(p) for p in paths if p != built[0]]}; "
                "give one built dataset, or only episode directories (they are built together)."
            )
        return paths[0]
    from mole_vla_ros.data.dataset import DatasetConfig, build_dataset

    target = Path(out_dir) / "dataset"
    if is_built_dataset(target):
        log.info("reusing the dataset built earlier in %s (delete it to rebuild from the episodes)", target)
        return target
    config = DatasetConfig(rate_hz=rate_hz, image_size=image_size, cameras=tuple(cameras or ()))
    log.info("building a dataset from %d path(s) into %s (%.1f Hz, %d px)", len(paths), target, rate_hz, image_size)
    report = build_dataset(paths, target, config)
    log.info(report.summary())
    return target


def open_split(root: str | Path, split: str):
    """A `TrainingDataset` for `split` with raw (un-normalized) actions; normalization happens in SplitData."""
    from mole_vla_ros.data.dataset import TrainingDataset

    return TrainingDataset(root, split, normalize_actions=False)


def _image_shards(ds):
    """Yield uint8 image arrays [n, V, S, S, 3] shard by shard (one file in memory at a time)."""
    for i in range(len(ds.files)):
        yield ds._handle(i).get_tensor("images")


def vision_fingerprint(model) -> str:
    """Hash of the vision tower's weights, the image size and the views: features are valid only for these."""
    h = hashlib.sha1()
    h.update(f"{model.config.image_size}|{model.config.num_views}|{model.config.vision.backbone}".encode())
    for name, t in sorted(model.vision.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_vision_features(model, ds, dtype: torch.dtype, batch_size: int = 64, progress: bool = True):
    """Vision tokens [N, V*P, F] of every sample of `ds`, computed with the (frozen) tower in eval mode."""
    from tqdm import tqdm

    was_training = model.vision.training
    model.vision.eval()
    out = []
    bar = tqdm(total=len(ds), desc=f"vision features ({ds.split})", unit="img", disable=not progress)
    try:
        for shard in _image_shards(ds):
            for start in range(0, len(shard), batch_size):
                images = model.image_tensor(torch.from_numpy(shard[start : start + batch_size]))
                out.append(model.vision(images).to("cpu", dtype))
                bar.update(images.shape[0])
    finally:
        bar.close()
        model.vision.train(was_training)
    if not out:
        f = model.config.vision.feature_dim
        return torch.zeros((0, model.config.num_visual_tokens, f), dtype=dtype)
    return torch.cat(out)


def cached_vision_features(model, ds, cache_dtype: str, fallback_dir: str | Path, progress: bool = True):
    """Features of split `ds` from the cache, computing and storing them on first use.

    The cache lives in `<dataset>/vision_cache/` (or `fallback_dir` when the dataset directory is read-only), named
    by the tower's fingerprint, so a changed tower or image size never reads stale features.
    """
    from safetensors.torch import load_file, save_file

    dtype = _TORCH_DTYPES[cache_dtype]
    name = f"{vision_fingerprint(model)}-{cache_dtype}-{ds.split}.safetensors"
    candidates = [Path(ds.root) / CACHE_DIR, Path(fallback_dir) / CACHE_DIR]
    for d in candidates:
        if (d / name).is_file():
            feats = load_file(str(d / name))["features"]
            if feats.shape[0] == len(ds):
                log.info("vision features of the %s split loaded from %s", ds.split, d / name)
                return feats
            log.warning("ignoring %s: %d rows for a split of %d samples", d / name, feats.shape[0], len(ds))
    feats = compute_vision_features(model, ds, dtype, progress=progress)
    for d in candidates:
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / (name + f".tmp{os.getpid()}")
            save_file({"features": feats.contiguous()}, str(tmp))
            os.replace(tmp, d / name)
            log.info("cached %s vision features %s in %s", ds.split, list(feats.shape), d / name)
            break
        except OSError as exc:
            log.warning("cannot write the vision cache in %s (%s); trying the next place", d, exc)
    return feats


@dataclass
class SplitData:
    """One split in memory. Exactly one of `images` (uint8 [N, V, S, S, 3]) and `features` ([N, T, F]) is set."""

    actions: torch.Tensor  # float32 [N, chunk, action_dim], q01/q99-normalized (gripper raw)
    instruction_ids: torch.Tensor  # int64 [N]
    instructions: list[str]
    episode_index: torch.Tensor  # int64 [N]
    images: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @classmethod
    def load(cls, ds, normalizer, features: torch.Tensor | None = None) -> SplitData:
        """Read a TrainingDataset split (raw actions) into memory; images only when no features are given."""
        n = len(ds)
        if n == 0:
            raise ValueError(f"the {ds.split} split of {ds.root} has no samples; record more episodes or lower --rate.")
        actions = normalizer.normalize(ds.column("actions").astype(np.float64)).astype(np.float32)
        images = None
        if features is None:
            images = torch.from_numpy(np.ascontiguousarray(ds.column("images")))
        return cls(
            actions=torch.from_numpy(actions),
            instruction_ids=torch.from_numpy(ds.column("instruction_id").astype(np.int64)),
            instructions=list(ds.instructions),
            episode_index=torch.from_numpy(ds.column("episode_index").astype(np.int64)),
            images=images,
            features=features,
        )

    def batch(self, indices: torch.Tensor) -> dict:
        """The samples at `indices` as a compute_loss batch (+ "vision_tokens" when features are cached)."""
        out = {
            "actions": self.actions[indices],
            "instructions": [self.instructions[int(i)] for i in self.instruction_ids[indices]],
        }
        if self.features is not None:
            out["vision_tokens"] = self.features[indices]
        else:
            out["images"] = self.images[indices]
        return out


class SampleOrder:
    """Sample indices of an endless shuffled stream: epoch e is a permutation drawn from (seed, e)."""

    def __init__(self, num_samples: int, seed: int):
        if num_samples < 1:
            raise ValueError(f"cannot draw batches from an empty split (num_samples={num_samples}).")
        self.n, self.seed = num_samples, seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch: memory stays O(N)
        return self._cache[epoch]

    def take(self, start: int, count: int) -> torch.Tensor:
        """Indices of stream positions start .. start+count-1."""
        pos = torch.arange(start, start + count)
        epochs = pos // self.n
        out = torch.empty(count, dtype=torch.long)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._perm(e)[pos[sel] % self.n]
        return out

    def epoch_of(self, position: int) -> float:
        return position / self.n
