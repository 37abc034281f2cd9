"""`mole-vla train` end to end on a tiny generated dataset: loss goes down, the router learns, the EMA teacher,
bit-exact resume, 2-process DDP == 1 process, cached features == images, and `mole-vla evaluate`.

The dataset is written the way real data is: synthetic rosbag2 episodes through EpisodeWriter, then the dataset
builder. The motion direction depends on the instruction and the image brightness on the motion, so there is
something to learn.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mole_vla_ros.data.dataset import DatasetConfig, build_dataset
from mole_vla_ros.data.episode import EpisodeMetadata, EpisodeWriter, QosSpec, TopicSpec
from mole_vla_ros.data.typestore import default_message, get_typestore
from mole_vla_ros.interfaces import PolicyInput
from mole_vla_ros.runtime import rotations as rot
from mole_vla_ros.training.config import TrainingConfig, lr_factor
from mole_vla_ros.training.distributed import spawn_local
from mole_vla_ros.training.state import checkpoint_dirs
from mole_vla_ros.training.trainer import Trainer, train, train_worker

NS = 1_000_000_000
T0 = 1_760_000_000 * NS
TICK = NS // 10
TOPICS = [
    TopicSpec("/camera/scene/image_raw", "sensor_msgs/msg/Image", QosSpec.sensor_data(), 10),
    TopicSpec("/franka_robot_state_broadcaster/current_pose", "geometry_msgs/msg/PoseStamped", expected_hz=20),
    TopicSpec("/franka_gripper/joint_states", "sensor_msgs/msg/JointState", expected_hz=20),
]
INSTRUCTIONS = {"move left": 1.0, "move right": -1.0}


def _stamp(msg, t_ns):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(t_ns), NS)


def write_episode(root, name: str, instruction: str, rng, ticks: int = 24, speed: float = 1.0):
    """A synthetic episode; `speed` scales its motion per tick (a different action range)."""
    ts = get_typestore()
    sign = INSTRUCTIONS[instruction]
    pos = np.array([0.45, 0.0, 0.3])
    quat = rot.rpy_to_quat(np.array([np.pi - 0.1, 0.05, 0.2]))
    msgs = []
    for i in range(ticks):
        closed = i >= ticks // 2
        for j in range(2):  # pose and gripper at 20 Hz, camera at 10 Hz
            t = T0 + i * TICK + j * TICK // 2
            p = default_message("geometry_msgs/msg/PoseStamped")
            _stamp(p, t)
            p.header.frame_id = "fr3_link0"
            p.pose.position.x, p.pose.position.y, p.pose.position.z = pos
            p.pose.orientation.x, p.pose.orientation.y, p.pose.orientation.z, p.pose.orientation.w = quat
            msgs.append((t + 100_000, TOPICS[1].name, p))
            width = 0.03 if closed else 0.08
            g = default_message(
                "sensor_msgs/msg/JointState",
                name=["fr3_finger_joint1", "fr3_finger_joint2"],
                position=np.array([width / 2, width / 2]),
            )
            _stamp(g, t)
            msgs.append((t + 200_000, TOPICS[2].name, g))
        img = np.full((32, 32, 3), 40 + int(70 * (1 + sign) + 40 * closed), dtype=np.uint8)
        img[:, : 8 + (i % 16)] += rng.integers(0, 20, dtype=np.uint8)
        m = default_message(
            "sensor_msgs/msg/Image", height=32, width=32, encoding="rgb8", step=96, data=img.reshape(-1)
        )
        _stamp(m, T0 + i * TICK)
        msgs.append((T0 + i * TICK + 300_000, TOPICS[0].name, m))
        pos = pos + speed * np.array([0.004, 0.01 * sign, -0.002]) + rng.normal(0, 0.001, 3)
    w = EpisodeWriter(
        root,
        name,
        TOPICS,
        EpisodeMetadata(instruction, cameras={"scene": {"topic": TOPICS[0].name}}),
        min_free_disk_gb=0,
    )
    for t, topic, m in sorted(msgs, key=lambda x: x[0]):
        w.write(topic, bytes(ts.serialize_cdr(m, m.__msgtype__)), t)
    w.finish(True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    rng = np.random.default_rng(0)
    for e in range(5):
        write_episode(root, f"ep{e}", list(INSTRUCTIONS)[e % 2], rng)
    out = tmp_path_factory.mktemp("dataset") / "ds"
    build_dataset(
        [root], out, DatasetConfig(rate_hz=10, image_size=32, val_fraction=0.2, shard_size=32), progress=False
    )
    return str(out)


def tiny(**changes) -> TrainingConfig:
    base = dict(
        steps=30,
        batch_size=4,
        lr=1e-3,
        threads=1,
        log_interval=5,
        save_interval=1000,
        eval_batches=1,
        model_overrides={"image_size": 32, "llm.num_layers": 4, "active_layers": 2},
    )
    base.update(changes)
    return TrainingConfig.preset("tiny", **base)


@pytest.fixture(scope="module")
def stage1(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    summary = train(tiny(steps=40), [dataset], out, progress=False)
    return out, summary


def test_tiny_training_lowers_the_loss(stage1):
    out, summary = stage1
    losses = summary.losses
    assert len(losses) == 40
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.7 * first, (first, last)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(r["layer_usage"] == [1.0] * 4 for r in rows)  # stage "full" runs every layer
    # the final checkpoint is a normal model checkpoint that the policy wrapper loads
    from mole_vla_ros.model.policy import MoLeVLAPolicy

    policy = MoLeVLAPolicy.from_checkpoint(str(out / "final"))
    assert policy.camera_names == ("scene",) and policy.image_size == 32
    # loaded anywhere, a full-depth checkpoint runs every layer, not k picked by its untrained router
    assert policy.skip_mode == "full"
    images = {"scene": np.zeros((32, 32, 3), dtype=np.uint8)}
    assert len(policy.infer(PolicyInput(images=images, instruction="move left", seed=0)).layer_indices) == 4


def test_router_choices_change_with_stage2_training(dataset, stage1, tmp_path):
    out1, _ = stage1
    # the paper's lambda3 = 0.1 (the code's effective 0.01 also moves the router, but more slowly)
    cfg = tiny(stage="mole", init_from=str(out1 / "final"), steps=25, lr=3e-3, balance_weight=0.1, kd_form="paper")
    cfg = cfg.replace(eval_interval=10)
    before = load_file(str(out1 / "final" / "model.safetensors"))
    summary = train(cfg, [dataset], tmp_path, progress=False)
    after = load_file(str(tmp_path / "final" / "model.safetensors"))
    router_keys = [k for k in before if k.startswith("router.")]
    assert router_keys and any(not torch.equal(before[k], after[k]) for k in router_keys)
    assert all(len(c) == 2 for c in summary.router_probe_final)  # k = 2 of 4
    assert summary.router_probe_final != summary.router_probe_initial
    # how decided the choice is: the k-th vs (k+1)-th logit gap, reported and flagged when it is a near-tie
    assert 0 <= summary.router_margin_initial < 0.01 and 0 <= summary.router_margin_final < 0.01  # near-ties
    assert "router margin" in summary.text() and "near-ties" in summary.text()
    assert "near-ties" not in dataclasses.replace(summary, router_margin_final=0.5).text()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "router_margin" in r] == [10, 20]  # logged with the validation loss
    assert sum(summary.layer_usage) == pytest.approx(2.0)
    meta = json.loads((tmp_path / "final" / "config.json").read_text())
    assert meta["config"]["active_layers"] == 2 and meta["config"]["skip_mode"] == "star"
    assert meta["config"]["loss"]["kd_form"] == "paper" and summary.final_cogkd > 1e-4  # the paper's scale
    assert summary.final_partition is None and "partition" not in summary.text()
    assert meta["extra"]["training"]["stage"] == "mole" and meta["extra"]["training"]["cogkd"] is True


def test_the_partition_loss_decides_the_choice_the_balance_loss_leaves_tied(dataset, stage1, tmp_path):
    out1, _ = stage1
    # the recipe of the test above, with the partition loss (not the paper's) in place of the balance loss
    cfg = tiny(stage="mole", init_from=str(out1 / "final"), steps=25, lr=3e-3, balance_weight=0.0, kd_form="paper")
    cfg = cfg.replace(eval_interval=10, partition_weight=0.1)
    summary = train(cfg, [dataset], tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # a near-tie at the start (as with the balance loss, test above), a decided choice at the end
    assert summary.router_margin_initial < 0.01 and summary.router_margin_final > 0.5
    assert rows[-1]["partition"] < rows[0]["partition"] < 0
    # the summary reports it (the balance-loss run above has no partition term, so none)
    assert summary.final_partition == rows[-1]["partition"] and ", partition -" in summary.text()
    meta = json.loads((tmp_path / "final" / "config.json").read_text())
    assert meta["config"]["loss"]["partition_weight"] == 0.1 and meta["config"]["loss"]["balance_weight"] == 0.0


def test_annealed_gumbel_noise_trains_the_last_steps_on_the_router_s_own_choice(dataset, stage1, tmp_path):
    out1, _ = stage1
    overrides = {"router.gumbel_noise": True, "router.temporal_dropout": 0.0}
    cfg = tiny(stage="mole", init_from=str(out1 / "final"), steps=4, gumbel_anneal=0.5, model_overrides=overrides)
    trainer = Trainer(cfg, [dataset], tmp_path, progress=False)
    router = trainer.model.router
    seen = []  # per step: (noise scale, the choice trained on, the router's noise-free top-k)
    choose = router.choose

    def spy(logits, k, mode="star", generator=None):
        choice = choose(logits, k, mode, generator)
        seen.append((router.noise_scale, choice.selected_host, logits.detach().topk(k, dim=-1).indices.sort().values))
        return choice

    router.choose = spy
    for _ in range(4):
        trainer.train_step()
    assert [scale for scale, *_ in seen] == [1.0, 0.5, 0.0, 0.0]
    trained_on = [sel.nonzero()[:, 1].view(len(sel), -1) for _, sel, _ in seen]
    assert all(torch.equal(trained_on[s], seen[s][2]) for s in (2, 3))  # noise off: the inference choice
    assert not torch.equal(trained_on[0], seen[0][2])  # full noise: other sets for some samples
    # the metrics show the schedule (the scale of each logged step's noise)
    train(cfg.replace(log_interval=1), [dataset], tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["gumbel_noise_scale"] for r in rows] == [1.0, 0.5, 0.0, 0.0]


def test_stage1_freezes_the_unused_router(dataset, stage1):
    out1, _ = stage1
    trainer = Trainer(tiny(steps=1), [dataset], out1.parent / "s1_router", progress=False)
    before = {k: v.clone() for k, v in trainer.model.router.state_dict().items()}
    trainer.train_step()
    assert all(torch.equal(before[k], v) for k, v in trainer.model.router.state_dict().items())
    assert trainer.teacher is None


@pytest.mark.parametrize("mode", ["random", "early"])
def test_skip_baselines_train_their_own_layers_without_the_router(dataset, stage1, tmp_path, mode):
    out1, _ = stage1
    trainer = Trainer(
        tiny(stage="mole", skip_mode=mode, init_from=str(out1 / "final"), steps=2), [dataset], tmp_path, progress=False
    )
    router_before = {k: v.clone() for k, v in trainer.model.router.state_dict().items()}
    llm_before = {k: v.clone() for k, v in trainer.model.llm.state_dict().items()}
    rows = [trainer.train_step() for _ in range(2)]
    assert all(torch.equal(router_before[k], v) for k, v in trainer.model.router.state_dict().items())
    layer_changed = [
        any(
            not torch.equal(llm_before[k], v)
            for k, v in trainer.model.llm.state_dict().items()
            if k.startswith(f"layers.{i}.")
        )
        for i in range(4)
    ]
    usage = np.sum([r["usage"] for r in rows], axis=0) / 2
    assert usage.sum() == pytest.approx(2.0) and all(r["balance"] == 0.0 for r in rows)
    if mode == "early":
        assert layer_changed == [True, True, False, False] and usage.tolist() == [1.0, 1.0, 0.0, 0.0]
    else:
        assert sum(layer_changed) >= 3  # 4 samples x 2 steps of random pairs reach (almost surely) 3+ layers
    with pytest.raises(ValueError, match="needs stage='mole'"):
        tiny(skip_mode=mode)


def test_stage2_model_overrides_reach_a_checkpoint_only_where_the_weights_allow(dataset, stage1, tmp_path, caplog):
    from mole_vla_ros.model.checkpoint import load_checkpoint

    out1, _ = stage1
    overrides = {"image_size": 32, "llm.num_layers": 4, "active_layers": 2}  # the checkpoint's own values
    overrides.update({"router.gumbel_noise": True, "router.gumbel_tau": 2.0, "router.depth_prior": 3.0})
    overrides["llm.hidden_size"] = 128
    cfg = tiny(stage="mole", init_from=str(out1 / "final"), steps=2, model_overrides=overrides)
    with caplog.at_level("INFO", logger="mole_vla_ros.training.trainer"):
        summary = train(cfg, [dataset], tmp_path, progress=False)
    # a shape the weights fix stays the checkpoint's, with a warning naming it; the router's noise is applied
    assert "llm.hidden_size=128 (the checkpoint has 64)" in caplog.text
    assert "model options changed" in caplog.text and "router.gumbel_noise" in caplog.text
    model, _, _ = load_checkpoint(str(tmp_path / "final"))
    assert model.config.llm.hidden_size == 64 and model.config.router.gumbel_noise
    assert model.config.router.depth_prior == 3.0  # the router was trained with the prior and keeps it
    # the ramp (steps of 3 / (4 - 1) = 1 between neighbours) decides the untrained router's choice by a clear margin
    assert summary.router_probe_initial == [[0, 1]] * len(summary.router_probe_initial)
    assert summary.router_margin_initial == pytest.approx(1.0, abs=0.05)
    # the balance loss (on by default) pushes down the layers that run, the prior's: the run says so
    assert "use --balance-weight 0 with the prior" in caplog.text
    caplog.clear()
    no_balance = tiny(
        stage="mole", init_from=str(out1 / "final"), steps=1, model_overrides=overrides, balance_weight=0.0
    )
    with caplog.at_level("INFO", logger="mole_vla_ros.training.trainer"):
        train(no_balance, [dataset], tmp_path / "no_balance", progress=False)
    assert "model options changed" in caplog.text and "with the prior" not in caplog.text
    # the router module follows the config it was switched to, not the one it was built with: Gumbel noise (paper
    # Eq. 12) makes the same logits pick different layers from draw to draw, in training only
    router = model.router
    assert router.cfg.gumbel_tau == 2.0
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    router.train()
    torch.manual_seed(0)
    assert len({router.choose(logits, 2).indices[0] for _ in range(30)}) > 1
    router.eval()
    assert {router.choose(logits, 2).indices[0] for _ in range(5)} == {(0, 1)}


def test_teacher_never_gets_gradients_and_follows_the_ema(dataset, stage1, tmp_path):
    out1, _ = stage1
    trainer = Trainer(
        tiny(stage="mole", init_from=str(out1 / "final"), ema_decay=0.9), [dataset], tmp_path, progress=False
    )
    teacher = trainer.teacher
    assert teacher is not None and not teacher.training
    t_before = {k: v.clone() for k, v in teacher.llm.named_parameters()}
    s_llm = dict(trainer.model.llm.named_parameters())
    for k, v in t_before.items():  # starts as the stage-1 weights
        assert torch.equal(v, s_llm[k].detach()), k
    for _ in range(2):
        t_prev = {k: v.clone() for k, v in teacher.llm.named_parameters()}
        trainer.train_step()
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
        student = dict(trainer.model.llm.named_parameters())
        for name, p in teacher.llm.named_parameters():
            if name == "norm.weight":  # excluded from the EMA, as in the released code
                assert torch.equal(p, t_prev[name])
                continue
            expected = 0.9 * t_prev[name] + 0.1 * student[name].detach()
            torch.testing.assert_close(p, expected, rtol=0, atol=1e-6)
    moved = [k for k in t_before if not torch.equal(t_before[k], dict(teacher.llm.named_parameters())[k])]
    assert moved  # the teacher did change


def test_resume_continues_bit_exactly(dataset, stage1, tmp_path):
    out1, _ = stage1
    cfg = tiny(stage="mole", init_from=str(out1 / "final"), steps=6, save_interval=3)
    full = train(cfg, [dataset], tmp_path / "a", progress=False)
    first = train(cfg.replace(steps=3), [dataset], tmp_path / "b", progress=False)
    assert [p.name for p in checkpoint_dirs(tmp_path / "b")] == ["step_0000003"]
    rest = train(cfg, [dataset], tmp_path / "b", resume="auto", progress=False)
    assert rest.start_step == 3
    assert first.losses + rest.losses == full.losses  # exact equality, not approximate
    a = load_file(str(tmp_path / "a" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta = load_file(str(tmp_path / "a" / "checkpoints" / "step_0000006" / "teacher.safetensors"))
    tb = load_file(str(tmp_path / "b" / "checkpoints" / "step_0000006" / "teacher.safetensors"))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_the_optimizer_follows_the_configured_lr_schedule(dataset, tmp_path):
    cfg = tiny(steps=8, warmup_steps=2, lr_schedule="cosine", min_lr_ratio=0.2, log_interval=1)
    train(cfg, [dataset], tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs == pytest.approx([cfg.lr * lr_factor(s, cfg) for s in range(8)])
    assert lrs[1] == pytest.approx(cfg.lr) and lrs[-1] == pytest.approx(0.2 * cfg.lr)


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(dataset, stage1, tmp_path):
    out1, _ = stage1
    cfg = tiny(stage="mole", init_from=str(out1 / "final"), steps=3, batch_size=2)
    single = train(cfg.replace(grad_accum=2), [dataset], tmp_path / "one", progress=False)
    spawn_local(2, train_worker, cfg.to_json(), [dataset], str(tmp_path / "two"), None, False)
    ddp = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and single.world_size == 1
    np.testing.assert_allclose(ddp["losses"], single.losses, rtol=1e-5, atol=1e-7)
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_cached_vision_features_train_like_images(dataset, tmp_path):
    cfg = tiny(steps=3, freeze_vision=True, feature_cache_dtype="float32")
    cached = train(cfg.replace(cache_vision_features="on"), [dataset], tmp_path / "c", progress=False)
    plain = train(cfg.replace(cache_vision_features="off"), [dataset], tmp_path / "p", progress=False)
    np.testing.assert_allclose(cached.losses, plain.losses, rtol=1e-5)
    cache = Path(dataset) / "vision_cache"
    assert sorted(p.name.split("-", 1)[1] for p in cache.iterdir()) == [
        "float32-train.safetensors",
        "float32-val.safetensors",
    ]


def test_training_from_episode_directories_builds_the_dataset(tmp_path):
    root = tmp_path / "episodes"
    rng = np.random.default_rng(1)
    for e in range(2):
        write_episode(root, f"ep{e}", "move left", rng, ticks=20)
    cfg = tiny(steps=2, dataset_image_size=32, augment={"enabled": True})
    summary = train(cfg, [str(root)], tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "dataset" / "meta.json").is_file()
    assert summary.dataset == str(tmp_path / "run" / "dataset")
    assert len(summary.losses) == 2 and all(np.isfinite(summary.losses))


def test_mismatched_checkpoint_and_dataset_are_explained(dataset, stage1, tmp_path):
    out1, _ = stage1
    root = tmp_path / "episodes"
    write_episode(root, "ep0", "move left", np.random.default_rng(2), ticks=20)
    other = tmp_path / "ds48"
    build_dataset([root], other, DatasetConfig(rate_hz=10, image_size=48, val_fraction=0.0), progress=False)
    with pytest.raises(ValueError, match="image_size: checkpoint 32 vs dataset 48"):
        Trainer(tiny(stage="mole", init_from=str(out1 / "final")), [str(other)], tmp_path / "run", progress=False)


@pytest.mark.parametrize("mode", ["checkpoint", "dataset"])
def test_fine_tuning_on_data_with_another_action_range_keeps_or_refits_the_statistics(
    dataset, stage1, tmp_path, mode, caplog
):
    """New data (e.g. expert takeovers) moving outside the checkpoint's action range: by default the checkpoint's
    q01/q99 stay (its outputs keep their meaning; the log says how much gets clipped); `dataset` re-fits them."""
    from mole_vla_ros.model.checkpoint import load_checkpoint

    out1, _ = stage1
    root = tmp_path / "episodes"
    rng = np.random.default_rng(3)
    for e in range(2):
        write_episode(root, f"fast{e}", list(INSTRUCTIONS)[e % 2], rng, ticks=24, speed=3.0)
    other = tmp_path / "ds_fast"
    build_dataset([root], other, DatasetConfig(rate_hz=10, image_size=32, val_fraction=0.0), progress=False)
    from mole_vla_ros.training.data import open_split

    ds_norm = open_split(str(other), "train").normalizer
    _, ckpt_norm, _ = load_checkpoint(str(out1 / "final"))
    assert not np.allclose(ds_norm.q99, ckpt_norm.q99)
    cfg = tiny(stage="full", init_from=str(out1 / "final"), steps=1, init_normalization=mode)
    with caplog.at_level("WARNING"):
        train(cfg, [str(other)], tmp_path / "run", progress=False)
    _, saved, _ = load_checkpoint(str(tmp_path / "run" / "final"))
    expected = ckpt_norm if mode == "checkpoint" else ds_norm
    np.testing.assert_array_equal(saved.q01, expected.q01)
    np.testing.assert_array_equal(saved.q99, expected.q99)
    if mode == "checkpoint":
        assert "of the dataset's action values fall outside its range" in caplog.text
    else:
        assert "re-fitting them to the dataset" in caplog.text


def test_init_normalization_must_be_checkpoint_or_dataset():
    with pytest.raises(ValueError, match=r"init_normalization must be one of \['checkpoint', 'dataset'\]"):
        tiny(init_normalization="union")


def test_evaluate_compares_methods_and_plots(dataset, stage1, tmp_path):
    from mole_vla_ros.cli import main

    out1, _ = stage1
    mole = tmp_path / "mole"
    train(tiny(stage="mole", init_from=str(out1 / "final"), steps=4), [dataset], mole, progress=False)
    early = tmp_path / "early"
    summary = train(
        tiny(stage="mole", skip_mode="early", init_from=str(out1 / "final"), steps=2), [dataset], early, progress=False
    )
    # a baseline does not train the router: no margin to report (an untrained router's would read as near-ties)
    assert summary.router_margin_final is None and "router margin" not in summary.text()
    assert json.loads((early / "final" / "config.json").read_text())["config"]["skip_mode"] == "early"
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(mole / "final"),
            "--baseline-checkpoint",
            str(out1 / "final"),
            "--ablation-checkpoint",
            str(mole / "final"),
            "--early-checkpoint",
            str(early / "final"),
            "--data",
            dataset,
            "--out",
            str(tmp_path / "eval"),
            "--repeats",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    payload = json.loads((tmp_path / "eval" / "eval.json").read_text())
    rows = {r["label"]: r for r in payload["results"]}
    reach = rows["full depth"]["reach_samples"]  # tiny episodes close early: maybe none before the first grasp
    assert 0 <= reach <= payload["samples"]
    assert (reach > 0) == (rows["full depth"]["reach_translation_m"] > 0)  # NaN (no samples) is not > 0
    assert "reach (mm)" in (tmp_path / "eval" / "eval.txt").read_text()
    assert set(rows) >= {
        "full depth",
        "MoLe (STAR) k=2",
        "MoLe w/o CogKD k=2",
        "early exit k=2 (trained)",
        "random skip k=2 (MoLe model)",
        "early exit k=2 (MoLe model)",
    }
    assert "random skip k=2 (trained)" not in rows  # no --random-checkpoint given
    assert rows["early exit k=2 (trained)"]["checkpoint"] == str(early / "final")
    assert rows["MoLe (STAR) k=2"]["gflops"] < rows["full depth"]["gflops"]
    assert rows["MoLe (STAR) k=2"]["llm_gflops"] == pytest.approx(rows["full depth"]["llm_gflops"] / 2)
    # the ablation row is the same checkpoint here, so the same noise gives the same numbers
    assert rows["MoLe w/o CogKD k=2"]["translation_m"] == rows["MoLe (STAR) k=2"]["translation_m"]
    for r in rows.values():
        assert 0 <= r["gripper_acc"] <= 1 and r["translation_m"] > 0 and r["samples"] == payload["samples"]
        assert r["repeats"] == 2 and r["translation_m_std"] > 0  # two noise seeds give two different means
    assert (tmp_path / "eval" / "eval.png").stat().st_size > 10_000
    # STAR rows say how many layer sets the router ran and how decided it was; fixed-set rows have no router
    star = rows["MoLe (STAR) k=2"]
    assert 1 <= star["layer_sets"] <= 6 and star["router_margin"] >= 0  # 6 = the 2-of-4 sets
    assert rows["early exit k=2 (trained)"]["layer_sets"] is None and rows["full depth"]["router_margin"] is None
    assert f"router of MoLe (STAR) k=2: {star['layer_sets']} distinct" in (tmp_path / "eval" / "eval.txt").read_text()
    # ... and which sets it ran most: the fractions are of the held-out samples, most used first
    top = star["top_layer_sets"]
    assert 1 <= len(top) <= min(3, star["layer_sets"]) and all(len(ix) == 2 and ix == sorted(ix) for ix, _ in top)
    fractions = [f for _, f in top]
    assert fractions == sorted(fractions, reverse=True) and 0 < sum(fractions) <= 1 + 1e-9
    assert (sum(fractions) == pytest.approx(1)) == (star["layer_sets"] <= 3)
    used = f"{','.join(map(str, top[0][0]))} {top[0][1]:.0%}"
    assert f"most used: {used}" in (tmp_path / "eval" / "eval.txt").read_text()
    assert rows["early exit k=2 (trained)"]["top_layer_sets"] is None
    assert "instruction_swap" in payload  # None here: the held-out split has one instruction


def test_instruction_swap_measures_whether_the_policy_listens(dataset, stage1):
    from mole_vla_ros.training.evaluate import instruction_sensitivity, load_held_out

    out1, _ = stage1
    data = load_held_out(dataset, "train", max_samples=24)
    assert sorted(set(data.instructions)) == ["move left", "move right"]
    swap = instruction_sensitivity(str(out1 / "final"), data, 4, "full", batch_size=8)
    assert swap["instructions"] == ["move left", "move right"] and swap["end_point_change_m"] >= 0
    # the error is that of each chunk's last valid step, as chunk_errors decodes it (same noise seed)
    from mole_vla_ros.model.checkpoint import load_checkpoint
    from mole_vla_ros.training.evaluate import chunk_errors, predict_all

    model, normalizer, _ = load_checkpoint(str(out1 / "final"))
    pred = predict_all(model, normalizer, data, "full", 4, 8, 0)
    trans, _, _, mask = chunk_errors(pred, data.actions, data.mask, data.ee_pose, data.action_space)
    last = mask.sum(1) - 1
    assert swap["end_point_error_m"] == pytest.approx(trans[np.arange(len(data)), last].mean(), rel=1e-6)
    single = load_held_out(dataset, "val")
    if len(set(single.instructions)) == 1:
        assert instruction_sensitivity(str(out1 / "final"), single, 4, "full") is None


def test_evaluate_breaks_the_error_and_the_route_down_by_instruction(dataset, stage1):
    """With several tasks in the data, a user asks which task a skip mode hurts and whether the router routes by
    task: each row carries its error per instruction, and STAR rows each instruction's most used layer set."""
    from mole_vla_ros.model.checkpoint import load_checkpoint
    from mole_vla_ros.training.evaluate import (
        Method,
        chunk_errors,
        evaluate_methods,
        format_table,
        load_held_out,
        predict_all,
    )

    out1, _ = stage1
    ck = str(out1 / "final")
    data = load_held_out(dataset, "train", max_samples=24)
    methods = [Method("full depth", ck, "full", 4), Method("STAR", ck, "star", 2), Method("early", ck, "early", 2)]
    full, star, early = evaluate_methods(methods, data, batch_size=8, progress=False)
    texts = ["move left", "move right"]
    assert list(full.translation_by_instruction) == texts
    # each instruction's error is the mean over its own samples' valid steps (same noise as the overall one)
    model, normalizer, _ = load_checkpoint(ck)
    choices = []
    pred = predict_all(model, normalizer, data, "star", 2, 8, 0, choices)
    trans, _, _, mask = chunk_errors(pred, data.actions, data.mask, data.ee_pose, data.action_space)
    for t in texts:
        rows = np.asarray(data.instructions) == t
        assert star.translation_by_instruction[t] == pytest.approx(trans[rows][mask[rows]].mean(), rel=1e-6)
    assert min(star.translation_by_instruction.values()) <= star.translation_m
    assert star.translation_m <= max(star.translation_by_instruction.values())
    # the route: each instruction's most used set and its share of that instruction's samples
    sets = [ix for c in choices for ix in c.indices]
    for t in texts:
        mine = [ix for ix, text in zip(sets, data.instructions) if text == t]
        ix, share = star.layer_set_by_instruction[t]
        assert share == mine.count(tuple(ix)) / len(mine) and all(mine.count(s) <= mine.count(tuple(ix)) for s in mine)
    assert full.layer_set_by_instruction is None and early.layer_set_by_instruction is None  # no router ran
    table = format_table([full, star, early])
    assert "translation (mm) by instruction: [1] 'move left'; [2] 'move right'" in table
    ix, share = star.layer_set_by_instruction["move right"]
    (row,) = [line for line in table.splitlines() if line.startswith("  STAR ")]
    assert f"[2] {','.join(map(str, ix))} {share:.0%}" in row and "layers:" in row
    # one instruction: nothing to break down
    one = dataclasses.replace(data, instructions=["move left"] * len(data))
    (alone,) = evaluate_methods(methods[1:2], one, batch_size=8, progress=False)
    assert alone.translation_by_instruction is None and alone.layer_set_by_instruction is None
    assert "by instruction" not in format_table([alone])


def test_reach_phase_is_everything_before_the_first_closing_chunk():
    from mole_vla_ros.training.evaluate import reach_phase

    # two episodes, chunks of 3; gripper 1 = open. Episode 0 closes from its chunk at frame 2, reopens (a missed
    # grasp) and closes again: only frames 0-1 are reach. Episode 1 never closes: all reach.
    grip = {
        (0, 0): [1, 1, 1],
        (0, 1): [1, 1, 1],
        (0, 2): [1, 1, 0],
        (0, 3): [0, 1, 1],
        (0, 4): [1, 1, 1],
        (0, 5): [1, 0, 0],
        (1, 0): [1, 1, 1],
        (1, 1): [1, 1, 1],
    }
    order = [(1, 1), (0, 3), (0, 0), (1, 0), (0, 5), (0, 1), (0, 4), (0, 2)]  # shuffled rows
    episode = np.array([e for e, _ in order])
    frame = np.array([f for _, f in order])
    actions = np.zeros((len(order), 3, 7))
    actions[:, :, -1] = [grip[key] for key in order]
    reach = reach_phase(episode, frame, actions)
    assert [key for key, r in zip(order, reach) if r] == [(1, 1), (0, 0), (1, 0), (0, 1)]


def test_training_disallows_cuda_graphs_but_keeps_the_config_flag(dataset, tmp_path):
    """Under FSDP a graph would record parameter copies freed after each forward: the trainer turns graphs off for
    the model it trains (validation and probes included), while the checkpoint keeps cuda_graphs for inference."""
    trainer = Trainer(tiny(steps=1), [dataset], tmp_path / "run", progress=False)
    model = trainer.model
    graphs = (model.vision.graphs, model.router.graphs, model.action_head.graphs)
    assert model.config.cuda_graphs is True and not any(g.enabled for g in graphs)
    model.reconfigure(model.config.replace(skip_mode="full"))  # a later config switch must not turn them back on
    assert not any(g.enabled for g in graphs)
    trainer.close()
