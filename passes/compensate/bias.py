"""Writing a sink's bias, and when one can be written: shared by the OBS and FLAP updates."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.statistics.sinks import SinkWeight


def pruned_values(analysis, plan) -> set[str]:
    """Names of the values whose channels the plan narrows."""
    groups = analysis.group_by_key()
    return {m.value for key, remove in plan.removed.items() if remove for m in groups[key].members}


def can_take_bias(sink: SinkWeight, narrowed: set[str]) -> bool:
    """A sink has a bias, or one can be added (Conv/Gemm: a third input, MatMul: an Add after it)
    — unless its output is narrowed too: the slicer would not know the new bias."""
    return sink.bias is not None or sink.node.outputs[0].name not in narrowed


def store_bias(model: ir.Model, sink: SinkWeight, bias: np.ndarray) -> None:
    """Write the sink's new bias; where it has none, add one (Conv/Gemm: a third input; MatMul: an
    Add after it)."""
    dtype = sink.weight.const_value.numpy().dtype
    if sink.bias is not None:
        old = sink.bias.const_value.numpy()
        sink.bias.const_value = ir.tensor(bias.reshape(old.shape).astype(old.dtype), name=sink.bias.name)
        return
    if not np.any(bias):
        return
    name = f"{sink.node.name}_spa_bias"
    value = ir.Value(name=name, const_value=ir.tensor(bias.astype(dtype), name=name),
                     shape=ir.Shape([len(bias)]), type=ir.TensorType(ir.DataType.from_numpy(dtype)))
    model.graph.register_initializer(value)
    if sink.kind != "matmul":
        sink.node.resize_inputs(3)
        sink.node.replace_input_with(2, value)
        return
    out = sink.node.outputs[0]
    graph = sink.node.graph
    biased = ir.Value(name=f"{out.name}_spa_biased", shape=out.shape, type=out.type)
    if out in graph.outputs:  # the model's output keeps its name: it now comes from the Add
        graph.outputs[graph.outputs.index(out)] = biased
    ir.convenience.replace_all_uses_with(out, biased)
    if biased in graph.outputs:
        name = out.name
        out.name = f"{name}_spa_unbiased"
        biased.name = name
    add = ir.Node("", "Add", [out, value], outputs=[biased], name=f"{sink.node.name}_spa_bias_add")
    sink.node.graph.insert_after(sink.node, add)
    sink.bias = value
