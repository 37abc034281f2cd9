"""`mole-vla sim record --takeover-checkpoint`: a policy drives, the scripted expert takes over where it went wrong,
and only the expert's part is recorded (DAgger-style demonstrations from the policy's own states)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math

import numpy as np
import pytest

if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("franky_sim") is None:
    pytest.skip("simulator extra not installed (make venv installs mujoco and franky-sim)", allow_module_level=True)

from mole_vla_ros.cli import main as cli_main
from mole_vla_ros.data.episode import EpisodeReader, list_episodes
from mole_vla_ros.runtime.node_core import PolicyRuntime
from mole_vla_ros.sim.config import SimConfig
from mole_vla_ros.sim.env import TabletopSim
from mole_vla_ros.sim.evaluate import EvalSettings, ScriptedPolicy, run_episode, sim_runtime_config
from mole_vla_ros.sim.record import record_episodes
from mole_vla_ros.sim.takeover import PolicyTakeover, TakeoverConfig

SIM = SimConfig(image_size=48)


class _Waits(ScriptedPolicy):
    """Holds the pose it is at with the gripper open (an instruction the scripted policy cannot parse)."""

    def infer(self, inp):
        return super().infer(dataclasses.replace(inp, instruction="wait"))


class _PicksTheOtherCube(ScriptedPolicy):
    """The scripted expert told to pick the cube the instruction does not name."""

    def infer(self, inp):
        _target, other = self.sim.task.parse(inp.instruction)
        return super().infer(dataclasses.replace(inp, instruction=f"pick up the {other} cube"))


def _takeover(policy_cls, after_s, keep_successes=False):
    def build(sim):
        return PolicyTakeover(policy_cls(sim), sim, TakeoverConfig(after_s=after_s, keep_successes=keep_successes))

    return build


@pytest.fixture(scope="module")
def pick_sim():
    with TabletopSim(SIM, "pick") as sim:
        yield sim


def test_takeover_time_is_reproducible_inside_the_window_on_a_camera_frame(pick_sim):
    takeover = PolicyTakeover(ScriptedPolicy(pick_sim), pick_sim, TakeoverConfig(after_s=(1.0, 3.0)))
    try:
        times = [takeover.takeover_time(seed) for seed in range(40)]
        assert times == [takeover.takeover_time(seed) for seed in range(40)]
        assert all(1.0 - 1e-9 <= t <= 3.0 + 1e-9 for t in times)
        frames = np.asarray(times) / pick_sim.config.control_dt
        assert np.allclose(frames, np.round(frames))
        assert len(set(times)) > 10  # spread over the window, not one value
    finally:
        takeover.close()


def test_a_policy_episode_can_stop_early_and_leave_the_robot_where_it_is(pick_sim):
    settings = EvalSettings(task="pick", episodes=1, seed=8, sim=SIM)
    policy = ScriptedPolicy(pick_sim)
    runtime = PolicyRuntime(sim_runtime_config(settings, policy), policy, executor="inline")
    try:
        o = run_episode(runtime, pick_sim, settings, seed=8, stop_at_s=1.5)
    finally:
        runtime.close()
    assert not o.success and o.seconds == pytest.approx(1.5) and pick_sim.time == pytest.approx(1.5)
    assert o.control_steps == 15 and o.failure == "no_reach"  # so far: it had not come down yet
    # the scripted policy was on its way: the simulator is left mid-motion, not reset
    stopped_at = pick_sim.observe(render=False).ee_pose.pose.position
    start = pick_sim.reset(8).ee_pose.pose.position
    assert np.linalg.norm(stopped_at - start) > 0.05


def test_the_expert_takes_over_a_policy_that_did_nothing(tmp_path):
    results = record_episodes(
        tmp_path, "pick", 1, seed=8, sim_config=SIM, progress=False, takeover=_takeover(_Waits, (0.7, 0.7))
    )
    (r,) = results
    assert r.success and not r.skipped and r.path.name == "sim_pick_takeover_seed000008"
    assert r.takeover["after_s"] == pytest.approx(0.7)
    assert r.takeover["policy_failure_so_far"] == "no_reach" and r.takeover["policy_closest_target_mm"] is None
    assert r.phases[0] == "approach"
    with EpisodeReader(r.path) as ep:
        assert ep.success is True and ep.status == "complete"
        meta = ep.metadata["extra"]["sim"]["takeover"]
        assert meta["after_s"] == pytest.approx(0.7) and meta["policy_success"] is False
        # the recording starts at the takeover: its stamps go on from the policy's part
        assert ep.metadata["start_time_ns"] >= round(0.7e9)
        stamps = [m.log_time_ns for m in ep.messages(["/teleop/target_pose"])]
        assert min(stamps) >= round(0.7e9) and stamps == sorted(stamps)


def test_takeover_episodes_pass_the_dataset_builder_next_to_plain_ones(tmp_path):
    record_episodes(tmp_path / "eps", "pick", 1, seed=9, sim_config=SIM, progress=False)
    record_episodes(
        tmp_path / "eps", "pick", 1, seed=8, sim_config=SIM, progress=False, takeover=_takeover(_Waits, (0.5, 0.5))
    )
    assert [p.name for p in list_episodes(tmp_path / "eps")] == ["sim_pick_seed000009", "sim_pick_takeover_seed000008"]
    rc = cli_main(
        ["dataset", "build", str(tmp_path / "eps"), "--out", str(tmp_path / "ds"), "--rate", "10",
         "--image-size", "48", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert sorted(e["name"] for e in meta["episodes"]) == ["sim_pick_seed000009", "sim_pick_takeover_seed000008"]


def test_holding_the_other_cube_the_expert_lets_go_and_picks_the_named_one(tmp_path):
    (r,) = record_episodes(
        tmp_path, "pick", 1, seed=8, sim_config=SIM, progress=False, takeover=_takeover(_PicksTheOtherCube, (6.0, 6.0))
    )
    assert r.takeover["policy_held"] == "other" and r.takeover["policy_failure_so_far"] == "wrong_cube"
    assert r.success and r.phases[0] == "approach"  # opens (drops the wrong cube) and starts over


def test_a_policy_that_succeeded_before_the_takeover_is_skipped_or_kept_holding_the_cube(tmp_path):
    skipped = record_episodes(
        tmp_path / "skip",
        "pick",
        1,
        seed=8,
        sim_config=SIM,
        progress=False,
        takeover=_takeover(ScriptedPolicy, (9.5, 9.5)),
    )
    assert skipped[0].skipped.startswith("the policy succeeded after") and skipped[0].path is None
    assert not (tmp_path / "skip").exists() or list_episodes(tmp_path / "skip") == []
    (kept,) = record_episodes(
        tmp_path / "keep",
        "pick",
        1,
        seed=8,
        sim_config=SIM,
        progress=False,
        takeover=_takeover(ScriptedPolicy, (9.5, 9.5), keep_successes=True),
    )
    assert kept.path is not None and kept.success and kept.takeover["policy_success"] is True
    # the expert keeps the named cube in hand: it lifts and holds, never opens and starts over
    assert kept.phases[0] == "lift" and "approach" not in kept.phases and kept.retries == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"after_s": (3.0, 1.0)}, r"needs 0 <= low <= high"),
        ({"after_s": (-1.0, 1.0)}, r"needs 0 <= low <= high"),
        ({"after_s": (1.0,)}, r"must be \(low, high\) seconds"),
        ({"active_layers": 0}, "active_layers must be >= 1"),
    ],
)
def test_bad_takeover_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TakeoverConfig(**kwargs)


@pytest.mark.slow
def test_cli_record_with_a_real_checkpoint_taking_over(tmp_path, capsys, tiny_sim_checkpoint):
    ckpt, config = tiny_sim_checkpoint
    out = tmp_path / "eps"
    rc = cli_main(
        ["sim", "record", "--task", "pick", "--episodes", "2", "--seed", "3", "--image-size", str(config.image_size),
         "--out", str(out), "--takeover-checkpoint", str(ckpt), "--takeover-after", "0.3", "0.6",
         "--takeover-active-layers", "2"]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "expert takeover of" in text and "0 of 2 seeds skipped" in text
    names = [p.name for p in list_episodes(out)]
    assert names == ["sim_pick_takeover_seed000003", "sim_pick_takeover_seed000004"]
    for path in list_episodes(out):
        with EpisodeReader(path) as ep:
            meta = ep.metadata["extra"]["sim"]["takeover"]
            assert meta["policy"] == str(ckpt) and 0.3 - 1e-9 <= meta["after_s"] <= 0.6 + 1e-9
            assert not math.isnan(meta["after_s"])
