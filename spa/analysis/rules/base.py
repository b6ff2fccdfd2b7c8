"""The op-rule interface and registry.

A rule looks at one node, with its inferred shapes and constant inputs, and tells the analysis
context which channel spaces it couples (`analyze`). After slicing it rewrites whatever attribute
or constant input of that node encodes a width (`update`). When it cannot prove what the node does
to a channel axis it raises `Block` with a reason; unknown ops have no rule and block too.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

RULES: dict[str, "Rule"] = {}


class Block(Exception):
    """The rule cannot prove what this node does to a channel axis; the message says why."""


class Rule:
    op_types: tuple[str, ...] = ()
    domain: str = ""  # "" is the ONNX standard domain; "com.microsoft" holds ONNX Runtime's fused ops

    def analyze(self, node: ir.Node, ctx) -> None:
        raise NotImplementedError

    def source_axes(self, node: ir.Node, ctx, axes: tuple[int, ...]) -> tuple[int, tuple[int, ...]] | None:
        """For an output axis set that no space tracks yet, the input (index, axes) whose positions
        it copies one to one, if any. Lets a weight reached through Expand/Slice/Cast (a class
        token, a position table) join the group of what it is added to."""
        return None

    def update(self, node: ir.Node, sctx) -> None:
        """Rewrite width-carrying attributes or constant inputs after slicing (default: none)."""

    # -- quantization hooks (spa/analysis/rules/quant.py and the Cast/Mul see-through implement them)
    def couple_along(self, node: ir.Node, ctx, out_space) -> None:
        """A weight path through `source_axes` put `out_space` on this node's output: couple the
        per-channel constants that must be sliced with it (a per-channel scale or zero point)."""

    def dequantize_input(self, node: ir.Node, index: int, data: np.ndarray):
        """(real values, constants read, whether the output still copies the weight) for constant
        input `index` holding integer `data`, or None where this node does not dequantize it."""
        return None

    def zero_point(self, node: ir.Node, index: int) -> ir.Value | None:
        """The value that means a real zero at integer input `index` (None: the integer 0)."""
        return None


def register(cls: type[Rule]) -> type[Rule]:
    rule = cls()
    for op in cls.op_types:
        key = op if not cls.domain else f"{cls.domain}::{op}"
        if key in RULES:
            raise RuntimeError(f"two rules claim op {key}")
        RULES[key] = rule
    return cls


def rule_for(node: ir.Node) -> Rule | None:
    if node.domain in ("", "ai.onnx"):
        return RULES.get(node.op_type)
    return RULES.get(f"{node.domain}::{node.op_type}")


# ---- small helpers shared by rules -------------------------------------------------------------

def attr_int(node: ir.Node, name: str, default: int | None = None) -> int | None:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def attr_ints(node: ir.Node, name: str, default=None) -> list[int] | None:
    attr = node.attributes.get(name)
    return default if attr is None else list(attr.as_ints())


def const_array(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def input_or_none(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def int_list_input_or_attr(node: ir.Node, index: int, attr: str) -> list[int] | None:
    """Opsets moved many int-list attributes (axes, pads, split) to inputs; read either form."""
    value = input_or_none(node, index)
    if value is not None:
        arr = const_array(value)
        if arr is None:
            raise Block(f"input {index} ('{value.name}') is computed at run time, not a constant")
        return [int(v) for v in arr.reshape(-1)]
    return attr_ints(node, attr)


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
