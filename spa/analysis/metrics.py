"""Parameter and MAC counts, for the model as it is or as a plan would leave it. A node's MACs
are its op rule's (`Rule.macs`: Conv, ConvTranspose, Gemm, MatMul and their integer kernels).

MACs are counted at fixed input sizes: a model with open (symbolic) input dims is costed at what
`spa bench` feeds it (batch 1, every other open dim spa.runtime.benchmark.DEFAULT_SEQUENCE), or at
the given input shapes (`--input-shape`); the open dims inside the graph are resolved from those
(spa.graph.concrete_shapes). `count` says which sizes it assumed ("macs_at")."""
from __future__ import annotations

import onnx_ir as ir

from spa.graph.concrete_shapes import Resolver
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


def count(model: ir.Model, dims_of=None, *, input_shapes: dict | None = None) -> dict:
    """{'params', 'macs', 'params_by_dtype', 'macs_at'}; `dims_of(value)` may override a value's
    dims (to cost a plan). Params are float weights plus integer (quantized) ones. MACs are at the
    input sizes in 'macs_at' (symbol → size; {} when every input dim is fixed): `input_shapes`
    (input name → dims) where given, else batch 1 and DEFAULT_SEQUENCE for the other open dims."""
    own = dims_of or _own_dims
    by_dtype: dict[str, int] = {}
    for v in model.graph.initializers.values():
        if is_weight(v):
            key = v.dtype.name.lower()
            by_dtype[key] = by_dtype.get(key, 0) + _numel(own(v))
    dims = MacsDims(model, dims_of, input_shapes)
    macs = 0
    for node in model.graph:
        macs += _node_macs(node, dims)
    return {"params": sum(by_dtype.values()), "macs": macs, "params_by_dtype": dict(sorted(by_dtype.items())),
            "macs_at": dims.at()}


class MacsDims:
    """A dims function for `Rule.macs`: `dims_of` (default: the values' own dims) with the open
    dims resolved at the input sizes MACs are counted at (see `count`); `at()` tells the sizes
    the dims asked so far depended on (symbol → size, an unnamed dim as 'input[axis]')."""

    def __init__(self, model: ir.Model, dims_of=None, input_shapes: dict | None = None):
        self.own = dims_of or _own_dims
        shapes = macs_input_shapes(model, input_shapes)
        self.resolver = Resolver(model, shapes) if shapes else None
        self.assumed = assumed_sizes(model, shapes) if shapes else {}

    def __call__(self, value):
        dims = self.own(value)
        return dims if self.resolver is None else self.resolver.resolve(value, dims)

    def at(self) -> dict[str, int]:
        if self.resolver is None:
            return {}
        if self.resolver.fixed_used:
            return dict(self.assumed)
        return {k: v for k, v in self.assumed.items() if k in self.resolver.used}


def macs_input_shapes(model: ir.Model, input_shapes: dict | None = None) -> dict[str, list[int]]:
    """The input shapes MACs are counted at; {} when every input dim is fixed and none are given."""
    from spa.runtime.benchmark import default_shapes

    inputs = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
    if not input_shapes and all(v.shape is not None and all(isinstance(d, int) for d in v.shape) for v in inputs):
        return {}
    return default_shapes(model, input_shapes)


def assumed_sizes(model: ir.Model, shapes: dict[str, list[int]]) -> dict[str, int]:
    """The size each open input dim is counted at: symbol name → size (an unnamed dim as
    'input[axis]'), in input order."""
    at: dict[str, int] = {}
    for v in model.graph.inputs:
        shape = shapes.get(v.name)
        if v.shape is None or shape is None or len(shape) != len(v.shape):
            continue
        for axis, (d, n) in enumerate(zip(v.shape, shape)):
            if not isinstance(d, int):
                name = getattr(d, "value", None)
                at.setdefault(name if isinstance(name, str) and name else f"{v.name}[{axis}]", int(n))
    return at


def sizes_text(at: dict | None) -> str:
    """' (batch_size 1, sequence_length 128)': the sizes MACs were counted at; '' for none."""
    return f" ({', '.join(f'{k} {v}' for k, v in at.items())})" if at else ""


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


def node_macs(node: ir.Node, dims=None) -> int:
    """Multiply-accumulates of one node, from the model's own shapes or `dims` (a dims function
    a MacsDims, which resolves open dims)."""
    return _node_macs(node, dims or _own_dims)


def node_params(node: ir.Node) -> int:
    """Weights the node reads, float or quantized (a weight shared by several nodes counts for each)."""
    return sum(_numel(v.shape) for v in node.inputs
               if v is not None and v.is_initializer() and v.shape is not None and is_weight(v))
