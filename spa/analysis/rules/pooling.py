"""Pooling, reductions, Pad and Resize: each works per channel over other axes, so channel spaces
pass through as long as the op does not reduce, pad or resample along a channel axis."""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import Block, Rule, attr_int, attr_ints, const_array, input_or_none, int_list_input_or_attr, norm_axis, register
from spa.analysis.rules.elementwise import broadcast
from spa.analysis.rules.norm import opset, refuse_spaces_on


@register
class Pool(Rule):
    op_types = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
                "GlobalLpPool", "MaxRoiPool")

    def analyze(self, node, ctx):
        x = node.inputs[0]
        refuse_spaces_on(ctx, x, set(range(2, ctx.rank(x))), f"{node.op_type} pools over a channel axis")
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            raise Block("MaxPool indices are used (they encode the channel count)")
        for space in ctx.spaces_on(x):
            ctx.carry(space, node.outputs[0])


def reduced_axes(node, ctx, rank: int) -> list[int]:
    if node.op_type in ("ArgMax", "ArgMin"):
        return [norm_axis(attr_int(node, "axis", 0), rank)]
    uses_input = node.op_type == "ReduceSum" and opset(node, ctx) >= 13 or opset(node, ctx) >= 18
    axes = int_list_input_or_attr(node, 1, "axes") if uses_input else attr_ints(node, "axes")
    if not axes:
        if attr_int(node, "noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted(norm_axis(a, rank) for a in axes)


@register
class Reduce(Rule):
    op_types = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")

    def analyze(self, node, ctx):
        x, y = node.inputs[0], node.outputs[0]
        rank = ctx.rank(x)
        axes = reduced_axes(node, ctx, rank)
        # A norm's statistic over the last axis (a transformer's [batch, seq, hidden] stream)
        statistics = node.op_type in ("ReduceMean", "ReduceSumSquare", "ReduceL2") and attr_int(
            node, "keepdims", 1) and axes == [rank - 1]
        for space in ctx.spaces_on(x):
            if statistics and set(space.axes) & set(axes):
                ctx.tag(space, "hidden")  # RMSNorm / LayerNorm written as primitive ops
        if not (statistics and ctx.hidden and all(len(s.axes) == 1 for s in ctx.spaces_on(x))):
            refuse_spaces_on(ctx, x, set(axes), f"{node.op_type} reduces over a channel axis")
        else:
            return  # a statistic: its output carries no channels
        keep = attr_int(node, "keepdims", 1)
        for space in ctx.spaces_on(x):
            ctx.carry(space, y, None if keep else (lambda a: a - sum(1 for r in axes if r < a)))

    def mask_statistics(self, node, index, axes, keep, build):
        if index != 0 or node.op_type not in ("ReduceMean", "ReduceSumSquare", "ReduceL2") \
                or not set(axes) & set(reduced_axes(node, build, len(node.inputs[0].shape))):
            return False
        # the analysis let only a statistic over the last axis through (a norm's, written as ops)
        x = node.inputs[0]
        node.replace_input_with(0, build.op("Mul", [x, build.const(keep)]))
        if node.op_type == "ReduceMean":  # a mean over the kept channels: the sum over all, times all / kept
            y = node.outputs[0]
            scale = build.const(np.asarray(keep.size / float(keep.sum()), keep.dtype))
            build.take_over(y, build.op("Mul", [y, scale], behind=True))
        return True


@register
class Pad(Rule):
    op_types = ("Pad",)

    def analyze(self, node, ctx):
        x = node.inputs[0]
        rank = ctx.rank(x)
        spaces = ctx.spaces_on(x)
        if spaces:
            pads = int_list_input_or_attr(node, 1, "pads") if opset(node, ctx) >= 11 else attr_ints(node, "pads")
            axes_in = input_or_none(node, 3)
            axes = list(range(rank)) if axes_in is None else [norm_axis(int(a), rank) for a in const_array(axes_in)]
            n = len(axes)
            padded = {ax for i, ax in enumerate(axes) if pads[i] != 0 or pads[i + n] != 0}
            refuse_spaces_on(ctx, x, padded, "Pad pads a channel axis")
        broadcast(node, ctx, (0,))


@register
class Resize(Rule):
    op_types = ("Resize", "Upsample")

    def analyze(self, node, ctx):
        x, y = node.inputs[0], node.outputs[0]
        xd, yd = ctx.dims(x), ctx.dims(y)
        resized = {a for a in range(len(xd)) if xd[a] != yd[a]}
        refuse_spaces_on(ctx, x, resized, f"{node.op_type} resamples a channel axis")
        if ctx.spaces_on(x) and node.op_type == "Resize" and input_or_none(node, 3) is not None \
                and const_array(node.inputs[3]) is None:
            raise Block("Resize sizes are computed at run time")
        for space in ctx.spaces_on(x):
            ctx.carry(space, y)

    def update(self, node, sctx):
        sizes = input_or_none(node, 3) if node.op_type == "Resize" else None
        if sizes is None or sctx.new_dims(node.outputs[0]) == sctx.old_dims(node.outputs[0]):
            return
        dims = sctx.new_dims(node.outputs[0])
        axes = attr_ints(node, "axes")
        sctx.set_const_input(node, 3, [dims[a] for a in axes] if axes else list(dims))
