"""`MeteredPolicy`: any `Policy` wrapped so that every `infer` call leaves a record of what it cost.

    metered = MeteredPolicy(policy)
    runtime = PolicyRuntime(config, metered, executor="inline")
    ...
    metered.calls[-1]     # InferenceCall(wall_s=0.021, flops=3.1e9, layers=4, failed=False, layer_set=(0, 2, 3, 6))
    metered.completed     # the calls that returned an action chunk

Offline replay (`replay.engine`) and the simulator's closed-loop evaluation (`sim.evaluate`) both drive the runtime
through this wrapper: replay splits each control tick's wall time into model and runtime shares, sim evaluation
reports mean latency, FLOPs and layers run per inference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mole_vla_ros.interfaces import Policy, PolicyInput, PolicyOutput, copy_policy_attributes


@dataclass(frozen=True)
class InferenceCall:
    """One `infer` call as the wrapper saw it.

    wall_s: seconds the wrapped policy spent in the call, a failed call included (the time was spent all the same).
    flops:  what the policy reported for this step ("total", else the sum of its stages), else the analytic estimate
            for a MoLe-VLA model at the layers that ran, else 0 (a scripted policy costs nothing worth counting).
    layers: LLM layers that ran (0 for a failed call or a policy without layers).
    failed: the policy raised; the exception went on to the caller (the runtime holds the robot on it).
    layer_set: which LLM layers ran, ascending (empty for a failed call or a policy without layers).
    """

    wall_s: float
    flops: float = 0.0
    layers: int = 0
    failed: bool = False
    layer_set: tuple[int, ...] = ()


class MeteredPolicy:
    """A `Policy` that forwards to `policy` and appends an `InferenceCall` to `calls` for every `infer`.

    The five `Policy` attributes are copied from the wrapped policy at construction; any other attribute
    (`num_layers`, `active_layers`, `model`, ...) is read from the wrapped policy when asked for.
    """

    def __init__(self, policy: Policy):
        copy_policy_attributes(policy, self)
        self.policy = policy
        self.calls: list[InferenceCall] = []
        self._estimates: dict[int, float] = {}  # layers run -> analytic FLOPs (the config does not change)

    def reset(self) -> None:
        """Forget the calls so far (e.g. the warm-up's)."""
        self.calls.clear()

    @property
    def completed(self) -> list[InferenceCall]:
        """The calls that returned an output, in call order."""
        return [c for c in self.calls if not c.failed]

    def infer(self, inp: PolicyInput) -> PolicyOutput:
        t0 = time.perf_counter()
        try:
            out = self.policy.infer(inp)
        except BaseException:
            self.calls.append(InferenceCall(time.perf_counter() - t0, failed=True))
            raise
        wall_s = time.perf_counter() - t0
        layer_set = tuple(int(i) for i in out.layer_indices)
        self.calls.append(InferenceCall(wall_s, self._flops(out), len(layer_set), layer_set=layer_set))
        return out

    def _flops(self, out: PolicyOutput) -> float:
        if out.flops:
            return float(out.flops.get("total", sum(out.flops.values())))
        config = getattr(getattr(self.policy, "model", None), "config", None)
        k = len(out.layer_indices)
        if config is None or not k:
            return 0.0
        if k not in self._estimates:
            from mole_vla_ros.model.flops import estimate

            self._estimates[k] = float(estimate(config, active_layers=k).total_flops)
        return self._estimates[k]

    def __getattr__(self, name: str) -> Any:  # only called for attributes the wrapper does not have itself
        if name == "policy":  # not set yet (half-built object): no recursion through self.policy
            raise AttributeError(name)
        return getattr(self.policy, name)
