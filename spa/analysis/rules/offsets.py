"""Ops that place channels at an offset: Concat, Split and Slice (a channel space spread over several
tensors, or a range of it).
"""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import Block, Rule, attr_int, attr_ints, input_or_none, norm_axis, register
from spa.analysis.rules.norm import opset
from spa.graph.shape_eval import static_value


def _other_axes(ctx, node, values, outputs, axis):
    """Spaces that do not involve `axis` pass straight through to every output; multi-axis spaces
    across `axis` (rotary halves, fused QKV within a head) go first, so a narrower space of an
    empty piece joins them instead of overlapping."""
    spaces = [(value, space) for value in values for space in ctx.spaces_on(value)]
    for value, space in sorted(spaces, key=lambda vs: axis not in vs[1].axes):
        if axis in space.axes:
            if space.axes != (axis,) and not (node.op_type == "Concat" and _concat_within(ctx, values, outputs[0], axis)) \
                    and not (node.op_type == "Split" and _split_within(ctx, space, outputs, axis)):
                raise Block(f"'{value.name}' carries a multi-axis channel space across axis {axis}")
            continue
        for out in outputs:
            wider = next((t for t in ctx.spaces_on(out) if set(space.axes) < set(t.axes)), None)
            if wider is None:
                ctx.carry(space, out)
                continue
            coords = wider.coordinates()
            kept = [i for i, a in enumerate(wider.axes) if a in space.axes]
            ctx.couple(wider, space, np.ravel_multi_index(tuple(coords[:, i] for i in kept),
                                                          [wider.dims[i] for i in kept]))
    for out in outputs:
        for target in ctx.spaces_on(out):
            if axis not in target.axes:
                for value in values:
                    if not any(set(s.axes) & set(target.axes) for s in ctx.spaces_on(value)) or ctx.get(
                            value, target.axes) is not None:
                        ctx.couple(ctx.operand(value, target.axes), target)


def _concat_within(ctx, values, y, axis) -> bool:
    """Concat along an axis of a multi-axis space (rotary's rotate_half joins the two halves of
    the head size): every input carries the same axes; the joined axis must stay whole."""
    axes_sets = {tuple(s.axes) for v in values for s in ctx.spaces_on(v) if axis in s.axes}
    if len(axes_sets) != 1:
        return False
    axes = axes_sets.pop()
    if ctx.get(y, axes) is not None:
        return True
    values = [v for v in values if ctx.dims(v)[axis] != 0]  # empty pieces add no positions
    if not all(ctx.get(v, axes) is not None for v in values):
        return False
    out = ctx.output_space(y, axes)
    ctx.keep_axis_whole(out, axis, "a Concat joins pieces along it")
    i = axes.index(axis)
    offset = 0
    for value in values:
        space = ctx.get(value, axes)
        coords = space.coordinates().copy()
        coords[:, i] += offset
        ctx.couple(space, out, np.ravel_multi_index(tuple(coords.T), out.dims))
        offset += ctx.dims(value)[axis]
    return True


def _split_within(ctx, space, outputs, axis) -> bool:
    """Split along an axis of a multi-axis space (GPT-NeoX's fused QKV, viewed as heads × 3·head
    size, split into q, k, v): each piece keeps the other axes; the split axis must stay whole."""
    ctx.keep_axis_whole(space, axis, "a Split cuts it at fixed sizes")
    i = space.axes.index(axis)
    offset = 0
    for out in outputs:
        if _empty_piece(ctx, space, out):
            continue
        piece = ctx.output_space(out, space.axes)
        coords = piece.coordinates().copy()
        coords[:, i] += offset
        ctx.couple(piece, space, np.ravel_multi_index(tuple(coords.T), space.dims))
        offset += ctx.dims(out)[axis]
    return True


@register
class Concat(Rule):
    op_types = ("Concat",)

    def analyze(self, node, ctx):
        y = node.outputs[0]
        inputs = [v for v in node.inputs if v is not None]
        axis = norm_axis(attr_int(node, "axis"), ctx.rank(y))
        _other_axes(ctx, node, inputs, [y], axis)
        if not any(ctx.get(v, (axis,)) for v in inputs):
            return
        out = ctx.output_space(y, (axis,))
        offset = 0
        for value in inputs:
            size = ctx.dims(value)[axis]
            if size:
                ctx.couple(ctx.operand(value, (axis,)), out, offset + np.arange(size))
            offset += size


@register
class Split(Rule):
    op_types = ("Split",)

    def analyze(self, node, ctx):
        x = node.inputs[0]
        outs = [o for o in node.outputs]
        axis = norm_axis(attr_int(node, "axis", 0), ctx.rank(x))
        _other_axes(ctx, node, [x], outs, axis)
        space = ctx.get(x, (axis,))
        if space is None:
            return
        offset = 0
        for out in outs:
            size = ctx.dims(out)[axis]
            ctx.couple(ctx.output_space(out, (axis,)), space, offset + np.arange(size))
            offset += size

    def update(self, node, sctx):
        x = node.inputs[0]
        axis = norm_axis(attr_int(node, "axis", 0), len(sctx.old_dims(x)))
        sizes = [sctx.new_dims(o)[axis] for o in node.outputs]
        if sizes == [sctx.old_dims(o)[axis] for o in node.outputs]:
            return
        if min(sizes) == 0:
            sctx.fail(f"Split '{node.name}' would produce an empty output")
        if "num_outputs" in node.attributes:
            del node.attributes["num_outputs"]
        if opset(node, sctx) >= 13:
            sctx.set_const_input(node, 1, sizes)
        else:
            sctx.set_attr_ints(node, "split", sizes)


def slice_params(node, ctx_or_sctx, rank: int, dims):
    """(axis, start, end, step) per sliced axis, normalized to the input's dims."""
    if opset(node, ctx_or_sctx) < 10:
        starts, ends = attr_ints(node, "starts"), attr_ints(node, "ends")
        axes = attr_ints(node, "axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        arrays = [static_value(input_or_none(node, i)) for i in range(1, 5)]
        if arrays[0] is None or arrays[1] is None or (input_or_none(node, 3) is not None and arrays[2] is None) \
                or (input_or_none(node, 4) is not None and arrays[3] is None):
            raise Block("slice bounds are computed at run time")
        starts, ends = arrays[0].tolist(), arrays[1].tolist()
        axes = arrays[2].tolist() if arrays[2] is not None else list(range(len(starts)))
        steps = arrays[3].tolist() if arrays[3] is not None else [1] * len(starts)
    result = []
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = norm_axis(int(a), rank)
        dim = dims[a]
        if not isinstance(dim, int):  # a symbolic (never a channel) axis: "to the end" keeps its name
            e = dim if st > 0 and e >= _TO_THE_END else e
            result.append((a, s, e, int(st)))
            continue
        s = max(0, min(dim, s + dim if s < 0 else s))
        e = max(0, min(dim, e + dim if e < 0 else e))
        result.append((a, s, e, int(st)))
    return result


_TO_THE_END = 2**31 - 1  # exporters write INT_MAX or INT64_MAX for an open end


def _bounds_constant(node) -> bool:
    return all(v is None or v.const_value is not None for v in node.inputs[1:])


def _slice_within(ctx, space, y, sliced: dict, hit: set) -> None:
    """Slicing along an axis of a multi-axis space (rotary's rotate_half cuts the head size in
    two): allowed while that axis stays whole, so the bounds keep their meaning."""
    for axis in hit:
        ctx.keep_axis_whole(space, axis, "a Slice cuts it at fixed bounds")
    if _empty_piece(ctx, space, y):
        return
    out = ctx.output_space(y, space.axes)
    coords = out.coordinates().copy()
    for i, axis in enumerate(space.axes):
        if axis in hit:
            start, _, step = sliced[axis]
            coords[:, i] = start + step * coords[:, i]
    ctx.couple(out, space, np.ravel_multi_index(tuple(coords.T), space.dims))


def _empty_piece(ctx, space, piece) -> bool:
    """A slice or split piece that is empty along an axis of `space` (partial rotary with the
    whole head size rotated leaves an empty pass-through part): it carries the other axes only."""
    dims = ctx.dims(piece)
    empty = [i for i, axis in enumerate(space.axes) if dims[axis] == 0]
    if not empty:
        return False
    kept = [i for i in range(len(space.axes)) if i not in empty]
    if kept:
        sub = ctx.output_space(piece, tuple(space.axes[i] for i in kept))
        coords = space.coordinates()
        ctx.couple(space, sub, np.ravel_multi_index(tuple(coords[:, i] for i in kept),
                                                    [space.dims[i] for i in kept]))
    return True


@register
class Slice(Rule):
    op_types = ("Slice",)

    def analyze(self, node, ctx):
        x, y = node.inputs[0], node.outputs[0]
        spaces = ctx.spaces_on(x)
        if not spaces:
            return
        dims = ctx.dims(x)
        sliced = {a: (s, e, st) for a, s, e, st in slice_params(node, ctx, len(dims), dims)}
        for space in spaces:
            hit = set(space.axes) & set(sliced)
            if not hit:
                ctx.carry(space, y)
                continue
            if len(space.axes) > 1:
                _slice_within(ctx, space, y, sliced, hit)
                continue
            if not _bounds_constant(node):
                raise Block("slice bounds are computed at run time")
            s, e, step = sliced[space.axes[0]]
            if step != 1:
                raise Block("slices channels with a step other than 1")
            ctx.couple(ctx.output_space(y, space.axes), space, s + np.arange(ctx.dims(y)[space.axes[0]]))

    def source_axes(self, node, ctx, axes):
        x = node.inputs[0]
        dims = ctx.dims(x)
        sliced = {a for a, s, e, st in slice_params(node, ctx, len(dims), dims) if (s, e, st) != (0, dims[a], 1)}
        return None if sliced & set(axes) else (0, axes)

    def update(self, node, sctx):
        x = node.inputs[0]
        old = sctx.old_dims(x)
        if old == sctx.new_dims(x):
            return
        params = slice_params(node, sctx, len(old), old)
        starts, ends = [], []
        changed = False
        for a, s, e, _ in params:
            kept = sctx.kept(x.name, a)
            if kept is None:
                starts.append(s)
                ends.append(e)
                continue
            changed = True
            new_s = int(np.sum(kept < s))
            starts.append(new_s)
            ends.append(new_s + int(np.sum((kept >= s) & (kept < e))))
        if not changed:
            return
        if opset(node, sctx) < 10:
            sctx.set_attr_ints(node, "starts", starts)
            sctx.set_attr_ints(node, "ends", ends)
            sctx.set_attr_ints(node, "axes", [a for a, *_ in params])
        else:
            sctx.set_const_input(node, 1, starts)
            sctx.set_const_input(node, 2, ends)
            sctx.set_const_input(node, 3, [a for a, *_ in params])
            if len(node.inputs) < 5 or node.inputs[4] is None:
                sctx.set_const_input(node, 4, [1] * len(params))
