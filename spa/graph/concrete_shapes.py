"""Concrete dims for a model whose inputs have symbolic ones, at chosen input sizes (for costing:
MACs at batch 1 and a given sequence length).

A dim inside the graph is resolved from the input sizes by its name (`sequence_length`), by
evaluating the expression ONNX Runtime's symbolic inference wrote for it (`2*sequence_length`,
`past_sequence_length + sequence_length`), or, where neither tells (an anonymous dim ONNX's own
inference left), by running that symbolic inference again on a weight-free copy of the graph with
the inputs fixed at those sizes (spa.graph.symbolic_shapes): every dim downstream then comes out
as a number.
"""
from __future__ import annotations

import ast
import functools
import math
import tempfile
import weakref

import onnx_ir as ir

from spa.graph.symbolic_shapes import _dims, _symbolic_shape_inference, _weightless_proto, _working_folder


def input_sizes(model: ir.Model, shapes: dict[str, list[int]]) -> dict[str, int]:
    """Symbol name → size, read off the inputs' declared dims against their chosen `shapes`
    (the first input naming a symbol decides it)."""
    sizes: dict[str, int] = {}
    for value in model.graph.inputs:
        shape = shapes.get(value.name)
        if value.shape is None or shape is None or len(shape) != len(value.shape):
            continue
        for d, n in zip(value.shape, shape):
            name = _name(d)
            if name is not None:
                sizes.setdefault(name, int(n))
    return sizes


def _name(d) -> str | None:
    if isinstance(d, int):
        return None
    value = getattr(d, "value", d)
    return value if isinstance(value, str) and value else None


def eval_dim(d, sizes: dict[str, int]) -> int | None:
    """An int for a dim: itself, a named size, or an arithmetic expression of named sizes
    (+ - * / //, floor, ceil, Min, Max as ONNX Runtime's symbolic inference writes them); None
    when it names something unknown."""
    if isinstance(d, int):
        return d
    text = _name(d)
    if text is None:
        return None
    if text in sizes:
        return sizes[text]
    tree = _parsed(text)
    try:
        value = None if tree is None else _eval(tree, sizes)
        return int(value) if value is not None and value == int(value) and value >= 0 else None
    except (ValueError, TypeError, ZeroDivisionError, RecursionError, OverflowError):
        return None


@functools.lru_cache(maxsize=4096)
def _parsed(text: str):
    try:
        return ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}
_CALLS = {"floor": math.floor, "ceil": math.ceil, "Min": min, "Max": max, "min": min, "max": max}


def _eval(node, sizes):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in sizes:
            raise ValueError(node.id)
        return sizes[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval(node.left, sizes), _eval(node.right, sizes))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, sizes)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS \
            and not node.keywords and node.args:
        return _CALLS[node.func.id](*(_eval(a, sizes) for a in node.args))
    raise ValueError(ast.dump(node))


_CACHE: "weakref.WeakKeyDictionary[ir.Model, dict]" = weakref.WeakKeyDictionary()


def inferred_shapes(model: ir.Model, shapes: dict[str, list[int]] | None = None) -> dict[str, list]:
    """Value name → dims from ONNX Runtime's symbolic shape inference on a weight-free copy: with
    the inputs' own symbolic dims (names and expressions of them), or with the inputs fixed at
    `shapes`; {} when it fails. Cached per model (while its node count holds) and shapes."""
    key = (None if shapes is None else tuple(sorted((k, tuple(v)) for k, v in shapes.items())), len(model.graph))
    cached = _CACHE.setdefault(model, {})
    if key not in cached:
        cached[key] = _infer(model, shapes)
    return cached[key]


def _infer(model: ir.Model, shapes: dict[str, list[int]] | None) -> dict[str, list]:
    try:
        proto = _weightless_proto(model)
        for vi in proto.graph.input if shapes else ():
            shape = shapes.get(vi.name)
            dims = vi.type.tensor_type.shape.dim
            if shape is None or len(shape) != len(dims):
                continue
            for dim, n in zip(dims, shape):
                dim.dim_value = int(n)  # clears dim_param
        with tempfile.TemporaryDirectory(prefix="spa-") as tmp, _working_folder(tmp):
            inferred = _symbolic_shape_inference().infer_shapes(proto, auto_merge=True)
    except Exception:  # noqa: BLE001 - an op it does not know: the dims stay open
        return {}
    if inferred is None:
        return {}
    return {vi.name: d for vi in inferred.graph.value_info if (d := _dims(vi)) is not None}


class Resolver:
    """Resolves a value's dims to ints at the given input sizes: `resolve(value, dims)` replaces
    each open entry of `dims` (a value's dims, possibly with planned widths) by its size; an entry
    nothing resolves stays as it is. Symbolic inference runs only for a value whose own dims do not
    tell (first with symbolic inputs, which keeps dim names; then with the inputs fixed)."""

    def __init__(self, model: ir.Model, shapes: dict[str, list[int]]):
        self.model, self.shapes = model, shapes
        self.sizes = _Recording(input_sizes(model, shapes))
        self.fixed_used = False  # whether a dim came from inference with the inputs fixed

    @property
    def used(self) -> set[str]:
        """The names of the input sizes some resolved dim depended on."""
        return set(self.sizes.read)

    def resolve(self, value: ir.Value, dims):
        if dims is not None and all(isinstance(d, int) for d in dims):
            return dims
        out = None if dims is None else [eval_dim(d, self.sizes) for d in dims]
        for fixed in (None, self.shapes):
            if out is not None and None not in out:
                break
            inferred = inferred_shapes(self.model, fixed).get(value.name)
            if inferred is None or out is not None and len(inferred) != len(out):
                continue
            found = [eval_dim(d, self.sizes) for d in inferred]
            self.fixed_used |= fixed is not None and any(f is not None for f in found)
            out = found if out is None else [o if o is not None else f for o, f in zip(out, found)]
        if dims is None:
            return None if out is None or None in out else tuple(out)
        return tuple(d if o is None else o for o, d in zip(out, dims))


class _Recording(dict):
    """A dict that remembers which keys were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set = set()

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.read.add(key)
        return value
