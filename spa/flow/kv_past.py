"""A decoder language model's graph made to take and return a KV cache the way optimum's
ORTModelForCausalLM feeds one, so `generate()` works with its default arguments on a folder SPA
wrote: inputs `past_key_values.N.key|value` [batch, kv heads, past, head size] beside input_ids,
attention_mask (past + new tokens) and position_ids; outputs logits then `present.N.key|value`.

Made by graph surgery on the exported no-past graph: in every attention, the keys and values as
the layer makes them (after the rotary embedding, before any repeat for grouped heads) are
concatenated after the past ones, and every later use — the shape computations included — reads
the concatenation; the mask added to the scores is rebuilt for new queries against past + new
keys (causal, and padding from attention_mask). The copy is trusted only after it gives the plain
graph's logits, step by step on a batch with a left-padded row (`_same_logits_step_by_step`).
A model read with a cache (spa.graph.kv_inputs took it off) gets it back on writing (`as_read`)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from spa.graph.kv_inputs import HAD_KV_CACHE, PAST_NAME
from spa.graph.model_copy import copy_model
from spa.statistics.kv_cache import SCORE_OPS, attention_matmuls

INPUTS = ("input_ids", "attention_mask", "position_ids")  # the names optimum feeds
#: Ops that only move, repeat or scale keys/values between the layer's tensor and the MatMul.
_CARRY_OPS = frozenset({"Transpose", "Reshape", "Expand", "Unsqueeze", "Mul", "Div", "Cast", "Identity"})
#: The text of the check: two rows, the second padded on the left; a length no head count or head
#: size is likely to equal (the layer's keys and values are found by it).
_ROWS, _LENGTH, _PADDING, _STEPS = 2, 13, 2, 3


def takes_kv_cache(model: ir.Model) -> bool:
    """Whether the graph takes past keys/values as inputs (optimum's `past_key_values.N.key` names)."""
    return any(PAST_NAME.match(v.name) for v in model.graph.inputs)


def as_read(model: ir.Model) -> ir.Model:
    """The model to write for one whose KV cache was taken off on reading: with the cache again
    (the same inputs as the file read), or as it is where the copy cannot be made."""
    if not model.meta.get(HAD_KV_CACHE) or takes_kv_cache(model):
        return model
    return with_past(model) or model


def with_past(model: ir.Model) -> ir.Model | None:
    """The copy that takes a KV cache, checked to give the plain graph's logits; None where the graph
    is not a plain decoder or the check fails (then the no-past graph is written)."""
    if {v.name for v in model.graph.inputs} != set(INPUTS) or len(model.graph.outputs) != 1:
        return None
    try:
        copy = copy_model(model)
        softmaxes = [node for node in copy.graph if node.op_type == "Softmax"]
        attentions = [attention_matmuls(node) for node in softmaxes]
        if not attentions or any(found is None for found in attentions):
            return None
        feed = _text(model)
        chains = [(_carried(scores.inputs[1]), _carried(context.inputs[1])) for scores, context in attentions]
        shapes, logits = _probe(copy, [v for pair in chains for chain in pair for v in chain], feed)
        if not _surgery(copy, attentions, softmaxes, chains, shapes):
            return None
        return copy if _same_logits_step_by_step(copy, feed, logits) else None
    except Exception:  # noqa: BLE001 - any failure of the copy means: keep the plain graph
        return None


def _surgery(copy: ir.Model, attentions, softmaxes, chains, shapes) -> bool:
    graph = copy.graph
    inputs = {v.name: v for v in graph.inputs}
    taken = {node.name for node in graph.all_nodes()}
    names = (name for name in (f"spa_past_{i}" for i in range(1 << 30)) if name not in taken)
    mask = None
    for layer, ((scores, _), softmax) in enumerate(zip(attentions, softmaxes)):
        mask_use = _mask_use(scores, softmax, inputs["attention_mask"])
        if mask_use is None:
            return False
        for role, chain, axis in (("key", chains[layer][0], 2), ("value", chains[layer][1], 3)):
            read = shapes.get(chain[0].name)  # keys as the scores read them: [batch, heads, size, sequence]
            head_size = read[axis] if read is not None and len(read) == 4 else None
            cached = _layer_tensor(chain, shapes, head_size)
            if cached is None:
                return False
            _concatenate_past(graph, cached, layer, role, shapes[cached.name][1], head_size, names)
        if mask is None:
            mask = _mask(graph, inputs, copy.graph.outputs[0].dtype or ir.DataType.FLOAT, names)
            inputs["attention_mask"].shape = ir.Shape(["batch_size", "total_sequence_length"])
        node, index = mask_use
        node.replace_input_with(index, mask)
    RemoveUnusedNodesPass()(copy)  # the mask the graph built before (a model read with a cache had ours)
    for node in graph:  # sequence dims change meaning: ONNX Runtime infers them anew
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
    return True


def _carried(value: ir.Value) -> list[ir.Value]:
    """`value` and the tensors it was moved, repeated or scaled from, nearest first (a wrong turn
    only costs a candidate: each is checked by its shape)."""
    chain = [value]
    node = value.producer()
    while node is not None and node.op_type in _CARRY_OPS:
        data = node.inputs[0]
        if node.op_type in ("Mul", "Div") and (data is None or data.const_value is not None):
            data = node.inputs[1] if node.op_type == "Mul" else None  # scale * x
        if data is None:
            break
        chain.append(data)
        node = data.producer()
    return chain


def _probe(model: ir.Model, values: list[ir.Value], feed: dict) -> tuple[dict[str, tuple[int, ...]], np.ndarray]:
    """The shapes `values` take on the check's text, and the logits (one run of ONNX Runtime)."""
    from spa.runtime.validate import session

    probe = copy_model(model)
    by_name = {v.name: v for node in probe.graph for v in node.outputs}
    wanted = [name for name in dict.fromkeys(v.name for v in values) if name in by_name]
    for name in wanted:
        if not by_name[name].is_graph_output():
            probe.graph.outputs.append(by_name[name])
    logits, *results = session(probe, lean=True).run([model.graph.outputs[0].name, *wanted], feed)
    return {name: tuple(a.shape) for name, a in zip(wanted, results)}, logits


def _layer_tensor(chain: list[ir.Value], shapes: dict, head_size: int) -> ir.Value | None:
    """The farthest tensor of the chain laid out [batch, heads, sequence, head size]: the keys or
    values as the layer made them, before grouped heads were repeated."""
    found = None
    for value in chain:
        shape = shapes.get(value.name)
        if shape is not None and len(shape) == 4 and shape[0] == _ROWS and shape[2] == _LENGTH \
                and shape[3] == head_size:
            found = value
    return found


def _concatenate_past(graph: ir.Graph, value: ir.Value, layer: int, role: str, heads: int, size: int,
                      names) -> None:
    """present = Concat(past, value) on the sequence axis, read by every use of `value`. The past is
    reshaped to this layer's heads and head size first (free for a real cache): optimum makes the
    first, empty one as [batch, num_key_value_heads, 0, hidden_size / num_attention_heads], which a
    pruned layer's widths need not match (so the declared dims are names)."""
    past = ir.Value(name=f"past_key_values.{layer}.{role}", type=value.type or ir.TensorType(ir.DataType.FLOAT),
                    shape=ir.Shape(["batch_size", f"past_heads_{layer}", "past_sequence_length",
                                    f"past_size_{layer}"]))
    graph.inputs.append(past)
    uses = list(value.uses())  # before the Concat becomes one of them
    target = ir.Node("", "Constant", [], name=next(names),
                     attributes=[ir.AttrTensor("value", ir.tensor(np.array([0, heads, -1, size], np.int64)))])
    fitted = ir.Node("", "Reshape", [past, target.outputs[0]], name=next(names))
    joined = ir.Node("", "Concat", [fitted.outputs[0], value], attributes=[ir.AttrInt64("axis", 2)],
                     name=next(names))
    joined.outputs[0].name = f"present.{layer}.{role}"
    joined.outputs[0].shape = ir.Shape(["batch_size", heads, "total_sequence_length", size])
    joined.outputs[0].type = past.type
    new_nodes = [target, fitted, joined]
    target.outputs[0].name, fitted.outputs[0].name = target.name, fitted.name
    if value.producer() is not None:
        graph.insert_after(value.producer(), new_nodes)
    else:
        graph.insert_before(uses[0][0], new_nodes)
    for user, index in uses:
        user.replace_input_with(index, joined.outputs[0])
    graph.outputs.append(joined.outputs[0])


def _mask_use(scores: ir.Node, softmax: ir.Node, attention_mask: ir.Value) -> tuple[ir.Node, int] | None:
    """(node, input index) where the scores path between `scores` and `softmax` adds the mask built
    from attention_mask."""
    node = softmax.inputs[0].producer()
    while node is not None and node is not scores and node.op_type in SCORE_OPS:
        on_path = None
        for index, value in enumerate(node.inputs):
            if value is None or value.const_value is not None:
                continue
            if _depends_on(value, None, stop=scores):
                on_path = value
            elif node.op_type == "Add" and _depends_on(value, attention_mask):
                return node, index
        node = on_path.producer() if on_path is not None else None
    return None


def _depends_on(value: ir.Value, target: ir.Value | None, stop: ir.Node | None = None) -> bool:
    """Whether `value` is computed from `target` (or, with `stop`, from that node's outputs)."""
    seen, stack = set(), [value]
    while stack:
        current = stack.pop()
        if current is target or id(current) in seen:
            if current is target:
                return True
            continue
        seen.add(id(current))
        node = current.producer()
        if node is None:
            continue
        if node is stop:
            return True
        stack.extend(v for v in node.inputs if v is not None)
    return False


def _mask(graph: ir.Graph, inputs: dict[str, ir.Value], dtype: ir.DataType, names) -> ir.Value:
    """Additive mask [batch, 1, new, past + new]: 0 where a new query may see a key (not after it,
    not padding), the dtype's lowest value elsewhere — what the exported graph adds for no past."""
    nodes = []

    def op(kind, *args, **attrs):
        node = ir.Node("", kind, list(args), attributes=[_attr(k, v) for k, v in attrs.items()],
                       name=next(names))
        node.outputs[0].name = node.name
        nodes.append(node)
        return node.outputs[0]

    def const(array):
        return op("Constant", value=ir.tensor(np.asarray(array)))

    zero, one = const(np.array(0, np.int64)), const(np.array(1, np.int64))
    total = op("Gather", op("Shape", inputs["attention_mask"]), one, axis=0)
    new = op("Gather", op("Shape", inputs["input_ids"]), one, axis=0)
    keys = op("Range", zero, total, one)                              # [T]
    queries = op("Range", op("Sub", total, new), total, one)          # [S]: positions of the new tokens
    causal = op("LessOrEqual", op("Unsqueeze", keys, const([0])), op("Unsqueeze", queries, const([1])))
    padding = op("Unsqueeze", op("Cast", inputs["attention_mask"], to=ir.DataType.BOOL), const([1, 2]))
    allowed = op("And", op("Unsqueeze", causal, const([0, 1])), padding)
    lowest = np.finfo(dtype.numpy()).min
    mask = op("Where", allowed, const(np.array(0, dtype.numpy())), const(np.array(lowest, dtype.numpy())))
    first = next(iter(graph))
    for node in nodes:
        graph.insert_before(first, node)
    return mask


def _attr(name, value):
    if not isinstance(value, ir.DataType) and hasattr(value, "numpy"):
        return ir.AttrTensor(name, value)
    return ir.AttrInt64(name, int(value))


def _text(model: ir.Model) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(0, _vocabulary(model), (_ROWS, _LENGTH))
    mask = np.ones_like(ids)
    mask[1, :_PADDING] = 0  # a shorter prompt, padded on the left as generate() pads a batch
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def _same_logits_step_by_step(cached: ir.Model, text: dict, full: np.ndarray) -> bool:
    """Whether the copy, fed the text's prompt with an empty cache as optimum makes it and then one
    token at a time, gives the plain graph's logits (`full`) for every real token."""
    from spa.runtime.validate import session

    past = [v.name for v in cached.graph.inputs if PAST_NAME.match(v.name)]
    present = [v.name for v in cached.graph.outputs[1:]]
    runner = session(cached, lean=True)  # a few short runs: building the session is the cost
    dtype = cached.graph.outputs[0].dtype.numpy()
    cache = {name: np.zeros((_ROWS, 1, 0, 1), dtype) for name in past}  # its widths need not be the layer's
    start = 0
    for end in range(_LENGTH - _STEPS, _LENGTH + 1):
        feed = {"input_ids": text["input_ids"][:, start:end], "attention_mask": text["attention_mask"][:, :end],
                "position_ids": text["position_ids"][:, start:end], **cache}
        logits, *outs = runner.run([cached.graph.outputs[0].name, *present], feed)
        expected = full[:, start:end]
        real = text["attention_mask"][:, start:end].astype(bool)
        scale = max(float(np.abs(expected[real]).max()), 1e-6)
        if logits.shape != expected.shape or not np.all(np.abs(logits - expected)[real] <= 1e-3 * scale):
            return False
        cache = dict(zip(past, outs))
        start = end
    return True


def _vocabulary(model: ir.Model) -> int:
    dims = model.graph.outputs[0].shape
    last = dims[-1] if dims is not None and len(dims) else None
    return last if isinstance(last, int) else 2
