"""Partial evaluation of shape subgraphs that stay computed (a dynamic batch keeps
`x.view(x.size(0), -1)` as Shape → Gather → Unsqueeze → Concat → Reshape): which entries of a
shape tensor are constants and which copy a dim of some tensor."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_ir as ir

Entry = "int | tuple[str, int]"  # a constant, or (tensor name, axis): that tensor's dim


def shape_entries(value: ir.Value | None, depth: int = 0) -> list | None:
    """The entries of a 1-D (or scalar) int shape tensor, or None when they cannot be told."""
    if value is None or depth > 16:
        return None
    if value.const_value is not None:
        return [int(v) for v in value.const_value.numpy().reshape(-1)]
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Shape":
        x = node.inputs[0]
        if x.shape is None:
            return None
        rank = len(x.shape)
        start = _attr(node, "start", 0)
        end = _attr(node, "end", rank)
        start, end = (s + rank if s < 0 else s for s in (start, end))
        return [(x.name, a) for a in range(max(0, start), min(rank, end))]
    if op in ("Cast", "Identity", "Unsqueeze", "Squeeze"):
        return shape_entries(node.inputs[0], depth + 1)
    if op == "Concat":
        parts = [shape_entries(v, depth + 1) for v in node.inputs]
        return None if any(p is None for p in parts) else [e for p in parts for e in p]
    if op == "Gather" and _attr(node, "axis", 0) == 0 and node.inputs[1].const_value is not None:
        data = shape_entries(node.inputs[0], depth + 1)
        if data is None:
            return None
        idx = node.inputs[1].const_value.numpy().reshape(-1)
        return [data[int(i)] for i in idx]
    return None


def constant_origins(value: ir.Value | None) -> list | None:
    """For each entry of a shape tensor built by Concat, where its constant lives: (node, input
    index, element index) of the constant input that holds it, or None for a computed entry.
    Slicing rewrites those constants when a width they spell out changes."""
    if value is None or value.const_value is not None:
        return None
    node = value.producer()
    if node is None or node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
        return None
    origins = []
    for index, part in enumerate(node.inputs):
        entries = shape_entries(part)
        if entries is None:
            return None
        if part.const_value is not None:
            origins.extend((node, index, i) for i in range(len(entries)))
        else:
            origins.extend([None] * len(entries))
    return origins


def _attr(node, name, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def reshape_output_dims(x: ir.Value, entries: list, values: dict[str, ir.Value]) -> list | None:
    """Output dims of Reshape(x, entries) — ints where they follow, symbols kept as names."""
    in_dims = list(x.shape)
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, tuple):
            src = values.get(e[0])
            if src is None or src.shape is None:
                return None
            out.append(src.shape[e[1]])
        elif e == 0:
            out.append(in_dims[i])
        else:
            out.append(e)
    if out.count(-1) > 1:
        return None
    if -1 in out:
        num_int, num_sym = _split(in_dims)
        den_int, den_sym = _split([d for d in out if d != -1])
        if num_sym != den_sym or den_int == 0 or num_int % den_int:
            return None
        out[out.index(-1)] = num_int // den_int
    return out


def _split(dims) -> tuple[int, Counter]:
    ints = int(np.prod([d for d in dims if isinstance(d, int)], dtype=np.int64))
    return ints, Counter(str(d) for d in dims if not isinstance(d, int))


def resolve_reshapes(model: ir.Model) -> int:
    """Fill in Reshape output dims that shape inference left unknown; returns how many."""
    values = {v.name: v for v in model.graph.inputs}
    fixed = 0
    for node in model.graph:
        for v in node.outputs:
            values[v.name] = v
        if node.op_type != "Reshape" or node.inputs[1].const_value is not None:
            continue
        y, x = node.outputs[0], node.inputs[0]
        if x.shape is None or (y.shape is not None and all(isinstance(d, int) for d in y.shape)):
            continue
        entries = shape_entries(node.inputs[1])
        dims = None if entries is None else reshape_output_dims(x, entries, values)
        if dims is not None:
            y.shape = ir.Shape(dims)
            fixed += 1
    return fixed
