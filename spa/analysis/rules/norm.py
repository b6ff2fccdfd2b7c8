"""Normalizations and softmax-like ops. Per-channel statistics (BatchNorm, InstanceNorm) keep
channels independent; GroupNorm ties each group's channels; an op that normalizes *across* a
channel axis (LayerNorm over it, Softmax over it, LRN) mixes channels and blocks the group."""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import Block, Rule, attr_float, attr_int, attr_ints, input_or_none, norm_axis, register
from spa.analysis.rules.elementwise import broadcast


def opset(node, ctx) -> int:
    return node.version or ctx.model.opset_imports.get("", 0)


def refuse_spaces_on(ctx, value, axes: set[int], why: str) -> None:
    for space in ctx.spaces_on(value):
        if set(space.axes) & axes:
            raise Block(f"{why} (axes {sorted(axes)} carry channels of '{value.name}')")


def kept_channel_norm(build, x, keep: np.ndarray, epsilon: float, centred: bool):
    """x normalised over its last axis counting only the kept channels (`keep`, 0/1), as a norm
    over the sliced, narrower tensor computes it: (x − mean) / √(var + ε) (centred, LayerNorm) or
    x / √(mean(x²) + ε) (RMSNorm); removed channels come out 0. For the oracle's masked copy.
    `keep` has x's dtype."""
    dtype = keep.dtype
    mask = build.const(keep)
    per_kept = build.const(np.asarray(1.0 / float(keep.sum()), dtype))
    if centred:
        mean = build.op("Mul", [build.reduce_sum_last(build.op("Mul", [x, mask])), per_kept])
        x = build.op("Sub", [x, mean])
    x = build.op("Mul", [x, mask])
    var = build.op("Mul", [build.reduce_sum_last(build.op("Mul", [x, x])), per_kept])
    return build.op("Div", [x, build.op("Sqrt", [build.op("Add", [var, build.const(np.asarray(epsilon, dtype))])])])


def per_channel(node, ctx, params: tuple[int, ...], stats_axes: set[int] = frozenset()):
    """y = f(x) with per-channel parameters along axis 1, statistics taken over `stats_axes`."""
    x, y = node.inputs[0], node.outputs[0]
    refuse_spaces_on(ctx, x, stats_axes, "statistics are taken over a channel axis")
    for space in ctx.spaces_on(x):
        if 1 in space.axes and space.axes != (1,):
            raise Block(f"channel axis of '{x.name}' is part of a multi-axis space")
    broadcast(node, ctx, (0,))
    y_space = ctx.output_space(y, (1,))
    ctx.couple(ctx.operand(x, (1,)), y_space)
    for index in params:
        value = input_or_none(node, index)
        if value is not None:
            ctx.couple(ctx.operand(value, (0,)), y_space)
    return y_space


@register
class BatchNormalization(Rule):
    op_types = ("BatchNormalization",)

    def analyze(self, node, ctx):
        if len([o for o in node.outputs if o is not None and o.uses()]) > 1:
            raise Block("training-mode outputs are used")
        per_channel(node, ctx, (1, 2, 3, 4))


@register
class InstanceNormalization(Rule):
    op_types = ("InstanceNormalization",)

    def analyze(self, node, ctx):
        per_channel(node, ctx, (1, 2), set(range(2, ctx.rank(node.inputs[0]))))


@register
class GroupNormalization(Rule):
    op_types = ("GroupNormalization",)

    def analyze(self, node, ctx):
        x = node.inputs[0]
        groups = attr_int(node, "num_groups")
        channels = ctx.dims(x)[1]
        if not groups or channels % groups:
            raise Block(f"{channels} channels do not divide into {groups} groups")
        per_group = [i for i in (1, 2) if ctx.dims(node.inputs[i])[0] == groups and groups != channels]
        y_space = per_channel(node, ctx, tuple(i for i in (1, 2) if i not in per_group),
                              set(range(2, ctx.rank(x))))
        tokens = ctx.virtual(f"{node.name}:groups", groups)
        ctx.couple(y_space, tokens, np.arange(channels) // (channels // groups))
        for index in per_group:
            ctx.couple(ctx.operand(node.inputs[index], (0,)), tokens)

    def update(self, node, sctx):
        x = node.inputs[0]
        old_c, new_c = sctx.old_dims(x)[1], sctx.new_dims(x)[1]
        if old_c != new_c:
            groups = attr_int(node, "num_groups")
            sctx.set_attr_int(node, "num_groups", new_c // (old_c // groups))


@register
class LayerNormalization(Rule):
    op_types = ("LayerNormalization",)

    def analyze(self, node, ctx):
        x = node.inputs[0]
        rank = ctx.rank(x)
        axis = norm_axis(attr_int(node, "axis", -1), rank)
        if any(o is not None and o.uses() for o in node.outputs[1:]):
            raise Block("mean / inverse-std outputs are used")
        # Couple first, refuse after: the channels downstream stay in the same (blocked) group
        # instead of appearing as an untraceable group of their own.
        broadcast(node, ctx, (0,))
        normalised = set(range(axis, rank))
        for space in ctx.spaces_on(x):
            if set(space.axes) & normalised:
                ctx.tag(space, "hidden")
        if ctx.hidden and all(len(s.axes) == 1 for s in ctx.spaces_on(x) if set(s.axes) & normalised):
            y = node.outputs[0]
            for space in ctx.spaces_on(y):
                for index in (1, 2):  # scale and bias, right-aligned with x
                    param = input_or_none(node, index)
                    if param is None or not set(space.axes) & normalised:
                        continue
                    in_axis = space.axes[0] - (rank - ctx.rank(param))
                    if in_axis >= 0 and ctx.dims(param)[in_axis] != 1:
                        ctx.couple(ctx.operand(param, (in_axis,)), space)
            return
        refuse_spaces_on(ctx, x, normalised, "LayerNormalization normalizes over a channel axis")

    def mask_statistics(self, node, index, axes, keep, build):
        x = node.inputs[0]
        rank = len(x.shape)
        normalised = set(range(norm_axis(attr_int(node, "axis", -1), rank), rank))
        if index != 0 or not set(axes) & normalised:
            return False
        if normalised != {rank - 1}:
            raise Block("LayerNormalization over several axes")
        y = kept_channel_norm(build, x, keep, attr_float(node, "epsilon", 1e-5), centred=True)
        y = build.op("Mul", [y, node.inputs[1]])
        if input_or_none(node, 2) is not None:
            y = build.op("Add", [y, node.inputs[2]])
        build.take_over(node.outputs[0], y)
        return True


@register
class AxisNormalizing(Rule):
    """Ops that normalize or select along one axis: fine unless that axis carries channels."""
    op_types = ("Softmax", "LogSoftmax", "Hardmax", "LpNormalization")

    def analyze(self, node, ctx):
        x = node.inputs[0]
        rank = ctx.rank(x)
        legacy = node.op_type != "LpNormalization" and opset(node, ctx) < 13
        axis = norm_axis(attr_int(node, "axis", 1 if legacy else -1), rank)
        axes = set(range(axis, rank)) if legacy else {axis}
        broadcast(node, ctx, (0,))
        refuse_spaces_on(ctx, x, axes, f"{node.op_type} mixes values along a channel axis")


@register
class AcrossChannels(Rule):
    """LRN and MeanVarianceNormalization take statistics across channels."""
    op_types = ("LRN", "MeanVarianceNormalization")

    def analyze(self, node, ctx):
        x = node.inputs[0]
        axes = {1} if node.op_type == "LRN" else set(attr_ints(node, "axes", [0, 2, 3]))
        broadcast(node, ctx, (0,))
        refuse_spaces_on(ctx, x, axes, f"{node.op_type} mixes values across channels")
