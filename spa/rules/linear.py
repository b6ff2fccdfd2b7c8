"""Gemm and MatMul: the contracted axis couples the two operands (a sink); the output's last axis
is a fresh channel space tied to the weight's output axis."""
from __future__ import annotations

from spa.rules.base import Block, Rule, attr_int, input_or_none, register


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


@register
class MatMul(Rule):
    op_types = ("MatMul",)

    def analyze(self, node, ctx):
        a, b = node.inputs
        y = node.outputs[0]
        ra, rb, r = ctx.rank(a), ctx.rank(b), ctx.rank(y)
        if ra < 2 or rb < 2:
            if ctx.spaces_on(a) or ctx.spaces_on(b):
                raise Block("a 1-D operand carries channels")
            return
        for value, rank, allowed_single in ((a, ra, (ra - 1, ra - 2)), (b, rb, (rb - 1, rb - 2))):
            for space in ctx.spaces_on(value):
                if len(space.axes) > 1 and any(ax >= rank - 2 for ax in space.axes):
                    raise Block(f"channels of '{value.name}' span a matrix axis and another axis")
        n_space = ctx.output_space(y, (r - 1,))
        ctx.couple(ctx.operand(b, (rb - 1,)), n_space)
        k_space = ctx.operand(a, (ra - 1,))
        ctx.couple(k_space, ctx.operand(b, (rb - 2,)))
        ctx.sink(0, k_space)
        m_space = ctx.get(a, (ra - 2,))
        if m_space is not None:
            ctx.couple(m_space, ctx.output_space(y, (r - 2,)))
        # Batch axes broadcast like an elementwise op.
        for value, rank in ((a, ra), (b, rb)):
            shift = r - rank
            for space in ctx.spaces_on(value):
                if all(ax < rank - 2 for ax in space.axes):
                    if any(ctx.dims(value)[ax] != ctx.dims(y)[ax + shift] for ax in space.axes):
                        raise Block(f"channels of '{value.name}' are broadcast over a batch axis")
                    ctx.carry(space, y, lambda ax, shift=shift: ax + shift)
        for target in ctx.spaces_on(y):
            if any(ax >= r - 2 for ax in target.axes):
                continue
            for value, rank in ((a, ra), (b, rb)):
                in_axes = tuple(ax - (r - rank) for ax in target.axes)
                present = [ctx.dims(value)[ax] for ax in in_axes if ax >= 0]
                if all(d == 1 for d in present):
                    continue
                if len(present) != len(in_axes) or any(d == 1 for d in present):
                    raise Block(f"'{value.name}' broadcasts over part of a channel space")
                ctx.couple(ctx.operand(value, in_axes), target)
