"""The op-rule interface and registry.

A rule looks at one node, with its inferred shapes and constant inputs, and tells the analysis
context which channel spaces it couples (`analyze`). After slicing it rewrites whatever attribute
or constant input of that node encodes a width (`update`). When it cannot prove what the node does
to a channel axis it raises `Block` with a reason; unknown ops have no rule and block too.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx_ir as ir

RULES: dict[str, "Rule"] = {}


class Block(Exception):
    """The rule cannot prove what this node does to a channel axis; the message says why."""


class SinkLayout(NamedTuple):
    """How a compensable sink reads its weight as a matrix (rows are outputs, columns the flattened
    inputs of input 0); spa.statistics.sinks.SinkWeight holds it with the node and the weight."""
    bias: ir.Value | None  # the constant added to the outputs (a Conv's B, a MatMul's following Add)
    kind: str              # "conv", "gemm" or "matmul"
    taps: int              # columns per input position (k_h·k_w for a Conv, else 1)
    transposed: bool       # the weight is stored (in, out): the matrix is its transpose


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

    # -- the oracle's masked reference for a normalised (hidden) width (spa.passes.mask)
    def mask_statistics(self, node: ir.Node, index: int, axes: tuple[int, ...], keep: np.ndarray, build) -> bool:
        """In the masked copy, make a statistic this node takes across input `index`'s channels
        (on `axes`) count only the kept ones, as the sliced model's narrower tensor does: `keep`
        is 1 on kept channels, 0 on removed ones, broadcastable against the input; `build` a
        spa.passes.mask.StatisticsBuilder. True when the node was rewritten; raise Block where
        it cannot be. Default: no statistic across channels (each channel goes its own way, or
        the group was refused)."""
        return False

    # -- compute-layer hooks (conv.py, linear.py; quant.py's integer kernels inherit them), read by
    # spa.analysis.metrics, spa.report.tables and spa.statistics.sinks through `standard_rule`.
    # The defaults: not a compute layer, no MACs, not a compensable sink.

    #: An integer kernel (ConvInteger, QLinearConv, MatMulInteger, QLinearMatMul): costed in MACs,
    #: never compensated, and left out of the per-layer report (which lists float layers).
    quantized: bool = False

    def weight_input(self, node: ir.Node) -> int | None:
        """The input holding the layer's weight (whose shape fixes its input and output widths), or
        None: not a compute layer."""
        return None

    def macs(self, node: ir.Node, dims) -> int | None:
        """Multiply-accumulates of the node, `dims(value)` giving a value's dims (count symbolic ones
        with `static_numel`/`static_dim`), or None: none counted."""
        return None

    def layer_widths(self, node: ir.Node, shape: list[int]) -> tuple[int, int] | None:
        """(input channels, output channels) read from the weight's `shape` and the attributes."""
        return None

    def sink_layout(self, node: ir.Node, weight: ir.Value) -> SinkLayout | None:
        """How this node, as a sink of input 0, reads its constant `weight` (input `weight_input`)
        as a matrix; None where SPA cannot compensate it."""
        return None


STANDARD_DOMAINS = ("", "ai.onnx")


def _key(op_type: str, domain: str) -> str:
    return op_type if domain in STANDARD_DOMAINS else f"{domain}::{op_type}"


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator for SPA's built-in rules: one instance for each of `cls.op_types`."""
    rule = cls()
    for op in cls.op_types:
        key = _key(op, cls.domain)
        if key in RULES:
            raise RuntimeError(f"two rules claim op {key}")
        RULES[key] = rule
    return cls


# rules that register_rule(replace=True) displaced, newest last: unregister_rule puts them back
_DISPLACED: dict[str, list[Rule]] = {}


def register_rule(op_type, rule, *, domain: str = "", replace: bool = False) -> Rule:
    """Teach SPA what an op does to channels, so that groups through it become prunable.

    SPA refuses (blocks) every group that passes through an op it has no rule for: an unknown op
    never passes channels through silently. A custom op — your own domain's, or an ONNX Runtime
    contrib op such as `com.microsoft::FusedConv` — gets a rule here, like Torch-Pruning's
    `register_customized_layer`:

        import spa
        from spa.analysis.rules.conv import Conv          # FusedConv reads X, W, B as Conv does

        spa.register_rule("FusedConv", Conv(), domain="com.microsoft")
        result = spa.prune("model.onnx", ratio=0.3)       # its groups are prunable now

    `op_type`: an op type, or several (a tuple or list) sharing the rule. `domain`: the node's
    domain ("" and "ai.onnx" are the ONNX standard domain). `rule`: an instance of a
    `spa.analysis.rules.Rule` subclass (a subclass itself is instantiated with no arguments). A
    rule's `analyze(node, ctx)` couples the node's channel spaces (`ctx.couple`, `ctx.carry`,
    `ctx.sink`, …) or raises `spa.analysis.rules.Block` with a reason where it cannot prove what
    the node does; `update(node, sctx)` rewrites width-carrying attributes after slicing. Reusing
    a built-in rule (`spa.analysis.rules.elementwise.Unary` for an activation, `conv.Conv`,
    `linear.MatMul`, …) is the common case. The pruned model still has to run in ONNX Runtime,
    which validates it, so the op needs an ONNX Runtime kernel (contrib ops have one; a model-local
    ONNX function is inlined by SPA and needs no rule).

    An op that already has a rule (built in or registered) is refused with ValueError unless
    `replace=True`; `unregister_rule` removes a registered rule and restores the one it replaced.
    Returns the rule instance."""
    import spa.analysis.rules  # noqa: F401  (the built-in rules first: a later import would clash)

    if isinstance(rule, type) and issubclass(rule, Rule):
        rule = rule()
    if not isinstance(rule, Rule):
        raise TypeError(f"register_rule needs a spa.analysis.rules.Rule (instance or subclass), "
                        f"not {type(rule).__name__}")
    ops = (op_type,) if isinstance(op_type, str) else tuple(op_type)
    if not ops or not all(isinstance(op, str) and op for op in ops):
        raise ValueError(f"register_rule: op_type must be a non-empty op name or names, not {op_type!r}")
    keys = [_key(op, domain or "") for op in ops]
    taken = [k for k in keys if k in RULES]
    if taken and not replace:
        raise ValueError(f"op {', '.join(taken)} already has a rule ({type(RULES[taken[0]]).__name__}); "
                         "pass replace=True to override it")
    for key in keys:
        if key in RULES:
            _DISPLACED.setdefault(key, []).append(RULES[key])
        RULES[key] = rule
    return rule


def unregister_rule(op_type, *, domain: str = "") -> None:
    """Undo `register_rule` for `op_type` (one name or several): the rule it replaced, if any, is
    restored; otherwise the op has no rule again (and blocks). KeyError if it has no rule."""
    ops = (op_type,) if isinstance(op_type, str) else tuple(op_type)
    for op in ops:
        key = _key(op, domain or "")
        if key not in RULES:
            raise KeyError(f"op {key} has no rule")
        displaced = _DISPLACED.get(key)
        if displaced:
            RULES[key] = displaced.pop()
            if not displaced:
                del _DISPLACED[key]
        else:
            del RULES[key]


def rule_for(node: ir.Node) -> Rule | None:
    return RULES.get(_key(node.op_type, node.domain))


def standard_rule(node: ir.Node) -> Rule | None:
    """`rule_for`, for a node of the ONNX standard domain only: the compute-layer hooks (MACs,
    layers, sinks) describe ONNX ops, so a contrib op that reuses a rule for its channels
    (com.microsoft::FusedConv with Conv's) is not costed or compensated as that op."""
    return rule_for(node) if node.domain in STANDARD_DOMAINS else None


# ---- small helpers shared by rules -------------------------------------------------------------

def attr_int(node: ir.Node, name: str, default: int | None = None) -> int | None:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_float()


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


def static_dim(d) -> int:
    """Symbolic dims (a dynamic batch) count as 1."""
    return d if isinstance(d, int) else 1


def static_numel(dims) -> int:
    return int(np.prod([static_dim(d) for d in dims], dtype=np.int64))
