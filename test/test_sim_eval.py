"""`mole-vla sim eval`: closed loop through the runtime core, success statistics, cost accounting."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("franky_sim") is None:
    pytest.skip("simulator extra not installed (make venv installs mujoco and franky-sim)", allow_module_level=True)

from mole_vla_ros.cli import main as cli_main
from mole_vla_ros.interfaces import PolicyOutput
from mole_vla_ros.runtime.node_core import PolicyRuntime
from mole_vla_ros.sim.config import SimConfig
from mole_vla_ros.sim.env import TabletopSim
from mole_vla_ros.sim.evaluate import (
    EvalSettings,
    ScriptedPolicy,
    evaluate,
    format_table,
    run_episode,
    sim_runtime_config,
    wilson_interval,
)

SIM = SimConfig(image_size=48)


def test_wilson_interval_matches_published_values():
    # Wilson score intervals at 95 % (e.g. Brown, Cai & DasGupta 2001, Table values)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    with pytest.raises(ValueError, match="at least one episode"):
        wilson_interval(0, 0)


@pytest.fixture(scope="module")
def pick_sim():
    with TabletopSim(SIM, "pick") as sim:
        yield sim


def test_scripted_policy_succeeds_through_the_runtime_core(pick_sim):
    settings = EvalSettings(task="pick", episodes=2, seed=8, sim=SIM)  # seeds 8 (red) and 9 (green)
    result = evaluate(ScriptedPolicy(pick_sim), settings, pick_sim, ("scripted", None), progress=False)
    assert result.successes == 2, result.outcomes
    assert {o.instruction for o in result.outcomes} == {"pick up the red cube", "pick up the green cube"}
    assert result.inferences > 10  # re-planned many times in closed loop, not one open-loop chunk
    assert result.ci_low == pytest.approx(wilson_interval(2, 2)[0])
    assert result.by_instruction() == {"pick up the green cube": (1, 1), "pick up the red cube": (1, 1)}
    assert "'pick up the red cube' 1/1" in format_table([result])


def test_the_instruction_decides_the_outcome(pick_sim):
    """Telling the (language-following) scripted policy to pick the other cube fails the episode's task."""
    settings = EvalSettings(task="pick", episodes=1, seed=8, sim=SIM, max_seconds=6.0)
    policy = ScriptedPolicy(pick_sim)
    runtime = PolicyRuntime(sim_runtime_config(settings, policy), policy, executor="inline")
    pick_sim.reset(8)
    wrong = f"pick up the {pick_sim.setup.other} cube"
    failed = run_episode(runtime, pick_sim, settings, seed=8, instruction=wrong)
    assert not failed.success
    state = pick_sim.task_state()
    assert state.cube_in_hand[pick_sim.setup.other]  # it did what it was told, which was not the task
    assert run_episode(runtime, pick_sim, settings, seed=8).success


def test_closed_loop_rollout_is_deterministic(pick_sim):
    settings = EvalSettings(task="stack", episodes=1, seed=0, sim=SIM, max_seconds=3.0)

    def final_state():
        with TabletopSim(SIM, "stack") as sim:
            policy = ScriptedPolicy(sim)
            runtime = PolicyRuntime(sim_runtime_config(settings, policy), policy, executor="inline")
            frames = []
            run_episode(runtime, sim, settings, seed=0, frames=frames)
            return sim.observe(render=False).joint_state.position, np.stack(frames)

    q1, f1 = final_state()
    q2, f2 = final_state()
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(f1, f2)


class _CostedPolicy(ScriptedPolicy):
    """Scripted behaviour plus the cost fields a model reports, to check the accounting; `routes` are the layer sets
    its calls report in turn (cycled)."""

    routes: tuple[tuple[int, ...], ...] = ((0, 2, 5),)

    def infer(self, inp):
        out = super().infer(inp)
        self.calls = getattr(self, "calls", -1) + 1
        route = self.routes[self.calls % len(self.routes)]
        return PolicyOutput(out.actions, route, np.full(8, 0.125), 8, {"total": 3.0}, {"total": 2e9})


def test_cost_columns_come_from_the_policy_outputs(pick_sim, tmp_path):
    settings = EvalSettings(task="pick", episodes=1, seed=8, sim=SIM, max_seconds=1.0, gif_dir=tmp_path, gif_episodes=1)
    result = evaluate(_CostedPolicy(pick_sim), settings, pick_sim, ("star", 3), progress=False)
    assert result.mean_flops == pytest.approx(2e9)
    assert result.mean_layers == 3.0
    assert result.mean_latency_ms > 0
    (o,) = result.outcomes
    assert o.inferences > 1 and o.route_changes == 0 and result.route_change_rate == 0.0  # one layer set throughout
    assert result.distinct_layer_sets == 1 and "layer sets" not in format_table([result])
    (gif,) = tmp_path.glob("pick_star_k3_ep000_*.gif")
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 10 and im.size == (48, 48)  # 1 s at 10 Hz


def test_how_often_the_layer_set_changes_along_an_episode_is_reported(pick_sim):
    # calls alternate A, A, B: per episode, the changes are counted between consecutive inferences of that episode
    policy = _CostedPolicy(pick_sim)
    policy.routes = ((0, 2, 5), (0, 2, 5), (1, 3, 4))
    settings = EvalSettings(task="pick", episodes=2, seed=8, sim=SIM, max_seconds=1.0)
    result = evaluate(policy, settings, pick_sim, ("star", 3), progress=False)
    pairs = sum(o.inferences - 1 for o in result.outcomes)
    changes = sum(o.route_changes for o in result.outcomes)
    assert all(o.inferences >= 4 for o in result.outcomes) and changes >= 2
    assert result.route_change_rate == pytest.approx(changes / pairs)
    assert 0.4 < result.route_change_rate < 0.8  # two of every three consecutive pairs differ
    assert result.distinct_layer_sets == 2
    assert "layer sets: 2 different" in format_table([result])
    assert result.to_dict()["route_change_rate"] == pytest.approx(result.route_change_rate)


def test_bad_settings_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="commands_per_frame"):
        EvalSettings(task="pick", commands_per_frame=0)
    with pytest.raises(ValueError, match="whole number of physics steps"):
        EvalSettings(task="pick", commands_per_frame=7)
    with pytest.raises(ValueError, match="render=True"):
        EvalSettings(task="pick", sim=SimConfig(render=False))
    with pytest.raises(ValueError, match="unknown task"):
        EvalSettings(task="lift")


def test_a_policy_needing_cameras_the_sim_lacks_is_refused(pick_sim):
    policy = ScriptedPolicy(pick_sim)
    policy.camera_names = ("front", "wrist")
    with pytest.raises(ValueError, match=r"no \['front'\]"):
        sim_runtime_config(EvalSettings(task="pick", sim=SIM), policy)


def test_cli_eval_with_the_scripted_policy(capsys):
    rc = cli_main(
        ["sim", "eval", "--scripted", "--task", "pick", "--episodes", "1", "--seed", "8", "--image-size", "48"]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "scripted" in table and "1/1" in table


def test_cli_eval_runtime_overrides_reach_the_runtime(tmp_path):
    """--set takes the node parameter file's dotted keys: re-planning after every action asks for more chunks."""
    import json

    def inferences(*extra):
        out = tmp_path / f"eval{len(extra)}.json"
        args = ["sim", "eval", "--scripted", "--task", "pick", "--episodes", "1", "--seed", "8", "--image-size", "48"]
        assert cli_main([*args, "--json", str(out), *extra]) == 0
        return json.loads(out.read_text())[0]["inferences"]

    assert inferences("--set", "scheduling.execute_horizon=1") > inferences()


def test_cli_eval_refuses_malformed_or_unknown_overrides():
    args = ["sim", "eval", "--scripted", "--task", "pick", "--episodes", "1", "--image-size", "48"]
    with pytest.raises(SystemExit, match="--set expects NAME=VALUE"):
        cli_main([*args, "--set", "scheduling.execute_horizon"])
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['execute_horizn'\] in section 'scheduling'"):
        cli_main([*args, "--set", "scheduling.execute_horizn=4"])


@pytest.mark.slow
def test_cli_eval_compares_k_and_skip_modes_of_a_real_checkpoint(tmp_path, capsys, tiny_sim_checkpoint):
    """A tiny random MoLe-VLA checkpoint through the whole loop: it will not solve the task, but every (k, mode)
    cell runs, STAR runs exactly k layers, and fewer layers cost fewer FLOPs."""
    ckpt, _ = tiny_sim_checkpoint
    out_json = tmp_path / "eval.json"
    rc = cli_main(
        ["sim", "eval", "--checkpoint", str(ckpt), "--task", "pick", "--episodes", "1", "--image-size", "64",
         "--max-seconds", "0.6", "--active-layers", "2", "4", "--skip-mode", "star", "early", "--json", str(out_json)]
    )  # fmt: skip
    assert rc == 0
    import json

    rows = json.loads(out_json.read_text())
    assert [(r["skip_mode"], r["active_layers"]) for r in rows] == [
        ("star", 2),
        ("star", 4),
        ("early", 2),
        ("early", 4),
    ]
    for r in rows:
        assert r["mean_layers"] == r["active_layers"] and r["inferences"] >= 1
    assert rows[0]["mean_flops"] < rows[1]["mean_flops"]
    assert "early" in capsys.readouterr().out


def test_cli_eval_in_parallel_workers_gives_the_results_of_one_process(tmp_path, tiny_sim_checkpoint):
    """--workers 2 splits the episodes over two processes (each loads the checkpoint and builds its own simulator):
    every episode meets the same seed and noise, so the outcomes are those of one process, in seed order. (Both run
    one torch thread here: conftest sets it for the tests, the workers set it themselves.)"""
    import json

    ckpt, _ = tiny_sim_checkpoint
    args = ["sim", "eval", "--checkpoint", str(ckpt), "--task", "pick", "--episodes", "3", "--seed", "40",
            "--image-size", "64", "--max-seconds", "0.8", "--active-layers", "2", "4"]  # fmt: skip
    rows = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.json"
        assert cli_main([*args, "--workers", str(workers), "--json", str(out)]) == 0
        rows[workers] = json.loads(out.read_text())
    exact = ("episodes", "successes", "inferences", "mean_flops", "mean_layers", "distinct_layer_sets", "active_layers")
    for one, two in zip(rows[1], rows[2], strict=True):
        assert {k: one[k] for k in exact} == {k: two[k] for k in exact}
        assert [o["seed"] for o in two["outcomes"]] == [40, 41, 42]
        for a, b in zip(one["outcomes"], two["outcomes"], strict=True):
            a.pop("wall_s"), b.pop("wall_s")  # measured time, the only field allowed to differ
            assert a == b
    with pytest.raises(SystemExit, match="--workers must be >= 1"):
        cli_main([*args, "--workers", "0"])


def test_merged_slices_weigh_inference_means_by_their_counts():
    from mole_vla_ros.sim.evaluate import EpisodeOutcome, merge_results, summarise

    def part(seed, ok, inferences, latency, layer_sets):
        o = EpisodeOutcome(seed, "pick", ok, 2.0, 20, 1.0, layer_sets=layer_sets)
        return summarise("pick", ("star", 2), [o], inferences, latency, 1e9, 2.0)

    merged = merge_results([part(7, True, 30, 10.0, [(0, 1)]), part(3, False, 10, 50.0, [(0, 1), (2, 5)])])
    assert [o.seed for o in merged.outcomes] == [3, 7] and merged.successes == 1 and merged.episodes == 2
    assert merged.inferences == 40 and merged.mean_latency_ms == pytest.approx((30 * 10 + 10 * 50) / 40)
    assert merged.distinct_layer_sets == 2 and merged.skip_mode == "star" and merged.active_layers == 2
    with pytest.raises(ValueError):
        merge_results([])


def _tiny_random_policy():
    """A random tiny MoLe-VLA behind the policy interface (2 DDIM steps, no guidance: the loop is what is tested)."""
    torch = pytest.importorskip("torch")
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import MoLeVLA
    from mole_vla_ros.model.normalization import ActionNormalizer
    from mole_vla_ros.model.policy import MoLeVLAPolicy

    torch.manual_seed(0)
    overrides = {"action_head.ddim_steps": 2, "action_head.cfg_scale": 1.0}
    config = MoLeVLAConfig.preset("tiny", camera_names=("scene", "wrist"), chunk_size=8, **overrides)
    return MoLeVLAPolicy(MoLeVLA(config), ActionNormalizer.identity(config.action_dim), seed=0)


def _recording(policy):
    """(policy, chunks): every chunk the policy produces is appended to `chunks` as (noise seed, actions)."""
    chunks, infer = [], policy.infer

    def recorded(inp):
        out = infer(inp)
        chunks.append((inp.seed, out.actions))
        return out

    policy.infer = recorded
    return policy, chunks


@pytest.mark.slow
def test_an_episode_meets_the_same_noise_whatever_ran_before_it(pick_sim):
    """Settings and seed ranges compared must not differ by noise-sequence luck: the diffusion noise restarts from
    each episode's seed, so episode 4's rollout is the same alone or after episode 3, and after another setting."""

    def run(policy, chunks, seed, episodes, mode="star"):
        """The chunks of the run's last episode (its noise seeds; warm-up calls use seed 0)."""
        start = len(chunks)
        policy.skip_mode = mode
        settings = EvalSettings(task="pick", episodes=episodes, seed=seed, sim=SIM, max_seconds=1.5)
        evaluate(policy, settings, pick_sim, (mode, 2), progress=False)
        last = seed + episodes - 1
        stride = sim_evaluate.NOISE_SEEDS_PER_EPISODE
        return np.stack([a for s, a in chunks[start:] if s is not None and s // stride == last and s > 0])

    import mole_vla_ros.sim.evaluate as sim_evaluate

    policy, chunks = _recording(_tiny_random_policy())
    after_3 = run(policy, chunks, seed=3, episodes=2)  # seeds 3 and 4 in one run
    alone = run(*_recording(_tiny_random_policy()), seed=4, episodes=1)
    assert len(alone) >= 2  # re-planned within the episode
    np.testing.assert_array_equal(after_3, alone)
    run(policy, chunks, seed=40, episodes=1, mode="early")  # another setting first, on the same policy
    np.testing.assert_array_equal(run(policy, chunks, seed=4, episodes=1), alone)
    # and the noise does matter: other per-episode noise seeds give other chunks
    stride = sim_evaluate.NOISE_SEEDS_PER_EPISODE
    try:
        sim_evaluate.NOISE_SEEDS_PER_EPISODE = stride + 1
        assert not np.array_equal(run(*_recording(_tiny_random_policy()), seed=4, episodes=1), alone)
    finally:
        sim_evaluate.NOISE_SEEDS_PER_EPISODE = stride


def test_restart_noise_refuses_a_bad_seed():
    from mole_vla_ros.runtime.node_core import PolicyRuntime

    runtime = PolicyRuntime(sim_runtime_config(EvalSettings(task="pick", sim=SIM), _tiny_random_policy()),
                            _tiny_random_policy(), executor="inline")  # fmt: skip
    with pytest.raises(ValueError, match="noise seed must be an integer >= 0"):
        runtime.restart_noise(-1)
    with pytest.raises(ValueError, match="noise seed must be an integer >= 0"):
        runtime.restart_noise(1.5)
    runtime.close()


def test_joint_trajectory_output_mode_also_closes_the_loop(pick_sim):
    """The runtime's JointTrajectory stream (its own IK) drives the sim arm joint by joint, and still succeeds."""
    settings = EvalSettings(task="pick", episodes=1, seed=9, sim=SIM, runtime={"output_mode": "joint_trajectory"})
    result = evaluate(ScriptedPolicy(pick_sim), settings, pick_sim, ("scripted", None), progress=False)
    assert result.successes == 1, result.outcomes


def test_cli_eval_renders_at_the_checkpoints_image_size_by_default(tmp_path, monkeypatch):
    """Rendering larger and resizing down is another image than the one trained on: without --image-size the cameras
    render at the checkpoint's own image size (the scripted expert keeps 224)."""
    torch = pytest.importorskip("torch")
    import mole_vla_ros.sim.evaluate as sim_evaluate
    from mole_vla_ros.model.checkpoint import save_checkpoint
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import MoLeVLA
    from mole_vla_ros.model.normalization import ActionNormalizer

    torch.manual_seed(0)
    config = MoLeVLAConfig.preset("tiny", camera_names=("scene", "wrist"), image_size=48)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(str(ckpt), MoLeVLA(config), ActionNormalizer.identity(config.action_dim))
    sizes = []
    monkeypatch.setattr(sim_evaluate, "evaluate_grid", lambda _f, settings, *_a, **_k: sizes.append(settings) or [])
    base = ["sim", "eval", "--task", "pick", "--episodes", "1"]
    assert cli_main([*base, "--checkpoint", str(ckpt)]) == 0
    assert cli_main([*base, "--checkpoint", str(ckpt), "--image-size", "64"]) == 0
    assert cli_main([*base, "--scripted"]) == 0
    assert [s.sim.image_size for s in sizes] == [48, 64, 224]
