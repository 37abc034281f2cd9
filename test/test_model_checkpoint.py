"""Checkpoints (safetensors + JSON), the normalizer, the image processor and the Policy wrapper on the tiny preset."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mole_vla_ros.interfaces import Policy, PolicyInput
from mole_vla_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mole_vla_ros.model.configuration import MoLeVLAConfig
from mole_vla_ros.model.modeling import build_model
from mole_vla_ros.model.normalization import ActionNormalizer
from mole_vla_ros.model.policy import MoLeVLAPolicy
from mole_vla_ros.model.processor import ImageProcessor

Q01 = [-0.2918, -0.4480, -0.6257, -3.1414, -1.4529, -3.0827, 0]
Q99 = [0.1530, 0.4487, 0.2474, 3.1415, 1.5703, 3.1176, 1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(MoLeVLAConfig.preset("tiny", camera_names=("scene", "wrist")))
    with torch.no_grad():  # a non-trivial action head so actions depend on the noise
        model.action_head.final_layer.linear.weight.normal_(0, 0.05)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny")
    save_checkpoint(path, model, ActionNormalizer(Q01, Q99, [True] * 6 + [False]), {"step": 12})
    return path, model


def observation(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "scene": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
    }


def test_save_then_load_is_bit_exact(ckpt):
    path, model = ckpt
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "normalization.json"]
    loaded, normalizer, extra = load_checkpoint(path)
    assert extra == {"step": 12} and loaded.config == model.config
    ref = model.state_dict()
    got = loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    np.testing.assert_array_equal(normalizer.q99, np.array(Q99))
    model.eval()
    imgs = torch.randint(0, 256, (1, 2, 64, 64, 3), dtype=torch.uint8)
    a1, c1 = model.predict(imgs, ["lift it"], generator=torch.Generator().manual_seed(1))
    a2, c2 = loaded.predict(imgs, ["lift it"], generator=torch.Generator().manual_seed(1))
    assert torch.equal(a1, a2) and c1.indices == c2.indices


def test_wrong_shape_names_the_tensor_and_both_shapes(ckpt, tmp_path):
    path, _ = ckpt
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "normalization.json"):
        (bad / name).write_bytes(open(os.path.join(path, name), "rb").read())
    state = load_file(os.path.join(path, "model.safetensors"))
    state["router.time_proj.weight"] = torch.zeros(5, 32)
    del state["action_head.positional_embedding"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(bad))
    msg = str(err.value)
    assert "tensor router.time_proj.weight: expected shape [8, 32], got [5, 32]" in msg
    assert "missing tensor action_head.positional_embedding (expected shape [17, 64])" in msg
    assert "unexpected tensor extra.weight" in msg


def test_missing_files_and_foreign_configs_are_explained(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"lacks \['model.safetensors', 'normalization.json'\]"):
        load_checkpoint(str(tmp_path))
    path, _ = ckpt
    for name in ("model.safetensors", "normalization.json"):
        (tmp_path / name).write_bytes(open(os.path.join(path, name), "rb").read())
    with pytest.raises(CheckpointError, match="not a MoLe-VLA checkpoint config"):
        load_checkpoint(str(tmp_path))


def test_checkpoint_holds_no_pickle(ckpt):
    path, _ = ckpt
    with open(os.path.join(path, "config.json")) as f:
        meta = json.load(f)
    assert meta["format"] == "mole_vla" and meta["config"]["preset_name"] == "tiny"
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        json.loads(f.read(header_len))  # safetensors: JSON header + raw tensor bytes


# ---------------------------------------------------------------- policy
def test_policy_satisfies_the_protocol_and_unnormalizes(ckpt):
    path, _ = ckpt
    policy = MoLeVLAPolicy.from_checkpoint(path, active_layers=3, seed=0)
    assert isinstance(policy, Policy)
    assert policy.camera_names == ("scene", "wrist") and policy.chunk_size == 16
    assert policy.action_space == "delta_xyz_abs_rpy" and policy.image_size == 64
    out = policy.infer(PolicyInput(images=observation(), instruction="Lift the cube"))
    assert out.actions.shape == (16, 7) and out.num_layers == 8 and len(out.layer_indices) == 3
    assert out.layer_probs.shape == (8,) and abs(out.layer_probs.sum() - 1) < 1e-5
    assert np.all(out.actions[:, :6] >= np.array(Q01[:6]) - 1e-9) and np.all(
        out.actions[:, :6] <= np.array(Q99[:6]) + 1e-9
    )
    assert set(np.unique(out.actions[:, 6])) <= {0.0, 1.0}
    for stage in ("preprocess", "vision", "router", "llm", "action_head", "total"):
        assert out.timings_ms[stage] >= 0
    # FLOPs follow the layers that ran: the LLM stage at k=3 costs 3/5 of k=5 on the same prompt
    five = policy.infer(PolicyInput(observation(), "Lift the cube", active_layers=5))
    assert out.flops["llm"] > 0 and abs(out.flops["llm"] / five.flops["llm"] - 3 / 5) < 1e-9
    # runtime k per call
    assert len(policy.infer(PolicyInput(observation(), "lift", active_layers=5)).layer_indices) == 5


def test_same_seed_same_actions(ckpt):
    path, _ = ckpt
    p1 = MoLeVLAPolicy.from_checkpoint(path, seed=3)
    p2 = MoLeVLAPolicy.from_checkpoint(path, seed=3)
    obs = observation()
    seq1 = [p1.infer(PolicyInput(obs, "lift the cube")).actions for _ in range(2)]
    seq2 = [p2.infer(PolicyInput(obs, "lift the cube")).actions for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(seq1, seq2))
    assert not np.array_equal(seq1[0], seq1[1])  # the policy's generator advances between calls
    one = p1.infer(PolicyInput(obs, "lift the cube", seed=11)).actions
    assert np.array_equal(one, p2.infer(PolicyInput(obs, "lift the cube", seed=11)).actions)
    assert not np.array_equal(one, p1.infer(PolicyInput(obs, "lift the cube", seed=12)).actions)


def test_policy_rejects_bad_inputs_with_clear_errors(ckpt):
    path, _ = ckpt
    policy = MoLeVLAPolicy.from_checkpoint(path)
    obs = observation()
    with pytest.raises(KeyError, match=r"missing image\(s\) for camera\(s\) \['wrist'\]"):
        policy.infer(PolicyInput({"scene": obs["scene"]}, "lift"))
    with pytest.raises(ValueError, match="expected dtype uint8"):
        policy.infer(PolicyInput({**obs, "wrist": obs["wrist"].astype(np.float32)}, "lift"))
    with pytest.raises(ValueError, match="expected an HxWx3 RGB image"):
        policy.infer(PolicyInput({**obs, "wrist": obs["wrist"][..., 0]}, "lift"))
    with pytest.raises(ValueError, match=r"active_layers must be an integer in 1\.\.8"):
        policy.infer(PolicyInput(obs, "lift", active_layers=0))
    with pytest.raises(ValueError, match="instruction must be a non-empty string"):
        policy.infer(PolicyInput(obs, "  "))


def test_processor_resizes_and_orders_views():
    proc = ImageProcessor(("wrist", "scene"), 32)
    batch = proc({"scene": np.zeros((48, 64, 3), np.uint8), "wrist": np.full((16, 16, 3), 7, np.uint8), "x": None})
    assert batch.shape == (1, 2, 32, 32, 3) and batch.dtype == np.uint8
    assert np.all(batch[0, 0] == 7) and np.all(batch[0, 1] == 0)


# ---------------------------------------------------------------- normalizer
def test_normalizer_round_trip_mask_and_clipping():
    norm = ActionNormalizer(Q01, Q99, [True] * 6 + [False])
    rng = np.random.default_rng(0)
    a = rng.uniform(np.array(Q01), np.array(Q99), size=(50, 7))
    a[:, 6] = rng.integers(0, 2, 50)
    n = norm.normalize(a)
    assert np.all(np.abs(n[:, :6]) <= 1) and np.array_equal(n[:, 6], a[:, 6])
    np.testing.assert_allclose(norm.unnormalize(n), a, atol=1e-7)
    np.testing.assert_allclose(norm.normalize(np.array(Q01))[:6], -1, atol=1e-7)
    assert np.all(norm.normalize(np.array(Q99) + 5)[:6] == 1.0)  # clipped
    again = ActionNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(again.q01, norm.q01)


def test_fraction_clipped_counts_values_outside_the_bounds_on_varying_normalized_dims():
    norm = ActionNormalizer([-1.0, 0.5, -1.0], [1.0, 0.5, 1.0], [True, True, False])  # dim 1 constant, dim 2 raw
    a = np.array([[0.0, 0.7, 9.0], [2.0, 0.5, 9.0], [-3.0, 0.4, 9.0], [1.0, 0.5, 9.0]])
    assert norm.fraction_clipped(a) == pytest.approx(0.5)  # dim 0 only: 2 of 4 outside
    assert norm.fraction_clipped(a[None]) == pytest.approx(0.5)  # any leading shape ([N, chunk, D])
    data = np.random.default_rng(0).normal(size=(5000, 7))
    assert 0.015 < ActionNormalizer.from_data(data).fraction_clipped(data) < 0.025  # q01/q99: ~2 % outside


def test_normalizer_from_data_uses_percentiles():
    data = np.stack([np.linspace(-1, 1, 1001)] * 6 + [np.r_[np.zeros(500), np.ones(501)]], axis=1)
    norm = ActionNormalizer.from_data(data)
    np.testing.assert_allclose(norm.q01[:6], -0.98, atol=1e-9)
    np.testing.assert_allclose(norm.q99[:6], 0.98, atol=1e-9)
    assert norm.mask.tolist() == [True] * 6 + [False]
    with pytest.raises(ValueError, match="NaN or inf"):
        ActionNormalizer.from_data(np.full((3, 7), np.nan))
    with pytest.raises(ValueError, match=r"q99 < q01 on dim\(s\) \[0\]"):
        ActionNormalizer([1, 0], [0, 1], [True, False])
