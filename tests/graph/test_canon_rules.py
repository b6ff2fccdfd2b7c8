"""The rewrite rules canonicalization runs (spa/graph/rewrites.py) are onnxscript's defaults, named
through its public API, each tried only on the op type it can match. These tests read onnxscript's
private list and patterns on purpose: they catch an onnxscript upgrade that changes them."""
import re

import numpy as np
import onnx
import onnx_ir as ir
import onnxscript.rewriter
from onnx import TensorProto, helper, numpy_helper

from spa.graph import rewrites


def _pattern_op(rule):
    return rule._target_pattern.output_nodes[0].op  # the first output node's op pattern


def test_the_public_names_are_onnxscripts_default_rules_in_order():
    defaults = list(onnxscript.rewriter._DEFAULT_REWRITE_RULES)
    ours = [rule for _, rule in rewrites.ONNXSCRIPT_DEFAULTS]
    assert len(ours) == len(defaults)
    for mine, theirs in zip(ours, defaults):
        # the commuted Mul/Add variants are fresh copies: compare what they match
        assert mine is theirs or _shape(mine) == _shape(theirs)


def _shape(rule) -> str:
    return re.sub(r"anonymous:\d+", "anonymous", str(rule._target_pattern))


def test_each_rule_is_filtered_on_the_op_its_pattern_ends_in():
    for op_type, rule in [*rewrites.SPA_RULES, *rewrites.ONNXSCRIPT_DEFAULTS]:
        node = rule._target_pattern.output_nodes[0]
        assert node.op.matches(op_type), (rule, op_type)
        assert node.domain.matches("")


def test_without_batchnorm_fusion_only_those_three_rules_go():
    assert len(rewrites.rewrite_rules(True)) - len(rewrites.rewrite_rules(False)) == 3


def _halves_model(second_half_first: bool):
    """Slice(x, 0, 4) and Slice(x, 4, 8) on the last axis of an [1, 8] input."""
    a = helper.make_node("Slice", ["x", "zero", "four", "last"], ["lo"], name="lo")
    b = helper.make_node("Slice", ["x", "four", "eight", "last"], ["hi"], name="hi")
    inits = [numpy_helper.from_array(np.array([v], np.int64), n)
             for n, v in (("zero", 0), ("four", 4), ("eight", 8), ("last", -1))]
    graph = helper.make_graph([b, a] if second_half_first else [a, b], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("lo", "hi")],
                              inits)
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_slices_split_rewrites_exactly_where_onnxscripts_own_rule_does():
    for second_half_first in (True, False):
        ours, theirs = _halves_model(second_half_first), _halves_model(second_half_first)
        onnxscript.rewriter.rewrite(ours, pattern_rewrite_rules=rewrites.rewrite_rules())
        onnxscript.rewriter.rewrite(theirs, pattern_rewrite_rules=list(onnxscript.rewriter._DEFAULT_REWRITE_RULES))
        assert [n.op_type for n in ours.graph] == [n.op_type for n in theirs.graph]
        assert onnx.checker.check_model(ir.serde.serialize_model(ours)) is None
    # onnxscript's matcher tries the Slice's pairing with itself first, so only this order splits
    assert [n.op_type for n in ours.graph] == ["Slice", "Slice"]
    model = _halves_model(True)
    onnxscript.rewriter.rewrite(model, pattern_rewrite_rules=rewrites.rewrite_rules())
    assert [n.op_type for n in model.graph] == ["Split"]


def test_canonicalization_is_one_sequential_of_named_passes():
    from spa.graph.canon import canonicalization

    passes = canonicalization(input_shapes={"x": [1, 8]})
    assert isinstance(passes, ir.passes.Sequential)
    names = [type(p).__name__ for p in passes.passes]
    assert names[0] == "SetInputShapesPass" and names[-1] == "PrepareSubgraphsPass"
    assert "SetInputShapesPass" not in [type(p).__name__ for p in canonicalization().passes]


def test_a_steps_own_error_comes_out_of_canonicalize_not_the_sequentials_wrapping():
    import pytest

    from spa.core.errors import UsageError
    from spa.graph.canon import canonicalize

    with pytest.raises(UsageError, match="--input-shape names 'y'"):
        canonicalize(_halves_model(False), input_shapes={"y": [1, 8]})
