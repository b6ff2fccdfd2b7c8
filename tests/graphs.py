"""Tiny ONNX graphs for rule tests, built with onnx.helper so every op and attribute is explicit."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnx_ir as ir

OPSET = 18


class GraphBuilder:
    """Collects nodes and random weights; `model()` returns an onnx_ir.Model with inferred shapes."""

    def __init__(self, seed: int = 0, opset: int = OPSET):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self._n = 0
        self.weight_of: dict[str, str] = {}  # conv output -> its weight name
        self.hints = []

    def input(self, name: str, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def output(self, name: str) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))

    def hint(self, name: str, shape) -> None:
        """Declare a shape ONNX's inference cannot find (function ops such as GroupNormalization)."""
        self.hints.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))

    def weight(self, shape, name: str | None = None, data=None) -> str:
        name = name or self._name("w")
        array = np.asarray(data) if data is not None else self.rng.standard_normal(shape).astype(np.float32) * 0.5
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values, name: str | None = None) -> str:
        return self.weight(None, name or self._name("i"), np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self._name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def batchnorm(self, x: str, scale, bias, mean, var, **attrs) -> str:
        """A BatchNormalization with the given statistics (arrays, float32)."""
        stats = [self.weight(None, data=np.asarray(a, np.float32)) for a in (scale, bias, mean, var)]
        return self.op("BatchNormalization", [x] + stats, **attrs)

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1, bias: bool = True) -> str:
        w = self.weight((c_out, c_in // group, k, k))
        ins = [x, w] + ([self.weight((c_out,))] if bias else [])
        out = self.op("Conv", ins, pads=[k // 2] * 4, group=group)
        self.weight_of[out] = w
        return out

    def proto(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", self.inputs, self.outputs, self.inits,
                                  value_info=self.hints)
        imports = [helper.make_opsetid("", self.opset)]
        if any(n.domain == "com.microsoft" for n in self.nodes):  # ONNX Runtime's fused ops
            imports.append(helper.make_opsetid("com.microsoft", 1))
            model = helper.make_model(graph, opset_imports=imports)
            return onnx.shape_inference.infer_shapes(model)  # ONNX does not know them; SPA's canon infers
        model = helper.make_model(graph, opset_imports=imports)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)

    def model(self) -> ir.Model:
        return ir.serde.deserialize_model(self.proto())

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"


def conv_relu_conv(seed: int = 3) -> onnx.ModelProto:
    """Conv(3→8, 3×3) → Relu → Conv(8→4, 1×1) on a 1×3×8×8 input: one prunable group, a feature-map output."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Relu", [b.conv(x, 3, 8, k=3)])
    b.output(b.conv(h, 8, 4, k=1))
    return b.proto()
