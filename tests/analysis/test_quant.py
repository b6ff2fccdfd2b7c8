"""Quantized models prune (spa/analysis/rules/quant.py): QDQ graphs, ORT dynamic quantization
(DynamicQuantizeLinear + ConvInteger/MatMulInteger), QLinear ops and int8 weights dequantized by
Cast → Mul. The oracle holds at 1e-4 everywhere: on a dynamically quantized path, channels are
masked in front of the DynamicQuantizeLinear (a zero leaves its range alone) and the oracle runs
ONNX Runtime unoptimized there, so the quantized arithmetic matches the sliced model exactly."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.graphs import GraphBuilder
from spa.allocation.allocate import Budget, allocate
from spa.analysis.groups import analyze
from spa.graph.canon import canonicalize
from spa.importance.criteria import group_importance, score_groups
from spa.analysis.metrics import count
from spa.passes.slice import slice_model
from spa.runtime.validate import copy_model


def _int8(b: GraphBuilder, shape, dtype=np.int8, name=None) -> tuple[str, np.ndarray]:
    info = np.iinfo(dtype)
    # signed weights in 7 bits (quantizers' reduce_range): on AVX2 without VNNI, ONNX Runtime's u8×s8
    # kernel adds products in pairs into int16 and saturates full-range weights, so a result would
    # depend on which channels sit side by side — pruning would change it, not the oracle's fault
    low, high = (info.min // 2, info.max // 2) if info.min < 0 else (info.min, info.max)
    data = b.rng.integers(low, high + 1, shape).astype(dtype)
    return b.weight(None, name, data), data


def _const(b: GraphBuilder, data) -> str:
    return b.weight(None, data=np.asarray(data))


def _dq_weight(b: GraphBuilder, shape, axis: int = 0) -> str:
    """DequantizeLinear(int8 W, per-channel scale and zero point along `axis`)."""
    w, _ = _int8(b, shape)
    scale = _const(b, b.rng.uniform(0.005, 0.05, shape[axis]).astype(np.float32))
    zero = _const(b, b.rng.integers(-3, 4, shape[axis]).astype(np.int8))
    return b.op("DequantizeLinear", [w, scale, zero], axis=axis)


def _qdq(b: GraphBuilder, x: str) -> str:
    """A per-tensor QuantizeLinear → DequantizeLinear pair on an activation."""
    scale, zero = _const(b, np.float32(0.05)), _const(b, np.uint8(128))
    return b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zero]), scale, zero])


def _prepared(b: GraphBuilder) -> ir.Model:
    """Canonicalized; weights are kept over 8192 elements so constant folding leaves them quantized."""
    model = canonicalize(b.model())
    assert any(n.op_type in ("DequantizeLinear", "Cast") and n.inputs[0].is_initializer() for n in model.graph) \
        or any("Integer" in n.op_type or "QLinear" in n.op_type for n in model.graph)
    return model


def _prune(model, ratio=0.3):
    analysis = analyze(model)
    plan = allocate(analysis, score_groups(analysis), Budget(ratio=ratio))
    sliced = copy_model(model)
    slice_model(sliced, analysis, plan)
    return analysis, sliced


def test_qdq_conv_slices_per_channel_scales(check):
    b = GraphBuilder()
    x = _qdq(b, b.input("x", [1, 8, 10, 10]))
    h = b.op("Conv", [x, _dq_weight(b, (128, 8, 3, 3)), b.weight((128,))], pads=[1] * 4)
    h = _qdq(b, b.op("Relu", [h]))
    h = b.op("Conv", [h, _dq_weight(b, (8, 128, 3, 3)), b.weight((8,))], pads=[1] * 4)
    b.output(h)
    model = _prepared(b)
    analysis = check(model)
    assert len(analysis.prunable_groups()) == 1
    _, sliced = _prune(model)
    first = next(n for n in sliced.graph if n.op_type == "DequantizeLinear" and n.inputs[0].is_initializer())
    assert first.inputs[0].shape[0] == first.inputs[1].shape[0] == first.inputs[2].shape[0] < 128
    assert count(sliced)["params"] < count(model)["params"]


def test_conv_integer_dynamic_quantization(check):
    """ORT's dynamic pattern (ONNX Runtime's ConvInteger takes a scalar weight zero point only)."""
    b = GraphBuilder()
    h = b.input("x", [1, 3, 12, 12])
    for c_in, c_out in ((3, 16), (16, 8)):
        q, scale, zero = b.op("DynamicQuantizeLinear", [h], n_out=3)
        w, _ = _int8(b, (c_out, c_in, 3, 3), np.uint8)
        w_zero = _const(b, np.uint8(128))
        acc = b.op("ConvInteger", [q, w, zero, w_zero], pads=[1] * 4)
        real = b.op("Mul", [b.op("Cast", [acc], to=onnx.TensorProto.FLOAT),
                            b.op("Mul", [scale, _const(b, np.float32(0.01))])])
        h = b.op("Relu", [b.op("Add", [real, b.weight((c_out, 1, 1))])])
    b.output(h)
    model = _prepared(b)
    analysis = check(model)
    assert len(analysis.prunable_groups()) == 1
    _, sliced = _prune(model)
    conv = next(n for n in sliced.graph if n.op_type == "ConvInteger")
    assert conv.inputs[1].shape[0] < 16
    before, after = count(model), count(sliced)
    assert after["params_by_dtype"]["uint8"] < before["params_by_dtype"]["uint8"]


def _float_mlp(path) -> None:
    b = GraphBuilder()
    h = b.op("MatMul", [b.input("x", [1, 7, 16]), b.weight((16, 32))])
    h = b.op("Relu", [b.op("Add", [h, b.weight((32,))])])
    b.output(b.op("MatMul", [h, b.weight((32, 8))]))
    onnx.save(b.proto(), path)


@pytest.mark.parametrize("per_channel", [False, True])
def test_ort_quantize_dynamic_matmul_integer(check, tmp_path, per_channel):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _float_mlp(tmp_path / "f.onnx")
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", per_channel=per_channel, weight_type=QuantType.QInt8)
    model = canonicalize(ir.load(tmp_path / "q.onnx"))
    assert any(n.op_type == "MatMulInteger" for n in model.graph)
    analysis = check(model)
    assert [g.width for g in analysis.prunable_groups()] == [32]
    _, sliced = _prune(model)
    assert count(sliced)["params_by_dtype"]["int8"] < count(model)["params_by_dtype"]["int8"]


def test_ort_quantize_static_qdq(check, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    b = GraphBuilder()
    h = b.op("Relu", [b.conv(b.input("x", [1, 8, 10, 10]), 8, 128)])
    b.output(b.conv(h, 128, 8))
    onnx.save(b.proto(), tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter([{"x": rng.standard_normal((1, 8, 10, 10)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(tmp_path / "f.onnx", tmp_path / "q.onnx", Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    model = canonicalize(ir.load(tmp_path / "q.onnx"))
    assert any(n.op_type == "DequantizeLinear" for n in model.graph)
    analysis = check(model)
    assert any(n.op_type == "DequantizeLinear" and n.inputs[0].is_initializer() for n in model.graph)
    assert [g.width for g in analysis.prunable_groups()] == [128]


def test_cast_mul_int8_weights_find_ffn_groups(check):
    """int8 weights dequantized by Cast → Mul(per-column scale) → MatMul (a weight-only int8 model)."""
    b = GraphBuilder()

    def linear(x, k, n):
        w, _ = _int8(b, (k, n))
        scale = _const(b, b.rng.uniform(0.001, 0.01, (1, n)).astype(np.float32))
        weight = b.op("Mul", [b.op("Cast", [w], to=onnx.TensorProto.FLOAT), scale])
        return b.op("Add", [b.op("MatMul", [x, weight]), b.weight((n,))])

    h = b.op("Relu", [linear(b.input("x", [1, 7, 96]), 96, 128)])
    b.output(linear(h, 128, 72))
    model = _prepared(b)
    analysis = check(model)
    group, = analysis.prunable_groups()
    assert group.width == 128
    _, sliced = _prune(model)
    scales = [n.inputs[1] for n in sliced.graph if n.op_type == "Mul" and n.inputs[1].is_initializer()]
    assert sorted(s.shape[1] for s in scales) == [72, 128 - 38]  # the first scale is sliced with its columns


def test_qlinear_conv_and_matmul(check):
    b = GraphBuilder()
    x = b.op("QuantizeLinear", [b.input("x", [1, 3, 8, 8]), _const(b, np.float32(0.05)), _const(b, np.uint8(128))])

    def qlinear_conv(x, c_in, c_out):
        w, _ = _int8(b, (c_out, c_in, 1, 1))
        ins = [x, _const(b, np.float32(0.05)), _const(b, np.uint8(128)), w,
               _const(b, b.rng.uniform(0.005, 0.02, c_out).astype(np.float32)), _const(b, np.zeros(c_out, np.int8)),
               _const(b, np.float32(0.1)), _const(b, np.uint8(128)),
               _const(b, b.rng.integers(-50, 50, c_out).astype(np.int32))]
        return b.op("QLinearConv", ins)

    h = qlinear_conv(qlinear_conv(x, 3, 16), 16, 8)
    h = b.op("Transpose", [b.op("Reshape", [h, b.ints([1, 8, 64])])], perm=[0, 2, 1])
    w, _ = _int8(b, (8, 12))
    h = b.op("QLinearMatMul", [h, _const(b, np.float32(0.1)), _const(b, np.uint8(128)), w,
                               _const(b, np.float32(0.02)), _const(b, np.int8(0)),
                               _const(b, np.float32(0.2)), _const(b, np.uint8(128))])
    b.output(b.op("DequantizeLinear", [h, _const(b, np.float32(0.2)), _const(b, np.uint8(128))]))
    model = _prepared(b)
    analysis = check(model)
    assert sorted(g.width for g in analysis.prunable_groups()) == [8, 16]


def test_params_count_integer_weights():
    b = GraphBuilder()
    q, scale, zero = b.op("DynamicQuantizeLinear", [b.input("x", [1, 3, 8, 8])], n_out=3)
    w, _ = _int8(b, (16, 3, 3, 3), np.uint8)
    acc = b.op("ConvInteger", [q, w, zero, _const(b, np.uint8(128))], pads=[1] * 4)
    b.output(b.op("Cast", [acc], to=onnx.TensorProto.FLOAT))
    stats = count(_prepared(b))
    assert stats["params_by_dtype"] == {"uint8": 16 * 3 * 3 * 3}
    assert stats["params"] == 432 and stats["macs"] == 16 * 8 * 8 * 27


def test_importance_scores_dequantized_values():
    """A per-channel scale decides the ranking: channel 0 has the largest integers, the smallest scale."""
    b = GraphBuilder()
    data = np.repeat(np.array([[100], [10], [20], [30]], np.int8), 2100, axis=1)  # 4 output channels
    w = b.weight(None, data=data)
    scale = _const(b, np.array([0.001, 1.0, 1.0, 1.0], np.float32))
    weight = b.op("DequantizeLinear", [w, scale, _const(b, np.zeros(4, np.int8))], axis=0)
    h = b.op("Relu", [b.op("Gemm", [b.input("x", [1, 2100]), weight], transB=1)])
    b.output(b.op("Gemm", [h, b.weight((3, 4))], transB=1))
    model = _prepared(b)
    group, = analyze(model).prunable_groups()
    scores = group_importance(group, model, "l2", normalizer="none")
    assert np.argmin(scores) == 0


def _qdq_conv(b: GraphBuilder, x: str, c_in: int, c_out: int) -> str:
    """Conv on a uint8-quantized input (zero point 0) with full-range int8 weights, its output
    quantized again: the pattern ONNX Runtime fuses into QLinearConv."""
    scale, zero = _const(b, np.float32(0.1)), _const(b, np.uint8(0))
    x = b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zero]), scale, zero])
    sign = np.where(b.rng.random((c_out, c_in, 1, 1)) < 0.5, -1, 1)
    data = (sign * b.rng.integers(100, 128, (c_out, c_in, 1, 1))).astype(np.int8)
    w = b.op("DequantizeLinear", [b.weight(None, data=data), _const(b, np.full(c_out, 0.001, np.float32)),
                                  _const(b, np.zeros(c_out, np.int8))], axis=0)
    h = b.op("Conv", [x, w, b.weight(None, data=np.zeros(c_out, np.float32))])
    out_scale, out_zero = _const(b, np.float32(0.5)), _const(b, np.uint8(128))
    return b.op("DequantizeLinear", [b.op("QuantizeLinear", [h, out_scale, out_zero]), out_scale, out_zero])


def test_oracle_holds_where_integer_kernels_saturate():
    """Full-range int8 weights on large uint8 inputs: ONNX Runtime's fused u8×s8 kernel saturates
    pairs of products on AVX2 without VNNI, so the optimized masked and sliced models differ by which
    channels sit side by side (a real file, smart-turn v3.2, did: 2.3e-2). The oracle then compares
    with activation rounding taken out, in float."""
    from spa.flow.oracle import oracle

    b = GraphBuilder()
    h = b.op("Relu", [_qdq_conv(b, b.input("x", [1, 64, 6, 6]), 64, 96)])
    b.output(_qdq_conv(b, b.op("Add", [h, _const(b, np.float32(20.0))]), 96, 16))
    model = _prepared(b)
    analysis = analyze(model)
    plan = allocate(analysis, score_groups(analysis), Budget(ratio=0.3))
    assert plan.removed
    assert oracle(model, analysis, plan).holds()
