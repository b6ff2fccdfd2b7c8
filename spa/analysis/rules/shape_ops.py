"""Ops that move channels between axes and tensors: Reshape/Flatten/Squeeze/Unsqueeze (regroup
axes), Transpose, Concat/Split/Slice (offsets), Gather, and Shape/Size (which read widths)."""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import Block, Rule, attr_int, attr_ints, const_array, input_or_none, norm_axis, register
from spa.analysis.rules.norm import opset
from spa.analysis.rules.shape_consts import check_computed_shape, rewrite_computed_shape
from spa.graph.shape_eval import shape_entries, static_value
from spa.analysis.space import regroup_map, reshape_groups


def _numeric(dims_a: tuple, dims_b: tuple) -> tuple[list[int], list[int]]:
    """Give each symbolic dim a unique stand-in size so symbolic batch dims match only themselves.
    Expressions of symbols ('batch_size*sequence_length', Swin's 'floor(Pad_o0__d1/4)') are
    evaluated on those stand-ins, which are divisible by every small window and patch size."""
    names: dict[str, int] = {}
    return [_stand_in(d, names) for d in dims_a], [_stand_in(d, names) for d in dims_b]


_SMOOTH = 2 ** 12 * 3 ** 6 * 5 ** 3 * 7 ** 2
_PRIMES = (1009, 1013, 1019, 1021, 1031, 1033, 1039, 1049, 1051, 1061, 1063, 1069, 1087, 1091, 1093, 1097)


def _stand_in(dim, names: dict) -> int:
    if isinstance(dim, int):
        return dim
    text = str(dim).replace(" ", "")
    if text.isidentifier():
        if text not in names:
            names[text] = _SMOOTH * _PRIMES[len(names) % len(_PRIMES)] * (1 + len(names) // len(_PRIMES))
        return names[text]
    import sympy

    try:
        expr = sympy.sympify(text, locals={"floor": sympy.floor, "ceiling": sympy.ceiling, "Max": sympy.Max,
                                           "Min": sympy.Min, "Mod": sympy.Mod})
        value = expr.subs({sym: _stand_in(str(sym), names) for sym in expr.free_symbols})
        if value.is_integer:
            return int(value)
    except (sympy.SympifyError, TypeError, ValueError):
        pass
    return names.setdefault(text, _SMOOTH * 1_000_003 * (1 + len(names)))


def regroup(ctx, x, y, unit_heads: bool = False) -> None:
    """Couple channel spaces across an op that only changes how axes are grouped (a reshape).

    unit_heads: a Reshape of [batch, seq, C] into [batch, seq, 1, C] keeps the size-1 axis as the
    outer axis of a product space: it is a head count of one (a single key/value head)."""
    spaces = ctx.spaces_on(x)
    if not spaces:
        return
    xd, yd = _numeric(ctx.dims(x), ctx.dims(y))
    groups = reshape_groups(xd, yd)
    if groups is None:
        raise Block(f"cannot match the axes of {ctx.dims(x)} and {ctx.dims(y)}")
    symbolic = {a for a, d in enumerate(ctx.dims(x)) if not isinstance(d, int)}
    for space in spaces:
        run = next(((gi, gj) for gi, gj in groups if set(space.axes) <= set(gi)), None)
        if run is not None and symbolic & set(run[0]):
            raise Block(f"the reshape merges channel axes {space.axes} of '{x.name}' with a dynamic axis")
        if run is not None:
            gi, gj = run
            in_axes = [a for a in gi if xd[a] != 1]
            out_axes = [a for a in gj if yd[a] != 1] or [gj[0]]
            lead = [a for a in gj if a < out_axes[0]]
            if unit_heads and lead and len(out_axes) == 1 and in_axes == list(space.axes) \
                    and len(xd) == 3 and len(yd) == 4 and (lead[-1], out_axes[0]) == (2, 3):
                out_axes = [lead[-1], out_axes[0]]  # [batch, seq, C] → [batch, seq, 1 head, C]
            if len(out_axes) == 1:
                # Merge (or plain move): each output position maps onto a channel position.
                merged = regroup_map({a: xd[a] for a in gi}, space.axes, gi)
                ctx.couple(ctx.output_space(y, (out_axes[0],)), space, merged)
                continue
            if in_axes == list(space.axes) and len(in_axes) == 1:
                # Split one channel axis into several: the output is a multi-axis space. Its
                # inner axis is pruned unless couplings make whole outer slices the channels.
                ctx.couple(ctx.output_space(y, tuple(out_axes), prune_axis=out_axes[-1]), space)
                continue
        _regroup_axis_by_axis(ctx, space, x, y, xd, yd, groups)


def _regroup_axis_by_axis(ctx, space, x, y, xd, yd, groups) -> None:
    """A multi-axis space whose axes sit in different runs (GQA's Unsqueeze → Expand → Reshape
    moves the key/value head axis and merges it with the repeat axis): each axis must move or
    merge into one output axis of its own."""
    out_axes, per_axis_maps = [], []
    symbolic = {a for a, d in enumerate(ctx.dims(x)) if not isinstance(d, int)}
    for axis in space.axes:
        gi, gj = next((gi, gj) for gi, gj in groups if axis in gi)
        if symbolic & set(gi):
            raise Block(f"the reshape merges channel axis {axis} of '{x.name}' with a dynamic axis")
        if sum(1 for a in gi if a in space.axes) > 1:
            raise Block(f"the reshape regroups channel axes {space.axes} of '{x.name}' with each other")
        targets = [a for a in gj if yd[a] != 1] or [gj[0]]
        if len(targets) != 1:
            raise Block(f"the reshape splits channel axis {axis} of '{x.name}' together with other axes")
        out_axes.append(targets[0])
        per_axis_maps.append(regroup_map({a: xd[a] for a in gi}, (axis,), gi))
    prune = None if space.prune_axis is None else out_axes[space.axes.index(space.prune_axis)]
    out = ctx.output_space(y, tuple(out_axes), prune_axis=prune)
    coords = out.coordinates()
    source = tuple(m[coords[:, i]] for i, m in enumerate(per_axis_maps))
    ctx.couple(out, space, np.ravel_multi_index(source, space.dims))


def new_shape_constant(shape: np.ndarray, old: tuple, new: tuple) -> np.ndarray:
    shape = shape.copy()
    for axis, (o, n) in enumerate(zip(old, new)):
        if o != n and shape[axis] not in (-1, 0):
            shape[axis] = n
    return shape


@register
class Reshape(Rule):
    op_types = ("Reshape",)

    def analyze(self, node, ctx):
        regroup(ctx, node.inputs[0], node.outputs[0], unit_heads=True)
        if const_array(node.inputs[1]) is None and ctx.spaces_on(node.outputs[0]):
            check_computed_shape(ctx, node.inputs[1], node.outputs[0], (-1,))

    def update(self, node, sctx):
        y = node.outputs[0]
        old, new = sctx.old_dims(y), sctx.new_dims(y)
        if old == new:
            return
        if const_array(node.inputs[1]) is not None:
            sctx.set_const_input(node, 1, new_shape_constant(const_array(node.inputs[1]), old, new))
        else:
            rewrite_computed_shape(sctx, node.inputs[1], old, new, (-1, 0))

    def source_axes(self, node, ctx, axes):
        """Only when it adds or drops size-1 axes (a bias [C] made [1, C, 1, 1])."""
        return Regroup.source_axes(self, node, ctx, axes)


@register
class Regroup(Rule):
    """Flatten, Squeeze and Unsqueeze change only size-1 axes or the grouping of axes."""
    op_types = ("Flatten", "Squeeze", "Unsqueeze")

    def analyze(self, node, ctx):
        regroup(ctx, node.inputs[0], node.outputs[0])

    def source_axes(self, node, ctx, axes):
        """Squeeze/Unsqueeze only add or drop size-1 axes: the other axes keep their order."""
        if node.op_type == "Flatten":
            return None
        x, y = node.inputs[0], node.outputs[0]
        kept_in = [a for a, d in enumerate(ctx.dims(x)) if d != 1]
        kept_out = [a for a, d in enumerate(ctx.dims(y)) if d != 1]
        if len(kept_in) != len(kept_out) or any(a not in kept_out for a in axes):
            return None
        return 0, tuple(kept_in[kept_out.index(a)] for a in axes)


@register
class Transpose(Rule):
    op_types = ("Transpose",)

    def analyze(self, node, ctx):
        x, y = node.inputs[0], node.outputs[0]
        rank = ctx.rank(x)
        perm = attr_ints(node, "perm", list(reversed(range(rank))))
        for space in ctx.spaces_on(x):
            ctx.carry(space, y, perm.index)

    def source_axes(self, node, ctx, axes):
        perm = attr_ints(node, "perm", list(reversed(range(ctx.rank(node.inputs[0])))))
        return 0, tuple(perm[a] for a in axes)


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


def _slice_params(node, ctx_or_sctx, rank: int, dims):
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
        sliced = {a: (s, e, st) for a, s, e, st in _slice_params(node, ctx, len(dims), dims)}
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
        sliced = {a for a, s, e, st in _slice_params(node, ctx, len(dims), dims) if (s, e, st) != (0, dims[a], 1)}
        return None if sliced & set(axes) else (0, axes)

    def update(self, node, sctx):
        x = node.inputs[0]
        old = sctx.old_dims(x)
        if old == sctx.new_dims(x):
            return
        params = _slice_params(node, sctx, len(old), old)
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
                (_, s, e, step), = _slice_params(use, ctx, 1, [end - start])
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
