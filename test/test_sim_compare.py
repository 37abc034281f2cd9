"""`mole-vla sim compare`: pooling seed sets, pairing episodes by seed, McNemar's exact test, bad input refused."""

from __future__ import annotations

import json
import math

import pytest

from mole_vla_ros.sim.compare import compare_settings, load_setting, settings_from_files, split_source
from mole_vla_ros.sim.stats import mcnemar_exact_p, paired_comparison, wilson_interval


def _row(mode: str, seeds, successes, k=4, task="pick", flops=1.0e9, instruction=None) -> dict:
    outcomes = [
        {"seed": s, "instruction": instruction or f"pick up cube {s % 2}", "success": ok}
        for s, ok in zip(seeds, successes)
    ]
    return {
        "task": task,
        "skip_mode": mode,
        "active_layers": k,
        "episodes": len(outcomes),
        "successes": sum(successes),
        "mean_flops": flops,
        "mean_layers": 8.0 if mode == "full" else float(k),
        "inferences": 10 * len(outcomes),
        "outcomes": outcomes,
    }


def _write(path, *rows):
    path.write_text(json.dumps(list(rows)), encoding="utf-8")
    return str(path)


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact_p(10, 0) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact_p(0, 10) == pytest.approx(2 * 0.5**10)
    # 3 vs 9 of 12 discordant: 2 * P(X <= 3), X ~ Bin(12, 1/2)
    assert mcnemar_exact_p(3, 9) == pytest.approx(2 * sum(math.comb(12, i) for i in range(4)) / 2**12)
    assert mcnemar_exact_p(5, 5) == 1.0 and mcnemar_exact_p(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


def test_paired_comparison_counts_only_shared_episodes():
    a = {1: True, 2: True, 3: False, 4: False, 5: True}
    b = {1: True, 2: False, 3: True, 4: False, 9: True}
    c = paired_comparison(a, b)
    assert (c.episodes, c.both, c.only_a, c.only_b, c.neither) == (4, 1, 1, 1, 1)
    assert c.difference == 0.0 and c.p_value == 1.0
    lo, hi = c.difference_interval()
    assert lo < 0 < hi
    with pytest.raises(ValueError, match="share no episode"):
        paired_comparison({1: True}, {2: True})


def test_a_setting_pools_seed_sets_and_pairs_with_the_reference(tmp_path):
    # seeds 5000-5009: full solves 8, star 2; seeds 6000-6009: full solves 6, star 6 (same episodes)
    s5 = _write(
        tmp_path / "s5000.json",
        _row("full", range(5000, 5010), [True] * 8 + [False] * 2, flops=2e9),
        _row("star", range(5000, 5010), [True, True] + [False] * 8, flops=1e9),
    )
    s6 = _write(
        tmp_path / "s6000.json",
        _row("full", range(6000, 6010), [True] * 6 + [False] * 4, flops=2e9),
        _row("star", range(6000, 6010), [True] * 6 + [False] * 4, flops=1e9),
    )
    full = load_setting("full", [f"{s5}:full", f"{s6}:full@4"])
    star = load_setting("star k=4", [f"{s5}:star", f"{s6}:star"])
    assert (full.successes, full.episodes, star.successes, star.episodes) == (14, 20, 8, 20)
    assert full.seed_ranges() == "5000-5009, 6000-6009"
    assert full.interval == wilson_interval(14, 20)
    assert full.mean_flops == pytest.approx(2e9) and star.mean_layers == pytest.approx(4.0)
    ref, (self_pair, pair) = compare_settings([full, star])
    assert ref is full and self_pair.only_a == self_pair.only_b == 0
    # star never solves an episode full fails; full solves 6 star does not
    assert (pair.episodes, pair.both, pair.only_a, pair.only_b) == (20, 8, 6, 0)
    assert pair.difference == pytest.approx(-0.3) and pair.p_value == pytest.approx(2 * 0.5**6)
    ref, pairs = compare_settings([full, star], reference="star k=4")
    assert ref is star and pairs[0].only_b == 6


def test_every_row_of_a_file_is_a_setting_without_selectors(tmp_path):
    path = _write(
        tmp_path / "grid.json", _row("full", range(3), [True] * 3), _row("star", range(3), [True, False, False])
    )
    settings = settings_from_files([path])
    assert [s.label for s in settings] == [f"{path}:full@4", f"{path}:star@4"]
    assert [s.successes for s in settings] == [3, 1]
    assert split_source("runs/a.json:random@2") == (split_source("runs/a.json")[0], "random", 2)
    assert split_source("runs/a:b.json")[1] is None  # a colon that is no selector stays in the path


def test_bad_input_is_refused_with_the_reason(tmp_path):
    grid = _write(tmp_path / "grid.json", _row("full", range(3), [True] * 3), _row("star", range(3), [False] * 3))
    with pytest.raises(ValueError, match="matches several"):
        load_setting("x", [grid])
    with pytest.raises(ValueError, match="matches none"):
        load_setting("x", [f"{grid}:early"])
    with pytest.raises(FileNotFoundError, match="no sim eval result file"):
        load_setting("x", [str(tmp_path / "missing.json")])
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not JSON"):
        load_setting("x", [str(tmp_path / "broken.json")])
    (tmp_path / "other.json").write_text(json.dumps([{"task": "pick"}]), encoding="utf-8")
    with pytest.raises(ValueError, match="not a sim eval result"):
        load_setting("x", [str(tmp_path / "other.json")])
    with pytest.raises(ValueError, match="appears twice"):
        load_setting("x", [f"{grid}:full", f"{grid}:star"])
    # the same seeds with different instructions are different episodes (e.g. another task version)
    other = _write(tmp_path / "other_words.json", _row("star", range(3), [True] * 3, instruction="stack the cubes"))
    with pytest.raises(ValueError, match="different instructions"):
        compare_settings([load_setting("a", [f"{grid}:full"]), load_setting("b", [other])])
    with pytest.raises(ValueError, match="not one of the settings"):
        compare_settings([load_setting("a", [f"{grid}:full"])], reference="b")
    with pytest.raises(ValueError, match="unique"):
        compare_settings([load_setting("a", [f"{grid}:full"]), load_setting("a", [f"{grid}:star"])])


def test_cli_prints_the_table_and_writes_json_and_plot(tmp_path, capsys):
    from mole_vla_ros.cli import main

    path = _write(
        tmp_path / "grid.json",
        _row("full", range(5000, 5012), [True] * 10 + [False] * 2),
        _row("star", range(5000, 5012), [False] * 10 + [True] * 2),
    )
    out_json, out_png = tmp_path / "cmp.json", tmp_path / "cmp.png"
    settings = ["--setting", "full", f"{path}:full", "--setting", "MoLe k=4", f"{path}:star"]
    code = main(["sim", "compare", *settings, "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    text = capsys.readouterr().out
    assert "10/12" in text and "paired with 'full'" in text
    data = json.loads(out_json.read_text(encoding="utf-8"))
    assert data["reference"] == "full"
    mole = data["settings"][1]["paired_with_reference"]
    assert (mole["only_reference"], mole["only_this"]) == (10, 2)
    assert mole["mcnemar_p"] == pytest.approx(mcnemar_exact_p(10, 2))
    assert out_png.stat().st_size > 1000
    with pytest.raises(SystemExit, match="matches several"):
        main(["sim", "compare", "--setting", "x", path])
    with pytest.raises(SystemExit, match="name result files"):
        main(["sim", "compare"])
