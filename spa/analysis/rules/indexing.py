"""Gather (picks positions along an axis) and the ops that read widths rather than values:
Shape/Size, and ops whose outputs carry no channels.
"""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import Block, Rule, attr_int, const_array, norm_axis, register
from spa.analysis.rules.offsets import slice_params


def _pick_within(ctx, space, y, axis: int, index: int) -> None:
    """Gather one index of an axis of a multi-axis space (q, k or v out of a packed [3, E]
    projection): the output keeps the other axes; the picked axis must stay whole."""
    ctx.keep_axis_whole(space, axis, "a Gather picks one of its entries")
    i = space.axes.index(axis)
    index = index + space.dims[i] if index < 0 else index
    kept = [j for j in range(len(space.axes)) if j != i]
    out = ctx.output_space(y, tuple(a if a < axis else a - 1 for a in (space.axes[j] for j in kept)))
    coords = out.coordinates()
    full = np.zeros((out.size, len(space.axes)), np.int64)
    full[:, kept] = coords
    full[:, i] = index
    ctx.couple(out, space, np.ravel_multi_index(tuple(full.T), space.dims))


@register
class Gather(Rule):
    """Gather along a non-channel axis moves channel axes; along a channel axis with constant 1-D
    indices it selects channels (an index map), and the indices are renumbered after slicing."""
    op_types = ("Gather",)

    def analyze(self, node, ctx):
        data, indices = node.inputs
        y = node.outputs[0]
        rank = ctx.rank(data)
        axis = norm_axis(attr_int(node, "axis", 0), rank)
        extra = ctx.rank(indices) - 1
        if axis == 0 and rank == 2 and data.is_initializer() and data.const_value is not None:
            ctx.operand(data, (1,))  # an embedding table: its columns are the hidden channels
        for space in ctx.spaces_on(data):
            if axis in space.axes:
                idx = const_array(indices)
                if idx is not None and idx.ndim == 0 and len(space.axes) > 1:
                    _pick_within(ctx, space, y, axis, int(idx))
                    continue
                if idx is None or idx.ndim != 1 or space.axes != (axis,):
                    raise Block(f"Gather selects along channel axis {axis} of '{data.name}' with "
                                "indices that are not a constant list")
                idx = np.where(idx < 0, idx + space.size, idx)
                ctx.couple(ctx.output_space(y, (axis,)), space, idx)
                continue
            ctx.carry(space, y, lambda a: a if a < axis else a + extra)

    def source_axes(self, node, ctx, axes):
        axis = norm_axis(attr_int(node, "axis", 0), ctx.rank(node.inputs[0]))
        width = ctx.rank(node.inputs[1])
        if any(axis <= a < axis + width for a in axes):
            return None
        return 0, tuple(a if a < axis else a - width + 1 for a in axes)

    def update(self, node, sctx):
        data, indices = node.inputs
        axis = norm_axis(attr_int(node, "axis", 0), len(sctx.old_dims(data)))
        kept_in = sctx.kept(data.name, axis)
        if kept_in is None:
            return
        idx = const_array(indices)
        idx = np.where(idx < 0, idx + sctx.old_dims(data)[axis], idx)
        kept_out = sctx.kept(node.outputs[0].name, axis)
        chosen = idx if kept_out is None else idx[kept_out]
        sctx.set_const_input(node, 1, np.searchsorted(kept_in, chosen).astype(idx.dtype))


@register
class ShapeOf(Rule):
    """Shape and Size read widths at run time. Reading a non-channel dim (x.size(0) for a dynamic
    batch) is fine; reading an axis of a multi-axis space is fine while pruning leaves that axis
    whole (attention reads the head size to scale scores, and heads are removed whole)."""
    op_types = ("Shape", "Size")

    def analyze(self, node, ctx):
        x = node.inputs[0]
        spaces = ctx.spaces_on(x)
        if not spaces:
            return
        if node.op_type == "Size":
            raise Block(f"reads the size of '{x.name}', which carries channels")
        rank = ctx.rank(x)
        start = norm_axis(attr_int(node, "start", 0), rank)
        end = attr_int(node, "end", rank)
        end = norm_axis(end, rank) if end < 0 else min(end, rank)
        read = set()
        for use, _ in node.outputs[0].uses():
            read |= self._dims_read(use, start, end, ctx)
        for space in spaces:
            for axis in sorted(read & set(space.axes)):
                if self._only_feeds_target_shapes(node):
                    continue
                if len(space.axes) == 1:
                    raise Block(f"reads the width of channel axis {axis} of '{x.name}' at run time")
                ctx.keep_axis_whole(space, axis, f"{node.op_type} '{node.name}' reads its width")

    @staticmethod
    def _only_feeds_target_shapes(node) -> bool:
        """`x.view(-1, x.size(-1))`: the width read only goes into target shapes of Reshape or
        Expand, whose rules require it to land on a channel axis of the same group."""
        pending, seen = [node.outputs[0]], set()
        while pending:
            value = pending.pop()
            for use, index in value.uses():
                if use.op_type in ("Reshape", "Expand") and index == 1:
                    continue
                if id(use) in seen:
                    continue
                seen.add(id(use))
                if use.op_type not in ("Slice", "Gather", "Squeeze", "Unsqueeze", "Concat", "Cast", "Identity",
                                       "Reshape", "Equal", "Where", "Mul"):
                    return False
                pending.extend(use.outputs)
        return True

    @staticmethod
    def _dims_read(use, start: int, end: int, ctx) -> set[int]:
        """The axes a consumer of the shape reads: a Gather of constant dims reads only those."""
        if use.op_type == "Gather" and attr_int(use, "axis", 0) == 0:
            idx = const_array(use.inputs[1])
            if idx is not None:
                count = end - start
                return {start + (int(i) + count if int(i) < 0 else int(i)) for i in idx.reshape(-1)}
        if use.op_type == "Slice" and use.inputs[0] is not None:
            try:
                (_, s, e, step), = slice_params(use, ctx, 1, [end - start])
            except (Block, ValueError):
                return set(range(start, end))
            return {start + i for i in range(s, e, step)} if step > 0 else set(range(start, end))
        return set(range(start, end))


@register
class NoChannels(Rule):
    """Ops that build shapes, indices and constants; they never take channel-carrying inputs in
    a graph SPA can prune, so any channel space reaching them blocks."""
    op_types = ("Constant", "ConstantOfShape", "Range", "EyeLike", "RandomNormal", "RandomUniform",
                "RandomNormalLike", "RandomUniformLike", "NonZero")

    def analyze(self, node, ctx):
        for value in node.inputs:
            if ctx.spaces_on(value):
                raise Block(f"takes channel-carrying input '{value.name}'")
