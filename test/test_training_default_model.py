"""The bundled models/default: loadable by the policy wrapper, the architecture its card describes, documented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mole_vla_ros.interfaces import PolicyInput

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "default"

pytestmark = pytest.mark.skipif(
    not (MODEL / "model.safetensors").is_file(), reason="models/default is not bundled in this checkout"
)


@pytest.fixture(scope="module")
def policy():
    from mole_vla_ros.model.policy import MoLeVLAPolicy

    return MoLeVLAPolicy.from_checkpoint(str(MODEL), seed=0)


def test_default_model_loads_and_predicts_with_half_the_layers(policy):
    cfg = policy.model.config
    assert cfg.vision.backbone == "efficientnet_lite0" and cfg.vision.freeze
    assert (cfg.num_layers, cfg.active_layers, cfg.skip_mode) == (8, 4, "star")
    assert policy.camera_names == ("scene", "wrist") and policy.image_size == 128
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for c in policy.camera_names}
    out = policy.infer(PolicyInput(images=images, instruction="pick up the red cube", seed=3))
    again = policy.infer(PolicyInput(images=images, instruction="pick up the red cube", seed=3))
    assert out.actions.shape == (16, 7) and np.all(np.isfinite(out.actions))
    np.testing.assert_array_equal(out.actions, again.actions)
    assert len(out.layer_indices) == 4 and set(np.unique(out.actions[:, -1])) <= {0.0, 1.0}


def test_default_model_is_small_and_documented():
    size = sum(f.stat().st_size for f in MODEL.iterdir() if f.is_file())
    assert size < 64e6, f"models/default is {size / 1e6:.1f} MB"
    card = (MODEL / "MODEL_CARD.md").read_text(encoding="utf-8")
    for needed in ("scripts/train_default_model.sh", "make default-model", "sim record", "Held-out"):
        assert needed in card, needed
    meta = json.loads((MODEL / "config.json").read_text(encoding="utf-8"))
    training = meta["extra"]["training"]
    assert training["stage"] == "mole" and training["cogkd"] is True and training["active_layers"] == 4
    assert meta["config"]["loss"]["kd_form"] == "paper"
    results = json.loads((MODEL / "eval" / "eval.json").read_text(encoding="utf-8"))["results"]
    labels = {r["label"] for r in results}
    trained = {"random skip k=4 (trained)", "early exit k=4 (trained)"}
    assert {"full depth", "MoLe (STAR) k=4", "MoLe w/o CogKD k=4", *trained} <= labels
    # the closed-loop numbers the card quotes are on disk, per setting
    rows = json.loads((MODEL / "eval" / "sim_eval.json").read_text(encoding="utf-8"))
    assert {(r["skip_mode"], r["episodes"]) for r in rows} >= {("full", 100), ("star", 100)}
    assert all(0 <= r["successes"] <= r["episodes"] for r in rows)
    # the closed-loop table: per setting, seeds 6000-6099 (s6000_*.json) and 5000-5099 (sim_eval*.json, as the
    # script writes them) and both pooled are the files' counts (no stale copy in the card)
    card_rows = {
        "| stage-1 model, full depth |": ("s6000_stage1.json", "sim_eval_stage1.json", "full"),
        "| **this checkpoint, STAR k=4** |": ("s6000_mole.json", "sim_eval.json", "star"),
        "| MoLe w/o CogKD, STAR k=4 |": ("s6000_nokd.json", "sim_eval_nocogkd.json", "star"),
        "| random skip k=4 (trained) |": ("s6000_random.json", "sim_eval_random.json", "random"),
        "| early exit k=4 (trained) |": ("s6000_early.json", "sim_eval_early.json", "early"),
    }
    _assert_rows_match_both_seed_sets(card, MODEL / "eval", card_rows)
    # the stage-1b study ("Tried after"): its table's counts are the JSON files kept next to the model
    tried = MODEL / "eval" / "tried_stage1b"
    tried_rows = {
        "| + 1500 steps on the demonstrations (control) |": "sim_eval_stage1b_control.json",
        "| + 1500 steps on demonstrations + 198 takeovers |": "sim_eval_stage1b_takeover.json",
    }
    for row, name in tried_rows.items():
        (result,) = json.loads((tried / name).read_text(encoding="utf-8"))
        (line,) = [line.strip() for line in card.splitlines() if line.strip().startswith(row)]
        assert f"| {result['successes']}/{result['episodes']} |" in line, (line, result["successes"])
    # the Gumbel-noise study ("Tried after"): per seed set, the counts in its table are the files kept next to it
    gumbel = MODEL / "eval" / "tried_gumbel"
    gumbel_rows = {
        "| MoLe + CogKD, this card's recipe, retrained |": "mole",
        "| the same + Gumbel noise |": "mole_gumbel",
        "| the retrained stage 1, full depth |": "stage1",
        "| random skip, trained from the same stage 1 |": "random",
        "| early exit, trained from the same stage 1 |": "early",
        "| STAR + Gumbel noise, 2000 stage-2 steps |": "mole_gumbel_2k",
        "| early exit, 2000 stage-2 steps |": "early_2k",
    }
    _assert_rows_match_both_seed_sets(card, gumbel, _per_seed_files(gumbel_rows))
    # the 4500-step stage-1 study ("Tried after"): the same, for its table
    stage1_4500_rows = {
        "| stage 1, 4500 steps, full depth |": "stage1",
        "| MoLe: STAR + Gumbel + CogKD, lr 3e-4 (the script's) |": "mole",
        "| the same without CogKD |": "mole_nokd",
        "| the same with CogKD, lr 1e-4 |": "mole_lr1e-4",
        "| the same with CogKD, lr 3e-5 |": "mole_lr3e-5",
        "| random skip, trained |": "random",
        "| STAR + Gumbel + CogKD warm-started from the trained random skip (+1000) |": "mole_from_random",
        "| early exit, trained |": "early",
        "| **MoLe: STAR + Gumbel + CogKD, 2000 steps** |": "mole_2k",
        "| STAR from the random skip, 2000 steps (+1000 random skip before) |": "mole_from_random_2k",
        "| early exit, 2000 steps |": "early_2k",
    }
    _assert_rows_match_both_seed_sets(card, MODEL / "eval" / "tried_stage1_4500", _per_seed_files(stage1_4500_rows))


def _per_seed_files(rows: dict[str, str]) -> dict[str, tuple[str, str, None]]:
    """A study's naming: row -> s6000_<name>.json and s5000_<name>.json, one setting per file."""
    return {row: (f"s6000_{name}.json", f"s5000_{name}.json", None) for row, name in rows.items()}


def _assert_rows_match_both_seed_sets(card: str, folder: Path, rows: dict[str, tuple[str, str, str | None]]) -> None:
    """The one closed-loop card row (a line with a pooled "/200 |" count) starting with each key shows the successes
    of its seeds-6000 file, its seeds-5000 file (the row of `mode`, or the file's only row) and both pooled."""
    for row, (tuning, reported, mode) in rows.items():
        (line,) = [line.strip() for line in card.splitlines() if line.strip().startswith(row) and "/200 |" in line]
        counts = [_sim_successes(folder / name, mode) for name in (tuning, reported)]
        for count, name in zip(counts, (tuning, reported)):
            assert f"| {count}/100 |" in line, (line, name)
        assert f"| {sum(counts)}/200 |" in line, line


def _sim_successes(path: Path, mode: str | None = None) -> int:
    """Successes of the 100-episode `mole-vla sim eval` result for skip `mode` in a --json file (None: its only one)."""
    (result,) = [r for r in json.loads(path.read_text(encoding="utf-8")) if mode is None or r["skip_mode"] == mode]
    assert result["episodes"] == 100, path
    return result["successes"]


def _card_section(start: str, end: str) -> list[str]:
    """The lines of MODEL_CARD.md from the one starting with `start` up to the next one starting with `end`."""
    lines = (MODEL / "MODEL_CARD.md").read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i in range(first + 1, len(lines)) if lines[i].startswith(end))
    return lines[first:last]


def _error_cells(section: list[str], start: str, row: dict, full: float) -> list[str]:
    """The cells of the card-table row starting with `start`, after checking its translation error (cell 1) and its
    change against full depth (cell 2) against the eval.json `row`."""
    (line,) = [line for line in section if line.startswith(start)]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[1]) == round(row["translation_m"] * 1e3, 2), line
    assert cells[2] == f"{(row['translation_m'] / full - 1) * 100:+.1f} %", line
    return cells


def _eval_row(path: Path, label: str) -> tuple[dict, float]:
    """(the row `label`, the full-depth row's translation error) of a `mole-vla evaluate` eval.json."""
    rows = json.loads(path.read_text(encoding="utf-8"))["results"]
    (full,) = [r for r in rows if r["label"] == "full depth"]
    (row,) = [r for r in rows if r["label"] == label]
    return row, full["translation_m"]


def test_balance_loss_study_in_the_card_is_the_files_numbers():
    """The card's balance-loss table ("Is the router deciding anything?"): per seed, the STAR k=4 translation error,
    the layer-set count and the closed-loop counts are those of eval/balance0/, not a stale copy."""
    card = (MODEL / "MODEL_CARD.md").read_text(encoding="utf-8")
    folder = MODEL / "eval" / "balance0"
    star = []
    for seed in (0, 1, 2):
        row, _ = _eval_row(folder / f"bw0_seed{seed}.json", "MoLe (STAR) k=4")
        assert row["layer_sets"] == 1 and row["router_margin"] > 0.01  # the router decides: one set, no near-tie
        star.append(row["translation_m"] * 1e3)
    (line,) = [line for line in card.splitlines() if line.startswith("| STAR + CogKD, balance 0 |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert [float(c) for c in cells[1:4]] == [round(x, 2) for x in star]
    assert float(cells[4]) == round(sum(star) / 3, 2)
    # closed loop: per training seed "N/200 (seeds 5000-5099 + 6000-6099)", then the seed-0 ablation
    runs = [f"bw0_seed{seed}" for seed in (0, 1, 2)] + ["bw0_nokd_seed0"]
    quoted = []
    for run in runs:
        paths = [folder / f"sim_eval_{run}_s{s}.json" for s in (5000, 6000)]
        assert all(json.loads(p.read_text(encoding="utf-8"))[0]["distinct_layer_sets"] == 1 for p in paths)
        a, b = (_sim_successes(p) for p in paths)
        quoted.append(f"{a + b}/200 ({a} + {b})")
    text = " ".join(card.split())
    assert f"picked {quoted[0]}, {quoted[1]} and {quoted[2]}" in text
    assert f"without CogKD {quoted[3]}" in text


def test_depth_prior_study_in_the_card_is_the_files_numbers():
    """The card's depth-prior table ("A depth prior"): each row's k=4 translation error, its change against full
    depth, the router's set count and the closed-loop counts (seeds 5000 + 6000) are those of the files it names."""
    card = (MODEL / "MODEL_CARD.md").read_text(encoding="utf-8")
    ev = MODEL / "eval"

    star = "MoLe (STAR) k=4"
    rows = {  # card row -> (offline eval file, its row, closed-loop files for seeds 5000 and 6000)
        "| prior 2, balance 0.01 |": (ev / "depth_prior/dp2_s0.json", star, "depth_prior/sim_eval_dp2_s0_s{}.json"),
        "| prior 2, balance 0 |": (ev / "depth_prior/dp2bw0_s0.json", star, "depth_prior/sim_eval_dp2bw0_s0_s{}.json"),
        "| no prior, balance 0.01 (previous model) |": (
            ev / "previous/eval.json",
            star,
            ("previous/sim_eval.json", "previous/s6000_mole.json"),
        ),
        "| no prior, balance 0 |": (ev / "balance0/bw0_seed0.json", star, "balance0/sim_eval_bw0_seed0_s{}.json"),
        "| early exit, trained |": (
            ev / "eval.json",
            "early exit k=4 (trained)",
            ("sim_eval_early.json", "s6000_early.json"),
        ),
    }
    section = _card_section("**A depth prior", "**Two tasks")
    for start, (offline, label, sims) in rows.items():
        row, full = _eval_row(offline, label)
        cells = _error_cells(section, start, row, full)
        line = " | ".join(cells)
        if row.get("layer_sets") is not None:  # eval.json predates the count (bundled_router.txt has it)
            sets = row["layer_sets"]
            assert cells[3].startswith("one set" if sets == 1 else f"{sets} sets"), line
        names = [sims.format(s) for s in (5000, 6000)] if isinstance(sims, str) else sims
        mode = "early" if "early" in label else "star"
        a, b = (_sim_successes(ev / name, mode) for name in names)
        assert cells[5] == f"{a + b}/200 ({a} + {b})", line
    # the second training seed of the prior without the balance loss, quoted in the text under the table
    row, full = _eval_row(ev / "depth_prior/dp2bw0_s1.json", star)
    assert row["layer_sets"] == 1 and row["top_layer_sets"][0][0] == [1, 2, 3, 4]
    a, b = (_sim_successes(ev / f"depth_prior/sim_eval_dp2bw0_s1_s{s}.json", "star") for s in (5000, 6000))
    text = " ".join(card.split())
    trans = row["translation_m"] * 1e3
    assert f"{trans:.2f} mm ({(row['translation_m'] / full - 1) * 100:+.1f} %;" in text
    assert f"{a + b}/200 ({a} + {b}) in closed loop" in text
    seed0, _ = _eval_row(ev / "depth_prior/dp2bw0_s0.json", star)
    assert f"Over the two seeds: {(trans + seed0['translation_m'] * 1e3) / 2:.2f} mm offline" in text


def test_two_task_study_in_the_card_is_the_files_numbers():
    """The card's two-task table ("Two tasks"): each row's k=4 translation error, its change against full depth, its
    error per instruction, the router's most used set per instruction and the pick closed-loop counts (seeds 5000 +
    6000) are those of eval/multitask/."""
    card = (MODEL / "MODEL_CARD.md").read_text(encoding="utf-8")
    ev = MODEL / "eval" / "multitask"
    rows = {  # card row -> (offline eval file, its row, closed-loop name and skip mode, or None)
        "| full depth (stage 1) |": ("eval.json", "full depth", ("full", "full")),
        "| STAR, balance 0.01 (previous model's recipe) |": ("eval.json", "MoLe (STAR) k=4", ("mole", "star")),
        "| random skip, STAR's weights |": ("eval.json", "random skip k=4 (MoLe model)", None),
        "| early exit, trained |": ("eval.json", "early exit k=4 (trained)", ("early", "early")),
        "| STAR, balance 0 |": ("eval_bw0.json", "MoLe (STAR) k=4", ("bw0", "star")),
    }
    texts = json.loads((ev / "eval.json").read_text(encoding="utf-8"))["instruction_swap"]["instructions"]
    assert len(texts) == 4  # [1] .. [4] in the card: sorted, as evaluate prints them
    section = _card_section("**Two tasks", "**A partition loss")
    for start, (offline, label, sim) in rows.items():
        row, full = _eval_row(ev / offline, label)
        cells = _error_cells(section, start, row, full)
        line = " | ".join(cells)
        by_text = row["translation_by_instruction"]
        assert cells[3] == " / ".join(f"{by_text[t] * 1e3:.2f}" for t in texts), line
        if row["layer_set_by_instruction"]:
            route = row["layer_set_by_instruction"]
            assert cells[4] == " / ".join(f"{','.join(map(str, route[t][0]))} {route[t][1] * 100:.0f} %" for t in texts)
            if "0.01" in start:  # "Five layer sets", "margin is 1e-4" in the text
                assert row["router_margin"] < 1e-3 and row["layer_sets"] == 5
            else:  # "one set for all four instructions", "margin 0.28"
                assert row["layer_sets"] == 1 and round(row["router_margin"], 2) == 0.28
        if sim is None:
            assert cells[5] == "-", line
            continue
        a, b = (_sim_successes(ev / f"sim_{sim[0]}_pick_s{s}.json", sim[1]) for s in (5000, 6000))
        assert cells[5] == f"{a + b}/200 ({a} + {b})", line
    stack = json.loads((ev / "sim_full_stack_s7000.json").read_text(encoding="utf-8"))
    assert [(r["task"], r["episodes"], r["successes"]) for r in stack] == [("stack", 10, 0)]
    assert "stacks 0/10 (seeds 7000-7009" in card


def test_partition_loss_study_in_the_card_is_the_files_numbers():
    """The card's partition-loss table ("A partition loss"): per seed, the STAR k=4 translation error, the mean and its
    change against full depth, the one layer set each run ends on and the closed-loop counts are those of
    eval/partition/; the reference rows repeat the balance-loss table's numbers."""
    card = (MODEL / "MODEL_CARD.md").read_text(encoding="utf-8")
    folder = MODEL / "eval" / "partition"
    section = _card_section("**A partition loss", "Instruction swap")

    def cells(start):
        (line,) = [line for line in section if line.startswith(start)]
        return [c.strip() for c in line.strip("|").split("|")]

    star, sets = [], []
    for seed in (0, 1, 2):
        row, full = _eval_row(folder / f"pw002_seed{seed}.json", "MoLe (STAR) k=4")
        assert row["layer_sets"] == 1 and row["router_margin"] > 10  # one decided set for every held-out sample
        star.append(row["translation_m"] * 1e3)
        sets.append(",".join(map(str, row["top_layer_sets"][0][0])))
    got = cells("| partition 0.002, balance 0 |")
    assert [float(c) for c in got[1:4]] == [round(x, 2) for x in star]
    mean = sum(star) / 3
    assert float(got[4]) == round(mean, 2) and got[5] == f"{(mean / (full * 1e3) - 1) * 100:+.1f} %"
    assert got[6] == " / ".join(sets)
    quoted = []
    for seed in (0, 1, 2):
        a, b = (_sim_successes(folder / f"sim_eval_pw002_seed{seed}_s{s}.json", "star") for s in (5000, 6000))
        quoted.append(f"{a + b}/200 ({a} + {b})")
    assert got[7] == ", ".join(quoted)
    # single-seed rows: no CogKD, and the partition cap at 2
    for start, run in (
        ("| partition 0.002, balance 0, no CogKD |", "pw002_nokd"),
        ("| partition 0.002, balance 0, cap 2 |", "pw002cap2"),
    ):
        row, full = _eval_row(folder / f"{run}_seed0.json", "MoLe (STAR) k=4")
        got = cells(start)
        assert float(got[1]) == round(row["translation_m"] * 1e3, 2), got
        assert got[5] == f"{(row['translation_m'] / full - 1) * 100:+.1f} %" and row["layer_sets"] == 1
        assert got[6] == ",".join(map(str, row["top_layer_sets"][0][0]))
        a, b = (_sim_successes(folder / f"sim_eval_{run}_seed0_s{s}.json", "star") for s in (5000, 6000))
        assert got[7] == f"{a + b}/200 ({a} + {b})"
    row, full = _eval_row(folder / "pw01_seed0.json", "MoLe (STAR) k=4")
    got = cells("| partition 0.01, balance 0 |")
    assert (
        float(got[1]) == round(row["translation_m"] * 1e3, 2)
        and got[5] == f"{(row['translation_m'] / full - 1) * 100:+.1f} %"
    )
    assert got[6] == ",".join(map(str, row["top_layer_sets"][0][0]))
    # the reference rows are the balance-loss table's (checked against its files above)
    balance_table = _card_section("**Is the router deciding anything?", "**A depth prior")
    sources = {
        "| balance 0 |": "| STAR + CogKD, balance 0 |",
        "| balance 0.01": "| STAR + CogKD, balance 0.01 (previous model's recipe) |",
        "| early exit, trained |": "| early exit, trained |",
    }
    for start, source in sources.items():
        (line,) = [line for line in balance_table if line.startswith(source)]
        assert cells(start)[1:6] == [c.strip() for c in line.strip("|").split("|")][1:6], start
    # the per-seed gaps to trained early exit quoted under the table
    early_seeds = [float(c) for c in cells("| early exit, trained |")[1:4]]
    gaps = ", ".join(f"{e - x:.2f}" for e, x in zip(early_seeds, star))
    text = " ".join(card.split())
    assert f"by {gaps.rsplit(', ', 1)[0]} and {gaps.rsplit(', ', 1)[1]} mm" in text


def test_held_out_table_in_the_card_is_eval_json():
    """The card's main held-out table (Results): every cell of every row is the bundled eval/eval.json's, so a model
    swap cannot leave a stale table behind."""
    results = json.loads((MODEL / "eval" / "eval.json").read_text(encoding="utf-8"))["results"]
    by_label = {r["label"]: r for r in results}
    full = by_label["full depth"]["translation_m"]
    section = _card_section("Held-out action error", "**Training-seed spread")
    rows = [line for line in section if line.startswith("| ") and not line.startswith("| method")]
    labels = {  # card row (bold and "(this checkpoint)" removed) -> eval.json label, where they differ
        "full depth (stage-1 model)": "full depth",
        "MoLe (STAR + partition loss) k=4": "MoLe (STAR) k=4",
    }
    seen = set()
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0].replace("**", "").replace(" (this checkpoint)", "").strip()
        row = by_label[labels.get(name, name)]
        seen.add(row["label"])
        deg = 180 / np.pi
        expected = [
            f"{row['active_layers']}/{row['num_layers']}",
            f"{row['gflops']:.3f}",
            f"{row['translation_m'] * 1e3:.2f} ± {row['translation_m_std'] * 1e3:.2f}",
            f"{row['rotation_rad'] * deg:.2f} ± {row['rotation_rad_std'] * deg:.2f}",
            f"{row['gripper_acc']:.3f}",
            f"{row['reach_translation_m'] * 1e3:.1f}",
            f"{(row['translation_m'] / full - 1) * 100:+.1f} %",
        ]
        assert [c.replace("**", "") for c in cells[1:]] == expected, line
    assert seen == set(by_label), set(by_label) - seen  # every evaluated row is in the card


def test_training_table_rows_in_the_card_are_the_summaries():
    """The card's training table (Results): each stage-2 row's final loss and validation loss are its run's
    eval/summary_stage2_*.json, and the checkpoint's row also its loss components."""
    section = _card_section("Training (`eval/summary_*.json`", "The validation loss")
    rows = {
        "| **MoLe: STAR k=4": "mole",
        "| MoLe without CogKD": "mole_nokd",
        "| random skip k=4, trained |": "random",
        "| early exit k=4, trained |": "early",
    }
    for start, name in rows.items():
        summary = json.loads((MODEL / "eval" / f"summary_stage2_{name}.json").read_text(encoding="utf-8"))
        (line,) = [line for line in section if line.startswith(start)]
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == f"+{summary['steps']}", line
        assert cells[2].split(" ")[0] == f"{summary['final_loss']:.3f}", line
        assert cells[3].replace("**", "") == f"{summary['val_loss']:.4f}", line
        if name == "mole":
            parts = f"(diffusion {summary['final_diffusion']:.3f}, CogKD {summary['final_cogkd']:.4f}"
            assert parts in cells[2], line
