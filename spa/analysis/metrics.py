"""Parameter and MAC counts, for the model as it is or as a plan would leave it. A node's MACs
are its op rule's (`Rule.macs`: Conv, ConvTranspose, Gemm, MatMul and their integer kernels)."""
from __future__ import annotations

import onnx_ir as ir

from spa.analysis.rules import standard_rule
from spa.analysis.rules.base import static_numel as _numel


#: Inputs of quantized ops that hold integer weights (not zero points or shapes).
INTEGER_WEIGHT_INPUTS = {
    "ConvInteger": (1,), "MatMulInteger": (0, 1), "QLinearConv": (3, 8), "QLinearMatMul": (0, 3),
    "DequantizeLinear": (0,), "Cast": (0,), "Gather": (0,),
    "com.microsoft::DynamicQuantizeLSTM": (1, 2), "com.microsoft::DynamicQuantizeMatMul": (1,),
    "com.microsoft::MatMulIntegerToFloat": (1,),
}
_NARROW_INTS = (ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT4, ir.DataType.UINT4)


def is_weight(value: ir.Value) -> bool:
    """A floating-point initializer, or an integer one that a quantized op reads as its weight."""
    if value.const_value is None or value.dtype is None:
        return False
    if value.dtype.is_floating_point():
        return True
    for node, index in value.uses():
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        if index in INTEGER_WEIGHT_INPUTS.get(key, ()) and (
                node.op_type not in ("Cast", "Gather") or value.dtype in _NARROW_INTS):
            return True
    return False


def count(model: ir.Model, dims_of=None) -> dict:
    """{'params', 'macs', 'params_by_dtype'}; `dims_of(value)` may override a value's dims (to cost
    a plan). Params are float weights plus integer (quantized) ones."""
    dims = dims_of or _own_dims
    by_dtype: dict[str, int] = {}
    for v in model.graph.initializers.values():
        if is_weight(v):
            key = v.dtype.name.lower()
            by_dtype[key] = by_dtype.get(key, 0) + _numel(dims(v))
    macs = 0
    for node in model.graph:
        macs += _node_macs(node, dims)
    return {"params": sum(by_dtype.values()), "macs": macs, "params_by_dtype": dict(sorted(by_dtype.items()))}


def _node_macs(node: ir.Node, dims) -> int:
    rule = standard_rule(node)
    if rule is None or not node.outputs:
        return 0
    try:
        return rule.macs(node, dims) or 0
    except (TypeError, IndexError):  # a dim or an input missing
        return 0


def planned_dims(analysis, kept: dict):
    """A dims function for `count` that applies kept-index sets without touching the model."""
    def dims_of(value):
        if value.shape is None:
            return None
        d = list(value.shape)
        for axis in range(len(d)):
            idx = kept.get((value.name, axis))
            if idx is not None:
                d[axis] = len(idx)
        return tuple(d)
    return dims_of


def _own_dims(value):
    return tuple(value.shape) if value.shape is not None else None


def node_macs(node: ir.Node) -> int:
    """Multiply-accumulates of one node, from the model's own shapes."""
    return _node_macs(node, _own_dims)


def node_params(node: ir.Node) -> int:
    """Weights the node reads, float or quantized (a weight shared by several nodes counts for each)."""
    return sum(_numel(v.shape) for v in node.inputs
               if v is not None and v.is_initializer() and v.shape is not None and is_weight(v))
