"""Ops that regroup a tensor's axes: Reshape/Flatten/Squeeze/Unsqueeze (a channel axis split or
merged: blocks, head structure) and Transpose. Concat/Split/Slice are in offsets.py, Gather and
Shape/Size in indexing.py.
"""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import Block, Rule, attr_ints, const_array, register
from spa.analysis.rules.shape_consts import check_computed_shape, rewrite_computed_shape
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
