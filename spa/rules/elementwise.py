"""Elementwise ops: unary ops pass every channel space through; n-ary ops couple the spaces of
their inputs under numpy broadcasting, and per-channel constants become parameter members."""
from __future__ import annotations

import onnx_ir as ir

from spa.rules.base import Block, Rule, const_array, register


def broadcast(node: ir.Node, ctx, carriers: tuple[int, ...], outputs: tuple[int, ...] = (0,)) -> None:
    """Couple channel spaces of the carrier inputs with the same axes of the outputs.

    Inputs are right-aligned with the output (numpy broadcasting). An input whose dims are 1 on a
    space's axes broadcasts and does not couple; a constant input with full dims there becomes a
    parameter member (a per-channel scale, bias or PReLU slope)."""
    inputs = [(i, node.inputs[i]) for i in carriers if i < len(node.inputs) and node.inputs[i] is not None]
    for o_index in outputs:
        out = node.outputs[o_index]
        out_dims = ctx.dims(out)
        rank = len(out_dims)
        for _, value in inputs:
            dims = ctx.dims(value)
            shift = rank - len(dims)
            for space in ctx.spaces_on(value):
                if any(dims[a] != out_dims[a + shift] for a in space.axes):
                    raise Block(f"channels of '{value.name}' are broadcast along axes {space.axes}")
                ctx.carry(space, out, lambda a, shift=shift: a + shift)
        for target in ctx.spaces_on(out):
            for _, value in inputs:
                dims = ctx.dims(value)
                shift = rank - len(dims)
                in_axes = tuple(a - shift for a in target.axes)
                present = [dims[a] for a in in_axes if a >= 0]
                if all(d == 1 for d in present):
                    continue  # broadcast over the channels: no coupling
                if len(present) != len(in_axes) or any(d == 1 for d in present):
                    raise Block(f"'{value.name}' broadcasts over part of a multi-axis channel space")
                ctx.couple(ctx.operand(value, in_axes), target)


UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Erf", "Gelu",
    "Mish", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf",
    "ThresholdedRelu", "Shrink", "Identity", "Cast", "Swish",
)


@register
class Unary(Rule):
    op_types = UNARY

    def analyze(self, node, ctx):
        broadcast(node, ctx, (0,))


@register
class CastLike(Rule):
    op_types = ("CastLike",)

    def analyze(self, node, ctx):
        broadcast(node, ctx, (0,))


@register
class Dropout(Rule):
    op_types = ("Dropout",)

    def analyze(self, node, ctx):
        broadcast(node, ctx, (0,), outputs=tuple(range(len(node.outputs))))


@register
class Clip(Rule):
    op_types = ("Clip",)

    def analyze(self, node, ctx):
        for bound in node.inputs[1:]:
            if bound is not None and bound.shape is not None and len(bound.shape) > 0:
                raise Block("Clip bounds are not scalars")
        broadcast(node, ctx, (0,))


@register
class Binary(Rule):
    op_types = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu",
                "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor",
                "Mod", "BitShift", "Where")

    def analyze(self, node, ctx):
        broadcast(node, ctx, tuple(range(len(node.inputs))))


@register
class Expand(Rule):
    """Expand broadcasts its input to a shape given as a constant; the shape is rewritten when
    the channels it repeats shrink."""
    op_types = ("Expand",)

    def analyze(self, node, ctx):
        if const_array(node.inputs[1]) is None and ctx.spaces_on(node.inputs[0]):
            raise Block("the target shape is computed at run time")
        broadcast(node, ctx, (0,))

    def update(self, node, sctx):
        shape = const_array(node.inputs[1])
        out = node.outputs[0]
        new = sctx.new_dims(out)
        old = sctx.old_dims(out)
        if new == old:
            return
        shape = shape.copy()
        shift = len(old) - len(shape)
        for axis, (o, n) in enumerate(zip(old, new)):
            if o != n and axis - shift >= 0 and shape[axis - shift] == o:
                shape[axis - shift] = n
        sctx.set_const_input(node, 1, shape)


@register
class Tile(Rule):
    op_types = ("Tile",)

    def analyze(self, node, ctx):
        repeats = const_array(node.inputs[1])
        spaces = ctx.spaces_on(node.inputs[0])
        if spaces and repeats is None:
            raise Block("the repeats are computed at run time")
        for space in spaces:
            if any(int(repeats[a]) != 1 for a in space.axes):
                raise Block(f"Tile repeats the channel axes {space.axes}")
            ctx.carry(space, node.outputs[0])
