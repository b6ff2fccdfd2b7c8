"""spa.register_rule: a custom-domain op SPA refuses (no rule: its groups block) becomes prunable once a
rule is registered for it, and the sliced model passes the oracle (equals the masked original in ONNX
Runtime). The op is ONNX Runtime's contrib op com.microsoft::FusedConv (Conv + activation, what ORT's
offline optimizer writes), which reads X, W, B as Conv does, so the built-in Conv rule fits it."""
from __future__ import annotations

import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import spa
from spa.analysis.groups import analyze
from spa.analysis.rules import RULES, Rule, rule_for
from spa.analysis.rules.conv import Conv
from spa.analysis.rules.elementwise import Unary
from spa.graph.canon import canonicalize
from spa.runtime.validate import copy_model
from tests.conftest import prune_and_check
from tests.graphs import GraphBuilder


def fused_conv_model() -> ir.Model:
    """x(1,3,8,8) → conv 8 → relu → FusedConv(Relu) 16 → conv 4: a group of 8 channels into the fused
    op's input, and one of 16 out of it."""
    b = GraphBuilder(seed=0)
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Relu", [b.conv(x, 3, 8)])
    w, bias = b.weight((16, 8, 3, 3)), b.weight((16,))
    h = b.op("FusedConv", [h, w, bias], domain="com.microsoft", activation="Relu", pads=[1] * 4)
    b.hint(h, (1, 16, 8, 8))  # ONNX's shape inference does not know the contrib op
    y = b.conv(h, 16, 4)
    # and so cannot carry shapes past it: the graph output's is declared too (the checker needs it)
    b.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4, 8, 8]))
    return b.model()


def widths(analysis) -> dict[int, str | None]:
    return {g.width: g.reason for g in analysis.groups}


@pytest.fixture
def fused_conv_rule():
    rule = spa.register_rule("FusedConv", Conv(), domain="com.microsoft")
    yield rule
    spa.unregister_rule("FusedConv", domain="com.microsoft")


def test_unknown_custom_op_blocks_its_groups():
    analysis = analyze(canonicalize(copy_model(fused_conv_model())))
    reasons = widths(analysis)
    assert "no channel rule" in reasons[8] and "FusedConv" in reasons[8]
    assert 16 not in reasons or reasons[16] is not None  # nothing through the fused op is prunable
    assert not any(g.width in (8, 16) for g in analysis.prunable_groups())


def test_registered_rule_makes_the_custom_op_prunable_and_the_oracle_holds(fused_conv_rule):
    assert rule_for(ir.Node("com.microsoft", "FusedConv", [])) is fused_conv_rule
    analysis = prune_and_check(fused_conv_model(), ratio=0.5)
    assert {g.width for g in analysis.prunable_groups()} == {8, 16}


def test_unregister_puts_the_refusal_back(fused_conv_rule):
    spa.unregister_rule("FusedConv", domain="com.microsoft")
    try:
        assert "com.microsoft::FusedConv" not in RULES
        assert not any(g.width == 8 for g in analyze(canonicalize(copy_model(fused_conv_model()))).prunable_groups())
    finally:
        spa.register_rule("FusedConv", Conv(), domain="com.microsoft")  # the fixture removes it


def test_a_taken_op_needs_replace_and_unregister_restores_the_built_in():
    built_in = RULES["Relu"]
    with pytest.raises(ValueError, match="already has a rule"):
        spa.register_rule("Relu", Unary)
    mine = spa.register_rule(("Relu",), Unary, replace=True)  # a subclass is instantiated
    try:
        assert isinstance(mine, Unary) and RULES["Relu"] is mine is not built_in
    finally:
        spa.unregister_rule("Relu")
    assert RULES["Relu"] is built_in


def test_bad_registrations_are_refused():
    with pytest.raises(TypeError, match="Rule"):
        spa.register_rule("MyOp", object(), domain="com.example")
    with pytest.raises(ValueError, match="op_type"):
        spa.register_rule("", Rule(), domain="com.example")
    with pytest.raises(KeyError):
        spa.unregister_rule("MyOp", domain="com.example")
    assert "com.example::MyOp" not in RULES
