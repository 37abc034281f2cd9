"""Finding and loading the node's policy: checkpoint resolution, device choice, and a real tiny MoLe-VLA checkpoint
loaded the way the node loads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mole_vla_ros.interfaces import PolicyInput
from mole_vla_ros.ros.params import PolicySourceConfig
from mole_vla_ros.ros.policy_source import load_policy, resolve_checkpoint, resolve_device


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from mole_vla_ros.model.checkpoint import save_checkpoint
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import build_model
    from mole_vla_ros.model.normalization import ActionNormalizer

    torch.manual_seed(0)
    model = build_model(MoLeVLAConfig.preset("tiny", camera_names=("front",)))
    root = tmp_path_factory.mktemp("models")
    save_checkpoint(str(root / "default"), model, ActionNormalizer.identity(7))
    return root


def test_explicit_checkpoint_must_be_a_checkpoint_dir(tmp_path, tiny_checkpoint):
    assert resolve_checkpoint(str(tiny_checkpoint / "default")) == tiny_checkpoint / "default"
    with pytest.raises(ValueError, match="is not a directory"):
        resolve_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"has no config\.json"):
        resolve_checkpoint(str(tmp_path))


def test_empty_checkpoint_uses_the_bundled_model(tmp_path, tiny_checkpoint):
    assert resolve_checkpoint("", [tmp_path, tiny_checkpoint]) == tiny_checkpoint / "default"
    with pytest.raises(ValueError, match="no bundled model was found"):
        resolve_checkpoint("", [tmp_path])
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"several checkpoints \['a', 'b'\]"):
        resolve_checkpoint("", [tmp_path])


def test_device_resolution():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            resolve_device("cuda:0")


def test_load_policy_gives_a_working_policy(tiny_checkpoint):
    cfg = PolicySourceConfig(checkpoint=str(tiny_checkpoint / "default"), device="cpu", active_layers=2, seed=3)
    policy = load_policy(cfg)
    assert policy.camera_names == ("front",) and policy.active_layers == 2
    out = policy.infer(PolicyInput(images={"front": np.zeros((48, 48, 3), np.uint8)}, instruction="lift the cube"))
    assert out.actions.shape == (policy.chunk_size, 7) and np.all(np.isfinite(out.actions))
    assert len(out.layer_indices) == 2


def test_load_policy_applies_dtype_and_cuda_graphs(tiny_checkpoint):
    import torch

    cfg = PolicySourceConfig(checkpoint=str(tiny_checkpoint / "default"), device="cpu", dtype="bf16", cuda_graphs=False)
    policy = load_policy(cfg)
    assert policy.model.dtype == torch.bfloat16
    assert policy.model.config.cuda_graphs is False and not policy.model.action_head.graphs.enabled
    out = policy.infer(PolicyInput(images={"front": np.zeros((48, 48, 3), np.uint8)}, instruction="lift the cube"))
    assert np.all(np.isfinite(out.actions))
    default = load_policy(PolicySourceConfig(checkpoint=str(tiny_checkpoint / "default"), device="cpu"))
    assert default.model.dtype == torch.float32 and default.model.vision.graphs.enabled
