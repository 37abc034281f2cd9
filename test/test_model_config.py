"""MoLeVLAConfig: presets, JSON round trip, overrides, and validation messages that say what to fix."""

import json

import pytest

from mole_vla_ros.model.configuration import PRESETS, MoLeVLAConfig


@pytest.mark.parametrize("name", PRESETS)
def test_preset_round_trips_through_json(name):
    cfg = MoLeVLAConfig.preset(name)
    again = MoLeVLAConfig.from_json(json.dumps(json.loads(cfg.to_json())))
    assert again == cfg
    assert again.camera_names == cfg.camera_names and isinstance(again.camera_names, tuple)


def test_preset_shapes_match_the_spec():
    small = MoLeVLAConfig.preset("small")
    assert (small.llm.num_layers, small.llm.hidden_size, small.tokens_per_view) == (30, 576, 49)
    base = MoLeVLAConfig.preset("cogact-base")
    assert (base.num_layers, base.llm.hidden_size, base.llm.intermediate_size) == (32, 4096, 11008)
    assert base.tokens_per_view == 256 and base.vision.feature_dim == 2176
    assert (base.action_head.depth, base.action_head.hidden_size, base.action_head.num_heads) == (12, 768, 12)
    for cfg in (small, base, MoLeVLAConfig.preset("tiny")):
        ah = cfg.action_head
        assert (cfg.chunk_size, ah.diffusion_steps, ah.ddim_steps, ah.repeated_diffusion_steps) == (16, 100, 10, 4)
        assert (ah.cfg_scale, ah.cfg_dropout, cfg.loss.kd_weight, cfg.loss.mse_share) == (1.5, 0.1, 0.5, 0.5)
        assert (cfg.loss.balance_weight, cfg.loss.ema_decay) == (0.01, 0.999)


def test_overrides_reach_nested_fields_and_views():
    cfg = MoLeVLAConfig.preset("tiny", camera_names=("scene", "wrist"), active_layers=2, **{"llm.num_layers": 4})
    assert cfg.num_layers == 4 and cfg.active_layers == 2 and cfg.num_visual_tokens == 2 * cfg.tokens_per_view


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"active_layers": 9}, "active_layers (9) cannot exceed llm.num_layers (8)"),
        ({"active_layers": 0}, "config.active_layers must be a positive integer"),
        ({"camera_names": []}, "camera_names must hold at least one"),
        ({"camera_names": ["a", "a"]}, "camera_names must be unique"),
        ({"llm.hidden_size": 66}, "llm.hidden_size (66) must be divisible by llm.num_heads (4)"),
        ({"image_size": 70}, "image_size (70) must be a multiple of vision.patch_size (16)"),
        ({"skip_mode": "sometimes"}, "skip_mode must be one of"),
        ({"action_head.ddim_steps": 200}, "ddim_steps (200) cannot exceed"),
        ({"loss.ema_decay": 1.0}, "loss.ema_decay must be a number in [0, 1)"),
        ({"router.proj_dim": 33}, "router.proj_dim (33) must be divisible"),
        ({"control_dt": 0}, "control_dt must be > 0"),
    ],
)
def test_bad_values_are_rejected_with_a_sentence(overrides, fragment):
    with pytest.raises(ValueError) as err:
        MoLeVLAConfig.preset("tiny", **overrides)
    assert fragment in str(err.value)


def test_unknown_fields_and_presets_are_named():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        MoLeVLAConfig.preset("huge")
    with pytest.raises(ValueError, match="no field 'num_layerz'"):
        MoLeVLAConfig.preset("tiny", **{"llm.num_layerz": 3})
    d = MoLeVLAConfig.preset("tiny").to_dict()
    d["router"]["bogus"] = 1
    with pytest.raises(ValueError, match=r"router has unknown field\(s\) \['bogus'\]"):
        MoLeVLAConfig.from_dict(d)


def test_local_llama_needs_a_path():
    with pytest.raises(ValueError, match=r"llm\.path must name a local directory"):
        MoLeVLAConfig.preset("cogact-base", **{"llm.tokenizer": "llama"})
