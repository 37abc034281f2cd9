"""Import a CogACT (or MoLe-VLA release) checkpoint into `MoLeVLA` through an explicit key map.

CogACT (microsoft/CogACT, `vla/cogactvla.py`) saves `torch.save({"model": {...}})` where "model" holds one state
dict per sub-module; flattened with "." they read:

    vision_backbone.dino_featurizer.<timm ViT key>        ->  vision.encoder.dino.<timm ViT key>
    vision_backbone.siglip_featurizer.<timm ViT key>      ->  vision.encoder.siglip.<timm ViT key>
    projector.projector.{0,2,4}.{weight,bias}             ->  projector.fc{1,2,3}.{weight,bias}   (FusedMLPProjector)
    llm_backbone.llm.model.embed_tokens.weight            ->  llm.embed_tokens.weight
    llm_backbone.llm.model.layers.N.<LLaMA layer key>     ->  llm.layers.N.<LLaMA layer key>
    llm_backbone.llm.model.norm.weight                    ->  llm.norm.weight
    llm_backbone.llm.model.route.<router key>             ->  router.<router key>   (MoLe-VLA release only)
    action_model.net.<DiT key>                            ->  action_head.<DiT key>
    llm_backbone.llm.lm_head.weight                       ignored: MoLe-VLA reads a hidden state, never decodes
    action_model.net.history_embedder.*                   ignored: CogACT builds it but never calls it
    *.rotary_emb.inv_freq                                 ignored: recomputed from rope_theta
    vision_backbone.*.{attn_pool,head,fc_norm}.*          ignored: SigLIP's MAP head / classifier, never run
    ema_diffusion.*                                       ignored unless use_ema=True (then it replaces action_model)

The HF-exported Prismatic/OpenVLA spelling (`projector.fc1..fc3`, `vision_backbone.featurizer` /
`fused_featurizer`, `language_model.model.*`) maps the same way. CogACT checkpoints carry no router, so the router
keeps its fresh initialization (as the MoLe code's `strict=False` load does); `ImportReport.expected_missing` lists
it apart from any real gap (`ImportReport.missing`). Shapes are all checked before anything is copied.

Files: `.safetensors` (flat) or `.pt`/`.pth`/`.ckpt` read with `torch.load(weights_only=True)`: no pickled code
runs. Nested dicts are flattened with ".".
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside the functions: the CLI registers this module without loading torch
    import torch
    from torch import nn

log = logging.getLogger(__name__)

# (source pattern, target template). First match wins; patterns are anchored.
KEY_MAP: tuple[tuple[str, str], ...] = (
    # vision towers (timm ViT keys are kept as they are)
    (r"vision_backbone\.(?:dino_featurizer|featurizer)\.(.+)", r"vision.encoder.dino.\1"),
    (r"vision_backbone\.(?:siglip_featurizer|fused_featurizer)\.(.+)", r"vision.encoder.siglip.\1"),
    # projector: prismatic nn.Sequential indices, or the HF export's fc names
    (r"projector\.projector\.0\.(weight|bias)", r"projector.fc1.\1"),
    (r"projector\.projector\.2\.(weight|bias)", r"projector.fc2.\1"),
    (r"projector\.projector\.4\.(weight|bias)", r"projector.fc3.\1"),
    (r"projector\.(fc[123])\.(weight|bias)", r"projector.\1.\2"),
    # LLaMA decoder
    (r"(?:llm_backbone\.llm|language_model)\.model\.embed_tokens\.weight", r"llm.embed_tokens.weight"),
    (r"(?:llm_backbone\.llm|language_model)\.model\.layers\.(\d+)\.(.+)", r"llm.layers.\1.\2"),
    (r"(?:llm_backbone\.llm|language_model)\.model\.norm\.weight", r"llm.norm.weight"),
    # MoLe-VLA's STAR router lives inside its LlamaModel as `route`
    (r"(?:llm_backbone\.llm|language_model)\.model\.route\.(.+)", r"router.\1"),
    # DiT action head
    (r"action_model\.net\.(.+)", r"action_head.\1"),
)

# Source keys that are deliberately dropped, with the reason reported to the user.
IGNORED: tuple[tuple[str, str], ...] = (
    (r"(?:llm_backbone\.llm|language_model)\.lm_head\.weight", "lm_head: MoLe-VLA reads a hidden state, never decodes"),
    (r".*rotary_emb\.inv_freq", "RoPE frequencies are recomputed from rope_theta"),
    (
        r"vision_backbone\.(?:siglip_featurizer|fused_featurizer|dino_featurizer|featurizer)\.(?:attn_pool|head|fc_norm)\..+",
        "ViT pooling/classifier head: the featurizer reads patch tokens and never runs it",
    ),
    (r"action_model\.net\.history_embedder\..+", "CogACT's action-history embedder is built but never used"),
    (r"ema_diffusion\..+", "EMA copy of the action head (pass use_ema=True to load it instead)"),
)

# Target names a CogACT checkpoint cannot provide; their absence is expected, not an error.
EXPECTED_MISSING = (r"router\..+",)

# Per-target reshapes between CogACT's layout and ours, applied only when the element count agrees.
_RESHAPES = (r"action_head\.z_embedder\.uncondition",)  # CogACT [1, D] -> ours [D]

_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


class CogACTImportError(ValueError):
    """The checkpoint does not fit the model (shapes, missing weights) or cannot be read."""


@dataclass
class ImportReport:
    """What `import_cogact` did.

    loaded:           (source key, target key) pairs copied into the model.
    missing:          model tensors the checkpoint did not provide (excluding `expected_missing`).
    expected_missing: model tensors a CogACT checkpoint never has (the router): they keep their initialization.
    unexpected:       source keys no rule maps (and not deliberately ignored).
    ignored:          (source key, reason) for keys dropped on purpose.
    """

    loaded: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    expected_missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        def head(items, n=5):
            items = list(items)
            return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")

        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.expected_missing:
            lines.append(f"kept fresh init for {len(self.expected_missing)} router tensors (not in CogACT)")
        if self.missing:
            lines.append(f"MISSING {len(self.missing)}: {head(self.missing)}")
        if self.unexpected:
            lines.append(f"UNEXPECTED {len(self.unexpected)}: {head(self.unexpected)}")
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)}: {head(k for k, _ in self.ignored)}")
        return "; ".join(lines)


def map_key(source_key: str) -> str | None:
    """The MoLeVLA parameter name for a CogACT key, or None when no rule maps it."""
    for pattern, target in KEY_MAP:
        if re.fullmatch(pattern, source_key):
            return re.sub(pattern, target, source_key, count=1)
    return None


def ignore_reason(source_key: str) -> str | None:
    for pattern, reason in IGNORED:
        if re.fullmatch(pattern, source_key):
            return reason
    return None


def flatten_state_dict(obj: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors -> one flat dict with "."-joined keys. Non-tensor leaves are an error."""
    import torch

    flat: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_state_dict(value, name + "."))
        elif isinstance(value, torch.Tensor):
            flat[name] = value
        else:
            raise CogACTImportError(
                f"checkpoint entry {name!r} is a {type(value).__name__}, not a tensor; expected a (nested) state dict."
            )
    return flat


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Flat CogACT state dict from a .safetensors file or a torch file loaded with weights_only=True.

    A top-level {"model": {...}} (CogACT's save format) or {"state_dict": {...}} wrapper is unwrapped.
    """
    import torch

    if not os.path.isfile(path):
        raise CogACTImportError(f"CogACT checkpoint {path!r} does not exist; pass the .pt or .safetensors file.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj = load_file(path)
    elif path.endswith(_CHECKPOINT_SUFFIXES):
        try:
            try:
                # mmap: a 15 GB checkpoint is paged in tensor by tensor instead of read whole
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                # mmap needs the zipfile format; legacy files load without it (still weights_only)
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # e.g. the weights-only unpickler refused a non-tensor object
            raise CogACTImportError(
                f"{path} could not be read with torch.load(weights_only=True): {exc}. Only plain tensor state dicts "
                "are accepted; re-save the checkpoint as a state dict or .safetensors."
            ) from exc
    else:
        raise CogACTImportError(f"{path}: unknown checkpoint suffix; expected one of {list(_CHECKPOINT_SUFFIXES)}.")
    if not isinstance(obj, Mapping):
        raise CogACTImportError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors.")
    return unwrap_state_dict(obj)


def unwrap_state_dict(obj: Mapping) -> dict[str, torch.Tensor]:
    """Flat state dict from CogACT's {"model": {sub-module: {...}}} (or {"state_dict": ...}, or already flat)."""
    for wrapper in ("model", "state_dict"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]  # any sibling (optimizer state, step counters) is not needed
            break
    return flatten_state_dict(obj)


def plan_import(
    model: nn.Module, state: Mapping[str, torch.Tensor], use_ema: bool = False
) -> tuple[dict[str, tuple[str, torch.Tensor]], ImportReport]:
    """Map every source key, check shapes, and report; copies nothing.

    Returns ({target key: (source key, tensor shaped for the target)}, report). Raises CogACTImportError listing
    every shape mismatch and every pair of source keys that land on the same target.
    """
    state = dict(state)
    if use_ema:
        ema = {k[len("ema_diffusion.") :]: v for k, v in state.items() if k.startswith("ema_diffusion.")}
        if not ema:
            raise CogACTImportError("use_ema=True but the checkpoint has no ema_diffusion.* tensors; drop use_ema.")
        state = {k: v for k, v in state.items() if not k.startswith(("action_model.", "ema_diffusion."))}
        state.update({f"action_model.{k}": v for k, v in ema.items()})
    targets = model.state_dict()
    report = ImportReport()
    plan: dict[str, tuple[str, torch.Tensor]] = {}
    errors: list[str] = []
    for key in sorted(state):
        reason = ignore_reason(key)
        if reason is not None:
            report.ignored.append((key, reason))
            continue
        target = map_key(key)
        if target is None or target not in targets:
            report.unexpected.append(key if target is None else f"{key} (-> {target}, not in this model)")
            continue
        if target in plan:
            errors.append(f"{key} and {plan[target][0]} both map to {target}")
            continue
        tensor = state[key]
        want = tuple(targets[target].shape)
        if tuple(tensor.shape) != want:
            if any(re.fullmatch(p, target) for p in _RESHAPES) and tensor.numel() == targets[target].numel():
                tensor = tensor.reshape(want)
            else:
                errors.append(f"{target} <- {key}: checkpoint {list(tensor.shape)}, model {list(want)}")
                continue
        plan[target] = (key, tensor)
    if errors:
        raise CogACTImportError(
            f"{len(errors)} tensor(s) do not fit the model:\n  "
            + "\n  ".join(errors[:20])
            + ("\n  ..." if len(errors) > 20 else "")
            + "\nBuild the model with the checkpoint's shapes (e.g. MoLeVLAConfig.preset('cogact-base'): LLaMA-2-7B, "
            "vocab 32064, DiT-B) before importing."
        )
    for target in targets:
        if target in plan:
            report.loaded.append((plan[target][0], target))
        elif any(re.fullmatch(p, target) for p in EXPECTED_MISSING):
            report.expected_missing.append(target)
        else:
            report.missing.append(target)
    return plan, report


def import_cogact(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    use_ema: bool = False,
) -> ImportReport:
    """Copy a CogACT checkpoint (path or state dict, nested or flat) into `model` through KEY_MAP.

    strict: raise when a model tensor other than the router is missing or a source key is unexpected. Shape
            mismatches always raise, before anything is copied.
    use_ema: load the action head from `ema_diffusion.*` instead of `action_model.*`.
    Returns the ImportReport (also logged).
    """
    state = read_checkpoint(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else unwrap_state_dict(source)
    plan, report = plan_import(model, state, use_ema=use_ema)
    if strict and (report.missing or report.unexpected):
        raise CogACTImportError(
            "checkpoint does not cover the model: "
            + report.summary()
            + ". Pass strict=False to load what matches (missing tensors keep their current values)."
        )
    import torch

    params = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for target, (_key, tensor) in plan.items():
            params[target].copy_(tensor.to(params[target].dtype))
    log.info("CogACT import: %s", report.summary())
    return report


# ---------------------------------------------------------------------------------------------- conversion
def read_cogact_stats(path: str, unnorm_key: str | None = None):
    """ActionNormalizer from CogACT's dataset_statistics.json ({dataset: {"action": {"q01", "q99", "mask"}}}).

    unnorm_key picks the dataset; it may be omitted when the file holds exactly one.
    """
    from .normalization import ActionNormalizer

    if not os.path.isfile(path):
        raise CogACTImportError(f"statistics file {path!r} does not exist; CogACT ships dataset_statistics.json.")
    with open(path, encoding="utf-8") as f:
        stats = json.load(f)
    datasets = sorted(k for k, v in stats.items() if isinstance(v, dict) and isinstance(v.get("action"), dict))
    if not datasets:
        raise CogACTImportError(f"{path} has no '<dataset>': {{'action': {{q01, q99}}}} entry; is it CogACT's file?")
    if unnorm_key is None:
        if len(datasets) != 1:
            raise CogACTImportError(f"{path} holds statistics for {datasets}; choose one with unnorm_key.")
        unnorm_key = datasets[0]
    if unnorm_key not in datasets:
        raise CogACTImportError(f"unnorm_key {unnorm_key!r} is not in {path}; it has {datasets}.")
    action = stats[unnorm_key]["action"]
    for name in ("q01", "q99"):
        if name not in action:
            raise CogACTImportError(f"{path}: {unnorm_key}.action has no {name!r}; found {sorted(action)}.")
    mask = action.get("mask", ActionNormalizer.default_mask(len(action["q01"])).tolist())
    return ActionNormalizer(action["q01"], action["q99"], mask), unnorm_key


def find_stats_file(checkpoint: str) -> str | None:
    """CogACT keeps dataset_statistics.json in the run directory: next to the checkpoint or one level up."""
    here = os.path.dirname(os.path.abspath(checkpoint))
    for folder in (here, os.path.dirname(here)):
        candidate = os.path.join(folder, "dataset_statistics.json")
        if os.path.isfile(candidate):
            return candidate
    return None


def convert_cogact(
    checkpoint: str,
    out_dir: str,
    *,
    config=None,
    stats: str | None = None,
    unnorm_key: str | None = None,
    dtype: str = "bfloat16",
    use_ema: bool = False,
    allow_missing: bool = False,
) -> tuple[str, ImportReport]:
    """CogACT checkpoint file -> MoLe-VLA checkpoint directory (config.json, model.safetensors, normalization.json).

    config: a MoLeVLAConfig (default: the cogact-base preset). Vision towers the checkpoint lacks (CogACT does not
            save frozen towers) come from config.vision.dino_weights / siglip_weights (local timm files).
    stats: CogACT's dataset_statistics.json (default: found next to the checkpoint); unnorm_key picks the dataset.
    allow_missing: keep the initialization of model tensors the checkpoint lacks instead of failing.
    The router is always freshly initialized (CogACT has none): fine-tune with `mole-vla train` before use.
    """
    import torch

    from .checkpoint import save_checkpoint
    from .configuration import MoLeVLAConfig
    from .modeling import build_model

    config = config or MoLeVLAConfig.preset("cogact-base")
    stats = stats or find_stats_file(checkpoint)
    if stats is None:
        raise CogACTImportError(
            f"no dataset_statistics.json next to {checkpoint}; pass the statistics file (CogACT ships one per run)."
        )
    normalizer, key = read_cogact_stats(stats, unnorm_key)
    if normalizer.action_dim != config.action_dim:
        raise CogACTImportError(
            f"{stats} ({key}) has {normalizer.action_dim} action dims but the config predicts {config.action_dim}."
        )
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise CogACTImportError(f"dtype {dtype!r} is not a floating torch dtype; use bfloat16, float16 or float32.")
    state = read_checkpoint(checkpoint)
    # pretrained=True loads only what the config names as local files (vision towers); the LLM source is ignored
    # here because every LLM weight comes from the checkpoint
    config = config.replace(**{"llm.source": "random"})
    model = build_model(config, "cpu", torch_dtype, pretrained=True)
    _plan, report = plan_import(model, state, use_ema=use_ema)
    vision_from_files = bool(config.vision.dino_weights or config.vision.siglip_weights)
    gaps = [k for k in report.missing if not (vision_from_files and k.startswith("vision."))]
    if report.unexpected or (gaps and not allow_missing):
        raise CogACTImportError(
            f"{checkpoint} does not cover the model: {report.summary()}. Vision towers missing from the checkpoint "
            "come from vision.dino_weights / vision.siglip_weights; allow_missing keeps other gaps at their init."
        )
    import_cogact(model, state, strict=False, use_ema=use_ema)
    save_checkpoint(
        out_dir,
        model,
        normalizer,
        extra={
            "source": "cogact",
            "cogact_checkpoint": os.path.abspath(checkpoint),
            "unnorm_key": key,
            "import_report": report.summary(),
            "router": "fresh init (not in CogACT)" if report.expected_missing else "from checkpoint",
        },
    )
    log.info("converted %s -> %s (%s)", checkpoint, out_dir, report.summary())
    return out_dir, report


def run(args) -> int:
    """`mole-vla import-cogact`: see register()."""
    from .configuration import MoLeVLAConfig

    overrides = {}
    if args.tokenizer:
        overrides |= {"llm.tokenizer": "llama", "llm.path": args.tokenizer}
    if args.dino_weights:
        overrides["vision.dino_weights"] = args.dino_weights
    if args.siglip_weights:
        overrides["vision.siglip_weights"] = args.siglip_weights
    try:
        config = MoLeVLAConfig.preset(args.preset, **overrides)
        out, report = convert_cogact(
            args.checkpoint,
            args.out,
            config=config,
            stats=args.stats,
            unnorm_key=args.unnorm_key,
            dtype=args.dtype,
            use_ema=args.use_ema,
            allow_missing=args.allow_missing,
        )
    except (CogACTImportError, ValueError, FileNotFoundError) as exc:
        print(f"import-cogact: {exc}")
        return 1
    print(f"wrote {out}: {report.summary()}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "import-cogact",
        help="convert a CogACT checkpoint (.pt / .safetensors) into a MoLe-VLA checkpoint directory",
        description="Maps CogACT's keys onto MoLe-VLA (see mole_vla_ros/model/cogact_import.py); the STAR router "
        "starts from a fresh init, so fine-tune before deploying. Nothing is downloaded.",
    )
    p.add_argument("checkpoint", help="CogACT checkpoint file, e.g. CogACT-Base.pt")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--stats", default=None, help="dataset_statistics.json (default: next to the checkpoint)")
    p.add_argument("--unnorm-key", default=None, help="dataset in the statistics file (e.g. rlbench)")
    p.add_argument("--tokenizer", default=None, help="local LLaMA-2 tokenizer directory (saved into the checkpoint)")
    p.add_argument("--dino-weights", default=None, help="local timm DINOv2 tower file, if the checkpoint lacks it")
    p.add_argument("--siglip-weights", default=None, help="local timm SigLIP tower file, if the checkpoint lacks it")
    p.add_argument("--preset", default="cogact-base", help="model shapes (default cogact-base)")
    p.add_argument("--dtype", default="bfloat16", help="stored dtype: bfloat16 (default), float16, float32")
    p.add_argument("--use-ema", action="store_true", help="take the action head from ema_diffusion.*")
    p.add_argument("--allow-missing", action="store_true", help="keep init values for tensors the file lacks")
    p.set_defaults(func=run)
