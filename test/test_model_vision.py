"""Vision towers and the cogact-base shapes (built on the meta device: no memory, no weights)."""

import pytest
import torch
from safetensors.torch import save_file

from mole_vla_ros.model.configuration import MoLeVLAConfig
from mole_vla_ros.model.modeling import build_model
from mole_vla_ros.model.vision import FusedMLPProjector, VisionTower, _load_local_weights
from mole_vla_ros.model.vit import VisionTransformer, ViTSpec

SMALL_REG = ViTSpec(32, 4, 4, 64, patch_size=8, img_size=32, class_token=True, reg_tokens=4, layer_scale=1e-5)


@torch.no_grad()
def test_penultimate_patches_is_block_depth_minus_two_without_prefix_tokens():
    torch.manual_seed(0)
    vit = VisionTransformer(SMALL_REG).eval()
    x = torch.rand(2, 3, 32, 32)
    tokens = vit.penultimate_patches(x)
    assert tokens.shape == (2, 16, 32)
    # reference: prefix [cls, 4 registers] + pos-embedded patches, blocks 0..depth-2, drop the 5 prefix tokens
    h = vit.patch_embed(x) + vit.pos_embed
    h = torch.cat([vit.cls_token.expand(2, -1, -1), vit.reg_token.expand(2, -1, -1), h], dim=1)
    for blk in vit.blocks[:3]:
        h = blk(h)
    torch.testing.assert_close(tokens, h[:, 5:])


def test_tower_loads_a_timm_layout_file_and_ignores_the_pooling_head(tmp_path):
    torch.manual_seed(0)
    src = VisionTransformer(SMALL_REG)
    state = {k: v.clone() for k, v in src.state_dict().items()}
    state["attn_pool.latent"] = torch.zeros(1, 1, 32)  # SigLIP MAP head: present in timm files, unused
    save_file(state, str(tmp_path / "tower.safetensors"))
    dst = VisionTransformer(SMALL_REG)
    _load_local_weights(dst, str(tmp_path / "tower.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    del state["blocks.0.attn.qkv.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['blocks\.0\.attn\.qkv\.weight'\]"):
        _load_local_weights(dst, str(tmp_path / "broken.safetensors"))


def test_patch_tower_shares_one_encoder_across_views():
    cfg = MoLeVLAConfig.preset("tiny", camera_names=("scene", "wrist"))
    tower = VisionTower(cfg)
    x = torch.rand(1, 2, 3, 64, 64)
    both = tower(x)
    assert both.shape == (1, 32, cfg.vision.feature_dim)
    torch.testing.assert_close(both[:, 16:], tower(torch.cat([x[:, 1:], x[:, :1]], dim=1))[:, :16])


def test_cogact_base_shapes_match_the_paper_on_the_meta_device():
    model = build_model(MoLeVLAConfig.preset("cogact-base"), device="meta")
    n = model.num_parameters()
    assert abs(n["router"] / 1e6 - 13.17) < 0.01  # spec 2.2: ~13.17 M
    assert abs(n["action_head"] / 1e6 - 89.0) < 0.1  # spec 1.4: DiT-B ~89.0 M
    assert abs(n["llm"] / 1e9 - 6.61) < 0.01  # LLaMA-2-7B without the LM head, vocab 32064
    assert abs(sum(p.numel() for p in model.vision.encoder.dino.parameters()) / 1e6 - 303.2) < 0.5
    assert abs(sum(p.numel() for p in model.vision.encoder.siglip.parameters()) / 1e6 - 412.4) < 0.5
    proj = model.projector
    assert isinstance(proj, FusedMLPProjector)
    assert [tuple(layer.weight.shape) for layer in (proj.fc1, proj.fc2, proj.fc3)] == [
        (8704, 2176),
        (4096, 8704),
        (4096, 4096),
    ]
    assert model.llm.config.num_hidden_layers == 32 and model.llm.layers[0].mlp.up_proj.weight.shape == (11008, 4096)


def test_position_embedding_tells_identical_features_apart_by_view_and_cell(tmp_path):
    """A conv tower gives the same feature for the same content anywhere: with vision.position_embedding the projected
    tokens differ by grid cell and view; the embedding trains, is saved and loaded, and a token-count mismatch is
    refused rather than broadcast."""
    from mole_vla_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from mole_vla_ros.model.normalization import ActionNormalizer

    cfg = MoLeVLAConfig.preset("tiny", camera_names=("scene", "wrist"), **{"vision.position_embedding": True})
    model = build_model(cfg)
    p = cfg.num_visual_tokens
    same = torch.ones(1, p, cfg.vision.feature_dim)
    out = model.projector(same)
    assert out.shape == (1, p, cfg.llm.hidden_size)
    assert torch.cdist(out[0], out[0]).fill_diagonal_(1.0).min() > 0  # every token distinct
    assert model.projector.position.requires_grad
    with pytest.raises(ValueError, match="position embedding has"):
        model.projector(same[:, : p // 2])
    save_checkpoint(str(tmp_path / "ck"), model, ActionNormalizer.identity(cfg.action_dim))
    loaded, _norm, _extra = load_checkpoint(str(tmp_path / "ck"))
    assert loaded.config.vision.position_embedding
    torch.testing.assert_close(loaded.projector.position, model.projector.position)
    plain = build_model(MoLeVLAConfig.preset("tiny", camera_names=("scene", "wrist")))
    assert plain.projector.position is None
    with pytest.raises(ValueError, match="position_embedding must be true or false"):
        MoLeVLAConfig.preset("tiny", **{"vision.position_embedding": "yes"})
