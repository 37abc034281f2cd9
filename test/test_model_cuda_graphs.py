"""CUDA graphs of the vision tower and the DiT sampling loop (model/cuda_graphs.py).

On a CPU machine the graph bookkeeping is tested with a stand-in capture (a "graph" that re-runs the function on its
static buffers, the way a replay re-runs the recorded kernels); the last tests compare real graphs with eager runs
and skip without CUDA.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from mole_vla_ros.model.configuration import MoLeVLAConfig
from mole_vla_ros.model.cuda_graphs import GraphedFunction, _Graph
from mole_vla_ros.model.modeling import build_model


class ReplayByRerun:
    """Stand-in for torch.cuda.CUDAGraph: replay() recomputes fn on the static inputs into the static output."""

    def __init__(self, fn, inputs, static, output):
        self.fn, self.inputs, self.static, self.output = fn, inputs, static, output
        self.replays = 0

    def replay(self):
        self.replays += 1
        new = self.fn(*self.inputs, *self.static)
        for dst, src in zip(*((o,) if isinstance(o, torch.Tensor) else o for o in (self.output, new))):
            dst.copy_(src)


def rerun_capture(fn, inputs, static):
    output = fn(*inputs, *static)
    return _Graph(ReplayByRerun(fn, inputs, static, output), inputs, output)


class CpuGraphed(GraphedFunction):
    """Treats CPU tensors as eligible, so the cache logic runs without a GPU."""

    def eligible(self, tensors):
        return (
            self.enabled and not self.failed and not torch.is_grad_enabled() and tensors[0].shape[0] <= self.max_batch
        )


def affine(x, y, scale):
    return x * scale + y


def test_cpu_tensors_run_eagerly_without_graphs():
    g = GraphedFunction(affine, "affine")
    x, y = torch.ones(2, 3), torch.arange(3.0)
    with torch.no_grad():
        out = g(x, y, static=(2.0,))
    assert torch.equal(out, affine(x, y, 2.0))
    assert g.num_graphs == 0


@torch.no_grad()
def test_one_graph_per_shape_and_static_args_and_fresh_inputs_each_call():
    g = CpuGraphed(affine, "affine", capture=rerun_capture)
    x, y = torch.randn(1, 4), torch.randn(4)
    first = g(x, y, static=(2.0,))
    assert g.num_graphs == 1
    x2 = torch.randn(1, 4)
    second = g(x2, y, static=(2.0,))  # same key: replayed with the new input copied into the static buffer
    assert g.num_graphs == 1
    assert torch.equal(second, affine(x2, y, 2.0))
    assert torch.equal(first, affine(x, y, 2.0)), "an earlier result must not change when the graph replays"
    g(x, y, static=(3.0,))  # another static argument: its own graph
    g(torch.randn(2, 4), y, static=(2.0,))  # another shape: its own graph
    assert g.num_graphs == 3
    g.clear()
    assert g.num_graphs == 0


@torch.no_grad()
def test_limits_run_eagerly_beyond_them():
    g = CpuGraphed(affine, "affine", max_graphs=1, max_batch=2, capture=rerun_capture)
    y = torch.zeros(4)
    g(torch.ones(1, 4), y, static=(1.0,))
    out = g(torch.ones(1, 4), y, static=(5.0,))  # cache full: eager, still right
    assert torch.equal(out, torch.full((1, 4), 5.0)) and g.num_graphs == 1
    g.clear()
    out = g(torch.ones(3, 4), y, static=(1.0,))  # 3 rows > max_batch: eager
    assert torch.equal(out, torch.ones(3, 4)) and g.num_graphs == 0


def test_autograd_on_runs_eagerly():
    g = CpuGraphed(affine, "affine", capture=rerun_capture)
    x = torch.ones(1, 2, requires_grad=True)
    out = g(x, torch.zeros(2), static=(2.0,))
    assert out.requires_grad and g.num_graphs == 0


@torch.no_grad()
def test_failed_capture_falls_back_to_eager_once_and_warns(caplog):
    calls = []

    def broken_capture(fn, inputs, static):
        calls.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    g = CpuGraphed(affine, "affine", capture=broken_capture)
    with caplog.at_level(logging.WARNING, logger="mole_vla_ros.model.cuda_graphs"):
        out = g(torch.ones(1, 2), torch.ones(2), static=(2.0,))
        out2 = g(torch.ones(1, 2), torch.ones(2), static=(2.0,))
    assert torch.equal(out, torch.full((1, 2), 3.0)) and torch.equal(out2, out)
    assert len(calls) == 1, "after a failed capture the function runs eagerly without trying again"
    assert g.failed and "runs eagerly from now on" in caplog.text


@torch.no_grad()
def test_tiny_model_sample_and_vision_match_eager_through_the_graph_path():
    model = build_model(MoLeVLAConfig.preset("tiny"), pretrained=False).eval()
    owners = (model.vision, model.router, model.action_head)
    for owner in owners:
        owner.graphs = CpuGraphed(owner.graphs.fn, owner.graphs.name, capture=rerun_capture)
    cond = torch.randn(1, model.config.llm.hidden_size)
    graphed = model.action_head.sample(cond, generator=torch.Generator().manual_seed(3))
    images = torch.rand(1, model.config.num_views, 3, model.config.image_size, model.config.image_size)
    text = model.text_batch(["pick up the red cube"])
    out = model.forward(images, text, 4, "star")
    assert all(owner.graphs.num_graphs == 1 for owner in owners)
    model.reconfigure(model.config.replace(cuda_graphs=False))  # the config switch turns all three off
    assert not any(owner.graphs.enabled for owner in owners)
    eager = model.action_head.sample(cond, generator=torch.Generator().manual_seed(3))
    assert torch.equal(graphed, eager)
    eager_out = model.forward(images, text, 4, "star")
    assert torch.equal(out.cognition, eager_out.cognition)
    assert torch.equal(out.choice.selected, eager_out.choice.selected)


def test_moving_the_module_forgets_graphs_and_copies_start_empty():
    model = build_model(MoLeVLAConfig.preset("tiny"), pretrained=False).eval()
    head = model.action_head
    owners = (model.vision, model.router, head)
    for owner in owners:
        owner.graphs._graphs["key"] = "a recorded graph"
    model.to(torch.float64)
    assert all(o.graphs.num_graphs == 0 for o in owners), "a cast or move must drop graphs of the old parameters"
    head.graphs._graphs["key"] = "a recorded graph"
    twin = copy.deepcopy(head)  # the EMA teacher is a deep copy
    assert twin.graphs.num_graphs == 0 and twin.graphs.fn.__self__ is twin


def test_config_flag_round_trips_and_old_configs_default_to_on():
    cfg = MoLeVLAConfig.preset("tiny", cuda_graphs=False)
    assert MoLeVLAConfig.from_dict(cfg.to_dict()).cuda_graphs is False
    old = MoLeVLAConfig.preset("tiny").to_dict()
    old.pop("cuda_graphs")
    assert MoLeVLAConfig.from_dict(old).cuda_graphs is True
    with pytest.raises(ValueError, match="cuda_graphs must be true or false"):
        MoLeVLAConfig.preset("tiny", cuda_graphs="yes")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_cuda_graphs_match_eager(dtype):
    model = build_model(MoLeVLAConfig.preset("tiny"), "cuda", dtype, pretrained=False).eval()
    cond = torch.randn(1, model.config.llm.hidden_size, device="cuda", dtype=dtype)
    images = torch.rand(
        1, model.config.num_views, 3, model.config.image_size, model.config.image_size, device="cuda", dtype=dtype
    )
    text = model.text_batch(["pick up the red cube"])
    with torch.inference_mode():
        graphed = [model.action_head.sample(cond, torch.Generator("cuda").manual_seed(s)) for s in (1, 2)]
        tokens = model.vision(images)
        out = model.forward(images, text, 4, "star")
    for owner in (model.vision, model.router, model.action_head):
        assert owner.graphs.num_graphs == 1 and not owner.graphs.failed, owner.graphs.name
    model.reconfigure(model.config.replace(cuda_graphs=False))
    with torch.no_grad():
        eager = [model.action_head.sample(cond, torch.Generator("cuda").manual_seed(s)) for s in (1, 2)]
        eager_tokens = model.vision(images)
        eager_out = model.forward(images, text, 4, "star")
    assert torch.equal(out.choice.selected, eager_out.choice.selected)
    torch.testing.assert_close(
        out.cognition, eager_out.cognition, rtol=0, atol=1e-5 if dtype == torch.float32 else 2e-2
    )
    for a, b in zip(graphed, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-2)
    assert not torch.equal(graphed[0], graphed[1]), "each call must use its own noise"
    torch.testing.assert_close(tokens, eager_tokens, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-2)
