"""MACs of models with dynamic (symbolic) input dims (issue 18): counted at batch 1 and the sequence
length `spa bench` feeds (DEFAULT_SEQUENCE), or at the shapes given, with the dims inside the graph
resolved from the inputs' — never the old silent "every open dim is 1". Expected values are
written out here from the layer sizes (the oracle), not taken from the code under test."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from spa.analysis.metrics import count, planned_dims, sizes_text
from spa.graph.canon import canonicalize
from spa.graph.concrete_shapes import eval_dim
from spa.runtime.benchmark import DEFAULT_SEQUENCE

D, F, HEADS = 16, 32, 2  # hidden width, FFN width, attention heads (head size D // HEADS)


def _w(name, shape, seed):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def encoder(with_heads: bool = False) -> onnx.ModelProto:
    """x[batch, seq, D] → q, k, v projections → softmax(q kᵀ) v → FFN (D → F → D). With `with_heads`,
    q/k/v are split into heads by a Reshape whose shape is computed from Shape(x) (as exporters
    write it for a dynamic batch and sequence), so ONNX's own inference leaves those dims anonymous."""
    inits = [_w("wq", [D, D], 1), _w("wk", [D, D], 2), _w("wv", [D, D], 3), _w("w1", [D, F], 4), _w("w2", [F, D], 5)]
    nodes = [helper.make_node("MatMul", ["x", w], [o], name=f"{o}_mm") for w, o in (("wq", "q"), ("wk", "k"), ("wv", "v"))]
    if with_heads:
        inits += [numpy_helper.from_array(np.array([0, 1], np.int64), "first2"),
                  numpy_helper.from_array(np.array([HEADS, D // HEADS], np.int64), "heads")]
        nodes += [helper.make_node("Shape", ["x"], ["xs"]),
                  helper.make_node("Gather", ["xs", "first2"], ["bs"], axis=0),
                  helper.make_node("Concat", ["bs", "heads"], ["hshape"], axis=0)]
        for t in "qkv":
            nodes.append(helper.make_node("Reshape", [t, "hshape"], [f"{t}4"]))
        nodes += [helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
                  helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
                  helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3])]
        q, kt, v = "qh", "kt", "vh"
    else:
        nodes.append(helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]))
        q, kt, v = "q", "kt", "v"
    nodes += [helper.make_node("MatMul", [q, kt], ["scores"], name="qk"),
              helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", v], ["ctx"], name="pv")]
    if with_heads:
        inits.append(numpy_helper.from_array(np.array([0, 0, D], np.int64), "merge"))
        nodes += [helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", ["ctx_t", "merge"], ["ctx3"])]
    ctx = "ctx3" if with_heads else "ctx"
    nodes += [helper.make_node("MatMul", [ctx, "w1"], ["h"], name="ffn1"),
              helper.make_node("Relu", ["h"], ["r"]),
              helper.make_node("MatMul", ["r", "w2"], ["y"], name="ffn2")]
    graph = helper.make_graph(
        nodes, "encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def expected_macs(seq: int, batch: int = 1) -> int:
    """By hand: three D×D projections and the FFN per token; q kᵀ and p v per token pair (summed
    over heads, each head's size D // HEADS, the total is the same as one head of size D)."""
    per_token = 3 * D * D + D * F + F * D
    per_pair = 2 * D
    return batch * (seq * per_token + seq * seq * per_pair)


def test_dynamic_sequence_counts_at_the_bench_length():
    model = canonicalize(ir.serde.deserialize_model(encoder()))
    stats = count(model)
    assert DEFAULT_SEQUENCE == 128
    assert stats["macs"] == expected_macs(DEFAULT_SEQUENCE)
    assert stats["macs"] != expected_macs(1)  # the old bug: every open dim counted as 1
    assert stats["macs_at"] == {"batch": 1, "seq": DEFAULT_SEQUENCE}
    assert sizes_text(stats["macs_at"]) == f" (batch 1, seq {DEFAULT_SEQUENCE})"


@pytest.mark.parametrize("batch,seq", [(1, 256), (1, 64), (3, 10)])
def test_input_shapes_override_the_default(batch, seq):
    model = canonicalize(ir.serde.deserialize_model(encoder()))
    stats = count(model, input_shapes={"x": [batch, seq, D]})
    assert stats["macs"] == expected_macs(seq, batch)
    assert stats["macs_at"] == {"batch": batch, "seq": seq}


def test_macs_grow_with_the_sequence_through_attention():
    model = canonicalize(ir.serde.deserialize_model(encoder()))
    at = {s: count(model, input_shapes={"x": [1, s, D]})["macs"] for s in (64, 128, 256)}
    # linear in the projections, quadratic in attention: doubling the length more than doubles MACs
    for s in (64, 128):
        quadratic = s * s * 2 * D
        assert at[2 * s] == 2 * at[s] + 2 * quadratic


def test_anonymous_dims_inside_the_graph_resolve_from_the_inputs():
    """Reshape targets computed from Shape(x): ONNX shape inference alone gives the attention
    MatMuls fresh unknown dims (unk__N); the count still comes out at the inputs' sizes."""
    proto = onnx.shape_inference.infer_shapes(encoder(with_heads=True))
    model = ir.serde.deserialize_model(proto)
    scores = next(v for n in model.graph if n.name == "qk" for v in n.outputs)
    assert scores.shape is None or any(not isinstance(d, int) and str(d) not in ("batch", "seq")
                                       for d in scores.shape), "the test needs an anonymous dim"
    assert count(model)["macs"] == expected_macs(DEFAULT_SEQUENCE)
    assert count(model, input_shapes={"x": [2, 32, D]})["macs"] == expected_macs(32, 2)
    canonical = canonicalize(ir.serde.deserialize_model(encoder(with_heads=True)))
    assert count(canonical)["macs"] == expected_macs(DEFAULT_SEQUENCE)


def test_a_plan_is_costed_at_the_same_sequence():
    """What `--target macs` sees: keeping 8 of the FFN's F channels scales both FFN layers' share,
    at the sequence length, not at one token."""
    model = canonicalize(ir.serde.deserialize_model(encoder()))
    h = next(n for n in model.graph if n.op_type == "Relu")  # between the two FFN layers
    keep = range(8)
    kept = {(h.inputs[0].name, 2): keep, (h.outputs[0].name, 2): keep, ("w1", 1): keep, ("w2", 0): keep}
    planned = count(model, planned_dims(None, kept))
    s = DEFAULT_SEQUENCE
    assert planned["macs"] == expected_macs(s) - s * (D * F + F * D) + s * (D * 8 + 8 * D)
    assert planned["params"] == 3 * D * D + D * 8 + 8 * D


def test_static_cnn_is_unchanged():
    w = _w("w", [4, 3, 3, 3], 0)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = canonicalize(ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    stats = count(model)
    assert stats["macs"] == 4 * 8 * 8 * 3 * 3 * 3
    assert stats["macs_at"] == {} and sizes_text(stats["macs_at"]) == ""


def test_dim_expressions():
    sizes = {"seq": 128, "past": 3, "batch": 1}
    assert eval_dim(7, sizes) == 7
    assert eval_dim(ir.SymbolicDim("seq"), sizes) == 128
    assert eval_dim(ir.SymbolicDim("past + seq"), sizes) == 131
    assert eval_dim(ir.SymbolicDim("2*seq"), sizes) == 256
    assert eval_dim(ir.SymbolicDim("floor(seq/3)"), sizes) == 42
    assert eval_dim(ir.SymbolicDim("Max(1, past)"), sizes) == 3
    assert eval_dim(ir.SymbolicDim("unk__4"), sizes) is None
    assert eval_dim(ir.SymbolicDim("__import__('os')"), sizes) is None
    assert eval_dim(ir.SymbolicDim(None), sizes) is None
