"""`mole-vla sim compare`: closed-loop results of several settings side by side, pooled over seed sets, paired.

    mole-vla sim compare runs/a/sim_eval.json runs/b/sim_eval.json          # every result row is a setting
    mole-vla sim compare \
        --setting "MoLe k=4" runs/a/seeds5000.json:star runs/a/seeds6000.json:star \
        --setting "full depth" runs/a/seeds5000.json:full runs/a/seeds6000.json:full \
        --reference "full depth" --json compare.json --plot compare.png

Each source is a `sim eval --json` file, optionally with `:MODE` or `:MODE@K` to pick one of its result rows (a
file holding one row needs none). A setting pools its sources (different seed sets; a seed counted twice is an
error). Every setting is compared with the reference (the first by default) on the episodes both ran, matched by
task and seed: because `sim eval` gives every setting the same scene and diffusion noise on a seed, the episodes
where exactly one of the two succeeds decide, and McNemar's exact test says how surprising their split would be
if the two were equally good (`stats.py`).

Reads JSON only: needs neither mujoco nor torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mole_vla_ros.sim.stats import PairedComparison, paired_comparison, wilson_interval

_SELECTOR = re.compile(r"^(?P<mode>star|random|early|full|scripted)(?:@(?P<k>\d+))?$")


@dataclass
class Setting:
    """One setting's episodes, pooled from its sources."""

    label: str
    sources: list[str] = field(default_factory=list)
    success: dict[tuple[str, int], bool] = field(default_factory=dict)  # (task, seed) -> success
    instruction: dict[tuple[str, int], str] = field(default_factory=dict)
    flops_sum: float = 0.0  # mean FLOPs x inferences, summed over the sources
    layers_sum: float = 0.0
    inferences: int = 0

    @property
    def episodes(self) -> int:
        return len(self.success)

    @property
    def successes(self) -> int:
        return sum(self.success.values())

    @property
    def rate(self) -> float:
        return self.successes / self.episodes

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.episodes)

    @property
    def mean_flops(self) -> float:
        return self.flops_sum / self.inferences if self.inferences else float("nan")

    @property
    def mean_layers(self) -> float:
        return self.layers_sum / self.inferences if self.inferences else float("nan")

    def seed_ranges(self) -> str:
        """The seeds as compact ranges, e.g. "5000-5099, 6000-6099"."""
        seeds = sorted({seed for _, seed in self.success})
        runs: list[list[int]] = []
        for seed in seeds:
            if runs and seed == runs[-1][1] + 1:
                runs[-1][1] = seed
            else:
                runs.append([seed, seed])
        return ", ".join(f"{a}-{b}" if b != a else f"{a}" for a, b in runs)

    def to_dict(self) -> dict:
        lo, hi = self.interval
        return {
            "label": self.label,
            "sources": self.sources,
            "episodes": self.episodes,
            "successes": self.successes,
            "success_rate": self.rate,
            "ci_low": lo,
            "ci_high": hi,
            "mean_flops": self.mean_flops,
            "mean_layers": self.mean_layers,
            "seeds": self.seed_ranges(),
        }


def split_source(spec: str) -> tuple[Path, str | None, int | None]:
    """ "runs/x.json:star@4" -> (path, "star", 4); a path alone -> (path, None, None)."""
    head, sep, tail = spec.rpartition(":")
    if sep and (m := _SELECTOR.match(tail)):
        return Path(head), m["mode"], int(m["k"]) if m["k"] else None
    return Path(spec), None, None


def _row_name(row: dict) -> str:
    k = row.get("active_layers")
    return f"{row['skip_mode']}@{k}" if k is not None else str(row["skip_mode"])


def read_results(path: Path) -> list[dict]:
    """The result rows of a `sim eval --json` file, each checked for the fields a comparison needs."""
    if not path.is_file():
        raise FileNotFoundError(f"no sim eval result file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc}); expected the file `mole-vla sim eval --json` writes") from exc
    rows = data if isinstance(data, list) else [data]
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"task", "skip_mode", "outcomes"} <= set(row):
            raise ValueError(f"{path}: row {i} is not a sim eval result (needs task, skip_mode and outcomes)")
        if not row["outcomes"]:
            raise ValueError(f"{path}: row {i} ({_row_name(row)}) has no per-episode outcomes to compare")
    if not rows:
        raise ValueError(f"{path} holds no results")
    return rows


def select_row(rows: list[dict], path: Path, mode: str | None, k: int | None) -> dict:
    """The one row of `rows` that `mode` (and `k`) name; without a selector the file must hold one row."""
    found = [r for r in rows if (mode is None or r["skip_mode"] == mode) and (k is None or r.get("active_layers") == k)]
    if len(found) == 1:
        return found[0]
    names = ", ".join(_row_name(r) for r in rows)
    wanted = "a selector" if mode is None else f"':{mode}{f'@{k}' if k is not None else ''}'"
    problem = "matches none" if not found else "matches several"
    raise ValueError(f"{path}: {wanted} {problem} of its rows ({names}); add ':MODE' or ':MODE@K' to the path")


def add_source(setting: Setting, row: dict, name: str) -> None:
    """Pool one result row into `setting`; a (task, seed) it already has is an error (the same episode twice)."""
    for outcome in row["outcomes"]:
        key = (str(row["task"]), int(outcome["seed"]))
        if key in setting.success:
            raise ValueError(
                f"setting {setting.label!r}: {key[0]} seed {key[1]} appears twice (again in {name}); "
                "pool different seed sets only"
            )
        setting.success[key] = bool(outcome["success"])
        setting.instruction[key] = str(outcome.get("instruction", ""))
    n = int(row.get("inferences", 0) or 0)
    if n and row.get("mean_flops") is not None:
        setting.flops_sum += float(row["mean_flops"]) * n
        setting.layers_sum += float(row.get("mean_layers", float("nan"))) * n
        setting.inferences += n
    setting.sources.append(name)


def load_setting(label: str, specs: list[str]) -> Setting:
    """A setting from its sources ("path[:MODE[@K]]")."""
    if not specs:
        raise ValueError(f"setting {label!r} names no result file")
    setting = Setting(label)
    for spec in specs:
        path, mode, k = split_source(spec)
        add_source(setting, select_row(read_results(path), path, mode, k), spec)
    return setting


def settings_from_files(paths: list[str]) -> list[Setting]:
    """Every result row of every file as its own setting, labelled "file:mode@k"."""
    out = []
    for spec in paths:
        path, mode, k = split_source(spec)
        rows = read_results(path)
        chosen = [select_row(rows, path, mode, k)] if mode else rows
        for row in chosen:
            name = f"{path}:{_row_name(row)}"
            setting = Setting(name)
            add_source(setting, row, name)
            out.append(setting)
    return out


def compare_settings(settings: list[Setting], reference: str | None = None) -> tuple[Setting, list[PairedComparison]]:
    """Each setting against the reference (by label; the first by default) on their shared episodes."""
    if not settings:
        raise ValueError("nothing to compare: name at least one setting")
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise ValueError(f"setting labels must be unique, got {labels}")
    if reference is None:
        ref = settings[0]
    elif reference in labels:
        ref = settings[labels.index(reference)]
    else:
        raise ValueError(f"--reference {reference!r} is not one of the settings {labels}")
    comparisons = []
    for s in settings:
        shared = set(s.success) & set(ref.success)
        mismatched = [key for key in shared if s.instruction[key] != ref.instruction[key]]
        if mismatched:
            task, seed = min(mismatched)
            raise ValueError(
                f"{s.label!r} and {ref.label!r} gave {task} seed {seed} different instructions "
                f"({s.instruction[(task, seed)]!r} vs {ref.instruction[(task, seed)]!r}): not the same episodes"
            )
        comparisons.append(paired_comparison(ref.success, s.success))
    return ref, comparisons


def format_comparison(settings: list[Setting], ref: Setting, comparisons: list[PairedComparison]) -> str:
    width = max(12, *(len(s.label) for s in settings))
    lines = [
        f"{'setting':<{width}}  {'success':>9}  {'rate':>5}  {'Wilson 95 %':<14}  {'GFLOPs':>6}  {'layers':>6}  seeds",
        "-" * (width + 66),
    ]
    for s in settings:
        lo, hi = s.interval
        lines.append(
            f"{s.label:<{width}}  {f'{s.successes}/{s.episodes}':>9}  {s.rate:>5.3f}  [{lo:.2f}, {hi:.2f}]    "
            f"{s.mean_flops / 1e9:>6.2f}  {s.mean_layers:>6.1f}  {s.seed_ranges()}"
        )
    lines += [
        "",
        f"paired with {ref.label!r} on the episodes both ran (same seed = same scene and diffusion noise):",
        f"{'setting':<{width}}  {'shared':>6}  {'both':>4}  {'only ref':>8}  {'only this':>9}  "
        f"{'difference [95 %]':<24}  McNemar p",
        "-" * (width + 76),
    ]
    for s, c in zip(settings, comparisons):
        if s is ref:
            continue
        lo, hi = c.difference_interval()
        diff = f"{c.difference:+.3f} [{lo:+.2f}, {hi:+.2f}]"
        lines.append(
            f"{s.label:<{width}}  {c.episodes:>6}  {c.both:>4}  {c.only_a:>8}  {c.only_b:>9}  {diff:<24}  "
            f"{c.p_value:.3g}"
        )
    if len(settings) == 1:
        lines.append("(one setting: nothing to pair)")
    return "\n".join(lines)


def comparison_dict(settings: list[Setting], ref: Setting, comparisons: list[PairedComparison]) -> dict:
    out = {"reference": ref.label, "settings": []}
    for s, c in zip(settings, comparisons):
        lo, hi = c.difference_interval()
        paired = {
            "shared_episodes": c.episodes,
            "both": c.both,
            "only_reference": c.only_a,
            "only_this": c.only_b,
            "neither": c.neither,
            "difference": c.difference,
            "difference_ci_low": lo,
            "difference_ci_high": hi,
            "mcnemar_p": c.p_value,
        }
        out["settings"].append({**s.to_dict(), "paired_with_reference": paired})
    return out


def plot_comparison(settings: list[Setting], path: str | Path, reference: Setting | None = None) -> Path:
    """Bar chart of the success rates with their Wilson 95 % intervals (the reference in another colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.5 * len(settings) + 1.2))
    y = list(range(len(settings)))[::-1]
    rates = [s.rate for s in settings]
    errors = [[s.rate - s.interval[0] for s in settings], [s.interval[1] - s.rate for s in settings]]
    colors = ["#DD8452" if s is reference else "#4C72B0" for s in settings]
    ax.barh(y, rates, xerr=errors, color=colors, ecolor="black", capsize=3)
    ax.set_yticks(y, [f"{s.label} ({s.successes}/{s.episodes})" for s in settings])
    ax.set_xlim(0, 1)
    ax.set_xlabel("closed-loop success rate (Wilson 95 % interval)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
