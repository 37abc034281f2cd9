"""Training-side pieces on the tiny preset: CogKD loss, EMA teacher, total loss, diffusion head and DDIM + CFG."""

import math

import pytest
import torch

from mole_vla_ros.model.action_head import DiTActionHead, cosine_betas, ddim_timesteps
from mole_vla_ros.model.cogkd import EMATeacher, cogkd_loss
from mole_vla_ros.model.configuration import ActionHeadConfig, MoLeVLAConfig
from mole_vla_ros.model.modeling import build_model
from mole_vla_ros.model.router import partition_loss


def tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(MoLeVLAConfig.preset("tiny", **overrides))


def batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(0, 256, (b, 1, 64, 64, 3), dtype=torch.uint8, generator=g),
        "instructions": ["pick up the cube", "open the drawer of the cabinet"][:b],
        "actions": torch.rand((b, 16, 7), generator=g) * 2 - 1,
    }


# ---------------------------------------------------------------- CogKD
def test_cogkd_is_zero_for_identical_features_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    fs = torch.randn(2, 12, 16, generator=g)
    eos = torch.tensor([11, 7])
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    assert cogkd_loss(fs, fs.clone(), mask, eos).item() == 0.0
    assert cogkd_loss(fs, fs + 0.1 * torch.randn(2, 12, 16, generator=g), mask, eos).item() > 0


def test_cogkd_matches_the_spec_formula_without_padding():
    g = torch.Generator().manual_seed(1)
    fs, ft = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    eos = torch.tensor([4, 4])
    lam = 0.3
    p, q = ft.softmax(-1), fs.softmax(-1)
    kd = (1 - lam) * q * ((q + 1e-8).log() - (p + 1e-8).log()) + lam * (ft - fs) ** 2
    c_s, c_t = fs[:, 4], ft[:, 4]
    a_s = (torch.einsum("bd,bld->bl", c_s, fs) / math.sqrt(8)).softmax(-1)
    a_t = (torch.einsum("bd,bld->bl", c_t, fs) / math.sqrt(8)).softmax(-1)
    expected = ((a_t * a_s)[..., None] * kd).mean()
    torch.testing.assert_close(cogkd_loss(fs, ft, None, eos, lam), expected)


def test_cogkd_paper_form_matches_equations_14_to_17():
    g = torch.Generator().manual_seed(3)
    fs, ft = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    eos = torch.tensor([4, 2])
    lam = 0.3
    rows = torch.arange(2)
    c_s, c_t = fs[rows, eos], ft[rows, eos]
    m = (torch.einsum("bd,bld->bl", c_t, fs) / math.sqrt(8)).sigmoid()
    m = (m * (torch.einsum("bd,bld->bl", c_s, fs) / math.sqrt(8)).sigmoid())[..., None]
    mimic = ((m * ft - m * fs) ** 2).mean()
    q, p = (m * fs).softmax(-1), (m * ft).softmax(-1)
    rkl = (q * (q.log() - p.log())).sum(-1).mean()
    torch.testing.assert_close(cogkd_loss(fs, ft, None, eos, lam, form="paper"), lam * mimic + (1 - lam) * rkl)
    assert cogkd_loss(fs, fs.clone(), None, eos, form="paper").item() == 0.0
    # the scale users see: the paper's form is the size of the mismatch, the code's ~1/L^2 of it (40 tokens here)
    fs, ft = torch.randn(2, 40, 8, generator=g), torch.randn(2, 40, 8, generator=g)
    assert cogkd_loss(fs, ft, None, eos, form="paper") > 20 * cogkd_loss(fs, ft, None, eos)
    with pytest.raises(ValueError, match="CogKD form"):
        cogkd_loss(fs, ft, None, eos, form="sigmoid")


@pytest.mark.parametrize("form", ["code", "paper"])
def test_cogkd_ignores_padded_positions(form):
    g = torch.Generator().manual_seed(2)
    fs, ft = torch.randn(2, 10, 8, generator=g), torch.randn(2, 10, 8, generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 6:] = 0
    eos = torch.tensor([5, 9])
    base = cogkd_loss(fs, ft, mask, eos, form=form)
    fs2, ft2 = fs.clone(), ft.clone()
    fs2[0, 6:] += 100.0
    ft2[0, 6:] -= 50.0
    assert torch.equal(cogkd_loss(fs2, ft2, mask, eos, form=form), base)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_cogkd_under_bf16_autocast_is_the_fp32_loss(form):
    # bf16 training (GPUs, `--precision bf16`) calls the loss inside autocast: it must neither fail (bf16 cannot hold
    # the fp32 mask value) nor lose precision; CPU autocast has the same dtype rules as CUDA's for these ops
    g = torch.Generator().manual_seed(3)
    fs, ft = torch.randn(2, 10, 8, generator=g), torch.randn(2, 10, 8, generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    eos = torch.tensor([9, 6])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cogkd_loss(fs, ft, mask, eos, form=form)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, cogkd_loss(fs, ft, mask, eos, form=form))


def test_ema_teacher_is_frozen_full_depth_and_updates_by_formula():
    model = tiny().train()
    teacher = EMATeacher(model)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert teacher.llm.embed_tokens is None and model.llm.embed_tokens is not None
    names = [n for n, _ in teacher.llm.named_parameters()]
    assert len([n for n in names if n.endswith("mlp.up_proj.weight")]) == model.config.num_layers
    # move the student, then apply one EMA step and compare with d * t + (1 - d) * s
    with torch.no_grad():
        for p in model.llm.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in teacher.llm.named_parameters()}
    student = dict(model.llm.named_parameters())
    updated = teacher.update(model)
    d = model.config.loss.ema_decay
    for n, p in teacher.llm.named_parameters():
        if n == "norm.weight":
            assert torch.equal(p, before[n])  # final norm excluded, as the released code
        else:
            torch.testing.assert_close(p, d * before[n] + (1 - d) * student[n].detach(), rtol=0, atol=1e-7)
    assert updated == len(names) - 1


def test_teacher_sees_the_same_embeddings_and_full_depth_matches_student_at_k_equal_n():
    model = tiny().eval()
    teacher = EMATeacher(model)
    b = batch()
    with torch.no_grad():
        out = model(b["images"], model.text_batch(b["instructions"]), active_layers=8)
        assert torch.equal(teacher(out.inputs.embeds, out.inputs.mask), out.hidden)


# ---------------------------------------------------------------- total loss
def test_compute_loss_combines_terms_with_config_weights_and_backpropagates():
    model = tiny(**{"loss.kd_weight": 2.0, "loss.balance_weight": 0.5}).train()
    teacher = EMATeacher(model)
    with torch.no_grad():  # DiT zero-inits its output layer (no gradient upstream on step 0): move it off zero
        model.action_head.final_layer.linear.weight.normal_(0, 0.02)
    with torch.no_grad():  # make the teacher differ so CogKD is non-zero
        for p in teacher.llm.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = model.compute_loss(batch(), teacher=teacher, generator=torch.Generator().manual_seed(0))
    assert out["cogkd"] > 0 and out["balance"] > 0
    torch.testing.assert_close(out["total"].detach(), out["diffusion"] + 2.0 * out["cogkd"] + 0.5 * out["balance"])
    out["total"].backward()
    assert model.projector.fc1.weight.grad.abs().sum() > 0
    assert model.llm.embed_tokens.weight.grad.abs().sum() > 0
    assert model.router.time_proj.weight.grad.abs().sum() > 0
    assert model.action_head.z_embedder.linear.weight.grad.abs().sum() > 0
    assert out["layer_calls"] <= model.config.num_layers


def test_balance_loss_is_the_codes_mean_of_selected_probabilities():
    model = tiny().train()
    out = model.compute_loss(batch())
    choice = out["router"]
    torch.testing.assert_close(out["balance"], (choice.probs * choice.selected).mean())


def margins(logits, k):
    top = logits.topk(k + 1, dim=-1).values
    return top[:, k - 1] - top[:, k]


def test_partition_loss_rewards_a_decided_choice_split_between_samples():
    one_set = torch.tensor([[5.0] * 4 + [-5.0] * 4] * 6)
    split = torch.cat([one_set[:3], one_set[:3].flip(1)])
    assert partition_loss(torch.zeros(6, 8), 4).item() == pytest.approx(0.0, abs=1e-6)  # every score tied
    assert partition_loss(one_set, 4).item() == pytest.approx(-math.log(4) / math.log(8), abs=0.02)
    assert partition_loss(split, 4).item() == pytest.approx(-1.0, abs=0.02)  # decided, every layer used as often
    assert partition_loss(one_set, 8).item() == 0.0  # k = N: nothing to choose
    # at near-ties (where the balance loss leaves a router) a descent step widens every sample's margin
    logits = (torch.randn(32, 8, generator=torch.Generator().manual_seed(0)) * 1e-3).requires_grad_()
    partition_loss(logits, 4).backward()
    stepped = logits.detach() - 10.0 * logits.grad
    assert (margins(stepped, 4) > margins(logits.detach(), 4) + 0.01).all()


def test_partition_cap_stops_the_push_on_decided_logits():
    logits = torch.tensor([[9.0, 5.0, 0.5, -0.5, -5.0, -9.0]], requires_grad=True)  # midpoint 0 for k = 3
    partition_loss(logits, 3, cap=2.0).backward()
    # the undecided push stops beyond 2 from the midpoint; what is left there is the spread term
    uncapped = torch.tensor([[9.0, 5.0, 0.5, -0.5, -5.0, -9.0]], requires_grad=True)
    partition_loss(uncapped, 3).backward()
    assert (logits.grad[0, [2, 3]] == uncapped.grad[0, [2, 3]]).all()  # near the midpoint: the same
    # beyond the cap no descent step moves a logit away from the midpoint (uncapped, the top ones keep rising)
    assert (logits.grad[0, [0, 1]] > 0).all() and (logits.grad[0, [4, 5]] < 0).all()
    assert (uncapped.grad[0, [0, 1]] < 0).all()
    with pytest.raises(ValueError, match=r"router\.partition_cap"):
        MoLeVLAConfig.preset("tiny", **{"router.partition_cap": -1.0})


def test_partition_weight_adds_the_partition_loss_to_the_total_in_star_mode_only():
    model = tiny(**{"loss.partition_weight": 0.5, "loss.balance_weight": 0.0}).train()
    out = model.compute_loss(batch(), generator=torch.Generator().manual_seed(0))
    assert out["partition"] != 0
    choice = out["router"]  # of the noise-free logits the choice carries (computed for the loss, not per forward)
    torch.testing.assert_close(out["partition"], partition_loss(choice.logits.detach(), choice.k))
    torch.testing.assert_close(out["total"].detach(), out["diffusion"] + 0.5 * out["partition"])
    out["total"].backward()
    assert model.router.time_proj.weight.grad.abs().sum() > 0
    early = model.compute_loss({**batch(), "skip_mode": "early"})
    assert early["partition"] == 0  # no router choice, nothing to decide
    assert tiny().config.loss.partition_weight == 0.0  # off unless asked for: the paper's losses only


def test_compute_loss_rejects_wrong_action_shape():
    model = tiny()
    b = batch()
    b["actions"] = b["actions"][:, :8]
    with pytest.raises(ValueError, match=r"must be \[B, 16, 7\]"):
        model.compute_loss(b)


def test_a_few_optimizer_steps_reduce_the_loss():
    model = tiny().train()
    b = batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        out = model.compute_loss(b, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        losses.append(out["diffusion"].item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


# ---------------------------------------------------------------- diffusion head
def test_cosine_schedule_and_ddim_steps():
    betas = cosine_betas(100)
    assert betas.shape == (100,) and torch.all(betas > 0) and torch.all(betas <= 0.999)
    ab = torch.cumprod(1 - betas, 0)
    assert ab[0] > 0.99 and ab[-1] < 1e-3
    assert ddim_timesteps(100, 10) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]


def _reference_ddim(head, cond, noise, scale, steps):
    """DDIM with guidance computed by two separate forward passes per step (no batching tricks)."""
    ac = head.alphas_cumprod
    x = noise.clone()
    b = cond.shape[0]
    null = head.z_embedder.uncondition[None].expand(b, -1)
    for j in reversed(range(len(steps))):
        t = torch.full((b,), steps[j], dtype=torch.long)
        eps_c = head.denoise(x, t, cond)
        eps_u = head.denoise(x, t, null)
        eps = eps_u + scale * (eps_c - eps_u)
        ab_t = ac[steps[j]].float()
        ab_prev = ac[steps[j - 1]].float() if j > 0 else torch.tensor(1.0)
        x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    return x.clamp(-1, 1)


@torch.no_grad()
def test_cfg_in_one_batch_equals_separate_passes_per_sample():
    torch.manual_seed(0)
    head = DiTActionHead(
        ActionHeadConfig(depth=2, hidden_size=32, num_heads=4), cond_dim=24, action_dim=7, chunk_size=16
    )
    for p in head.parameters():  # non-zero output layer so guidance matters
        p.add_(0.05 * torch.randn_like(p))
    head.eval()
    cond = torch.randn(3, 24)
    got = head.sample(cond, generator=torch.Generator().manual_seed(3), cfg_scale=1.5)
    noise = torch.randn((3, 16, 7), generator=torch.Generator().manual_seed(3))
    want = _reference_ddim(head, cond, noise, 1.5, ddim_timesteps(100, 10))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # guidance acts on every step of every sample (the MoLe repo split along time and guided only the first 7)
    x = torch.randn(3, 16, 7)
    null = head.z_embedder.uncondition[None].expand(3, -1)
    guided = head.guided_eps(x, 40, torch.cat([cond, null]), 1.5)
    t = torch.full((3,), 40)
    eps_c, eps_u = head.denoise(x, t, cond), head.denoise(x, t, null)
    torch.testing.assert_close(guided, eps_u + 1.5 * (eps_c - eps_u), rtol=1e-5, atol=1e-6)
    assert torch.all((guided - eps_c).abs().amax(dim=(0, 2)) > 0)


@torch.no_grad()
def test_predict_clips_and_binarizes_the_gripper_and_is_seeded():
    model = tiny().eval()
    with torch.no_grad():
        model.action_head.final_layer.linear.weight.normal_(0, 0.5)
    b = batch()
    a1, _ = model.predict(b["images"], b["instructions"], generator=torch.Generator().manual_seed(4))
    a2, _ = model.predict(b["images"], b["instructions"], generator=torch.Generator().manual_seed(4))
    a3, _ = model.predict(b["images"], b["instructions"], generator=torch.Generator().manual_seed(5))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert a1.abs().max() <= 1.0
    assert set(a1[..., -1].unique().tolist()) <= {0.0, 1.0}


def test_diffusion_head_learns_a_fixed_chunk():
    torch.manual_seed(0)
    head = DiTActionHead(
        ActionHeadConfig(depth=2, hidden_size=64, num_heads=4, cfg_dropout=0.0), cond_dim=8, action_dim=7, chunk_size=16
    )
    target = torch.linspace(-0.8, 0.8, 16 * 7).reshape(1, 16, 7)
    cond = torch.ones(1, 8)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    head.train()
    for step in range(150):
        loss = head.loss(target.repeat(8, 1, 1), cond.repeat(8, 1), generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    errors = [
        (head.sample(cond, generator=torch.Generator().manual_seed(s), cfg_scale=1.0) - target).abs().mean()
        for s in range(3)
    ]
    assert sum(errors) / 3 < 0.15  # the untrained head is off by 0.96


def test_cfg_dropout_replaces_the_condition_with_the_learned_null_vector():
    torch.manual_seed(0)
    head = DiTActionHead(ActionHeadConfig(depth=1, hidden_size=32, num_heads=4, cfg_dropout=1.0), 8, 7, 16).train()
    actions = torch.rand(3, 16, 7)
    losses = {
        head.loss(actions, torch.randn(3, 8) * scale, generator=torch.Generator().manual_seed(0)).item()
        for scale in (0.0, 1.0, 100.0)
    }
    assert len(losses) == 1  # every row dropped: the condition never reaches the network
    head.cfg.cfg_dropout = 0.0
    with torch.no_grad():
        head.final_layer.linear.weight.normal_(0, 0.1)
    kept = {
        head.loss(actions, torch.randn(3, 8) * s, generator=torch.Generator().manual_seed(0)).item() for s in (1, 9)
    }
    assert len(kept) == 2


def test_gumbel_noise_perturbs_training_choices_only():
    torch.manual_seed(0)
    model = build_model(MoLeVLAConfig.preset("tiny", **{"router.gumbel_noise": True}))
    b = batch()
    text = model.text_batch(b["instructions"])
    model.train()
    draws = {tuple(model(b["images"], text, active_layers=3).choice.indices) for _ in range(6)}
    assert len(draws) > 1
    model.eval()
    with torch.no_grad():
        evals = {tuple(model(b["images"], text, active_layers=3).choice.indices) for _ in range(3)}
    assert len(evals) == 1


def test_gumbel_noise_scaled_to_zero_trains_on_the_inference_choice():
    torch.manual_seed(0)
    model = build_model(MoLeVLAConfig.preset("tiny", **{"router.gumbel_noise": True, "router.temporal_dropout": 0.0}))
    b = batch()
    text = model.text_batch(b["instructions"])
    model.eval()
    with torch.no_grad():
        inference = model(b["images"], text, active_layers=3).choice.indices
    model.train()
    model.router.noise_scale = 0.0
    assert all(model(b["images"], text, active_layers=3).choice.indices == inference for _ in range(3))
    model.router.noise_scale = 1.0
    assert any(model(b["images"], text, active_layers=3).choice.indices != inference for _ in range(3))


def test_cached_vision_tokens_give_the_same_loss_as_images():
    model = tiny().eval()  # eval: the router's dropout would otherwise draw from the global RNG
    b = batch()
    with torch.no_grad():
        cached = model.vision_tokens(b["images"])
    from_images = model.compute_loss(b, generator=torch.Generator().manual_seed(0))
    from_cache = model.compute_loss(
        {"vision_tokens": cached, "instructions": b["instructions"], "actions": b["actions"]},
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(from_images["total"], from_cache["total"])
    with pytest.raises(ValueError, match=r"vision_tokens must be \[B, 16, 48\]"):
        model.compute_loss({"vision_tokens": cached[:, :8], "instructions": b["instructions"], "actions": b["actions"]})


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        model = tiny(**{"llm.gradient_checkpointing": ckpt, "router.temporal_dropout": 0.0}).train()
        with torch.no_grad():
            model.action_head.final_layer.linear.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
        out = model.compute_loss(batch(), generator=torch.Generator().manual_seed(0))
        calls = []
        hooks = [layer.register_forward_pre_hook(lambda *_a, c=calls: c.append(1)) for layer in model.llm.layers]
        out["total"].backward()
        for h in hooks:
            h.remove()
        assert len(calls) == (out["layer_calls"] if ckpt else 0)  # checkpointed layers are re-run in backward
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("llm.layers.") for n in grads[0])
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
