"""A decoder exported with a KV cache (optimum's `past_key_values.N.key|value` inputs, each
concatenated before the new keys or values, and `present.N.*` outputs) read as the same graph
without one: with an empty past each Concat gives the new tensor, so the past inputs, the present
outputs and the Concats go. Pruning, statistics and checks then see the plain decoder; the writer
gives the cache back (spa.flow.kv_past), so the file written takes the same inputs as the one read."""
from __future__ import annotations

import re

import onnx_ir as ir

#: The model's meta key saying its KV cache was taken off on loading.
HAD_KV_CACHE = "spa.kv_cache"
PAST_NAME = re.compile(r"^past_key_values\.\d+\.(key|value)$")
_CARRY_OPS = frozenset({"Reshape", "Cast", "Identity", "Transpose"})


def drop_kv_cache(model: ir.Model) -> bool:
    """Take the past inputs and present outputs off `model` in place; False (unchanged) unless
    every past input ends in a two-input Concat whose result is a graph output."""
    graph = model.graph
    past = [v for v in graph.inputs if PAST_NAME.match(v.name)]
    if not past:
        return False
    joins = [_join(v) for v in past]
    if any(found is None for found in joins):
        return False
    outputs = {id(v) for v in graph.outputs}
    for concat, new in joins:
        joined = concat.outputs[0]
        for user, index in list(joined.uses()):
            user.replace_input_with(index, new)
        if id(joined) in outputs:
            graph.outputs.remove(joined)
    for value in past:
        graph.inputs.remove(value)
    ids = next((v for v in graph.inputs if v.name == "input_ids"), None)
    mask = next((v for v in graph.inputs if v.name == "attention_mask"), None)
    if ids is not None and mask is not None and ids.shape is not None:
        mask.shape = ir.Shape(list(ids.shape))  # past + new tokens = the new tokens
    _remove_unreachable(graph)
    model.meta[HAD_KV_CACHE] = True
    return True


class DropKvCachePass(ir.passes.InPlacePass):
    """drop_kv_cache as a canonicalization step (every reader sees the decoder without its cache)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=drop_kv_cache(model))


def _join(past: ir.Value) -> tuple[ir.Node, ir.Value] | None:
    """(the Concat that puts `past` before the new tensor, the new tensor), or None."""
    value = past
    while True:
        uses = list(value.uses())
        if len(uses) != 1:
            return None
        user, index = uses[0]
        if user.op_type == "Concat" and len(user.inputs) == 2 and index == 0 and user.outputs[0].is_graph_output():
            return user, user.inputs[1]
        if user.op_type not in _CARRY_OPS or index != 0:
            return None
        value = user.outputs[0]


def _remove_unreachable(graph: ir.Graph) -> None:
    """Drop the nodes no graph output needs any more (the Concats and what only they read)."""
    needed, stack = set(), [v for v in graph.outputs]
    while stack:
        node = stack.pop().producer()
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(v for v in node.inputs if v is not None)
        for attr in node.attributes.values():  # values a branch reads from the outer graph
            if attr.type == ir.AttributeType.GRAPH:
                stack.extend(_outer_reads(attr.value))
    graph.remove([node for node in graph if id(node) not in needed], safe=False)


def _outer_reads(body: ir.Graph) -> list[ir.Value]:
    inner = {id(v) for n in body.all_nodes() for v in n.outputs} | {id(v) for v in body.inputs}
    return [v for n in body.all_nodes() for v in n.inputs if v is not None and id(v) not in inner]
