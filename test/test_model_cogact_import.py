"""A state dict spelled like a CogACT checkpoint loads through the key map, and the model then computes what those
weights define: checked against transformers' own LLaMA and an independent functional DiT / projector."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers.models.llama.modeling_llama import LlamaForCausalLM

from mole_vla_ros.model import cogact_import as ci
from mole_vla_ros.model.configuration import MoLeVLAConfig
from mole_vla_ros.model.llm import llama_config
from mole_vla_ros.model.modeling import build_model


def tiny_model():
    torch.manual_seed(0)
    return build_model(MoLeVLAConfig.preset("tiny"), pretrained=False).eval()


def timm_tower_keys(width: int, depth: int, mlp: int, prefix: str, reg_tokens: int, layer_scale: bool, map_head: bool):
    """Shapes of a timm VisionTransformer state dict as prismatic creates it (img_size=224, patch 14, num_classes=0),
    written out from timm's layout, independently of our vit.py."""
    keys = {
        "pos_embed": (1, 256, width),  # DINOv2 (no_embed_class) and SigLIP: patches only
        "patch_embed.proj.weight": (width, 3, 14, 14),
        "patch_embed.proj.bias": (width,),
        "norm.weight": (width,),
        "norm.bias": (width,),
    }
    if reg_tokens:
        keys |= {"cls_token": (1, 1, width), "reg_token": (1, reg_tokens, width)}
    for i in range(depth):
        b = f"blocks.{i}."
        keys |= {
            b + "norm1.weight": (width,),
            b + "norm1.bias": (width,),
            b + "attn.qkv.weight": (3 * width, width),
            b + "attn.qkv.bias": (3 * width,),
            b + "attn.proj.weight": (width, width),
            b + "attn.proj.bias": (width,),
            b + "norm2.weight": (width,),
            b + "norm2.bias": (width,),
            b + "mlp.fc1.weight": (mlp, width),
            b + "mlp.fc1.bias": (mlp,),
            b + "mlp.fc2.weight": (width, mlp),
            b + "mlp.fc2.bias": (width,),
        }
        if layer_scale:
            keys |= {b + "ls1.gamma": (width,), b + "ls2.gamma": (width,)}
    if map_head:  # SigLIP's attention-pool head: in the checkpoint, never run by the featurizer
        keys |= {
            "attn_pool.latent": (1, 1, width),
            "attn_pool.q.weight": (width, width),
            "attn_pool.kv.weight": (2 * width, width),
            "attn_pool.proj.weight": (width, width),
            "attn_pool.norm.weight": (width,),
            "attn_pool.mlp.fc1.weight": (mlp, width),
            "attn_pool.mlp.fc2.weight": (width, mlp),
        }
    return {f"{prefix}.{k}": v for k, v in keys.items()}


def cogact_state(config: MoLeVLAConfig, seed: int = 1, device: str = "cpu") -> dict:
    """CogACT's nested checkpoint layout ({"model": {sub-module: state dict}}) at the config's shapes, random values
    (device="meta": shapes only, for the full-size model)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=g) * scale

    f, d = config.vision.feature_dim, config.llm.hidden_size
    projector = {
        "projector.0.weight": rnd(4 * f, f),
        "projector.0.bias": rnd(4 * f),
        "projector.2.weight": rnd(d, 4 * f),
        "projector.2.bias": rnd(d),
        "projector.4.weight": rnd(d, d),
        "projector.4.bias": rnd(d),
    }
    # the LLM keys come from transformers' LlamaForCausalLM itself, so they are spelled exactly as CogACT saves them
    with torch.device(device):
        hf = LlamaForCausalLM(llama_config(config.llm))
    llm = {f"llm.{k}": rnd(*v.shape) + (1.0 if k.endswith("norm.weight") else 0.0) for k, v in hf.state_dict().items()}
    ah, h = config.action_head, config.action_head.hidden_size
    a, mlp = config.action_dim, int(h * ah.mlp_ratio)
    net = {
        "x_embedder.linear.weight": rnd(h, a),
        "x_embedder.linear.bias": rnd(h),
        "history_embedder.linear.weight": rnd(h, a),
        "history_embedder.linear.bias": rnd(h),
        "t_embedder.mlp.0.weight": rnd(h, 256),
        "t_embedder.mlp.0.bias": rnd(h),
        "t_embedder.mlp.2.weight": rnd(h, h),
        "t_embedder.mlp.2.bias": rnd(h),
        "z_embedder.linear.weight": rnd(h, d),
        "z_embedder.linear.bias": rnd(h),
        "z_embedder.uncondition": rnd(1, d, scale=1.0),  # CogACT: conditions_shape[1:] = (1, token_size)
        "positional_embedding": rnd(config.chunk_size + 1, h),
        "final_layer.linear.weight": rnd(a, h),
        "final_layer.linear.bias": rnd(a),
    }
    for i in range(ah.depth):
        net |= {
            f"blocks.{i}.attn.qkv.weight": rnd(3 * h, h),
            f"blocks.{i}.attn.qkv.bias": rnd(3 * h),
            f"blocks.{i}.attn.proj.weight": rnd(h, h),
            f"blocks.{i}.attn.proj.bias": rnd(h),
            f"blocks.{i}.mlp.fc1.weight": rnd(mlp, h),
            f"blocks.{i}.mlp.fc1.bias": rnd(mlp),
            f"blocks.{i}.mlp.fc2.weight": rnd(h, mlp),
            f"blocks.{i}.mlp.fc2.bias": rnd(h),
        }
    action_model = {f"net.{k}": v for k, v in net.items()}
    model = {"projector": projector, "llm_backbone": llm, "action_model": action_model}
    if config.vision.backbone == "dinosiglip":
        towers = timm_tower_keys(1024, 24, 4096, "dino_featurizer", 4, True, False)
        towers |= timm_tower_keys(1152, 27, 4304, "siglip_featurizer", 0, False, True)
        model["vision_backbone"] = {k: rnd(*shape) for k, shape in towers.items()}
    return {"model": model}


# ---------------------------------------------------------------- independent references (from the raw tensors)
def ref_projector(sd: dict, x: torch.Tensor) -> torch.Tensor:
    p = sd["projector"]
    x = F.gelu(F.linear(x, p["projector.0.weight"], p["projector.0.bias"]))
    x = F.gelu(F.linear(x, p["projector.2.weight"], p["projector.2.bias"]))
    return F.linear(x, p["projector.4.weight"], p["projector.4.bias"])


def ref_dit(sd: dict, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor, heads: int, depth: int) -> torch.Tensor:
    """CogACT DiT.forward written out: c = t_emb + z_emb prepended, pos emb, pre-LN blocks, final linear."""
    n = {k[len("net.") :]: v for k, v in sd["action_model"].items()}
    lin = lambda v, name: F.linear(v, n[f"{name}.weight"], n[f"{name}.bias"])  # noqa: E731
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    t_emb = lin(F.silu(lin(torch.cat([torch.cos(args), torch.sin(args)], -1), "t_embedder.mlp.0")), "t_embedder.mlp.2")
    c = t_emb + lin(z, "z_embedder.linear")
    seq = torch.cat([c[:, None], lin(x, "x_embedder.linear")], 1) + n["positional_embedding"]
    b, L, h = seq.shape
    for i in range(depth):
        y = F.layer_norm(seq, (h,), eps=1e-6)
        q, k, v = lin(y, f"blocks.{i}.attn.qkv").reshape(b, L, 3, heads, h // heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h // heads), -1) @ v
        seq = seq + lin(att.transpose(1, 2).reshape(b, L, h), f"blocks.{i}.attn.proj")
        y = F.layer_norm(seq, (h,), eps=1e-6)
        seq = seq + lin(F.gelu(lin(y, f"blocks.{i}.mlp.fc1"), approximate="tanh"), f"blocks.{i}.mlp.fc2")
    return lin(F.layer_norm(seq, (h,), eps=1e-6), "final_layer.linear")[:, 1:]


# ---------------------------------------------------------------- tests
def test_cogact_state_dict_loads_and_reproduces_projector_llm_and_dit():
    model = tiny_model()
    cfg = model.config
    sd = cogact_state(cfg)
    report = ci.import_cogact(model, sd, strict=False)

    # the router is not in CogACT: it keeps its fresh init and is reported apart from real gaps
    assert report.expected_missing and all(k.startswith("router.") for k in report.expected_missing)
    assert sorted(report.missing) == ["vision.encoder.proj.bias", "vision.encoder.proj.weight"]  # tiny: patch conv
    assert report.unexpected == []
    ignored = {k for k, _ in report.ignored}
    assert ignored == {
        "llm_backbone.llm.lm_head.weight",
        "action_model.net.history_embedder.linear.weight",
        "action_model.net.history_embedder.linear.bias",
    }

    with torch.no_grad():
        x = torch.randn(2, 5, cfg.vision.feature_dim)
        torch.testing.assert_close(model.projector(x), ref_projector(sd["model"], x), rtol=0, atol=1e-6)

        # LLM: transformers' LlamaModel loaded with the same tensors is the reference
        hf = LlamaForCausalLM(llama_config(cfg.llm)).eval()
        hf.load_state_dict({k[len("llm.") :]: v for k, v in sd["model"]["llm_backbone"].items()})
        embeds = torch.randn(2, 11, cfg.llm.hidden_size)
        ours = model.llm.forward_full(embeds)
        theirs = hf.model(inputs_embeds=embeds).last_hidden_state
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

        ah = cfg.action_head
        xa = torch.randn(3, cfg.chunk_size, cfg.action_dim)
        t = torch.tensor([0, 37, 99])
        z = torch.randn(3, cfg.llm.hidden_size)
        expected = ref_dit(sd["model"], xa, t, z, ah.num_heads, ah.depth)
        torch.testing.assert_close(model.action_head.denoise(xa, t, z), expected, rtol=1e-5, atol=1e-5)
        # CFG null condition: CogACT's [1, D] parameter lands in our [D] vector
        unc = sd["model"]["action_model"]["net.z_embedder.uncondition"]
        assert torch.equal(model.action_head.z_embedder.uncondition, unc.reshape(-1))


def test_router_keeps_its_initialization():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.router.state_dict().items()}
    ci.import_cogact(model, cogact_state(model.config), strict=False)
    for k, v in model.router.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_strict_import_names_what_is_missing():
    model = tiny_model()
    with pytest.raises(
        ci.CogACTImportError, match=r"MISSING 2: vision\.encoder\.proj\.weight, vision\.encoder\.proj\.bias"
    ):
        ci.import_cogact(model, cogact_state(model.config), strict=True)


def test_unknown_keys_are_reported_as_unexpected():
    model = tiny_model()
    sd = cogact_state(model.config)
    sd["model"]["action_model"]["net.some_new_head.weight"] = torch.zeros(3)
    report = ci.import_cogact(model, sd, strict=False)
    assert report.unexpected == [
        "action_model.net.some_new_head.weight (-> action_head.some_new_head.weight, not in this model)"
    ]


def test_wrong_shape_names_the_tensor_and_copies_nothing():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = cogact_state(model.config)
    sd["model"]["llm_backbone"]["llm.model.layers.3.self_attn.q_proj.weight"] = torch.zeros(4096, 4096)
    with pytest.raises(ci.CogACTImportError) as err:
        ci.import_cogact(model, sd, strict=False)
    msg = str(err.value)
    assert "llm.layers.3.self_attn.q_proj.weight <- llm_backbone.llm.model.layers.3.self_attn.q_proj.weight" in msg
    assert "checkpoint [4096, 4096], model [64, 64]" in msg
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed although the import failed"


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_files_load_like_the_in_memory_dict(tmp_path, suffix):
    sd = cogact_state(MoLeVLAConfig.preset("tiny"))
    path = str(tmp_path / f"cogact{suffix}")
    if suffix == ".pt":
        torch.save(sd, path)
    else:
        save_file({k: v.contiguous() for k, v in ci.flatten_state_dict(sd["model"]).items()}, path)
    a, b = tiny_model(), tiny_model()
    ci.import_cogact(a, path, strict=False)
    ci.import_cogact(b, sd, strict=False)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = str(tmp_path / "evil.pt")
    torch.save({"model": {"projector": {"projector.0.weight": torch.zeros(1)}}, "payload": NotATensor()}, path)
    with pytest.raises(ci.CogACTImportError, match="weights_only=True"):
        ci.read_checkpoint(path)


def test_missing_file():
    with pytest.raises(ci.CogACTImportError, match="does not exist"):
        ci.read_checkpoint("/nonexistent/cogact.pt")


def test_ema_weights_replace_the_action_head():
    model = tiny_model()
    sd = cogact_state(model.config)
    ema = {k: v + 1.0 for k, v in sd["model"]["action_model"].items()}
    sd["model"]["ema_diffusion"] = ema
    ci.import_cogact(model, sd, strict=False, use_ema=True)
    assert torch.equal(model.action_head.final_layer.linear.bias, ema["net.final_layer.linear.bias"])
    with pytest.raises(ci.CogACTImportError, match="no ema_diffusion"):
        ci.import_cogact(tiny_model(), cogact_state(model.config), strict=False, use_ema=True)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("vision_backbone.dino_featurizer.blocks.22.ls1.gamma", "vision.encoder.dino.blocks.22.ls1.gamma"),
        ("vision_backbone.dino_featurizer.reg_token", "vision.encoder.dino.reg_token"),
        ("vision_backbone.siglip_featurizer.patch_embed.proj.weight", "vision.encoder.siglip.patch_embed.proj.weight"),
        ("vision_backbone.featurizer.pos_embed", "vision.encoder.dino.pos_embed"),
        ("vision_backbone.fused_featurizer.blocks.0.norm1.bias", "vision.encoder.siglip.blocks.0.norm1.bias"),
        ("projector.fc2.weight", "projector.fc2.weight"),
        ("language_model.model.layers.7.mlp.down_proj.weight", "llm.layers.7.mlp.down_proj.weight"),
        (
            "llm_backbone.llm.model.route.temporal_router.layers.0.linear1.weight",
            "router.temporal_router.layers.0.linear1.weight",
        ),
        ("llm_backbone.llm.model.route.temp_bias", "router.temp_bias"),
        ("action_model.net.blocks.11.attn.qkv.bias", "action_head.blocks.11.attn.qkv.bias"),
        ("llm_backbone.llm.lm_head.weight", None),
        ("something.else", None),
    ],
)
def test_key_map(source, target):
    assert ci.map_key(source) == target


def test_mole_release_router_keys_load_into_the_router():
    # MoLe-VLA's `route` module has the same parameter names as our STARRouter
    model = tiny_model()
    sd = cogact_state(model.config)
    route = {f"llm.model.route.{k}": torch.randn_like(v) for k, v in model.router.state_dict().items()}
    sd["model"]["llm_backbone"].update(route)
    report = ci.import_cogact(model, sd, strict=False)
    assert report.expected_missing == []
    assert torch.equal(model.router.time_proj.weight, route["llm.model.route.time_proj.weight"])


def test_full_size_cogact_base_checkpoint_plan_on_meta_device():
    # every tensor of a CogACT-Base checkpoint (DINOv2-L reg4 + SigLIP SO400M, LLaMA-2-7B with 32064 tokens, DiT-B)
    # finds its place with the right shape; only the router is left to its initialization
    config = MoLeVLAConfig.preset("cogact-base")
    model = build_model(config, "meta", pretrained=False)
    state = ci.unwrap_state_dict(cogact_state(config, device="meta"))
    plan, report = ci.plan_import(model, state)
    assert report.missing == [] and report.unexpected == []
    assert {k.split(".")[0] for k in report.expected_missing} == {"router"}
    assert len(plan) == len(model.state_dict()) - len(report.expected_missing)
    ignored = {k for k, _ in report.ignored}
    assert "llm_backbone.llm.lm_head.weight" in ignored
    assert "vision_backbone.siglip_featurizer.attn_pool.latent" in ignored
    assert plan["llm.embed_tokens.weight"][1].shape == (32064, 4096)
    assert plan["action_head.z_embedder.uncondition"][1].shape == (4096,)


def write_cogact_run(tmp_path, config) -> str:
    """A CogACT run directory: checkpoints/step.pt plus dataset_statistics.json one level up (CogACT's layout)."""
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / "step-000800.pt"
    torch.save(cogact_state(config), path)
    stats = {
        "rlbench": {
            "action": {
                "q01": [-0.2918, -0.4480, -0.6257, -3.1414, -1.4529, -3.0827, 0.0],
                "q99": [0.1530, 0.4487, 0.2474, 3.1415, 1.5703, 3.1176, 1.0],
                "mask": [True] * 6 + [False],
            },
            "num_transitions": 3891,
        }
    }
    (tmp_path / "dataset_statistics.json").write_text(json.dumps(stats))
    return str(path)


def test_convert_writes_a_checkpoint_that_loads(tmp_path):
    from mole_vla_ros.model.checkpoint import load_checkpoint

    config = MoLeVLAConfig.preset("tiny")
    src = write_cogact_run(tmp_path, config)
    out, report = ci.convert_cogact(src, str(tmp_path / "mole"), config=config, dtype="float32", allow_missing=True)
    assert report.expected_missing and report.unexpected == []
    model, normalizer, extra = load_checkpoint(out)
    sd = cogact_state(config)["model"]
    assert torch.equal(model.projector.fc3.weight, sd["projector"]["projector.4.weight"])
    assert torch.equal(
        model.llm.layers[5].mlp.up_proj.weight, sd["llm_backbone"]["llm.model.layers.5.mlp.up_proj.weight"]
    )
    assert normalizer.q01[0] == pytest.approx(-0.2918) and not normalizer.mask[6]
    assert extra["unnorm_key"] == "rlbench" and extra["router"].startswith("fresh init")
    # the converted model predicts (router at its fresh init picks some k layers)
    actions, choice = model.predict(torch.rand(1, 1, 3, 64, 64), ["close the drawer"], active_layers=2)
    assert actions.shape == (1, 16, 7) and len(choice.indices[0]) == 2


def test_convert_refuses_gaps_unless_allowed(tmp_path):
    config = MoLeVLAConfig.preset("tiny")
    src = write_cogact_run(tmp_path, config)
    with pytest.raises(ci.CogACTImportError, match=r"MISSING 2: vision\.encoder\.proj"):
        ci.convert_cogact(src, str(tmp_path / "mole"), config=config, dtype="float32")


def test_statistics_need_a_key_when_ambiguous(tmp_path):
    path = tmp_path / "stats.json"
    entry = {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7}}
    path.write_text(json.dumps({"a": entry, "b": entry}))
    with pytest.raises(ci.CogACTImportError, match=r"statistics for \['a', 'b'\]; choose one"):
        ci.read_cogact_stats(str(path))
    normalizer, key = ci.read_cogact_stats(str(path), "b")
    assert key == "b" and normalizer.mask.tolist() == [True] * 6 + [False]
    with pytest.raises(ci.CogACTImportError, match="unnorm_key 'c' is not in"):
        ci.read_cogact_stats(str(path), "c")


def test_cli_import_cogact(tmp_path, capsys):
    from mole_vla_ros.cli import main

    src = write_cogact_run(tmp_path, MoLeVLAConfig.preset("tiny"))
    out = str(tmp_path / "mole")
    argv = ["import-cogact", src, "--out", out, "--preset", "tiny", "--dtype", "float32"]
    assert main(argv) == 1  # tiny's patch encoder is not in a CogACT checkpoint
    assert "MISSING 2" in capsys.readouterr().out
    assert main([*argv, "--allow-missing"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "mole" / "model.safetensors").is_file()


def test_unknown_suffix_and_non_dict_files(tmp_path):
    with pytest.raises(ci.CogACTImportError, match="unknown checkpoint suffix"):
        (tmp_path / "weights.npz").write_bytes(b"x")
        ci.read_checkpoint(str(tmp_path / "weights.npz"))
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ci.CogACTImportError, match="holds a list, expected a dict of tensors"):
        ci.read_checkpoint(str(path))
