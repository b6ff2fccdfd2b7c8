"""The analysis context: what an op rule may ask (shapes, the spaces already on a value, whether a
value is a weight) and tell (couplings, sinks, blocked values, constraints checked once groups are
known) while spa.analysis.groups walks the graph. It records; spa.analysis.groups turns the record
into groups."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.analysis.rules.base import Block, rule_for
from spa.analysis.space import Space
from spa.graph import subgraphs


@dataclass
class Coupling:
    a: Space
    b: Space
    a_to_b: np.ndarray | None  # position in b of every position of a; None = identity


@dataclass
class Sink:
    node: str
    input_index: int
    space: Space


class Context:
    """What a rule may ask and tell while the graph is analysed."""

    def __init__(self, model: ir.Model, hidden: bool = False):
        self.model = model
        self.hidden = hidden  # norms over a channel axis couple (their statistics change) instead of refusing
        self.spaces: dict[str, Space] = {}
        self.by_value: dict[str, list[Space]] = {}
        self.couplings: list[Coupling] = []
        self.sinks: list[Sink] = []
        self.blocked: dict[str, str] = {}
        self.whole_axes: list[tuple[Space, int, str]] = []
        self.same_group: list[tuple[Space, Space, str]] = []
        self.values = subgraphs.all_values(model)
        self.node: ir.Node | None = None

    # -- shapes and constants
    def dims(self, value: ir.Value) -> tuple:
        if value.shape is None:
            raise Block(f"the shape of '{value.name}' is unknown (give --input-shape)")
        return tuple(d if isinstance(d, int) else str(d) for d in value.shape)

    def rank(self, value: ir.Value) -> int:
        return len(self.dims(value))

    # -- spaces
    def spaces_on(self, value: ir.Value | None) -> list[Space]:
        return [] if value is None else list(self.by_value.get(value.name, []))

    def get(self, value: ir.Value, axes: tuple[int, ...]) -> Space | None:
        for space in self.by_value.get(value.name, []):
            if space.axes == tuple(axes):
                return space
        return None

    def _new(self, value: ir.Value, axes: tuple[int, ...], kind: str, frozen=None, prune_axis=None) -> Space:
        axes = tuple(axes)
        dims = self.dims(value)
        for other in self.by_value.get(value.name, []):
            if set(other.axes) & set(axes):
                raise Block(f"'{value.name}' would carry two overlapping channel structures "
                            f"(axes {other.axes} and {axes})")
        sizes = tuple(dims[a] for a in axes)
        if not all(isinstance(s, int) for s in sizes):
            raise Block(f"channel axis {axes} of '{value.name}' has a symbolic size")
        space = Space(value.name, axes, sizes, kind, frozen=frozen, prune_axis=prune_axis)
        self.spaces[space.key] = space
        self.by_value.setdefault(value.name, []).append(space)
        return space

    def output_space(self, value: ir.Value, axes, prune_axis: int | None = None) -> Space:
        """The channel space on an output of the current node (created on first request)."""
        return self.get(value, tuple(axes)) or self._new(value, tuple(axes), "act", prune_axis=prune_axis)

    def carry(self, space: Space, value: ir.Value, move=None) -> Space:
        """Couple `space` one-to-one with the space on output `value` at the moved axes."""
        move = move or (lambda axis: axis)
        prune = None if space.prune_axis is None else move(space.prune_axis)
        target = self.output_space(value, tuple(move(a) for a in space.axes), prune)
        self.couple(space, target)
        return target

    def operand(self, value: ir.Value, axes) -> Space:
        """The space an input contributes on `axes`: the tracked one, else a parameter space for a
        weight, else a frozen space (its channels come from somewhere SPA does not follow)."""
        axes = tuple(axes)
        found = self.get(value, axes)
        if found is not None:
            return found
        if value.is_initializer() and not value.is_graph_input() and value.const_value is not None:
            return self._new(value, axes, "param")
        chain = self._chain_to_weight(value, axes)
        if chain:
            space = self._new(chain[-1][0], chain[-1][1], "param")
            for inner_value, inner_axes in reversed(chain[:-1]):
                outer = self._new(inner_value, inner_axes, "act")
                self.couple(space, outer)
                rule_for(inner_value.producer()).couple_along(inner_value.producer(), self, outer)
                space = outer
            return space
        producer = value.producer()
        why = f"channels come from graph input '{value.name}'" if producer is None else (
            f"channels of '{value.name}' cannot be traced to the weights that make them "
            f"(they come through {producer.op_type} '{producer.name}')")
        return self._new(value, axes, "act", frozen=why)

    def is_weight(self, value: ir.Value, axis: int) -> bool:
        """A constant, or a value that copies one along `axis` (an int8 weight dequantized or cast)."""
        if value.is_initializer() and value.const_value is not None:
            return True
        return self.get(value, (axis,)) is None and self._chain_to_weight(value, (axis,)) is not None

    def _chain_to_weight(self, value: ir.Value, axes: tuple, depth: int = 0) -> list | None:
        """[(value, axes), ..., (weight, axes)] when `value` copies a weight's positions one to one."""
        producer = value.producer()
        if producer is None or depth > 8 or self.get(value, axes) is not None:
            return None
        rule = rule_for(producer)
        try:
            source = rule.source_axes(producer, self, axes) if rule is not None else None
        except Block:
            return None
        if source is None:
            return None
        index, in_axes = source
        inner = producer.inputs[index]
        if inner is None or any(set(s.axes) & set(in_axes) for s in self.spaces_on(inner)):
            return None
        if inner.is_initializer() and not inner.is_graph_input() and inner.const_value is not None:
            return [(value, axes), (inner, in_axes)]
        rest = self._chain_to_weight(inner, in_axes, depth + 1)
        return None if rest is None else [(value, axes)] + rest

    def virtual(self, label: str, size: int) -> Space:
        space = Space(None, (), (size,), "virtual", label=label)
        self.spaces[space.key] = space
        return space

    def couple(self, a: Space, b: Space, a_to_b: np.ndarray | None = None) -> None:
        if a is b:
            return
        if a_to_b is None and a.size != b.size:
            raise Block(f"cannot couple {a.key} ({a.size}) with {b.key} ({b.size})")
        if a_to_b is not None:
            a_to_b = np.asarray(a_to_b, dtype=np.int64)
            if a_to_b.shape != (a.size,) or (a.size and (a_to_b.min() < 0 or a_to_b.max() >= b.size)):
                raise Block(f"bad position map from {a.key} to {b.key}")
        self.couplings.append(Coupling(a, b, a_to_b))

    def sink(self, input_index: int, space: Space) -> None:
        self.sinks.append(Sink(self.node.name, input_index, space))

    def value_named(self, name: str) -> ir.Value | None:
        return self.values.get(name)

    def require_same_group(self, a: Space, b: Space, why: str) -> None:
        """Both spaces must end up in one group (checked once groups are known)."""
        self.same_group.append((a, b, why))

    def tag(self, space: Space, role: str) -> None:
        """Mark what kind of width a space is ("heads", "hidden"); groups take their kind from it."""
        space.role = space.role or role

    def keep_axis_whole(self, space: Space, axis: int, why: str) -> None:
        """Pruning may change `space` only along its other axes (checked once classes are known)."""
        self.whole_axes.append((space, axis, why))

    def block(self, value: ir.Value | None, reason: str) -> None:
        if value is not None:
            self.blocked.setdefault(value.name, reason)
