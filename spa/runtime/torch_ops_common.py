"""Helpers the to_torch op-table modules share: attribute and input reading, padding, errors."""
from __future__ import annotations

import numpy as np

from spa.core.errors import SpaError, UnsupportedError


def import_torch():
    try:
        import torch
    except ImportError:
        raise SpaError("to_torch needs PyTorch: pip install torch") from None
    return torch


def axes_of(node, attrs, values, index: int):
    if len(node.input) > index and node.input[index]:
        return [int(a) for a in np.asarray(values[node.input[index]].tolist()).reshape(-1)]
    return attrs.get("axes")


def conv_pads(attrs, spatial: int, x_shape, kernel, strides, dilations):
    pads = attrs.get("pads", [0] * (2 * spatial))
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * spatial)
        for i in range(spatial):
            size = x_shape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + spatial] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * spatial)
    return pads


def pad_input(F, x, pads, spatial, value=0.0):
    begin, end = pads[:spatial], pads[spatial:]
    if begin == end:
        return x, list(begin)
    flat = []
    for i in reversed(range(spatial)):
        flat += [begin[i], end[i]]
    return F.pad(x, flat, value=value), [0] * spatial


def ints(t) -> list[int]:
    return [int(v) for v in np.asarray(t.tolist() if hasattr(t, "tolist") else t).reshape(-1)]


def as_text(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def unsupported(n, what: str):
    raise UnsupportedError(f"to_torch: {n.op_type} '{n.name}' with {what}")


def optional(x, i):
    return x[i] if len(x) > i and x[i] is not None else None


def isinf(torch, t, a):
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    return (torch.isposinf(t) if pos else torch.zeros_like(t, dtype=torch.bool)) | \
        (torch.isneginf(t) if neg else torch.zeros_like(t, dtype=torch.bool))


def prod_over(t, axes, keep):
    for ax in sorted((a % t.dim() for a in axes), reverse=True):
        t = t.prod(dim=ax, keepdim=keep)
    return t
