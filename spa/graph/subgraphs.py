"""Graphs inside If/Loop/Scan: every stage walks their nodes as if they were top-level ones.

Two preparations make that safe (`prepare`, idempotent, run once the model is canonicalized):
every value and node name is unique across the whole model (analysis, plans and sinks refer to
them by name; ONNX only asks for uniqueness along one scope chain, so sibling branches may repeat
names), and subgraph weights move to the main graph (a body may read outer-scope initializers), so
the stages that look weights up in `model.graph.initializers` find them all.
"""
from __future__ import annotations

from collections.abc import Iterator

import onnx_ir as ir


def bodies(node: ir.Node) -> list[ir.Graph]:
    """The graphs a node runs (If branches, a Loop/Scan body), in attribute order."""
    found = []
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            found.append(attr.value)
        elif attr.type == ir.AttributeType.GRAPHS:
            found.extend(attr.value)
    return found


def all_nodes(graph: ir.Graph) -> Iterator[ir.Node]:
    """Every node, subgraph nodes right after the node that holds them."""
    return ir.traversal.RecursiveGraphIterator(graph)


def all_graphs(graph: ir.Graph) -> Iterator[ir.Graph]:
    yield graph
    for node in graph:
        for body in bodies(node):
            yield from all_graphs(body)


def all_values(model: ir.Model) -> dict[str, ir.Value]:
    """Every named value of every graph: inputs, initializers and node outputs."""
    values: dict[str, ir.Value] = {}
    for graph in all_graphs(model.graph):
        values.update((v.name, v) for v in graph.inputs)
        values.update(graph.initializers)
        for node in graph:
            values.update((v.name, v) for v in node.outputs)
    return values


def boundary(node: ir.Node) -> list[ir.Value]:
    """Values whose widths a control-flow node fixes: its own inputs and outputs and each body's
    inputs and outputs (loop-carried state, branch results, scan slices)."""
    values = list(node.inputs) + list(node.outputs)
    for body in bodies(node):
        values += list(body.inputs) + list(body.outputs)
    return [v for v in values if v is not None]


class PrepareSubgraphsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=prepare(model))


def prepare(model: ir.Model) -> bool:
    """Unique names across subgraphs, subgraph weights in the main graph. Returns whether it
    changed anything (never for a model without subgraphs)."""
    if not any(bodies(node) for node in model.graph):
        return False
    renamed = unique_names(model)
    return hoist_initializers(model) or renamed


def unique_names(model: ir.Model) -> bool:
    """Rename subgraph values and nodes whose names repeat a name used anywhere before them (the
    main graph's names are kept: they are the model's interface and the plan's keys)."""
    top = model.graph
    used_values = {v.name for v in top.inputs} | set(top.initializers) | {v.name for v in top.outputs}
    used_values |= {v.name for n in top for v in n.outputs}
    used_nodes = {n.name for n in top}
    changed = False
    for graph in list(all_graphs(top))[1:]:
        owned = list(graph.inputs) + list(graph.initializers.values()) + [v for n in graph for v in n.outputs]
        for value in owned:
            fresh = _fresh(value.name or "v", used_values)
            if fresh != value.name:
                value.name, changed = fresh, True
            used_values.add(fresh)
        for node in graph:
            fresh = _fresh(node.name or node.op_type, used_nodes)
            if fresh != node.name:
                node.name, changed = fresh, True
            used_nodes.add(fresh)
    return changed


def hoist_initializers(model: ir.Model) -> bool:
    """Move subgraph initializers to the main graph (those a body returns as they are stay)."""
    moved = False
    for graph in list(all_graphs(model.graph))[1:]:
        for name, value in list(graph.initializers.items()):
            if value.is_graph_output() or value.const_value is None:
                continue
            graph.initializers.pop(name)
            model.graph.register_initializer(value)
            moved = True
    return moved


def _fresh(name: str, used: set[str]) -> str:
    if name not in used:
        return name
    n = 1
    while f"{name}_{n}" in used:
        n += 1
    return f"{name}_{n}"
