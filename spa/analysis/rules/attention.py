"""Fused attention ops: ONNX's Attention (opset 23) and ONNX Runtime's MultiHeadAttention,
GroupQueryAttention, SkipLayerNormalization and the fused GELUs.

With 3-D inputs [batch, seq, heads·size] the head structure lives in an attribute, not in a
Reshape: a virtual space of key/value heads ties every query, key, value and output position to
its head, so whole heads are removed, and `update` rewrites the head-count attributes. Forms whose
layout SPA cannot see into (packed QKV, 4-D inputs, KV caches, attention biases per head) refuse.
"""
from __future__ import annotations

import numpy as np

from spa.analysis.rules.base import Block, Rule, attr_float, attr_int, input_or_none, register
from spa.analysis.rules.elementwise import broadcast
from spa.analysis.rules.norm import kept_channel_norm, refuse_spaces_on


def _couple_heads(ctx, node, q_heads: int, kv_heads: int, query, key, value, out) -> None:
    rank = ctx.rank(query)
    if rank != 3 or ctx.rank(key) != 3 or ctx.rank(value) != 3:
        raise Block("only 3-D [batch, seq, heads·size] query, key and value are supported")
    width = ctx.dims(query)[2]
    if not isinstance(width, int) or width % q_heads or q_heads % kv_heads:
        raise Block(f"width {width} does not split into {q_heads} heads over {kv_heads} key/value heads")
    size = width // q_heads
    if ctx.dims(key)[2] != kv_heads * size:
        raise Block("key width differs from key/value heads × head size")
    v_size = ctx.dims(value)[2] // kv_heads
    heads = ctx.virtual(f"{node.name}:kv_heads", kv_heads)
    per_kv = q_heads // kv_heads
    for tensor, step in ((query, size * per_kv), (key, size), (value, v_size)):
        space = ctx.operand(tensor, (2,))
        ctx.tag(space, "heads")
        ctx.couple(space, heads, np.arange(space.size) // step)
    out_space = ctx.output_space(out, (2,))
    ctx.couple(out_space, heads, np.arange(out_space.size) // (v_size * per_kv))


def _new_heads(sctx, node, tensor, heads: int) -> int:
    old, new = sctx.old_dims(tensor)[2], sctx.new_dims(tensor)[2]
    return heads if old == new else new // (old // heads)


@register
class MultiHeadAttention(Rule):
    domain = "com.microsoft"
    op_types = ("MultiHeadAttention",)

    def analyze(self, node, ctx):
        if len([v for v in node.inputs if v is not None]) > 3 or any(o is not None and o.uses() for o in node.outputs[1:]):
            raise Block("bias, masks, attention bias or a KV cache are used")
        q, k, v = node.inputs[:3]
        heads = attr_int(node, "num_heads")
        _couple_heads(ctx, node, heads, heads, q, k, v, node.outputs[0])

    def update(self, node, sctx):
        sctx.set_attr_int(node, "num_heads", _new_heads(sctx, node, node.inputs[0], attr_int(node, "num_heads")))


@register
class Attention(Rule):
    """ONNX Attention (opset 23) with 3-D inputs and q_num_heads / kv_num_heads."""
    op_types = ("Attention",)

    def analyze(self, node, ctx):
        q, k, v = node.inputs[:3]
        extra = [i for i, x in enumerate(node.inputs) if x is not None and i >= 3 and i != 3]
        if extra or any(o is not None and o.uses() for o in node.outputs[1:]):
            raise Block("a KV cache or its outputs are used")
        mask = input_or_none(node, 3)
        if mask is not None and ctx.spaces_on(mask):
            raise Block("the attention mask carries channels")
        q_heads, kv_heads = attr_int(node, "q_num_heads"), attr_int(node, "kv_num_heads")
        if not q_heads or not kv_heads:
            raise Block("4-D inputs (heads as an axis) are not supported in fused Attention")
        _couple_heads(ctx, node, q_heads, kv_heads, q, k, v, node.outputs[0])

    def update(self, node, sctx):
        q, k = node.inputs[:2]
        sctx.set_attr_int(node, "q_num_heads", _new_heads(sctx, node, q, attr_int(node, "q_num_heads")))
        sctx.set_attr_int(node, "kv_num_heads", _new_heads(sctx, node, k, attr_int(node, "kv_num_heads")))


@register
class GroupQueryAttention(Rule):
    domain = "com.microsoft"
    op_types = ("GroupQueryAttention",)

    def analyze(self, node, ctx):
        raise Block("GroupQueryAttention carries a KV cache as inputs and outputs, whose per-head widths "
                    "are part of the model's interface; prune an export without it")


@register
class PackedAttention(Rule):
    domain = "com.microsoft"
    op_types = ("Attention", "PackedAttention", "PackedMultiHeadAttention", "DecoderMaskedMultiHeadAttention")

    def analyze(self, node, ctx):
        raise Block(f"{node.op_type} packs the Q/K/V projections inside the op; prune the unfused export "
                    "(optimum without ORT optimization, or torch.onnx)")


@register
class SkipLayerNormalization(Rule):
    """LayerNorm(x + skip + bias) over the hidden width: like LayerNormalization, opt-in."""
    domain = "com.microsoft"
    op_types = ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")

    def analyze(self, node, ctx):
        x = node.inputs[0]
        last = ctx.rank(x) - 1
        outs = tuple(i for i, o in enumerate(node.outputs) if o is not None and i in (0, 3))
        broadcast(node, ctx, (0, 1, 4), outs)
        for value in (node.inputs[0], node.inputs[1]):
            for space in ctx.spaces_on(value):
                if last in space.axes:
                    ctx.tag(space, "hidden")
        if not ctx.hidden:
            refuse_spaces_on(ctx, x, {last}, f"{node.op_type} normalizes over a channel axis")
            return
        for space in ctx.spaces_on(node.outputs[0]):
            for index in (2, 3):
                param = input_or_none(node, index)
                if param is not None and space.axes == (last,):
                    ctx.couple(ctx.operand(param, (0,)), space)

    def mask_statistics(self, node, index, axes, keep, build):
        last = len(node.inputs[0].shape) - 1
        if index not in (0, 1) or last not in axes:
            return False
        simplified = node.op_type == "SkipSimplifiedLayerNormalization"
        # inputs: x, skip, gamma, then beta and bias (SkipLayerNormalization) or bias (simplified)
        beta = None if simplified else input_or_none(node, 3)
        bias = input_or_none(node, 3 if simplified else 4)
        total = build.op("Add", [node.inputs[0], node.inputs[1]])
        if bias is not None:
            total = build.op("Add", [total, bias])
        y = build.op("Mul", [kept_channel_norm(build, total, keep, attr_float(node, "epsilon", 1e-12),
                                               centred=not simplified), node.inputs[2]])
        if beta is not None:
            y = build.op("Add", [y, beta])
        build.take_over(node.outputs[0], y)
        if len(node.outputs) > 3 and node.outputs[3] is not None:
            build.take_over(node.outputs[3], total)
        return True


@register
class FusedGelu(Rule):
    """GELU variants with an optional per-channel bias (x + bias, then GELU)."""
    domain = "com.microsoft"
    op_types = ("FastGelu", "BiasGelu", "Gelu", "QuickGelu")

    def analyze(self, node, ctx):
        broadcast(node, ctx, tuple(range(len(node.inputs))))
