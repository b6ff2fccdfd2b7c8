"""Conv and ConvTranspose: output channels are fresh channels tied to the weight's output axis;
input channels are contracted by the weight's input axis (a sink). A grouped convolution
(depthwise included) ties each group's input and output channels to one group token, so whole
groups are removed and the `group` attribute shrinks. Both are compute layers (MACs, widths); a
plain ungrouped Conv is a compensable sink."""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import (
    Block, Rule, SinkLayout, attr_int, input_or_none, register, static_numel,
)


class _ConvLike(Rule):
    # Weight axis holding output channels, and the one holding (per-group) input channels.
    out_axis = 0
    in_axis = 1
    weight_index = 1  # QLinearConv reads its weight and bias at other inputs
    bias_index: int | None = 2

    def analyze(self, node, ctx):
        x, w = node.inputs[0], node.inputs[self.weight_index]
        bias = None if self.bias_index is None else input_or_none(node, self.bias_index)
        y = node.outputs[0]
        for space in ctx.spaces_on(x):
            if space.axes != (1,):
                raise Block(f"channels of '{x.name}' lie on axes {space.axes}, not the channel axis")
        groups = attr_int(node, "group", 1)
        c_in = ctx.dims(x)[1]
        c_out = ctx.dims(y)[1]
        y_space = ctx.output_space(y, (1,))
        x_space = ctx.operand(x, (1,))
        if bias is not None:
            ctx.couple(ctx.operand(bias, (0,)), y_space)
        if groups == 1:
            ctx.couple(ctx.operand(w, (self.out_axis,)), y_space)
            ctx.couple(x_space, ctx.operand(w, (self.in_axis,)))
            ctx.sink(0, x_space)
            return
        if c_in % groups or c_out % groups:
            raise Block(f"channels ({c_in} in, {c_out} out) do not divide into {groups} groups")
        # The weight axis that spans all channels of one side follows that side position by position.
        full_axis_space = y_space if self.out_axis == 0 else x_space
        ctx.couple(ctx.operand(w, (0,)), full_axis_space)
        tokens = ctx.virtual(f"{node.name}:groups", groups)
        ctx.couple(x_space, tokens, np.arange(c_in) // (c_in // groups))
        ctx.couple(y_space, tokens, np.arange(c_out) // (c_out // groups))

    def update(self, node, sctx):
        groups = attr_int(node, "group", 1)
        if groups == 1:
            return
        x = node.inputs[0]
        old_c, new_c = sctx.old_dims(x)[1], sctx.new_dims(x)[1]
        if old_c != new_c:
            sctx.set_attr_int(node, "group", new_c // (old_c // groups))

    def weight_input(self, node):
        return self.weight_index

    def macs(self, node, dims):
        # every position of the side whose channels are the weight's axis 0 (a Conv's output, a
        # ConvTranspose's input) meets the rest of the weight once
        side = node.outputs[0] if self.out_axis == 0 else node.inputs[0]
        return static_numel(dims(side)) * static_numel(dims(node.inputs[self.weight_index])[1:])

    def layer_widths(self, node, shape):
        group = attr_int(node, "group", 1)  # the weight's axis 1 holds one group's channels
        return (shape[self.in_axis] * (group if self.in_axis == 1 else 1),
                shape[self.out_axis] * (group if self.out_axis == 1 else 1))


@register
class Conv(_ConvLike):
    op_types = ("Conv",)

    def sink_layout(self, node, weight):
        auto_pad = node.attributes.get("auto_pad")
        if attr_int(node, "group", 1) != 1 or auto_pad is not None and auto_pad.as_string() not in ("NOTSET", ""):
            return None  # grouped or auto_pad convolutions are not compensated
        return SinkLayout(input_or_none(node, 2), "conv", int(np.prod(list(weight.const_value.shape)[2:])), False)


@register
class ConvTranspose(_ConvLike):
    op_types = ("ConvTranspose",)
    out_axis = 1
    in_axis = 0
