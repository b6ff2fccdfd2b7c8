"""The masking pass, the oracle's reference: zero the plan's removed channels where each sink
reads them (a Mul by a 0/1 mask in front of the sink input; on a quantized input, a Where that
puts the zero point there). A sliced model must equal this."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.analysis.rules.base import rule_for


def mask_model(model: ir.Model, analysis, plan) -> int:
    """Insert masks in place; returns how many sink inputs were masked."""
    plan.check_against(analysis)
    nodes = {n.name: n for n in model.graph.all_nodes()}  # sinks inside If/Loop bodies too
    groups = analysis.group_by_key()
    count = 0
    for key, remove in plan.removed.items():
        if not remove:
            continue
        removed = np.asarray(sorted(set(remove)))
        for sink in groups[key].sinks:
            node = nodes[sink.node]
            value = node.inputs[sink.input_index]
            integer = not value.dtype.is_floating_point()
            mask = _mask_tensor(sink.space, removed, len(value.shape),
                                ir.DataType.BOOL if integer else value.dtype)
            name = f"{value.name}_spa_mask_{count}"
            const = _constant(model, name, mask)
            if integer:  # a quantized input: a removed channel becomes its zero point (a real 0)
                zero = rule_for(node).zero_point(node, sink.input_index)
                if zero is None:
                    zero = _constant(model, f"{name}_zero", np.zeros((), value.dtype.numpy()))
                masked = ir.node("Where", [const, value, zero], name=f"{node.name}_spa_mask_{count}")
            else:
                masked = ir.node("Mul", [value, const], name=f"{node.name}_spa_mask_{count}")
            masked.outputs[0].name = f"{value.name}_spa_masked_{count}"
            masked.outputs[0].shape = value.shape
            masked.outputs[0].type = value.type
            node.graph.insert_before(node, masked)
            node.replace_input_with(sink.input_index, masked.outputs[0])
            count += 1
    return count


def _constant(model: ir.Model, name: str, array: np.ndarray) -> ir.Value:
    const = ir.Value(name=name, const_value=ir.tensor(array, name=name), shape=ir.Shape(array.shape),
                     type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    model.graph.register_initializer(const)
    return const


def _mask_tensor(space, removed: np.ndarray, rank: int, dtype: ir.DataType) -> np.ndarray:
    keep = (~np.isin(space.pos2class, removed)).astype(dtype.numpy())
    grid = keep.reshape(space.dims)
    order = np.argsort(space.axes)  # significance order -> tensor axis order
    grid = np.transpose(grid, order)
    shape = [1] * rank
    for axis, dim in zip(sorted(space.axes), grid.shape):
        shape[axis] = dim
    return grid.reshape(shape)
