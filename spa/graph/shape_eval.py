"""Partial evaluation of shape subgraphs that stay computed (a dynamic batch keeps
`x.view(x.size(0), -1)` as Shape → Gather → Unsqueeze → Concat → Reshape): which entries of a
shape tensor are constants and which copy a dim of some tensor."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_ir as ir

Entry = "int | tuple[str, int] | tuple[str, int, int]"  # a constant, or (tensor, axis[, factor]): that dim (times factor)


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
    if op in ("Cast", "Identity", "Unsqueeze", "Squeeze") or _is_flat_reshape(node):
        return shape_entries(node.inputs[0], depth + 1)
    if op == "Slice":
        data = shape_entries(node.inputs[0], depth + 1)
        bounds = [None if len(node.inputs) <= i or node.inputs[i] is None or node.inputs[i].const_value is None
                  else node.inputs[i].const_value.numpy().reshape(-1).tolist() for i in (1, 2, 3, 4)]
        if data is None or bounds[0] is None or bounds[1] is None or len(bounds[0]) != 1 \
                or (bounds[2] not in (None, [0])) or (bounds[3] not in (None, [1])):
            return None
        return data[slice(bounds[0][0], bounds[1][0])]
    if op == "Mul":
        # kv_heads * n_rep (GQA's repeat_kv): a dim times a constant
        for this, other in ((0, 1), (1, 0)):
            k = node.inputs[other].const_value
            data = shape_entries(node.inputs[this], depth + 1)
            if k is not None and k.size == 1 and data is not None and len(data) == 1 and isinstance(data[0], tuple):
                name, axis, factor = (data[0] + (1,))[:3]
                return [(name, axis, factor * int(k.numpy().reshape(-1)[0]))]
        return None
    if op == "Where":
        return _where_entries(node, depth)
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


def _is_flat_reshape(node: ir.Node) -> bool:
    return node.op_type == "Reshape" and node.outputs[0].shape is not None and len(node.outputs[0].shape) == 1


def _where_entries(node: ir.Node, depth: int) -> list | None:
    """torch's expand writes `Where(Equal(shape, -1), ones, shape)`: entries equal to the probed
    constant take the other branch's constant, the rest pass through (a run-time dim is never
    negative, so it passes when the probe is)."""
    cond = node.inputs[0].producer()
    x, other_branch = node.inputs[2], node.inputs[1]
    if cond is None or cond.op_type != "Equal" or x not in cond.inputs or other_branch.const_value is None:
        return None
    probe = next((v for v in cond.inputs if v is not x), None)
    entries = shape_entries(x, depth + 1)
    if entries is None or probe is None or probe.const_value is None:
        return None
    probe = np.broadcast_to(probe.const_value.numpy().reshape(-1), (len(entries),))
    fill = np.broadcast_to(other_branch.const_value.numpy().reshape(-1), (len(entries),))
    out = []
    for e, p, f in zip(entries, probe, fill):
        if isinstance(e, int):
            out.append(int(f) if e == p else e)
        elif p < 0:
            out.append(e)
        else:
            return None
    return out


def constant_origins(value: ir.Value | None, depth: int = 0) -> list | None:
    """Where each entry of a shape tensor built by Concat can be rewritten: ("const", node, input
    index, element) for an entry held by a constant input; ("computed", node, input index) for a
    run-time entry that is a Concat input of its own (slicing may replace it by a constant);
    None otherwise. Slicing rewrites these when a width they spell out changes."""
    if value is None or value.const_value is not None or depth > 8:
        return None
    node = value.producer()
    if node is not None and (node.op_type in ("Cast", "Identity") or _is_flat_reshape(node)):
        return constant_origins(node.inputs[0], depth + 1)
    if node is not None and node.op_type == "Where":
        passed = constant_origins(node.inputs[2], depth + 1)
        entries = _where_entries(node, depth)
        before = shape_entries(node.inputs[2], depth + 1)
        if passed is None or entries is None:
            return None
        return [o if e == b else None for o, e, b in zip(passed, entries, before)]
    if node is None or node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
        return None
    origins = []
    for index, part in enumerate(node.inputs):
        entries = shape_entries(part)
        if entries is None:
            return None
        if part.const_value is not None:
            origins.extend(("const", node, index, i) for i in range(len(entries)))
        elif len(entries) == 1:
            origins.append(("computed", node, index))
        else:
            origins.extend([None] * len(entries))
    return origins


def static_value(value: ir.Value | None, depth: int = 0) -> np.ndarray | None:
    """The value of a small int tensor computed from static dims (rotary's `x.shape[-1] // 2`),
    or None when it depends on a dynamic dim or on an op not evaluated here."""
    if value is None or depth > 16:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Shape":
        entries = shape_entries(value)
        if entries is None:
            return None
        dims = []
        for name, axis in entries:
            d = node.inputs[0].shape[axis]
            if not isinstance(d, int):
                return None
            dims.append(d)
        return np.asarray(dims, np.int64)
    if op == "Gather" and node.inputs[0].producer() is not None and node.inputs[0].producer().op_type == "Shape":
        # pick static dims out of a shape whose other dims may be dynamic
        picked = shape_entries(value)
        source = node.inputs[0].producer().inputs[0]
        if picked is None or source.shape is None:
            return None
        dims = [source.shape[e[1]] if isinstance(e, tuple) else e for e in picked]
        if not all(isinstance(d, int) for d in dims):
            return None
        return np.asarray(dims, np.int64).reshape(value.shape.dims if value.shape is not None else -1)
    args = [static_value(v, depth + 1) for v in node.inputs]
    if any(a is None for a in args[:1]):
        return None
    if op in ("Cast", "Identity"):
        return args[0]
    if op in ("Unsqueeze", "Squeeze", "Reshape"):
        return args[0].reshape(value.shape) if value.shape is not None and all(
            isinstance(d, int) for d in value.shape) else None
    if op == "Gather" and args[1] is not None:
        return np.take(args[0], args[1], axis=_attr(node, "axis", 0))
    if op == "Concat" and all(a is not None for a in args):
        return np.concatenate([a.reshape(-1) for a in args])
    binary = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.floor_divide}
    if op in binary and len(args) == 2 and args[1] is not None:
        return binary[op](args[0], args[1])
    return None


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
            dim = src.shape[e[1]]
            factor = e[2] if len(e) > 2 else 1
            if factor != 1 and not isinstance(dim, int):
                return None
            out.append(dim * factor)
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
