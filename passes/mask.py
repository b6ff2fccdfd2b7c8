"""The masking pass, the oracle's reference: zero the plan's removed channels where each sink
reads them (a Mul by a 0/1 mask in front of the sink input; on a quantized input, a Where that
puts the zero point there). A sliced model must equal this.

A normalised (hidden) width needs one more step: a norm over it takes its statistics over every
channel, the sliced model's over the kept ones only. Each node that reads a member of such a
group asks its rule (`mask_statistics`) to count only the kept channels; the rule rewrites the
node with a StatisticsBuilder, or raises Block where it cannot (the oracle then leaves that group
unchecked: see spa.flow.oracle)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.analysis.rules.base import Block, rule_for
from spa.passes.contract import PlanMismatchError, PlanPass


@dataclass
class MaskResult(ir.passes.PassResult):
    masked_sinks: int = 0
    masked_statistics: int = 0


class UnmaskableGroup(Exception):
    """A node of a hidden-width group takes a statistic its rule cannot restrict to kept channels."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"group '{key}': {reason}")
        self.key = key


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
        statistics = self._mask_statistics(model)
        return MaskResult(model, modified=count + statistics > 0, masked_sinks=count, masked_statistics=statistics)

    def _mask_statistics(self, model: ir.Model) -> int:
        """Norms over a hidden group's width count only its kept channels (see the module doc)."""
        groups = self.analysis.group_by_key()
        hidden = [(groups[key], remove) for key, remove in self.plan.removed.items()
                  if remove and groups[key].kind == "hidden"]
        if not hidden:
            return 0
        values = {v.name: v for n in model.graph.all_nodes() for v in n.outputs if v is not None}
        values.update({v.name: v for v in model.graph.inputs})
        done: set[int] = set()
        for group, remove in hidden:
            key = group.key
            removed = np.asarray(sorted(set(remove)))
            for member in group.members:
                value = values.get(member.value) if member.kind == "act" else None
                if value is None or value.shape is None or not value.dtype.is_floating_point():
                    continue
                keep = _mask_tensor(member, removed, len(value.shape), value.dtype)
                for node, index in list(value.uses()):
                    rule = rule_for(node)
                    if id(node) in done or rule is None:
                        continue
                    try:
                        if rule.mask_statistics(node, index, member.axes, keep,
                                                StatisticsBuilder(model, node, f"{key}_{len(done)}")):
                            done.add(id(node))
                    except Block as exc:
                        raise UnmaskableGroup(key, str(exc)) from None
        return len(done)


class StatisticsBuilder:
    """What a rule's `mask_statistics` builds its rewrite with: new nodes go in front of the node
    being rewritten (`op`) or behind it (`op(..., behind=True)`), constants into the model."""

    def __init__(self, model: ir.Model, node: ir.Node, tag: str):
        self.model, self.node, self.tag = model, node, tag
        self._behind = node  # the last node inserted behind `node`
        self._count = 0

    @property
    def opset(self) -> int:
        return self.model.opset_imports.get("", 0)

    def _name(self, what: str) -> str:
        self._count += 1
        return f"{self.node.name}_spa_kept_{self.tag}_{what}{self._count}"

    def const(self, array) -> ir.Value:
        return _constant(self.model, self._name("c"), np.asarray(array))

    def op(self, op_type: str, inputs, behind: bool = False, **attributes) -> ir.Value:
        new = ir.node(op_type, inputs, attributes, name=self._name(op_type))
        new.outputs[0].name = self._name("v")
        if behind:
            self.node.graph.insert_after(self._behind, new)
            self._behind = new
        else:
            self.node.graph.insert_before(self.node, new)
        return new.outputs[0]

    def reduce_sum_last(self, x: ir.Value) -> ir.Value:
        """ReduceSum over the last axis, kept (axes an input from opset 13, an attribute before)."""
        if self.opset >= 13:
            return self.op("ReduceSum", [x, self.const(np.asarray([-1], np.int64))], keepdims=1)
        return self.op("ReduceSum", [x], axes=[-1], keepdims=1)

    def take_over(self, old: ir.Value, new: ir.Value) -> None:
        """Every reader of `old` reads `new`; a graph output `old` becomes `new` under its name."""
        for node, index in list(old.uses()):
            if node is not new.producer():
                node.replace_input_with(index, new)
        outputs = self.model.graph.outputs
        for i, value in enumerate(outputs):
            if value is old:
                name = old.name
                old.name = self._name("unmasked")
                new.name = name
                outputs[i] = new


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
