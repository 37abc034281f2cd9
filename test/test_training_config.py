"""TrainingConfig validation, presets and the `mole-vla train` option mapping; image augmentation."""

from __future__ import annotations

import argparse
import itertools
import json

import pytest
import torch

from mole_vla_ros.training.augment import augment_images
from mole_vla_ros.training.cli import config_from_args, register
from mole_vla_ros.training.config import (
    TRAINING_PRESETS,
    AugmentConfig,
    TrainingConfig,
    gumbel_noise_scale,
    lr_factor,
)
from mole_vla_ros.training.data import SampleOrder
from mole_vla_ros.training.trainer import micro_seed


@pytest.mark.parametrize(
    "change, words",
    [
        ({"stage": "distill"}, ["stage", "'distill'", "full", "mole"]),
        ({"steps": 0}, ["steps", ">= 1", "0"]),
        ({"lr": -1.0}, ["lr", "-1.0"]),
        ({"ema_decay": 1.0}, ["ema_decay", "[0, 1)", "0.999"]),
        ({"mse_share": 2.0}, ["mse_share", "2.0"]),
        ({"precision": "fp8"}, ["precision", "'fp8'", "bf16"]),
        ({"device": "tpu"}, ["device", "'tpu'"]),
        ({"cache_vision_features": "on", "freeze_vision": False}, ["freeze_vision=True", "Freeze the tower"]),
        ({"cache_vision_features": "on", "augment": {"enabled": True}}, ["augmentation", "Turn augmentation off"]),
        ({"augment": {"crop_scale": (0.5, 1.5)}}, ["augment.crop_scale", "(0.5, 1.5)"]),
        ({"nonsense": 1}, ["unknown field", "nonsense"]),
        ({"kd_form": "sigmoid"}, ["kd_form", "'sigmoid'", "paper"]),
        ({"skip_mode": "random"}, ["skip_mode='random'", "stage='mole'"]),
        ({"stage": "mole", "skip_mode": "mod"}, ["skip_mode", "'mod'", "early"]),
        ({"lr_schedule": "linear"}, ["lr_schedule", "'linear'", "cosine"]),
        ({"min_lr_ratio": 1.5}, ["min_lr_ratio", "1.5"]),
        ({"gumbel_anneal": 1.5}, ["gumbel_anneal", "[0.0, 1.0]", "1.5"]),
        ({"partition_weight": -0.1}, ["partition_weight", "-0.1"]),
    ],
)
def test_bad_values_are_explained(change, words):
    data = TrainingConfig().to_dict()
    data.update(change)
    with pytest.raises(ValueError) as err:
        TrainingConfig.from_dict(data)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_presets_round_trip_and_defaults_follow_the_spec():
    for name in TRAINING_PRESETS:
        cfg = TrainingConfig.preset(name)
        assert TrainingConfig.from_dict(json.loads(cfg.to_json())) == cfg
    base = TrainingConfig.preset("cogact-base")
    assert (base.lr, base.weight_decay, base.grad_clip, base.strategy) == (2e-5, 0.0, 1.0, "fsdp")
    assert TrainingConfig().freeze_vision and not TrainingConfig().augment.enabled  # paper: frozen, no image aug
    assert TrainingConfig.preset("tiny").lr > base.lr  # from scratch trains faster than fine-tuning
    with pytest.raises(ValueError, match="unknown training preset 'huge'"):
        TrainingConfig.preset("huge")


def test_feature_caching_follows_freezing_and_augmentation():
    assert TrainingConfig().cache_features(vision_frozen=True)
    assert not TrainingConfig().cache_features(vision_frozen=False)
    assert not TrainingConfig().replace(**{"augment.enabled": True}).cache_features(vision_frozen=True)
    assert not TrainingConfig(cache_vision_features="off").cache_features(vision_frozen=True)


def test_teacher_only_in_stage_mole_with_cogkd():
    assert not TrainingConfig(stage="full").use_teacher
    assert TrainingConfig(stage="mole").use_teacher
    assert not TrainingConfig(stage="mole", cogkd=False).use_teacher
    assert not TrainingConfig(stage="mole", kd_weight=0.0).use_teacher


def _args(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_cli_options_map_onto_the_config(tmp_path):
    extra = tmp_path / "cfg.json"
    extra.write_text(json.dumps({"warmup_steps": 7, "seed": 3}))
    cfg = config_from_args(
        _args(
            [
                "--preset",
                "sim-default",
                "--config",
                str(extra),
                "--stage",
                "mole",
                "--no-cogkd",
                "--skip-mode",
                "early",
                "--kd-form",
                "code",
                "--steps",
                "12",
                "--seed",
                "5",
                "--augment",
                "--gumbel-anneal",
                "0.5",
                "--partition-weight",
                "0.01",
                "--model-override",
                "llm.num_layers=6",
                "--model-override",
                "llm.tokenizer=byte",
            ]
        )
    )
    assert (cfg.stage, cfg.cogkd, cfg.steps, cfg.warmup_steps, cfg.seed) == ("mole", False, 12, 7, 5)
    assert (cfg.skip_mode, cfg.kd_form, TrainingConfig.preset("sim-default").kd_form) == ("early", "code", "paper")
    assert cfg.augment.enabled and cfg.lr == TrainingConfig.preset("sim-default").lr and cfg.gumbel_anneal == 0.5
    assert cfg.partition_weight == 0.01 and TrainingConfig.preset("sim-default").partition_weight == 0.002
    assert cfg.model_overrides["llm.num_layers"] == 6 and cfg.model_overrides["llm.tokenizer"] == "byte"
    assert cfg.model_overrides["vision.backbone"] == "efficientnet_lite0"  # the preset's overrides are kept


def test_sample_order_is_a_pure_function_of_position():
    a, b = SampleOrder(10, seed=1), SampleOrder(10, seed=1)
    whole = a.take(0, 25)
    assert torch.equal(torch.cat([b.take(0, 7), b.take(7, 11), b.take(18, 7)]), whole)
    assert sorted(whole[:10].tolist()) == list(range(10)) and sorted(whole[10:20].tolist()) == list(range(10))
    assert not torch.equal(whole[:10], whole[10:20])  # a new permutation every epoch
    assert micro_seed(0, 1, 0) != micro_seed(0, 0, 1)


def test_augmentation_is_seeded_and_stays_in_range():
    images = torch.rand(2, 2, 3, 32, 32)
    cfg = AugmentConfig(enabled=True, crop_scale=(0.5, 0.8))
    a = augment_images(images, cfg, torch.Generator().manual_seed(0))
    b = augment_images(images, cfg, torch.Generator().manual_seed(0))
    c = augment_images(images, cfg, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, images)
    with pytest.raises(ValueError, match=r"\[B, V, 3, S, S\]"):
        augment_images(torch.rand(2, 3, 32, 32), cfg, torch.Generator())


def test_lr_schedules_warm_up_then_hold_or_follow_half_a_cosine():
    const = TrainingConfig(steps=100, warmup_steps=10)
    assert [lr_factor(s, const) for s in (0, 4, 9, 10, 50, 99)] == [0.1, 0.5, 1.0, 1.0, 1.0, 1.0]
    cos = const.replace(lr_schedule="cosine", min_lr_ratio=0.1)
    f = [lr_factor(s, cos) for s in range(100)]
    assert f[:10] == [lr_factor(s, const) for s in range(10)]  # same warmup
    assert f[10] == pytest.approx(1.0) and f[99] == pytest.approx(0.1)
    assert f[10 + 89 // 2] == pytest.approx(0.55, abs=0.02)  # half way down
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))  # never rises after the warmup
    assert lr_factor(0, TrainingConfig(steps=1, lr_schedule="cosine")) == pytest.approx(1.0)  # one step: no 0/0


def test_gumbel_noise_stays_on_or_anneals_to_zero_over_the_given_share_of_the_steps():
    assert {gumbel_noise_scale(s, TrainingConfig(steps=100)) for s in range(100)} == {1.0}  # Eq. 12 throughout
    cfg = TrainingConfig(steps=100, gumbel_anneal=0.4)
    f = [gumbel_noise_scale(s, cfg) for s in range(100)]
    assert f[0] == 1.0 and f[20] == pytest.approx(0.5) and f[39] == pytest.approx(1 / 40)
    assert set(f[40:]) == {0.0} and all(a > b for a, b in itertools.pairwise(f[:41]))
    assert gumbel_noise_scale(0, TrainingConfig(steps=1, gumbel_anneal=1.0)) == 1.0
