"""MeteredPolicy (runtime/metered_policy.py), the one wrapper replay and sim evaluation measure inference with, and
the Policy attribute copy it shares with MoLeVLAPolicy (interfaces.copy_policy_attributes)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mole_vla_ros.interfaces import POLICY_ATTRIBUTES, Policy, PolicyInput, PolicyOutput, copy_policy_attributes
from mole_vla_ros.runtime.metered_policy import InferenceCall, MeteredPolicy

INPUT = PolicyInput(images={"scene": np.zeros((8, 8, 3), np.uint8)}, instruction="lift the cube")


class _Policy:
    """Returns the `flops` and `layers` it is told to, or raises when `fail` is set."""

    chunk_size = 3
    action_space = "delta_xyz_abs_rpy"
    control_dt = 0.1
    image_size = 8

    def __init__(self, flops=None, layers=(0, 2, 5), model=None):
        self.camera_names = ["scene"]  # a list on purpose: the wrapper must hand out a tuple
        self.flops, self.layers, self.fail, self.num_layers = flops or {}, tuple(layers), False, 8
        if model is not None:
            self.model = model

    def infer(self, inp: PolicyInput) -> PolicyOutput:
        if self.fail:
            raise RuntimeError("policy bug")
        return PolicyOutput(np.zeros((3, 7)), self.layers, np.full(8, 0.125), 8, {}, self.flops)


def test_the_policy_attributes_are_copied_and_anything_else_is_read_through():
    inner = _Policy()
    metered = MeteredPolicy(inner)
    assert metered.camera_names == ("scene",)
    assert (metered.chunk_size, metered.action_space, metered.control_dt, metered.image_size) == (
        3,
        "delta_xyz_abs_rpy",
        0.1,
        8,
    )
    assert metered.num_layers == 8  # not a Policy attribute: read from the wrapped policy
    assert isinstance(metered, Policy)
    with pytest.raises(AttributeError):
        metered.no_such_attribute  # noqa: B018


def test_every_call_is_recorded_with_the_reported_cost():
    inner = _Policy(flops={"vision": 1e9, "llm": 2e9, "total": 3.5e9})
    metered = MeteredPolicy(inner)
    out = metered.infer(INPUT)
    assert out.layer_indices == (0, 2, 5)
    inner.flops, inner.layers = {"vision": 1e9, "llm": 2e9}, (1,)  # no "total": the stages are summed
    metered.infer(INPUT)
    first, second = metered.calls
    assert (first.flops, first.layers, first.failed) == (3.5e9, 3, False)
    assert (second.flops, second.layers) == (3e9, 1)
    assert all(c.wall_s >= 0.0 for c in metered.calls)


def test_a_failed_call_is_timed_and_re_raised_but_not_completed():
    inner = _Policy(flops={"total": 1.0})
    metered = MeteredPolicy(inner)
    metered.infer(INPUT)
    inner.fail = True
    with pytest.raises(RuntimeError, match="policy bug"):
        metered.infer(INPUT)
    assert [c.failed for c in metered.calls] == [False, True]
    assert metered.calls[1].flops == 0.0 and metered.calls[1].layers == 0 and metered.calls[1].layer_set == ()
    assert metered.completed == metered.calls[:1]
    metered.reset()
    assert metered.calls == [] and metered.completed == []


def test_without_reported_flops_a_mole_vla_model_gets_the_analytic_estimate_and_others_zero():
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.flops import estimate

    config = MoLeVLAConfig.preset("tiny")
    metered = MeteredPolicy(_Policy(layers=(0, 1), model=SimpleNamespace(config=config)))
    metered.infer(INPUT)
    metered.infer(INPUT)
    expected = float(estimate(config, active_layers=2).total_flops)
    assert expected > 0
    assert [c.flops for c in metered.calls] == [expected, expected]

    scripted = MeteredPolicy(_Policy(layers=()))  # no model, no layers: nothing worth counting
    scripted.infer(INPUT)
    assert scripted.calls == [InferenceCall(scripted.calls[0].wall_s, 0.0, 0, False)]


def test_copy_policy_attributes_names_what_is_missing():
    target = SimpleNamespace()
    copy_policy_attributes(_Policy(), target)
    assert {name: getattr(target, name) for name in POLICY_ATTRIBUTES} == {
        "camera_names": ("scene",),
        "chunk_size": 3,
        "action_space": "delta_xyz_abs_rpy",
        "control_dt": 0.1,
        "image_size": 8,
    }
    incomplete = SimpleNamespace(camera_names=("scene",), chunk_size=3, action_space="abs_pose_quat")
    with pytest.raises(TypeError, match=r"\['control_dt', 'image_size'\].*mole_vla_ros.interfaces.Policy"):
        copy_policy_attributes(incomplete, SimpleNamespace())
    with pytest.raises(TypeError, match="control_dt"):
        MeteredPolicy(incomplete)
