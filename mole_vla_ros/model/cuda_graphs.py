"""CUDA graphs for the inference stages that are pure functions of fixed-shape inputs: the vision tower and the DiT
head's whole DDIM sampling loop.

At batch 1 on a GPU these stages are bound by kernel launches, not arithmetic: on an H200 with the cogact-base shapes
(bf16) the DiT's 10 DDIM steps with classifier-free guidance took 29 ms and the DINOv2 + SigLIP towers 11.5 ms, while
the 16 LLaMA-7B layers MoLe runs took 9.7 ms (benchmarks/README.md). A CUDA graph records a stage's kernels once per
input shape and replays them with one launch. The LLM layers are not graphed: STAR picks different layers every
step, and each picked layer is one large launch-efficient block already.

`GraphedFunction(fn)` wraps a function of tensors. A call replays a graph when every input is a CUDA tensor and
autograd is off (inference); anything else (CPU, training, a full cache) runs `fn` eagerly, unchanged. The graph reads
the module's parameters where they live, so in-place updates (optimizer steps, load_state_dict, the EMA teacher)
are seen; moving the module (`.to()`) must call `clear()` (the modules here do it in `_apply`). A capture that fails
is logged once and the function runs eagerly from then on: an inference never fails because of a graph.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class _Graph:
    graph: object  # torch.cuda.CUDAGraph (or a test double with replay())
    inputs: list[torch.Tensor]  # static input buffers the graph reads
    output: object  # tensor or tuple of tensors the graph writes


def _clone(out):
    if isinstance(out, torch.Tensor):
        return out.clone()
    return type(out)(_clone(o) for o in out)


def capture_cuda_graph(fn: Callable, inputs: list[torch.Tensor], static: tuple) -> _Graph:
    """Warm fn up on a side stream (lazy cuBLAS / allocator set-up must not happen during capture), then capture it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn(*inputs, *static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn(*inputs, *static)
    return _Graph(graph, inputs, output)


class DropsGraphsWhenMoved:
    """Mixin for an nn.Module that holds a GraphedFunction as `self.graphs`: moving or casting the module (`.to()`,
    `.cuda()`, `.half()`) puts its parameters in new memory, so graphs recorded against the old memory are dropped."""

    def _apply(self, fn, *args, **kwargs):
        self.graphs.clear()
        return super()._apply(fn, *args, **kwargs)


class GraphedFunction:
    """fn(*tensors, *static) replayed from a CUDA graph per (input shapes, dtypes, device, static args, autocast).

    static: hashable non-tensor arguments (e.g. the guidance scale and DDIM timesteps) that select a graph of their
    own. At most `max_graphs` graphs are kept (each holds its own memory pool) and only inputs of at most `max_batch`
    rows (the first input's first dimension: a robot's one observation, not a feature-caching batch of 64); others run eagerly.
    """

    def __init__(
        self,
        fn: Callable,
        name: str,
        max_graphs: int = 4,
        max_batch: int = 8,
        enabled: bool = True,
        capture: Callable = capture_cuda_graph,
    ):
        self.fn = fn
        self.name = name
        self.max_graphs = max_graphs
        self.max_batch = max_batch
        self.enabled = enabled
        self._capture = capture
        self._graphs: dict[tuple, _Graph] = {}
        self.failed = False

    def __deepcopy__(self, memo):
        # a copied module (the EMA teacher) gets its own, empty cache bound to the copy; graphs are not copyable
        return GraphedFunction(
            copy.deepcopy(self.fn, memo), self.name, self.max_graphs, self.max_batch, self.enabled, self._capture
        )

    def clear(self) -> None:
        """Forget every graph (the module moved or its parameters were replaced)."""
        self._graphs.clear()

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def eligible(self, tensors: tuple[torch.Tensor, ...]) -> bool:
        return (
            self.enabled
            and not self.failed
            and not torch.is_grad_enabled()
            and all(t.is_cuda for t in tensors)
            and tensors[0].ndim > 0
            and tensors[0].shape[0] <= self.max_batch
            and torch.cuda.is_available()  # a test double may report is_cuda on a machine without CUDA
        )

    def __call__(self, *tensors: torch.Tensor, static: tuple = ()):
        if not self.eligible(tensors):
            return self.fn(*tensors, *static)
        key = (
            static,
            torch.is_autocast_enabled("cuda"),
            tuple((tuple(t.shape), t.dtype, t.device) for t in tensors),
        )
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                return self.fn(*tensors, *static)
            entry = self._new_graph(tensors, static)
            if entry is None:
                return self.fn(*tensors, *static)
            self._graphs[key] = entry
        for buffer, t in zip(entry.inputs, tensors):
            buffer.copy_(t)
        entry.graph.replay()
        return _clone(entry.output)

    def _new_graph(self, tensors, static) -> _Graph | None:
        try:
            # static buffers are ordinary tensors (not inference tensors), so calls inside and outside
            # torch.inference_mode can both copy into them
            with torch.inference_mode(False), torch.no_grad():
                inputs = [t.clone() for t in tensors]
                entry = self._capture(self.fn, inputs, static)
        except Exception as exc:  # any capture failure falls back to eager: an inference never fails for it
            self.failed = True
            self._graphs.clear()
            log.warning(
                "CUDA graph capture of %s failed (%s: %s); it runs eagerly from now on",
                self.name,
                type(exc).__name__,
                exc,
            )
            return None
        log.info("captured a CUDA graph of %s for inputs %s", self.name, [tuple(t.shape) for t in tensors])
        return entry
