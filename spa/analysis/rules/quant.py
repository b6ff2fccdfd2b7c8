"""Quantized ops. (De)quantizers are elementwise: channels pass through, and a per-channel scale
and zero point along `axis` are sliced with the channel they belong to. A dequantized constant is
a weight path (`source_axes`), so Conv/MatMul/Gemm reading DequantizeLinear(int8 W) find their
groups. ConvInteger/QLinearConv and MatMulInteger/QLinearMatMul are Conv and MatMul whose weight's
per-output-channel zero point (and scale) are sliced with the output channels; as compute layers
they count MACs like Conv and MatMul, are no compensable sinks, and are `quantized`."""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import Block, Rule, attr_int, const_array, input_or_none, norm_axis, register
from spa.analysis.rules.conv import _ConvLike
from spa.analysis.rules.linear import MatMul


def _numel(ctx, value) -> int:
    return int(np.prod(ctx.dims(value), dtype=np.int64)) if value is not None else 1


def _channel_axis(node, ctx) -> int | None:
    """The axis a (De)QuantizeLinear's scale runs along, or None for a per-tensor one."""
    if attr_int(node, "block_size", 0):
        raise Block("blocked quantization (block_size) ties blocks of a channel axis to one scale")
    scale = node.inputs[1]
    if _numel(ctx, scale) == 1:
        return None
    if len(ctx.dims(scale)) != 1:
        raise Block(f"scale '{scale.name}' is neither a scalar nor one value per channel")
    return norm_axis(attr_int(node, "axis", 1), ctx.rank(node.inputs[0]))


def _along(array: np.ndarray | None, axis: int, rank: int) -> np.ndarray | float:
    """A per-channel constant shaped to broadcast along `axis` of a rank-`rank` tensor."""
    if array is None:
        return 0.0
    if array.size == 1:
        return array.reshape(()).astype(np.float32)
    shape = [1] * rank
    shape[axis] = array.size
    return array.reshape(shape).astype(np.float32)


def _couple_per_channel(ctx, node, indices: tuple[int, ...], space) -> None:
    """Couple every per-channel constant among `indices` (a scale, a zero point) with `space`."""
    for index in indices:
        value = input_or_none(node, index)
        if value is not None and _numel(ctx, value) > 1:
            ctx.couple(ctx.operand(value, (0,)), space)


def _require_per_tensor(ctx, node, indices: tuple[int, ...]) -> None:
    for index in indices:
        value = input_or_none(node, index)
        if value is not None and _numel(ctx, value) > 1:
            raise Block(f"'{value.name}' (input {index}) varies per row or per channel of an activation")


class _QuantizeLike(Rule):
    """QuantizeLinear / DequantizeLinear (x, scale, zero_point; axis)."""

    def analyze(self, node, ctx):
        x, y = node.inputs[0], node.outputs[0]
        axis = _channel_axis(node, ctx)
        for space in ctx.spaces_on(x):
            if axis is not None and axis in space.axes and space.axes != (axis,):
                raise Block(f"a per-channel scale runs along one axis of the multi-axis channels of '{x.name}'")
            self.couple_along(node, ctx, ctx.carry(space, y))

    def source_axes(self, node, ctx, axes):
        axis = _channel_axis(node, ctx)
        if axis is not None and axis in axes and len(axes) > 1:
            return None
        return 0, tuple(axes)

    def couple_along(self, node, ctx, out_space):
        if _channel_axis(node, ctx) in out_space.axes:
            _couple_per_channel(ctx, node, (1, 2), out_space)


@register
class QuantizeLinear(_QuantizeLike):
    op_types = ("QuantizeLinear",)


@register
class DequantizeLinear(_QuantizeLike):
    op_types = ("DequantizeLinear",)

    def dequantize_input(self, node, index, data):
        scale, zero = node.inputs[1], input_or_none(node, 2)
        if index != 0 or const_array(scale) is None or (zero is not None and const_array(zero) is None):
            return None
        axis = norm_axis(attr_int(node, "axis", 1), data.ndim) if data.ndim else 0
        real = (data.astype(np.float32) - _along(const_array(zero), axis, data.ndim)) \
            * _along(const_array(scale), axis, data.ndim)
        return real, [v for v in (scale, zero) if v is not None], True


@register
class DynamicQuantizeLinear(Rule):
    """y, y_scale, y_zero_point = DynamicQuantizeLinear(x): one scale over the whole tensor, so
    channels pass through to y. Its input is also a masking point: zeroing a channel there leaves
    the measured range alone (the range always spans 0), so the masked reference quantizes
    exactly like the sliced model."""
    op_types = ("DynamicQuantizeLinear",)

    def analyze(self, node, ctx):
        for space in ctx.spaces_on(node.inputs[0]):
            ctx.carry(space, node.outputs[0])
            ctx.sink(0, space)


@register
class ConvInteger(_ConvLike):
    op_types = ("ConvInteger",)
    bias_index = None
    quantized = True

    def analyze(self, node, ctx):
        _require_per_tensor(ctx, node, (2,))
        super().analyze(node, ctx)
        _couple_per_channel(ctx, node, (3,), ctx.output_space(node.outputs[0], (1,)))

    def zero_point(self, node, index):
        return input_or_none(node, 2) if index == 0 else None

    def dequantize_input(self, node, index, data):
        zero = input_or_none(node, 3)
        if index != 1 or (zero is not None and const_array(zero) is None):
            return None
        real = data.astype(np.float32) - _along(const_array(zero), 0, data.ndim)
        return real, [zero] if zero is not None else [], False


@register
class QLinearConv(_ConvLike):
    """x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B."""
    op_types = ("QLinearConv",)
    weight_index = 3
    bias_index = 8
    quantized = True

    def analyze(self, node, ctx):
        _require_per_tensor(ctx, node, (1, 2, 6, 7))
        super().analyze(node, ctx)
        _couple_per_channel(ctx, node, (4, 5), ctx.output_space(node.outputs[0], (1,)))

    def zero_point(self, node, index):
        return node.inputs[2] if index == 0 else None

    def dequantize_input(self, node, index, data):
        w_scale, w_zero, x_scale = node.inputs[4], node.inputs[5], node.inputs[1]
        if index == 3 and const_array(w_scale) is not None and const_array(w_zero) is not None:
            real = (data.astype(np.float32) - _along(const_array(w_zero), 0, data.ndim)) \
                * _along(const_array(w_scale), 0, data.ndim)
            return real, [w_scale, w_zero], False
        if index == 8 and const_array(w_scale) is not None and const_array(x_scale) is not None:
            real = data.astype(np.float32) * _along(const_array(w_scale), 0, 1) * _along(const_array(x_scale), 0, 1)
            return real, [w_scale], False
        return None


class _MatMulWithZeroPoints(MatMul):
    """A @ B on integers, B's per-column constants at `per_column` (sliced with the columns)."""
    per_column: tuple[int, ...] = ()
    per_tensor: tuple[int, ...] = ()
    quantized = True

    def analyze(self, node, ctx):
        _require_per_tensor(ctx, node, self.per_tensor)
        super().analyze(node, ctx)
        b = node.inputs[self.b_index]
        per_column = [i for i in self.per_column if _numel(ctx, input_or_none(node, i)) > 1]
        if per_column:
            _couple_per_channel(ctx, node, tuple(per_column), ctx.operand(b, (ctx.rank(b) - 1,)))

    def sink_layout(self, node, weight):
        return None  # an integer weight is not compensated


@register
class MatMulInteger(_MatMulWithZeroPoints):
    """A, B, a_zero_point, b_zero_point."""
    op_types = ("MatMulInteger",)
    per_column = (3,)
    per_tensor = (2,)

    def zero_point(self, node, index):
        return input_or_none(node, 2 + index) if index in (0, 1) else None

    def dequantize_input(self, node, index, data):
        zero = input_or_none(node, 3)
        if index != 1 or (zero is not None and const_array(zero) is None):
            return None
        real = data.astype(np.float32) - _along(const_array(zero), data.ndim - 1, data.ndim)
        return real, [zero] if zero is not None else [], False


@register
class QLinearMatMul(_MatMulWithZeroPoints):
    """a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp."""
    op_types = ("QLinearMatMul",)
    b_index = 3
    per_column = (4, 5)
    per_tensor = (1, 2, 6, 7)

    def zero_point(self, node, index):
        return {0: node.inputs[2], 3: node.inputs[5]}.get(index)

    def dequantize_input(self, node, index, data):
        scale, zero = node.inputs[4], node.inputs[5]
        if index != 3 or const_array(scale) is None or const_array(zero) is None:
            return None
        real = (data.astype(np.float32) - _along(const_array(zero), data.ndim - 1, data.ndim)) \
            * _along(const_array(scale), data.ndim - 1, data.ndim)
        return real, [scale, zero], False
