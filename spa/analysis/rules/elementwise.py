"""Elementwise ops: unary ops pass every channel space through; n-ary ops couple the spaces of
their inputs under numpy broadcasting, and per-channel constants become parameter members."""
from __future__ import annotations

import onnx_ir as ir

from spa.analysis.rules.base import Block, Rule, const_array, register
from spa.analysis.rules.shape_consts import check_computed_shape, rewrite_computed_shape


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
        # Widest spaces first: a narrower one inside an output space already made (a rotary
        # table's head-size axis inside heads × head size) is handled as a partial broadcast below.
        carried = sorted(((len(space.axes), space, value) for _, value in inputs for space in ctx.spaces_on(value)),
                         key=lambda item: -item[0])
        for _, space, value in carried:
            dims = ctx.dims(value)
            shift = rank - len(dims)
            if any(dims[a] != out_dims[a + shift] for a in space.axes):
                raise Block(f"channels of '{value.name}' are broadcast along axes {space.axes}")
            moved = {a + shift for a in space.axes}
            if any(moved < set(t.axes) for t in ctx.spaces_on(out)):
                continue
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
                    keep_varying_axes_whole(ctx, value, target, in_axes)
                    continue
                ctx.couple(ctx.operand(value, in_axes), target)


def keep_varying_axes_whole(ctx, value, target, in_axes) -> None:
    """`value` broadcasts over part of the multi-axis space `target` (a rotary table varies along
    the head size and is shared by every head): allowed while pruning leaves the axes it varies
    along whole, when its own channels are not tracked there."""
    dims = ctx.dims(value)
    varying = [(out_ax, ax) for out_ax, ax in zip(target.axes, in_axes) if ax >= 0 and dims[ax] != 1]
    for out_axis, axis in varying:
        ctx.keep_axis_whole(target, out_axis, f"'{value.name}' varies along it but not along the rest")
        for space in ctx.spaces_on(value):  # the table's own channels must not change either
            if axis in space.axes:
                ctx.keep_axis_whole(space, axis, f"it is broadcast over part of '{target.value}'")


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

    def source_axes(self, node, ctx, axes):
        # rounding ops: a bias quantized at run time is Cast(Floor(b / scale))
        return (0, axes) if node.op_type in ("Cast", "Identity", "Floor", "Round", "Ceil", "Neg") else None

    def dequantize_input(self, node, index, data):
        if node.op_type != "Cast":
            return None
        return data.astype(ir.DataType(node.attributes["to"].as_int()).numpy()), [], True


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

    # A weight scaled or shifted by constants (int8 W cast, times a per-column scale) is still
    # that weight, position for position: seen through as a weight path.
    def source_axes(self, node, ctx, axes):
        found = _scaled_weight(node, ctx, axes)
        return None if found is None else found[:2]

    def couple_along(self, node, ctx, out_space):
        found = _scaled_weight(node, ctx, out_space.axes)
        if found is not None and found[2] is not None:
            ctx.couple(ctx.operand(found[2], found[3]), out_space)

    def dequantize_input(self, node, index, data):
        ops = {"Mul": lambda w, c: w * c, "Div": lambda w, c: w / c, "Add": lambda w, c: w + c,
               "Sub": lambda w, c: w - c if index == 0 else c - w}
        other = node.inputs[1 - index] if len(node.inputs) == 2 else None
        constant = const_array(other)
        if node.op_type not in ops or constant is None:
            return None
        real = ops[node.op_type](data, constant)
        return (real, [other], True) if real.shape == data.shape else None


def _scaled_weight(node, ctx, axes):
    """(carrier input, its axes, per-channel constant or None, the constant's axes) when the output
    copies one input along `axes` and the other input is a constant (or broadcasts over `axes`)."""
    if node.op_type not in ("Mul", "Div", "Add", "Sub") or len(node.inputs) != 2:
        return None
    out = ctx.dims(node.outputs[0])
    placed = []
    for value in node.inputs:
        dims = ctx.dims(value)
        shift = len(out) - len(dims)
        in_axes = tuple(a - shift for a in axes)
        placed.append((value, in_axes, [dims[a] if a >= 0 else 1 for a in in_axes]))
    full = [p for p in placed if p[2] == [out[a] for a in axes] and min(p[1]) >= 0]
    if len(full) == 2:  # the carrier is the computed one (a cast weight), the scale the constant
        full = [p for p in full if p[0].const_value is None] or [max(full, key=lambda p: p[0].const_value.size)]
    if len(full) != 1:
        return None
    carrier, other = full[0], next(p for p in placed if p is not full[0])
    if all(d == 1 for d in other[2]):
        return node.inputs.index(carrier[0]), carrier[1], None, None
    if other[0].const_value is None or other[2] != carrier[2]:
        return None
    return node.inputs.index(carrier[0]), carrier[1], other[0], other[1]


@register
class Expand(Rule):
    """Expand broadcasts its input to a shape given as a constant; the shape is rewritten when
    the channels it repeats shrink."""
    op_types = ("Expand",)

    def analyze(self, node, ctx):
        broadcast(node, ctx, (0,))
        if const_array(node.inputs[1]) is None and ctx.spaces_on(node.outputs[0]):
            check_computed_shape(ctx, node.inputs[1], node.outputs[0], (1,))

    def source_axes(self, node, ctx, axes):
        x, y = node.inputs[0], node.outputs[0]
        shift = ctx.rank(y) - ctx.rank(x)
        in_axes = tuple(a - shift for a in axes)
        if min(in_axes) < 0 or any(ctx.dims(x)[a] != ctx.dims(y)[a + shift] for a in in_axes):
            return None
        if const_array(node.inputs[1]) is None:
            check_computed_shape(ctx, node.inputs[1], y, (1,), axes=axes)
        return 0, in_axes

    def update(self, node, sctx):
        shape = const_array(node.inputs[1])
        out = node.outputs[0]
        new = sctx.new_dims(out)
        old = sctx.old_dims(out)
        if new == old:
            return
        if shape is None:
            rewrite_computed_shape(sctx, node.inputs[1], old, new, (1,))
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
