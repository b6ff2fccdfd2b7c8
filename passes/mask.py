"""The masking pass, the oracle's reference: zero the plan's removed channels where each sink
reads them (a Mul by a 0/1 mask in front of the sink input; on a quantized input, a Where that
puts the zero point there). A sliced model must equal this."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.analysis.rules.base import rule_for
from spa.passes.contract import PlanMismatchError, PlanPass


@dataclass
class MaskResult(ir.passes.PassResult):
    masked_sinks: int = 0


class MaskPass(PlanPass):
    """Insert the masks of `plan` (made from `analysis` of this model or a copy of it)."""

    def requires(self, model: ir.Model) -> None:
        super().requires(model)
        nodes = {n.name for n in model.graph.all_nodes()}
        for key, sink in self._sinks():
            if sink.node not in nodes:
                raise PlanMismatchError(f"plan was made for another model: group '{key}' has sink "
                                        f"node '{sink.node}', which this model does not have")

    def _sinks(self):
        groups = self.analysis.group_by_key()
        for key, remove in self.plan.removed.items():
            if remove:
                for sink in groups[key].sinks:
                    yield key, sink

    def call(self, model: ir.Model) -> MaskResult:
        nodes = {n.name: n for n in model.graph.all_nodes()}  # sinks inside If/Loop bodies too
        count = 0
        for key, sink in self._sinks():
            removed = np.asarray(sorted(set(self.plan.removed[key])))
            _mask_input(model, nodes[sink.node], sink, removed, count)
            count += 1
        return MaskResult(model, modified=count > 0, masked_sinks=count)


def mask_model(model: ir.Model, analysis, plan) -> int:
    """MaskPass in place; returns how many sink inputs were masked."""
    return MaskPass(analysis, plan)(model).masked_sinks


def _mask_input(model: ir.Model, node: ir.Node, sink, removed: np.ndarray, count: int) -> None:
    value = node.inputs[sink.input_index]
    integer = not value.dtype.is_floating_point()
    mask = _mask_tensor(sink.space, removed, len(value.shape), ir.DataType.BOOL if integer else value.dtype)
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
