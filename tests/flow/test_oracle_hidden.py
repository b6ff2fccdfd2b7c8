"""The oracle on hidden-width groups (a normalised width: the residual stream): the masked copy
takes each norm's statistics over the kept channels only, so a correct slice matches it, a wrong
one does not, and a norm whose rule cannot be rewritten leaves its group unchecked, by name."""
import numpy as np
import pytest

from spa.allocation.plan import PruningPlan
from spa.analysis.groups import analyze
from spa.analysis.rules import base
from spa.analysis.rules.base import RULES
from spa.flow import oracle as oracle_module
from spa.flow.oracle import oracle
from spa.graph.canon import canonicalize
from spa.passes.mask import MaskPass
from spa.runtime.validate import copy_model
from tests.graphs import GraphBuilder


def _stream_with_norms() -> tuple:
    """MatMul → LayerNorm → residual Add → RMSNorm written as primitives → MatMul: one hidden group."""
    b = GraphBuilder(seed=4)
    x = b.input("x", (2, 6, 8))
    h = b.op("MatMul", [x, b.weight((8, 8))])
    ln = b.op("LayerNormalization", [h, b.weight((8,)), b.weight((8,))], axis=-1, epsilon=1e-5)
    r = b.op("Add", [ln, b.op("Add", [b.op("MatMul", [ln, b.weight((8, 8))]), b.weight((8,))])])
    ms = b.op("ReduceMean", [b.op("Mul", [r, r]), b.ints([-1])], keepdims=1)
    rms = b.op("Mul", [b.op("Div", [r, b.op("Sqrt", [b.op("Add", [ms, b.weight(None, data=np.float32(1e-6))])])]),
                       b.weight((8,))])
    b.output(b.op("MatMul", [rms, b.weight((8, 4))]))
    model = canonicalize(b.model(), fuse_batchnorm=False)
    analysis = analyze(model, hidden=True)
    [group] = analysis.prunable_groups()
    assert group.kind == "hidden"
    return model, analysis, group


def _plan(group, removed) -> PruningPlan:
    plan = PruningPlan()
    plan.removed, plan.widths = {group.key: list(removed)}, {group.key: group.width}
    return plan


def test_hidden_width_group_is_checked_and_holds():
    model, analysis, group = _stream_with_norms()
    plan = _plan(group, [0, 3, 6])
    result = oracle(model, analysis, plan)
    assert result.unchecked == () and result.holds(), result
    masked = MaskPass(analysis, plan)(copy_model(model))
    assert masked.masked_statistics == 2  # the LayerNorm and the RMSNorm's ReduceMean


def test_without_kept_channel_statistics_the_masked_copy_is_not_the_reference(monkeypatch):
    """What the rewrite is for: masking the sinks alone leaves every norm's statistics over the full
    width, and the sliced model disagrees."""
    model, analysis, group = _stream_with_norms()
    for rule in set(RULES.values()):
        monkeypatch.setattr(type(rule), "mask_statistics", base.Rule.mask_statistics)
    assert oracle(model, analysis, _plan(group, [0, 3, 6])).error > 1e-2


def test_a_wrong_slice_of_a_hidden_width_fails_the_oracle(monkeypatch):
    model, analysis, group = _stream_with_norms()
    plan = _plan(group, [0, 3, 6])
    real_slice = oracle_module.slice_model

    def off_by_one(sliced, analysis_, plan_):
        return real_slice(sliced, analysis_, _plan(group, [1, 3, 6]))
    monkeypatch.setattr(oracle_module, "slice_model", off_by_one)
    assert not oracle(model, analysis, plan).holds()


@pytest.mark.parametrize("simplified", [False, True])
def test_onnx_runtime_skip_layer_norm_over_a_hidden_width(simplified):
    b = GraphBuilder(seed=5)
    x = b.input("x", (2, 6, 8))
    h = b.op("MatMul", [x, b.weight((8, 8))])
    skip = b.op("MatMul", [x, b.weight((8, 8))])
    op = "SkipSimplifiedLayerNormalization" if simplified else "SkipLayerNormalization"
    params = [b.weight((8,)) for _ in range(2 if simplified else 3)]  # gamma, (beta,) bias
    y, _, _, total = b.op(op, [h, skip, *params], n_out=4, domain="com.microsoft", epsilon=1e-5)
    b.output(b.op("Add", [b.op("MatMul", [y, b.weight((8, 4))]), b.op("MatMul", [total, b.weight((8, 4))])]))
    model = canonicalize(b.model(), fuse_batchnorm=False)
    analysis = analyze(model, hidden=True)
    [group] = [g for g in analysis.prunable_groups() if g.kind == "hidden"]
    result = oracle(model, analysis, _plan(group, [1, 2, 5]))
    assert result.unchecked == () and result.holds(), result


def test_a_norm_over_several_axes_leaves_its_group_unchecked_by_name():
    b = GraphBuilder(seed=6)
    x = b.input("x", (2, 6, 8))
    h = b.op("MatMul", [x, b.weight((8, 8))])
    ln = b.op("LayerNormalization", [h, b.weight((6, 8)), b.weight((6, 8))], axis=-2)
    b.output(b.op("MatMul", [ln, b.weight((8, 4))]))
    model = canonicalize(b.model(), fuse_batchnorm=False)
    analysis = analyze(model, hidden=True)
    [group] = analysis.prunable_groups()
    result = oracle(model, analysis, _plan(group, [2, 4]))
    assert result.unchecked == (group.key,)
    assert result.error == 0.0  # nothing else was pruned


def test_verify_checks_a_decoders_hidden_width(tmp_path, capsys):
    """`spa prune --scope hidden --verify` on the tiny Llama export (RMSNorm as primitives, GQA):
    the residual stream is narrowed, and the oracle checked it (the compensated model it writes)."""
    import json

    from models import hf_zoo
    from spa.cli import main

    folder = hf_zoo.cached_export("llama", "optimum")
    code = main(["prune", str(folder / "model.onnx"), "-o", str(tmp_path / "small.onnx"), "--ratio", "0.25",
                 "--scope", "hidden", "--verify", "--json", "--no-latency"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["channels_removed"] > 0
    assert summary["oracle_unchecked"] == [] and summary["oracle_error"] <= 1e-4
