"""A copy of a decoder language model that keeps its keys and values between steps (a KV cache), so
writing its own text costs one token per step instead of the whole prefix again. Made by graph
surgery on the exported no-past graph: in every attention (MatMul → scaling/mask → Softmax →
MatMul), the keys the scores read and the values the context reads are concatenated after the
previous steps' ones, which come in as inputs and go out as outputs. Positions come from the
model's position input; a one-token step needs no causal mask. The caller checks the copy against
the whole prefix run at once before trusting it (spa.statistics.generation)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

#: Ops between the scores MatMul and the Softmax (scaling, mask, soft-capping) and between the
#: Softmax and the context MatMul (casts, NaN guards).
SCORE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Where", "Cast", "Tanh"})
_PROBABILITY_OPS = frozenset({"Cast", "Where", "Dropout", "Identity"})


@dataclass
class CachedDecoder:
    model: ir.Model            # takes `past` inputs, returns logits then `present` outputs
    past: list[tuple[str, tuple[int, ...], np.dtype]]   # (input name, shape with 0 on the cached axis, dtype)
    present: list[str]
    ids_name: str
    logits_name: str

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((batch, *shape[1:]), dtype) for name, shape, dtype in self.past}


def with_kv_cache(model: ir.Model, ids_name: str, logits_name: str) -> CachedDecoder | None:
    """The cached copy, or None when the graph has no position input or an attention that is not
    the plain pattern (then text is written without a cache)."""
    from spa.runtime.validate import copy_model

    if not any("position" in v.name.lower() for v in model.graph.inputs):
        return None  # positions counted inside the graph would restart at 0 on every step
    copy = copy_model(model)
    attentions = [found for node in copy.graph if node.op_type == "Softmax"
                  for found in [attention_matmuls(node)] if found is not None]
    if not attentions or len(attentions) != sum(n.op_type == "Softmax" for n in copy.graph):
        return None
    past, present = [], []
    for layer, (scores, context) in enumerate(attentions):
        for node, role in ((scores, "key"), (context, "value")):
            value = node.inputs[1]
            if value.dtype is None or value.shape is None or len(value.shape) != 4 or \
                    not all(isinstance(d, int) for d in _kept_dims(value.shape, role)):
                return None
            axis = 3 if role == "key" else 2  # keys as the scores read them: [batch, heads, dim, seq]
            dims = [d if isinstance(d, int) else 0 for d in value.shape]
            dims[axis] = 0
            name = f"spa_past_{role}_{layer}"
            cached = ir.Value(name=name, shape=ir.Shape(["batch", *[d if i != axis else "past" for i, d in
                                                                    enumerate(dims[1:], 1)]]), type=value.type)
            copy.graph.inputs.append(cached)
            joined = ir.Node("", "Concat", [cached, value], attributes=[ir.AttrInt64("axis", axis)],
                             name=f"spa_cache_{role}_{layer}")
            joined.outputs[0].name = f"spa_present_{role}_{layer}"
            copy.graph.insert_before(node, joined)
            node.replace_input_with(1, joined.outputs[0])
            copy.graph.outputs.append(joined.outputs[0])
            past.append((name, tuple(dims), np.dtype(value.dtype.numpy())))
            present.append(joined.outputs[0].name)
    for node in copy.graph:  # sequence dims of the scores change meaning: ONNX Runtime infers them anew
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
    return CachedDecoder(copy, past, present, ids_name, logits_name)


def _kept_dims(shape, role: str) -> list:
    """Heads and head size of a cached tensor: they must be fixed to make an empty cache."""
    return [shape[1], shape[2] if role == "key" else shape[3]]


def attention_matmuls(softmax: ir.Node) -> tuple[ir.Node, ir.Node] | None:
    """(scores MatMul, context MatMul) around `softmax`, or None."""
    scores = _upstream_matmul(softmax.inputs[0], depth=6)
    context = _downstream_matmul(softmax.outputs[0], depth=4)
    if scores is None or context is None or scores is context:
        return None
    return scores, context


def _upstream_matmul(value: ir.Value | None, depth: int) -> ir.Node | None:
    node = value.producer() if value is not None else None
    if node is None or depth == 0:
        return None
    if node.op_type == "MatMul":
        return node
    if node.op_type not in SCORE_OPS:
        return None
    for inp in node.inputs:
        if inp is not None and inp.const_value is None:
            found = _upstream_matmul(inp, depth - 1)
            if found is not None:
                return found
    return None


def _downstream_matmul(value: ir.Value, depth: int) -> ir.Node | None:
    if depth == 0:
        return None
    for user, index in value.uses():
        if user.op_type == "MatMul" and index == 0:
            return user
        if user.op_type in _PROBABILITY_OPS:
            found = _downstream_matmul(user.outputs[0], depth - 1)
            if found is not None:
                return found
    return None
