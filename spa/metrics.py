"""Parameter and MAC counts, for the model as it is or as a plan would leave it."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.rules.base import attr_int


def _dim(d) -> int:
    """Symbolic dims (a dynamic batch) count as 1."""
    return d if isinstance(d, int) else 1


def _numel(dims) -> int:
    return int(np.prod([_dim(d) for d in dims], dtype=np.int64))


def count(model: ir.Model, dims_of=None) -> dict[str, int]:
    """{'params', 'macs'}; `dims_of(value)` may override a value's dims (to cost a plan)."""
    dims = dims_of or _own_dims
    params = sum(_numel(dims(v)) for v in model.graph.initializers.values()
                 if v.const_value is not None and v.dtype is not None and v.dtype.is_floating_point())
    macs = 0
    for node in model.graph:
        macs += _node_macs(node, dims)
    return {"params": params, "macs": macs}


def _node_macs(node: ir.Node, dims) -> int:
    if node.domain not in ("", "ai.onnx") or not node.outputs:
        return 0
    try:
        if node.op_type == "Conv":
            w = dims(node.inputs[1])
            return _numel(dims(node.outputs[0])) * _numel(w[1:])
        if node.op_type == "ConvTranspose":
            w = dims(node.inputs[1])
            return _numel(dims(node.inputs[0])) * _numel(w[1:])
        if node.op_type == "Gemm":
            a = dims(node.inputs[0])
            k = a[0] if attr_int(node, "transA", 0) else a[1]
            return _numel(dims(node.outputs[0])) * _dim(k)
        if node.op_type == "MatMul":
            return _numel(dims(node.outputs[0])) * _dim(dims(node.inputs[0])[-1])
    except (TypeError, IndexError):
        return 0
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
    """Floating-point weights the node reads (a weight shared by several nodes counts for each)."""
    return sum(_numel(v.shape) for v in node.inputs
               if v is not None and v.is_initializer() and v.shape is not None
               and v.dtype is not None and v.dtype.is_floating_point())
