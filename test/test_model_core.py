"""The MoLe-VLA forward on the tiny preset: real layer skipping, STAR routing, cognition gather, skip modes."""

import pytest
import torch

from mole_vla_ros.model.configuration import MoLeVLAConfig
from mole_vla_ros.model.modeling import build_model

INSTRUCTIONS = ["pick up the red cube", "open the top drawer of the cabinet slowly", "push the button"]


def make_model(seed=0, sharpen=True, **overrides):
    """A tiny model; `sharpen` scales the router's output layers so different inputs choose different layers."""
    torch.manual_seed(seed)
    model = build_model(MoLeVLAConfig.preset("tiny", **overrides)).eval()
    if sharpen:
        with torch.no_grad():
            model.router.spatial_router[2].weight.mul_(200)
            model.router.time_proj.weight.mul_(200)
    return model


def images(b, v=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, v, 64, 64, 3), dtype=torch.uint8, generator=g)


def count_layer_calls(model):
    """Attach forward hooks; returns (list of (layer index, batch size) per call, remove handle)."""
    calls = []
    handles = [
        layer.register_forward_hook(lambda _m, args, _out, i=i: calls.append((i, args[0].shape[0])))
        for i, layer in enumerate(model.llm.layers)
    ]
    return calls, lambda: [h.remove() for h in handles]


@torch.no_grad()
def test_k_equal_n_reproduces_full_depth_exactly():
    model = make_model()
    text = model.text_batch(INSTRUCTIONS)
    n = model.config.num_layers
    for mode in ("star", "full"):
        out = model(images(3), text, active_layers=n, skip_mode=mode)
        reference = model.llm.forward_full(out.inputs.embeds, out.inputs.mask)
        assert torch.equal(out.hidden, reference)
        assert out.layer_calls == n
        assert all(ix == tuple(range(n)) for ix in out.choice.indices)


def test_k_equal_n_in_training_mode_is_exact_and_still_routes_gradient():
    model = make_model().train()
    text = model.text_batch(INSTRUCTIONS[:2])
    n = model.config.num_layers
    out = model(images(2), text, active_layers=n)
    assert out.choice.gate is not None
    with torch.no_grad():
        reference = model.llm.forward_full(out.inputs.embeds, out.inputs.mask)
    assert torch.equal(out.hidden.detach(), reference)


@torch.no_grad()
def test_batch_one_runs_exactly_the_k_chosen_layers():
    model = make_model()
    calls, remove = count_layer_calls(model)
    for k in (1, 3, 4, 8):
        calls.clear()
        _, choice = model.predict(images(1), INSTRUCTIONS[:1], active_layers=k)
        assert len(choice.indices[0]) == k
        assert [i for i, _ in calls] == list(choice.indices[0])  # only those, in ascending order, once each
        assert list(choice.indices[0]) == sorted(choice.indices[0])
    remove()


@torch.no_grad()
def test_a_skipped_layer_is_identity_and_never_called():
    model = make_model()
    out = model(images(1), model.text_batch(INSTRUCTIONS[:1]), active_layers=8, skip_mode="full")
    embeds = out.inputs.embeds
    n = model.config.num_layers
    for skipped in (0, 3, n - 1):
        selected = torch.ones(1, n, dtype=torch.bool)
        selected[0, skipped] = False

        def boom(*_args, _skipped=skipped, **_kw):
            raise AssertionError(f"layer {_skipped} ran although it was skipped")

        handle = model.llm.layers[skipped].register_forward_pre_hook(boom)
        hidden, calls = model.llm.forward_routed(embeds, None, selected)
        handle.remove()
        # manual reference: the same stack with the skipped layer removed (identity in its place)
        h = embeds
        pos = model.llm.position_embeddings(embeds)
        for i in range(n):
            if i != skipped:
                h = model.llm.layers[i](h, attention_mask=None, position_embeddings=pos)
        assert calls == n - 1
        assert torch.equal(hidden, model.llm.norm(h))


@torch.no_grad()
def test_sub_batches_match_per_sample_batch_one_results():
    model = make_model()
    text = model.text_batch(INSTRUCTIONS)  # different lengths: rows 0 and 2 are right-padded
    imgs = images(3)
    inputs = model(imgs, text, active_layers=4).inputs
    selected = torch.tensor(
        [[1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 1, 1, 0], [1, 1, 0, 0, 0, 0, 1, 1]], dtype=torch.bool
    )
    calls, remove = count_layer_calls(model)
    hidden, n_calls = model.llm.forward_routed(inputs.embeds, inputs.mask, selected)
    remove()
    # each layer ran once at most, on exactly the samples that chose it; layer 3 (nobody chose it) never ran
    assert sorted(i for i, _ in calls) == [0, 1, 2, 4, 5, 6, 7] == [i for i, _ in calls]
    assert n_calls == 7
    for i, size in calls:
        assert size == int(selected[:, i].sum())
    for b, instruction in enumerate(INSTRUCTIONS):
        single = model(imgs[b : b + 1], model.text_batch([instruction]), active_layers=8).inputs
        ref, _ = model.llm.forward_routed(single.embeds, single.mask, selected[b : b + 1])
        length = single.embeds.shape[1]
        torch.testing.assert_close(hidden[b, :length], ref[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_batched_predict_matches_single_predictions():
    model = make_model()
    imgs = images(3)
    out = model(imgs, model.text_batch(INSTRUCTIONS), active_layers=4)
    for b, instruction in enumerate(INSTRUCTIONS):
        single = model(imgs[b : b + 1], model.text_batch([instruction]), active_layers=4)
        assert single.choice.indices[0] == out.choice.indices[b]
        torch.testing.assert_close(out.cognition[b], single.cognition[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_cognition_feature_is_the_eos_position_of_each_row():
    model = make_model()
    text = model.text_batch(INSTRUCTIONS)
    out = model(images(3), text, active_layers=8)
    p = model.config.num_visual_tokens
    for b in range(3):
        eos_col = int(text.mask[b].sum()) - 1
        assert int(text.ids[b, eos_col]) == model.tokenizer.eos_id
        assert int(out.inputs.eos_index[b]) == 1 + p + eos_col
        assert torch.equal(out.cognition[b], out.hidden[b, 1 + p + eos_col])


@torch.no_grad()
def test_router_output_does_not_change_with_right_padding():
    model = make_model()
    short = INSTRUCTIONS[2]
    alone = model(images(1), model.text_batch([short]), active_layers=3)
    padded_text = model.text_batch([short, "x" * 80])  # the second row forces 70+ padding tokens onto the first
    assert int((padded_text.mask[0] == 0).sum()) > 50
    padded = model(torch.cat([images(1), images(1, seed=5)]), padded_text, active_layers=3)
    torch.testing.assert_close(padded.choice.probs[0], alone.choice.probs[0], rtol=1e-5, atol=1e-6)
    assert padded.choice.indices[0] == alone.choice.indices[0]


def test_router_gets_gradient_through_the_straight_through_gate():
    for form in ("paper", "code"):
        model = make_model(sharpen=False, **{"router.ste_form": form}).train()
        out = model(images(2), model.text_batch(INSTRUCTIONS[:2]), active_layers=3)
        assert torch.equal(out.choice.gate.detach(), out.choice.selected.float())  # forward value is the hard mask
        out.cognition.square().sum().backward()
        for name in ("spatial_router.2.weight", "time_proj.weight", "temp_controller.weight", "base_proj.weight"):
            grad = dict(model.router.named_parameters())[name].grad
            assert grad is not None and grad.abs().sum() > 0, f"{form}: no gradient reached router.{name}"


@torch.no_grad()
def test_depth_prior_starts_the_router_at_the_first_layers_and_learned_scores_can_move_it():
    plain = make_model(sharpen=False)
    prior = make_model(sharpen=False, **{"router.depth_prior": 4.0})
    imgs, text = images(3), plain.text_batch(INSTRUCTIONS)
    a, b = plain(imgs, text, active_layers=2), prior(imgs, text, active_layers=2)
    ramp = torch.linspace(0.0, -4.0, plain.config.llm.num_layers)
    torch.testing.assert_close(torch.log(b.choice.probs), torch.log_softmax(torch.log(a.choice.probs) + ramp, -1))
    assert len(set(a.choice.indices)) > 1 or a.choice.indices[0] != (0, 1)  # the untrained router picks anywhere
    assert b.choice.indices == [(0, 1)] * 3  # with the prior it starts at early exit's set
    # learned scores larger than the ramp's steps still move the choice (the prior does not pin it)
    sharp = make_model(**{"router.depth_prior": 4.0})
    assert any(c != (0, 1) for c in sharp(imgs, text, active_layers=2).choice.indices)


def test_router_margin_is_the_gap_between_the_last_chosen_and_the_first_skipped_layer():
    router = make_model(sharpen=False).router.eval()
    choice = router.choose(torch.tensor([[3.0, 0.5, 2.0, 0.0], [0.0, 0.0, 0.1, 1.0]]), 2)
    assert choice.indices == [(0, 2), (2, 3)]
    torch.testing.assert_close(choice.margins(), torch.tensor([1.5, 0.1]))
    assert router.choose(torch.zeros(1, 4), 4).margins() is None  # every layer runs: nothing was decided
    # a decided router's gaps stay finite where its probabilities underflow to 0 (they read inf and nan)
    wide = router.choose(torch.tensor([[300.0, 0.0, 200.0, -100.0]]), 2)
    assert wide.probs[0, 3] == 0 and wide.margins().tolist() == [200.0]
    # and the choice follows the logits where every probability but the top one underflows to 0 (ties by index)
    assert router.choose(torch.tensor([[0.0, -300.0, -400.0, 200.0]]), 2).indices == [(0, 3)]


def test_evaluate_router_stats_count_sets_over_samples_most_used_first():
    from mole_vla_ros.training.evaluate import _router_stats

    router = make_model(sharpen=False).router.eval()
    batches = [
        router.choose(torch.tensor([[3.0, 0.5, 2.0, 0.0], [3.0, 0.0, 2.5, 0.0], [0.0, 0.0, 0.1, 1.0]]), 2),
        router.choose(torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 2.0, 0.0, 1.0]]), 2),
    ]
    stats = _router_stats(batches, top=2)
    assert stats["layer_sets"] == 3  # (0, 2) x3, (2, 3) x1, (1, 3) x1
    assert stats["top_layer_sets"][0] == [[0, 2], 0.6] and stats["top_layer_sets"][1][1] == 0.2
    assert stats["router_margin"] == pytest.approx(1.0)  # median of 1.5, 0.5, 0.1, 1.0, 1.0


def test_depth_prior_must_be_finite_and_not_negative():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"router\.depth_prior must be a finite number >= 0"):
            MoLeVLAConfig.preset("tiny", **{"router.depth_prior": bad})


def test_router_gets_no_gradient_when_it_does_not_choose():
    model = make_model(sharpen=False).train()
    out = model(images(1), model.text_batch(INSTRUCTIONS[:1]), active_layers=3, skip_mode="early")
    out.cognition.sum().backward()
    assert model.router.time_proj.weight.grad is None


@torch.no_grad()
def test_skip_modes_choose_as_documented():
    model = make_model()
    imgs, text = images(2), model.text_batch(INSTRUCTIONS[:2])
    early = model(imgs, text, active_layers=3, skip_mode="early")
    assert early.choice.indices == [(0, 1, 2), (0, 1, 2)] and early.layer_calls == 3
    full = model(imgs, text, active_layers=3, skip_mode="full")
    assert full.choice.indices == [tuple(range(8))] * 2 and full.choice.k == 8
    r1 = model(imgs, text, active_layers=3, skip_mode="random", generator=torch.Generator().manual_seed(7))
    r2 = model(imgs, text, active_layers=3, skip_mode="random", generator=torch.Generator().manual_seed(7))
    draws = {
        model(
            imgs, text, active_layers=3, skip_mode="random", generator=torch.Generator().manual_seed(s)
        ).choice.indices[0]
        for s in range(8)
    }
    assert r1.choice.indices == r2.choice.indices and all(len(ix) == 3 for ix in r1.choice.indices)
    assert len(draws) > 1
    star = model(imgs, text, active_layers=3, skip_mode="star")
    top = star.choice.probs.topk(3, dim=-1).indices.sort(dim=-1).values
    assert [tuple(t.tolist()) for t in top] == star.choice.indices


@torch.no_grad()
def test_bad_runtime_k_and_mode_are_rejected():
    model = make_model()
    text = model.text_batch(INSTRUCTIONS[:1])
    with pytest.raises(ValueError, match=r"active_layers must be an integer in 1\.\.8"):
        model(images(1), text, active_layers=9)
    with pytest.raises(ValueError, match="skip_mode must be one of"):
        model(images(1), text, skip_mode="lazy")
    with pytest.raises(ValueError, match=r"1 view\(s\) of 64x64 pixels"):
        model(images(1, v=2), text)


@torch.no_grad()
def test_multiple_views_add_tokens_per_view():
    model = make_model(camera_names=("scene", "wrist"))
    out = model(images(2, v=2), model.text_batch(INSTRUCTIONS[:2]), active_layers=2)
    assert out.inputs.num_visual == 2 * model.config.tokens_per_view
    actions, choice = model.predict(images(1, v=2), ["stack the blocks"], active_layers=2)
    assert actions.shape == (1, 16, 7) and len(choice.indices[0]) == 2


@torch.no_grad()
def test_local_llama_weights_load_by_name_and_match_transformers(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(
        vocab_size=256,  # smaller than ours (260): rows that exist are copied, like CogACT's padded vocabulary
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=4,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    hf = LlamaForCausalLM(hf_cfg).eval()
    hf.save_pretrained(str(tmp_path))
    model = build_model(MoLeVLAConfig.preset("tiny", **{"llm.source": "local", "llm.path": str(tmp_path)})).eval()
    assert torch.equal(model.llm.embed_tokens.weight[:256], hf.model.embed_tokens.weight)
    embeds = torch.randn(2, 12, 64)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    ours = model.llm.forward_full(embeds, mask)
    ref = hf.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1, :9], ref[1, :9], rtol=1e-5, atol=1e-5)
