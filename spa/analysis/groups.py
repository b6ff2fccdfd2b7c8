"""Channel-dependency analysis: op rules couple channel spaces; connected components are groups.

The space-level graph lives in networkx (one node per space, one edge per coupling). The rules
record into a Context (spa.analysis.context); inside a component, positions are merged element by
element into root channels (spa.analysis.channel_classes). This module walks the graph, builds the
groups and says why a group may not be pruned. Coupling, Sink and Context stay importable from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx_ir as ir

from spa.analysis import rules as _rules  # noqa: F401  (imports every rule module, filling the registry)
from spa.analysis.channel_classes import assign_classes, slices_are_classes
from spa.analysis.context import Context, Coupling, Sink  # also importable from here, as before
from spa.analysis.rules.base import Block, rule_for
from spa.analysis.space import Space
from spa.graph import subgraphs


@dataclass
class Group:
    id: int
    key: str                      # stable, readable name: the module path of its layers (`layers.3.mlp`)
    members: list[Space]
    width: int                    # number of root channels (classes)
    sinks: list[Sink]
    reason: str | None = None     # why it may not be pruned
    nodes: list[str] = field(default_factory=list)
    old_key: str = ""             # the key before readable names (a member's key): older plans use it

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

    def group_named(self, key: str) -> Group | None:
        """The group with this key, or with this key as SPA named groups before readable keys."""
        found = self.group_by_key().get(key)
        return found if found is not None else next((g for g in self.groups if g.old_key == key), None)

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
        width = assign_classes(members, [c for k in keys for c in by_space.get(k, [])])
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
    _name_groups(model, groups)
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
        if not any(slices_are_classes(grid, i) for i, a in enumerate(space.axes) if a != axis):
            return f"axis {axis} of '{space.value}' must keep its width ({why})"
    return None


def _group_key(members: list[Space]) -> str:
    """The name used before readable keys (and still where the model has no usable names): the
    first weight whose output axis is a member, else the first member."""
    weights = [m.key for m in members if m.kind == "param" and m.axes == (0,)]
    return min(weights) if weights else members[0].key


def _name_groups(model: ir.Model, groups: list[Group]) -> None:
    """Readable keys: the common module path of the layers that write a group's channels
    (`layers.3.mlp`, `layers.3.self_attn`, `conv1`), from the exporter's scoped node names
    (`/model/layers.3/mlp/gate_proj/MatMul`) or else its weight names (`features.0.0.weight`).
    A root module every layer shares (`model.`) is left out; a key two groups would share gets
    `#2`, `#3` in group order; a group without such names keeps the member key (`old_key`)."""
    writers, order = {}, {}
    for i, node in enumerate(subgraphs.all_nodes(model.graph)):
        order[id(node)] = i
        writers.update((v.name, node) for v in node.outputs if v.name)
    paths = _drop_root([_module_path(g, writers, order) for g in groups])
    used: dict[str, int] = {}
    for g, path in zip(groups, paths):
        g.old_key = g.key
        if path:
            base = ".".join(path)
            used[base] = used.get(base, 0) + 1
            g.key = base if used[base] == 1 else f"{base}#{used[base]}"


def _module_path(group: Group, writers: dict[str, ir.Node], order: dict[int, int]) -> list[str] | None:
    """The module path (split at dots) shared by the nodes that write the group's channels and read
    its weights (else by all its writers); where they share none, the first one's."""
    params = {m.value for m in group.members if m.kind == "param"}
    found = {id(n): n for m in group.members if m.kind == "act" and (n := writers.get(m.value)) is not None}
    producers = sorted(found.values(), key=lambda n: order[id(n)])
    weighted = [n for n in producers if any(v is not None and v.name in params for v in n.inputs)]
    paths = [p for p in (_node_path(n, params) for n in weighted) if p] \
        or [p for p in (_node_path(n, params) for n in producers) if p]
    if not paths:
        return None
    common = paths[0]
    for p in paths[1:]:
        n = next((i for i, (a, b) in enumerate(zip(common, p)) if a != b), min(len(common), len(p)))
        common = common[:n]
    return common or paths[0]


def _node_path(node: ir.Node, params: set[str]) -> list[str] | None:
    """`/layer1/layer1.0/conv1/Conv` → layer1.0.conv1 (TorchScript scopes repeat the parent's
    path in a list's items); a node without scopes: the module of the group weight it reads."""
    path: list[str] = []
    for scope in [s for s in (node.name or "").split("/") if s][:-1]:
        parts, k = scope.split("."), scope.count(".")
        repeats = 0 < k <= len(path) and parts[:-1] == path[len(path) - k:]
        path = path[:len(path) - k] + parts if repeats else path + parts
    if not path:
        weight = next((v.name for v in node.inputs if v is not None and v.name in params and "." in v.name), "")
        path = weight.split(".")[:-1]
    return path if path and all(p and _READABLE.issuperset(p) for p in path) else None


_READABLE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _drop_root(paths: list[list[str] | None]) -> list[list[str] | None]:
    """Leave out a first module every longer path shares (HF's `model.`), unless that makes paths
    start with a list index or merge."""
    long = [p for p in paths if p and len(p) > 1]
    if len(long) < 2 or len({p[0] for p in long}) != 1 or any(p[1].isdigit() for p in long):
        return paths
    stripped = [p[1:] if p and len(p) > 1 else p for p in paths]
    distinct = {tuple(p) for p in paths if p}
    return stripped if len({tuple(p) for p in stripped if p}) == len(distinct) else paths


def _value_users(model: ir.Model) -> dict[str, set[str]]:
    users: dict[str, set[str]] = {}
    for node in subgraphs.all_nodes(model.graph):
        for v in list(node.inputs) + list(node.outputs):
            if v is not None:
                users.setdefault(v.name, set()).add(node.name)
    return users
