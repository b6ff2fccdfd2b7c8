"""`spa report PRUNED --original DENSE` (issue 18): every layer's MACs after pruning are the pruned
layer's own — not 0 because the pruned file, read back, carries no intermediate shapes — and a
model with a dynamic sequence is costed at the same length before and after. Expected values are
computed here from the two files' weight shapes (the oracle), not by the code under test."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import spa
from spa.api import pruning_report, write_report
from spa.runtime.benchmark import DEFAULT_SEQUENCE
from tests.analysis.test_macs_dynamic import D, encoder
from tests.cli.test_cli import build_cnn, inits, run_cli


def _matmul_macs(path, seq: int) -> dict[str, int]:
    """Weight name → MACs of the MatMul reading it: one [K, N] product per token, at batch 1."""
    w = inits(path)
    model = onnx.load(str(path))
    return {n.input[1]: seq * int(np.prod(w[n.input[1]].shape))
            for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in w}


def _conv_gemm_macs(path) -> dict[str, int]:
    """Weight name → MACs of the Conv/Gemm reading it, from ONNX shape inference of the file."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    w = {t.name: list(t.dims) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "Conv":
            out[n.input[1]] = int(np.prod(shapes[n.output[0]])) * int(np.prod(w[n.input[1]][1:]))
        elif n.op_type == "Gemm":
            out[n.input[1]] = int(np.prod(shapes[n.output[0]])) * w[n.input[1]][1]
    return out


@pytest.fixture(scope="module")
def dynamic_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dyn")
    dense = tmp / "encoder.onnx"
    onnx.save(encoder(), str(dense))
    result = spa.prune(str(dense), 0.5, criterion="l2", scope="all")
    pruned = tmp / "encoder.pruned.onnx"
    spa.save(result, pruned)
    return dense, pruned


def test_layer_macs_after_are_the_pruned_layers(dynamic_pair):
    dense, pruned = dynamic_pair
    rep = pruning_report(str(pruned), original=str(dense))
    before, after = _matmul_macs(dense, DEFAULT_SEQUENCE), _matmul_macs(pruned, DEFAULT_SEQUENCE)
    assert before != after, "the plan must have pruned something"
    rows = {r["weight"]: r for r in rep["layers"]}
    assert set(rows) == set(after)
    for name, row in rows.items():
        assert row["macs_after"] == after[name] > 0
        assert row["macs_before"] == before[name]
    assert any(r["macs_after"] < r["macs_before"] for r in rows.values())
    assert rep["after"]["macs_at"] == {"batch": 1, "seq": DEFAULT_SEQUENCE}
    assert rep["after"]["macs"] >= sum(after.values())  # the weighted layers, plus attention's products


def test_input_shape_given_to_the_report(dynamic_pair):
    dense, pruned = dynamic_pair
    rep = pruning_report(str(pruned), original=str(dense), input_shapes={"x": [1, 32, D]})
    after = _matmul_macs(pruned, 32)
    assert {r["weight"]: r["macs_after"] for r in rep["layers"]} == after
    assert rep["after"]["macs_at"] == {"batch": 1, "seq": 32}


def test_html_states_the_sizes_and_shows_no_zero(dynamic_pair, tmp_path):
    dense, pruned = dynamic_pair
    out = tmp_path / "report.html"
    write_report(pruning_report(str(pruned), original=str(dense)), out)
    text = out.read_text()
    assert f"MACs (batch 1, seq {DEFAULT_SEQUENCE})" in text
    assert "→ 0<" not in text


def test_static_cnn_layers(tmp_path):
    dense = tmp_path / "cnn.onnx"
    onnx.save(build_cnn(), str(dense))
    pruned = tmp_path / "cnn.pruned.onnx"
    done = run_cli("prune", dense, "-o", pruned, "--ratio", "0.4", "--quiet", "--criterion", "l2")
    assert done.returncode == 0, done.stderr
    rep = pruning_report(str(pruned), original=str(dense))
    before, after = _conv_gemm_macs(dense), _conv_gemm_macs(pruned)
    rows = {r["weight"]: r for r in rep["layers"]}
    assert set(rows) == set(after)
    for name, row in rows.items():
        assert (row["macs_before"], row["macs_after"]) == (before[name], after[name])
    assert any(after[n] < before[n] for n in after)
    assert rep["after"]["macs_at"] == {}  # static shapes: nothing assumed
