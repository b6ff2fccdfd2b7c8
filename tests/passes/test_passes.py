"""SPA's passes (slice, mask, clean-up) keep onnx-ir's pass contract: `requires` refuses a plan
that does not fit the model (a PlanError for SPA's callers that is also onnx-ir's
PreconditionError), `PassResult.modified` says whether anything changed, and the function names
callers use (`slice_model`, `mask_model`, `cleanup`) return what they always did."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from spa.allocation.plan import PruningPlan
from spa.analysis.groups import analyze
from spa.core.errors import PlanError
from spa.graph.io import to_proto
from spa.passes.cleanup import CleanupPass, cleanup
from spa.passes.mask import MaskPass, mask_model
from spa.passes.slice import SlicePass, SliceReport, slice_model
from spa.runtime.validate import copy_model
from tests.allocation.test_plan import chain


@pytest.fixture(scope="module")
def base():
    model = chain()
    return model, analyze(model)


def _plan(analysis, remove=(0, 2)) -> PruningPlan:
    group = analysis.prunable_groups()[0]
    return PruningPlan(removed={group.key: list(remove)}, widths={group.key: group.width})


def _bytes(model) -> bytes:
    return to_proto(model).SerializeToString(deterministic=True)


@pytest.mark.parametrize("make_pass", [SlicePass, MaskPass], ids=["slice", "mask"])
def test_requires_refuses_a_plan_for_a_group_the_model_lacks(base, make_pass):
    model, analysis = base
    plan = PruningPlan(removed={"nowhere:0": [1]})
    copy = copy_model(model)
    with pytest.raises(PlanError, match="plan names group 'nowhere:0'") as caught:
        make_pass(analysis, plan)(copy)
    assert isinstance(caught.value, ir.passes.PreconditionError)  # onnx-ir's contract, unwrapped
    assert _bytes(copy) == _bytes(model)  # refused before touching anything


def test_requires_refuses_a_plan_made_for_another_model(base):
    model, analysis = base
    plan = _plan(analysis)
    other = copy_model(model)
    weight = next(iter(m.value for m in analysis.prunable_groups()[0].members if m.kind != "virtual"))
    value = ir.convenience.create_value_mapping(other.graph)[weight]
    value.name = weight + "_renamed"  # onnx-ir renames the initializer entry too
    with pytest.raises(PlanError, match="plan was made for another model"):
        slice_model(other, analysis, plan)


def test_an_empty_plan_modifies_nothing_and_says_so(base):
    model, analysis = base
    empty = PruningPlan(removed={analysis.prunable_groups()[0].key: []})
    for make_pass in (SlicePass, MaskPass):
        copy = copy_model(model)
        result = make_pass(analysis, empty)(copy)
        assert result.modified is False and result.model is copy
        assert _bytes(copy) == _bytes(model)
    assert slice_model(copy_model(model), analysis, empty) == SliceReport(modified=False)
    assert mask_model(copy_model(model), analysis, empty) == 0


def test_a_plan_that_removes_channels_is_reported(base):
    model, analysis = base
    plan = _plan(analysis)
    result = SlicePass(analysis, plan)(copy_model(model))
    assert result.modified and result.report.modified and result.report.axes_changed >= 1
    assert result.report.params_sliced
    masked = MaskPass(analysis, plan)(copy_model(model))
    assert masked.modified and masked.masked_sinks == mask_model(copy_model(model), analysis, plan) > 0


def test_passes_compose_in_a_sequential(base):
    model, analysis = base
    plan = _plan(analysis)
    copy = copy_model(model)
    result = ir.passes.Sequential(SlicePass(analysis, plan), CleanupPass())(copy)
    assert result.modified and result.model is copy
    sliced = copy_model(model)
    slice_model(sliced, analysis, plan)
    assert _bytes(copy) == _bytes(sliced)  # slicing already cleaned up: the second pass is a no-op


def test_cleanup_is_honest_about_what_it_removed(base):
    model, _ = base
    copy = copy_model(model)
    CleanupPass()(copy)  # shapes inferred once
    result = CleanupPass()(copy)
    assert result.modified is False and result.removed_nodes is False
    extra = ir.node("Relu", [copy.graph.inputs[0]], name="unused_relu")
    copy.graph.append(extra)
    result = CleanupPass()(copy)
    assert result.modified and result.removed_nodes
    assert "unused_relu" not in [n.name for n in copy.graph]
    copy.graph.append(ir.node("Relu", [copy.graph.inputs[0]], name="unused_again"))
    assert cleanup(copy) is True and cleanup(copy) is False
