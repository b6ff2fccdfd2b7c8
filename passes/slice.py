"""The slicing pass: remove a plan's channels from every member parameter, then let each op rule
rewrite the attributes and constants that encode a width (Reshape shapes, Split sizes, Slice
bounds, `group`, `num_groups`, Expand/Resize shapes)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from spa.analysis.rules.base import rule_for
from spa.core.errors import SpaError
from spa.graph import io, subgraphs
from spa.passes.cleanup import CleanupPass
from spa.passes.contract import PlanMismatchError, PlanPass


@dataclass
class SliceReport:
    modified: bool
    axes_changed: int = 0
    params_sliced: list[str] = field(default_factory=list)


def kept_indices(analysis, plan) -> dict[tuple[str, int], np.ndarray]:
    """Original indices kept along every (tensor, axis) the plan narrows."""
    kept: dict[tuple[str, int], np.ndarray] = {}
    groups = analysis.group_by_key()
    for key, remove in plan.removed.items():
        if not remove:
            continue
        removed = np.asarray(sorted(set(remove)))
        for member in groups[key].members:
            if member.kind == "virtual":
                continue
            keep = ~np.isin(member.pos2class, removed)
            if keep.all():
                continue
            for axis, idx in _per_axis(member, keep).items():
                if (member.value, axis) in kept and not np.array_equal(kept[(member.value, axis)], idx):
                    raise SpaError(f"internal: two groups narrow axis {axis} of '{member.value}' differently")
                kept[(member.value, axis)] = idx
    return kept


def _per_axis(member, keep: np.ndarray) -> dict[int, np.ndarray]:
    if len(member.axes) == 1:
        return {member.axes[0]: np.nonzero(keep)[0]}
    grid = keep.reshape(member.dims)
    masks = []
    for i in range(len(member.axes)):
        others = tuple(j for j in range(len(member.axes)) if j != i)
        masks.append(grid.any(axis=others))
    product = masks[0]
    for mask in masks[1:]:
        product = np.multiply.outer(product, mask)
    if not np.array_equal(product, grid):
        raise SpaError(f"internal: kept channels of {member.key} are not a product set")
    return {a: np.nonzero(m)[0] for a, m in zip(member.axes, masks) if not m.all()}


class SliceContext:
    """What a rule's `update` may read and change after parameters are sliced."""

    def __init__(self, model: ir.Model, kept: dict, old_dims: dict[str, tuple]):
        self.model = model
        self._kept = kept
        self._old = old_dims
        self._counter = 0
        self._values = None

    def value_named(self, name: str) -> ir.Value | None:
        if self._values is None:
            self._values = _all_values(self.model)
        return self._values.get(name)

    def kept(self, value_name: str, axis: int) -> np.ndarray | None:
        return self._kept.get((value_name, axis))

    def old_dims(self, value: ir.Value) -> tuple:
        return self._old[value.name]

    def new_dims(self, value: ir.Value) -> tuple:
        dims = list(self._old[value.name])
        for axis in range(len(dims)):
            idx = self._kept.get((value.name, axis))
            if idx is not None:
                dims[axis] = len(idx)
        return tuple(dims)

    def set_const_input(self, node: ir.Node, index: int, data) -> None:
        array = np.asarray(data, dtype=np.int64) if not isinstance(data, np.ndarray) else data
        self._counter += 1
        name = f"{node.name}_spa_in{index}_{self._counter}"
        value = ir.Value(name=name, const_value=ir.tensor(array, name=name),
                         shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
        self.model.graph.register_initializer(value)
        if index >= len(node.inputs):
            node.resize_inputs(index + 1)
        node.replace_input_with(index, value)

    def set_attr_int(self, node: ir.Node, name: str, number: int) -> None:
        node.attributes[name] = ir.AttrInt64(name, int(number))

    def set_attr_ints(self, node: ir.Node, name: str, numbers) -> None:
        node.attributes[name] = ir.AttrInt64s(name, [int(n) for n in numbers])

    def fail(self, message: str):
        raise SpaError(message)


@dataclass
class SliceResult(ir.passes.PassResult):
    report: SliceReport | None = None


class SlicePass(PlanPass):
    """Apply `plan` (made from `analysis` of this model or of a copy of it)."""

    def requires(self, model: ir.Model) -> None:
        super().requires(model)
        try:
            kept = kept_indices(self.analysis, self.plan)
        except SpaError:
            return  # the analysis contradicts itself: `call` raises that, as it always did
        values = _all_values(model)
        for name, _ in kept:
            if name not in values:
                raise PlanMismatchError(f"plan was made for another model: it narrows '{name}', "
                                        "which this model does not have")

    def call(self, model: ir.Model) -> SliceResult:
        kept = kept_indices(self.analysis, self.plan)
        if not kept:
            return SliceResult(model, modified=False, report=SliceReport(modified=False))
        return SliceResult(model, modified=True, report=_slice(model, kept))


def slice_model(model: ir.Model, analysis, plan) -> SliceReport:
    """SlicePass in place; returns what it sliced."""
    return SlicePass(analysis, plan)(model).report


def _slice(model: ir.Model, kept: dict) -> SliceReport:
    values = _all_values(model)
    old_dims = {name: tuple(v.shape) if v.shape is not None else () for name, v in values.items()}
    report = SliceReport(modified=True, axes_changed=len(kept))
    by_tensor: dict[str, dict[int, np.ndarray]] = {}
    for (name, axis), idx in kept.items():
        by_tensor.setdefault(name, {})[axis] = idx
    for name, axes in by_tensor.items():
        value = values[name]
        if value.is_initializer():
            # big weights are sliced when read (out of core), small ones right away
            value.const_value = io.take(value.const_value, axes, name)
            value.shape = ir.Shape(value.const_value.shape)
            report.params_sliced.append(name)
    sctx = SliceContext(model, kept, old_dims)
    for node in list(subgraphs.all_nodes(model.graph)):
        rule = rule_for(node)
        if rule is not None:
            rule.update(node, sctx)
    for name, axes in by_tensor.items():
        value = values[name]
        if not value.is_initializer() and value.shape is not None:
            dims = list(value.shape)
            for axis, idx in axes.items():
                dims[axis] = len(idx)
            value.shape = ir.Shape(dims)
    CleanupPass()(model)
    return report


def _all_values(model: ir.Model) -> dict[str, ir.Value]:
    return subgraphs.all_values(model)  # subgraph values too: widths change inside If/Loop bodies
