"""Gemm and MatMul: the contracted axis couples the two operands (a sink); the output's last axis
is a fresh channel space tied to the weight's output axis. Both are compute layers (MACs, widths)
and compensable sinks."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.analysis.rules.base import (
    Block, Rule, SinkLayout, attr_int, input_or_none, register, static_dim, static_numel,
)
from spa.analysis.rules.elementwise import keep_varying_axes_whole


@register
class Gemm(Rule):
    op_types = ("Gemm",)

    def analyze(self, node, ctx):
        a, b = node.inputs[0], node.inputs[1]
        c = input_or_none(node, 2)
        y = node.outputs[0]
        a_k = 0 if attr_int(node, "transA", 0) else 1
        b_k = 1 if attr_int(node, "transB", 0) else 0
        for space in ctx.spaces_on(a):
            if space.axes not in ((0,), (1,)):
                raise Block(f"channels of '{a.name}' span both axes")
        n_space = ctx.output_space(y, (1,))
        ctx.couple(ctx.operand(b, (1 - b_k,)), n_space)
        if c is not None:
            c_dims = ctx.dims(c)
            if len(c_dims) >= 1 and c_dims[-1] != 1:
                ctx.couple(ctx.operand(c, (len(c_dims) - 1,)), n_space)
            if len(c_dims) == 2 and c_dims[0] != 1 and ctx.get(a, (1 - a_k,)):
                raise Block("the bias varies along rows that carry channels")
        k_space = ctx.operand(a, (a_k,))
        ctx.couple(k_space, ctx.operand(b, (b_k,)))
        ctx.sink(0, k_space)
        m_space = ctx.get(a, (1 - a_k,))
        if m_space is not None:
            ctx.couple(m_space, ctx.output_space(y, (0,)))

    def weight_input(self, node):
        return 1

    def macs(self, node, dims):
        a = dims(node.inputs[0])
        k = a[0] if attr_int(node, "transA", 0) else a[1]
        return static_numel(dims(node.outputs[0])) * static_dim(k)

    def layer_widths(self, node, shape):
        return (shape[1], shape[0]) if attr_int(node, "transB", 0) else (shape[-2], shape[-1])

    def sink_layout(self, node, weight):
        if attr_int(node, "transA", 0):
            return None
        bias = input_or_none(node, 2)
        if bias is not None and (not bias.is_initializer() or len(bias.shape) > 1 and bias.shape[0] != 1):
            return None  # a computed bias, or one that varies per row
        return SinkLayout(bias, "gemm", 1, not attr_int(node, "transB", 0))


@register
class MatMul(Rule):
    """A @ B over batch axes. The contracted axis K couples A's and B's channel spaces (a plain K
    channel of A is a sink); A's row axis M, B's column axis N and the batch axes carry to the
    output. A multi-axis space may be contracted in part: attention's Q·Kᵀ contracts the head size
    and keeps the head axis, so the output's head positions merge each head's dims into one root
    channel — whole heads are what can be removed."""
    op_types = ("MatMul",)
    b_index = 1  # QLinearMatMul reads B at input 3

    def analyze(self, node, ctx):
        a, b = node.inputs[0], node.inputs[self.b_index]
        y = node.outputs[0]
        ra, rb, r = ctx.rank(a), ctx.rank(b), ctx.rank(y)
        if ra < 2 or rb < 2:
            if ctx.spaces_on(a) or ctx.spaces_on(b):
                raise Block("a 1-D operand carries channels")
            return
        a_out = {ax: ax + r - ra for ax in range(ra - 2)} | {ra - 2: r - 2}
        b_out = {ax: ax + r - rb for ax in range(rb - 2)} | {rb - 1: r - 1}
        a_to_b = {ax: ax - ra + rb for ax in range(ra - 2)} | {ra - 1: rb - 2}
        b_to_a = {v: k for k, v in a_to_b.items()}
        is_weight = ctx.is_weight  # a constant, or one dequantized or cast on the way
        carried = []  # (source space, output axes, position map source -> output positions or None)
        contracted = set()
        for value, out_of, other, other_of, k_axis in ((a, a_out, b, a_to_b, ra - 1), (b, b_out, a, b_to_a, rb - 2)):
            for space in ctx.spaces_on(value):
                if k_axis not in space.axes:
                    carried.append((space, tuple(out_of[ax] for ax in space.axes), None))
                    continue
                if id(space) in contracted:
                    continue
                partner_axes = tuple(other_of.get(ax, -1) for ax in space.axes)
                if -1 in partner_axes or any(ctx.dims(other)[p] != ctx.dims(value)[ax]
                                             for p, ax in zip(partner_axes, space.axes)):
                    raise Block(f"channels of '{value.name}' meet a broadcast axis of '{other.name}'")
                partner = ctx.operand(other, partner_axes)
                ctx.couple(space, partner)
                contracted.update((id(space), id(partner)))
                if space.axes == (k_axis,):
                    ctx.sink(0, space if value is a else partner)
                    continue
                ctx.tag(space, "heads")  # Q·Kᵀ or P·V contracting the head size per head
                kept = [i for i, ax in enumerate(space.axes) if ax != k_axis]
                carried.append((space, tuple(out_of[space.axes[i]] for i in kept),
                                _project(space, kept)))
        has_k = any(ra - 1 in sp.axes for sp in ctx.spaces_on(a)) or any(rb - 2 in sp.axes for sp in ctx.spaces_on(b))
        if not has_k and (is_weight(a, ra - 1) or is_weight(b, rb - 2)) and ctx.dims(a)[ra - 1] != 1:
            k_space = ctx.operand(a, (ra - 1,))
            ctx.couple(k_space, ctx.operand(b, (rb - 2,)))
            ctx.sink(0, k_space)
        # B's free axis, when B is a weight, is a fresh channel space of the output.
        if is_weight(b, rb - 1) and not any(r - 1 in o for _, o, _ in carried):
            carried.append((ctx.operand(b, (rb - 1,)), (r - 1,), None))
        _place_on_output(ctx, y, carried)
        for target in ctx.spaces_on(y):
            if any(ax >= r - 2 for ax in target.axes):
                continue
            for value, rank in ((a, ra), (b, rb)):
                in_axes = tuple(ax - (r - rank) for ax in target.axes)
                present = [ctx.dims(value)[ax] for ax in in_axes if ax >= 0]
                if all(d == 1 for d in present):
                    continue
                if len(present) != len(in_axes) or any(d == 1 for d in present):
                    keep_varying_axes_whole(ctx, value, target, in_axes)
                    continue
                if not any(set(s.axes) & set(in_axes) for s in ctx.spaces_on(value)):
                    ctx.couple(ctx.operand(value, in_axes), target)

    def weight_input(self, node):
        return self.b_index

    def macs(self, node, dims):
        return static_numel(dims(node.outputs[0])) * static_dim(dims(node.inputs[0])[-1])

    def layer_widths(self, node, shape):
        return shape[-2], shape[-1]

    def sink_layout(self, node, weight):
        if len(weight.const_value.shape) != 2:
            return None  # a batched weight
        return SinkLayout(following_bias(node, weight.const_value.shape[1]), "matmul", 1, True)


def following_bias(node: ir.Node, width: int) -> ir.Value | None:
    """The constant bias of a MatMul written as MatMul + Add (a Linear layer as exporters write it):
    the only user is an Add whose other input is a [width] initializer."""
    users = list(node.outputs[0].uses())
    if len(users) != 1 or users[0][0].op_type != "Add" or node.outputs[0] in node.graph.outputs:
        return None
    add = users[0][0]
    other = add.inputs[1 - users[0][1]]
    if other is None or not other.is_initializer() or other.const_value is None \
            or list(other.const_value.shape) != [width] or len(other.uses()) != 1:
        return None
    return other


def _project(space, kept: list[int]) -> np.ndarray:
    """Positions of `space` mapped to positions over its `kept` axes (the others dropped)."""
    coords = space.coordinates()
    return np.ravel_multi_index(tuple(coords[:, i] for i in kept), [space.dims[i] for i in kept])


def _place_on_output(ctx, y, carried) -> None:
    """Put every carried space on the output. Overlapping ones (a head axis from one operand and
    head × head-size from the other) share the widest space, each through its own projection."""
    pending = list(carried)
    while pending:
        cluster = [pending.pop(0)]
        axes = set(cluster[0][1])
        grew = True
        while grew:
            grew = False
            for item in list(pending):
                if axes & set(item[1]):
                    cluster.append(item)
                    axes |= set(item[1])
                    pending.remove(item)
                    grew = True
        widest = max(cluster, key=lambda item: len(item[1]))
        order = widest[1] if set(widest[1]) == axes else tuple(sorted(axes))
        source_prune = widest[0].prune_axis
        prune = None
        if source_prune is not None and widest[2] is None and set(widest[1]) == axes:
            prune = widest[1][widest[0].axes.index(source_prune)]
        out = ctx.output_space(y, order, prune_axis=prune if len(order) > 1 else None)
        for space, out_axes, to_out in cluster:
            if out_axes == order:
                ctx.couple(space, out, to_out)
                continue
            # out positions → positions over `out_axes`, then onto `space` through a virtual space
            coords = out.coordinates()
            picked = np.ravel_multi_index(tuple(coords[:, order.index(ax)] for ax in out_axes),
                                          [out.dims[order.index(ax)] for ax in out_axes])
            if to_out is None:
                ctx.couple(out, space, picked)
            else:
                middle = ctx.virtual(f"projection of {space.key} on {y.name}", int(np.prod(
                    [out.dims[order.index(ax)] for ax in out_axes])))
                ctx.couple(space, middle, to_out)
                ctx.couple(out, middle, picked)


@register
class Einsum(Rule):
    """Einsum by subscript letters: a channel axis whose letter survives in the output is carried
    there (and couples every operand sharing the letter); a contracted letter couples the operands
    it contracts (a sink); an output letter that only a weight carries is a fresh channel space."""
    op_types = ("Einsum",)

    def analyze(self, node, ctx):
        equation = node.attributes["equation"].as_string().replace(" ", "")
        if "->" not in equation or "..." in equation:
            if any(ctx.spaces_on(v) for v in node.inputs):
                raise Block(f"equation '{equation}' has an ellipsis or no explicit output")
            return
        lhs, out = equation.split("->")
        terms = lhs.split(",")
        y = node.outputs[0]
        operands = list(zip(node.inputs, terms))

        def sharing(letter, skip):
            for value, term in operands:
                if value is not skip and letter in term and ctx.dims(value)[term.index(letter)] != 1:
                    yield value, term.index(letter)

        for value, term in operands:
            for space in ctx.spaces_on(value):
                letters = [term[a] for a in space.axes]
                if all(l in out for l in letters):
                    target = ctx.carry(space, y, lambda a, term=term: out.index(term[a]))
                    if len(letters) == 1:
                        for other, axis in sharing(letters[0], value):
                            ctx.couple(ctx.operand(other, (axis,)), target)
                elif len(letters) == 1:
                    for other, axis in sharing(letters[0], value):
                        ctx.couple(space, ctx.operand(other, (axis,)))
                    ctx.sink(node.inputs.index(value), space)
                else:
                    raise Block(f"a multi-axis channel space of '{value.name}' is partly contracted")
        for position, letter in enumerate(out):
            if ctx.get(y, (position,)) is not None:
                continue
            weights = [(v, t.index(letter)) for v, t in operands if letter in t and v.is_initializer()]
            if len(weights) == 1 and ctx.dims(y)[position] != 1:
                weight, axis = weights[0]
                ctx.couple(ctx.operand(weight, (axis,)), ctx.output_space(y, (position,)))
