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
