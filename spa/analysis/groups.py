"""Channel-dependency analysis: op rules couple channel spaces; connected components are groups.

The space-level graph lives in networkx (one node per space, one edge per coupling). Inside a
component, positions are merged element by element (Concat offsets, Flatten blocks, shuffles and
group tokens are all position maps), and every resulting class is one root channel of the group:
removing it removes its positions from every member space.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx_ir as ir
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from spa.analysis import rules as _rules  # noqa: F401  (imports every rule module, filling the registry)
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


@dataclass
class Group:
    id: int
    key: str                      # stable name: the smallest member key
    members: list[Space]
    width: int                    # number of root channels (classes)
    sinks: list[Sink]
    reason: str | None = None     # why it may not be pruned
    nodes: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return self.reason is None

    @property
    def kind(self) -> str:
        """"heads" (whole attention heads), "hidden" (a normalised width: the residual stream) or
        "channels" (FFN neurons, convolution channels)."""
        roles = {m.role for m in self.members}
        return "heads" if "heads" in roles else "hidden" if "hidden" in roles else "channels"

    @property
    def params(self) -> list[Space]:
        return [m for m in self.members if m.kind == "param"]

    def class_sizes(self) -> np.ndarray:
        """Channels of the widest activation member per root channel (1 for a plain channel)."""
        acts = [m for m in self.members if m.kind == "act"] or self.members
        widest = max(acts, key=lambda m: m.size)
        return np.bincount(widest.pos2class, minlength=self.width)


@dataclass
class Analysis:
    model: ir.Model
    spaces: dict[str, Space]
    couplings: list[Coupling]
    sinks: list[Sink]
    blocked: dict[str, str]
    graph: nx.Graph
    groups: list[Group]

    def group_by_key(self) -> dict[str, Group]:
        return {g.key: g for g in self.groups}

    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def restrict_to(self, scope: str | None) -> None:
        """Leave only the groups of `scope` prunable; the others say why they are left whole."""
        kinds = SCOPES[scope or "default"]
        for g in self.groups:
            if g.prunable and g.kind not in kinds:
                g.reason = f"outside the pruning scope ({scope or 'default: heads and ffn'})"


#: --scope: which group kinds are pruned. The hidden width is opt-in (norm statistics change).
SCOPES = {"default": {"heads", "channels"}, "heads": {"heads"}, "ffn": {"channels"}, "hidden": {"hidden"},
          "all": {"heads", "channels", "hidden"}}


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


def analyze(model: ir.Model, hidden: bool = False) -> Analysis:
    """Build the channel-dependency graph and its groups. The model must be canonicalized.

    hidden: let widths that a LayerNorm/RMSNorm normalises (a transformer's residual stream) be
    pruned; their norm statistics change, so the oracle does not apply to those groups.

    Nodes inside If/Loop/Scan bodies are analysed like top-level ones (a body reads outer values
    as the same objects, so couplings through them hold); widths that cross a body's boundary
    (branch results, loop-carried state) are not prunable."""
    subgraphs.prepare(model)  # unique names and weights in the main graph (no-op without subgraphs)
    ctx = Context(model, hidden)
    for node in subgraphs.all_nodes(model.graph):
        ctx.node = node
        rule = rule_for(node)
        if subgraphs.bodies(node):
            for value in subgraphs.boundary(node):
                ctx.block(value, f"crosses the boundary of {_describe(node)}")
            continue
        if rule is None:
            _block_node(ctx, node, f"{_describe(node)} has no channel rule (unsupported op)")
            continue
        try:
            rule.analyze(node, ctx)
        except Block as exc:
            _block_node(ctx, node, f"{_describe(node)}: {exc}")
    ctx.node = None
    graph = nx.Graph()
    graph.add_nodes_from(ctx.spaces)
    for c in ctx.couplings:
        graph.add_edge(c.a.key, c.b.key)
    groups = _build_groups(model, ctx, graph)
    _check_same_group(groups, ctx.same_group)
    return Analysis(model, ctx.spaces, ctx.couplings, ctx.sinks, ctx.blocked, graph, groups)


def _describe(node: ir.Node) -> str:
    return f"{node.op_type} '{node.name}'"


def _block_node(ctx: Context, node: ir.Node, reason: str) -> None:
    for v in list(node.inputs) + list(node.outputs):
        ctx.block(v, reason)


def _build_groups(model: ir.Model, ctx: Context, graph: nx.Graph) -> list[Group]:
    graph_inputs = {v.name for v in model.graph.inputs}
    graph_outputs = {v.name for v in model.graph.outputs}
    by_space: dict[str, list[Coupling]] = {}
    for c in ctx.couplings:
        by_space.setdefault(c.a.key, []).append(c)
    sinks_by_space: dict[str, list[Sink]] = {}
    for s in ctx.sinks:
        sinks_by_space.setdefault(s.space.key, []).append(s)
    users = _value_users(model)

    components = sorted((sorted(comp) for comp in nx.connected_components(graph)), key=lambda c: c[0])
    groups = []
    for gid, keys in enumerate(components):
        members = [ctx.spaces[k] for k in keys]
        width = _assign_classes(members, [c for k in keys for c in by_space.get(k, [])])
        reason = None
        for m in members:
            if m.value in ctx.blocked:
                reason = ctx.blocked[m.value]
            elif m.value in graph_inputs and m.kind == "act":
                reason = f"reaches graph input '{m.value}'"
            elif m.value in graph_outputs:
                reason = f"reaches graph output '{m.value}'"
            elif m.frozen:
                reason = m.frozen
            if reason:
                break
        if reason is None:
            reason = _whole_axis_conflict(members, ctx.whole_axes)
        if not ctx.hidden and any(m.role == "hidden" for m in members):
            reason = "a normalised (hidden) width: its norm statistics would change; prune it with --scope hidden"
        if reason is None and width < 2:
            reason = "has a single channel"
        nodes = sorted({n for m in members if m.value for n in users.get(m.value, ())})
        groups.append(Group(gid, _group_key(members), members, width,
                            [s for k in keys for s in sinks_by_space.get(k, [])], reason, nodes))
    return groups


def _check_same_group(groups: list[Group], requirements) -> None:
    owner = {m.key: g for g in groups for m in g.members}
    for a, b, why in requirements:
        ga, gb = owner.get(a.key), owner.get(b.key)
        if ga is not gb:
            for g in (ga, gb):
                if g is not None and g.reason is None:
                    g.reason = why + ", from another group"


def _whole_axis_conflict(members: list[Space], whole_axes) -> str | None:
    keys = {m.key for m in members}
    for space, axis, why in whole_axes:
        if space.key not in keys:
            continue
        grid = space.pos2class.reshape(space.dims)
        if not any(_slices_are_classes(grid, i) for i, a in enumerate(space.axes) if a != axis):
            return f"axis {axis} of '{space.value}' must keep its width ({why})"
    return None


def _group_key(members: list[Space]) -> str:
    """A readable, stable name: the first weight whose output axis is a member, else the first member."""
    weights = [m.key for m in members if m.kind == "param" and m.axes == (0,)]
    return min(weights) if weights else members[0].key


def _value_users(model: ir.Model) -> dict[str, set[str]]:
    users: dict[str, set[str]] = {}
    for node in subgraphs.all_nodes(model.graph):
        for v in list(node.inputs) + list(node.outputs):
            if v is not None:
                users.setdefault(v.name, set()).add(node.name)
    return users


def _assign_classes(members: list[Space], couplings: list[Coupling]) -> int:
    """Merge positions that must share a fate; number the classes in a stable order.

    A multi-axis space must keep a product shape: removing a class has to remove whole slices
    along one of its axes. When the couplings already make every slice along some axis one class
    (attention heads: each head's dims merged by Q·Kᵀ), that holds as it is; otherwise the
    positions sharing one index on the space's preferred axis are merged (channel shuffles)."""
    offsets, total = {}, 0
    for m in members:
        offsets[m.key] = total
        total += m.size
    rows, cols = [], []
    for c in couplings:
        rows.append(np.arange(c.a.size) + offsets[c.a.key])
        cols.append((np.arange(c.b.size) if c.a_to_b is None else c.a_to_b) + offsets[c.b.key])
    multi = [m for m in members if len(m.axes) > 1]
    forced: set[str] = set()
    while True:
        labels = _components(rows, cols, total)
        newly = []
        for m in multi:
            if m.key in forced:
                continue
            grid = labels[offsets[m.key]: offsets[m.key] + m.size].reshape(m.dims)
            if not any(_slices_are_classes(grid, i) for i in range(len(m.axes))):
                newly.append(m)
        if not newly:
            break
        for m in newly:
            forced.add(m.key)
            axis = m.prune_axis if m.prune_axis is not None else m.axes[-1]
            along = m.coordinates()[:, m.axes.index(axis)]
            order = np.arange(m.size)
            first_pos = np.full(m.dims[m.axes.index(axis)], m.size)
            np.minimum.at(first_pos, along, order)
            rows.append(order + offsets[m.key])
            cols.append(first_pos[along] + offsets[m.key])
    # Stable numbering: classes in order of first appearance over sorted members.
    _, first_index = np.unique(labels, return_index=True)
    order = np.argsort(first_index)
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    classes = renumber[labels]
    for m in members:
        m.pos2class = classes[offsets[m.key]: offsets[m.key] + m.size]
    return len(order)


def _components(rows: list, cols: list, total: int) -> np.ndarray:
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    adjacency = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(total, total))
    return connected_components(adjacency, directed=False)[1]


def _slices_are_classes(grid: np.ndarray, axis: int) -> bool:
    """Every slice of `grid` at a fixed index of `axis` holds a single class."""
    flat = np.moveaxis(grid, axis, 0).reshape(grid.shape[axis], -1)
    return bool((flat == flat[:, :1]).all())
