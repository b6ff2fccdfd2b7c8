"""to_torch op table: quantization (Quantize/DequantizeLinear, DynamicQuantizeLinear, ConvInteger, MatMulInteger)."""
from __future__ import annotations

import numpy as np

from spa.runtime.torch_ops_common import optional, unsupported
from spa.runtime.torch_ops_nn import ops as nn_ops


def ops(torch, F) -> dict:
    """Op type → (module, node, attrs, args, values) → tensor or tuple."""
    conv = nn_ops(torch, F)["Conv"]

    def per_axis(n, a, param, rank):
        if param.numel() == 1 and param.dim() <= 1:
            return param.reshape(())
        if a.get("block_size", 0):
            unsupported(n, "block_size (blocked quantization)")
        if param.dim() != 1:
            unsupported(n, f"a rank-{param.dim()} scale")
        shape = [1] * rank
        shape[a.get("axis", 1) % rank] = -1
        return param.reshape(shape)

    qrange = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.uint16: (0, 65535),
               torch.int16: (-32768, 32767), torch.int32: (-2 ** 31, 2 ** 31 - 1)}

    def dynamic_quantize(m, n, a, x, v):
        """uint8 quantization of x by its own range (which always includes 0)."""
        low = torch.clamp(x[0].min(), max=0.0)
        high = torch.clamp(x[0].max(), min=0.0)
        scale = (high - low) / 255.0
        zero = torch.clamp(torch.round(0.0 - low / scale), 0, 255)
        y = torch.clamp(torch.round(x[0] / scale) + zero, 0, 255)
        return [y.to(torch.uint8), scale, zero.to(torch.uint8)]

    def centred(n, t, zero, axis_shape=None):
        """An integer tensor minus its zero point, in float64 (exact for int8/uint8 sums)."""
        if t.dtype not in (torch.uint8, torch.int8):
            unsupported(n, f"{t.dtype} input")
        y = t.to(torch.float64)
        if zero is not None:
            zero = zero.to(torch.float64)
            y = y - (zero.reshape(axis_shape) if axis_shape is not None and zero.numel() > 1 else zero.reshape(()))
        return y

    def conv_integer(m, n, a, x, v):
        spatial = x[1].dim() - 2
        data = centred(n, x[0], optional(x, 2))
        weight = centred(n, x[1], optional(x, 3), [-1] + [1] * (spatial + 1))
        return torch.round(conv(m, n, a, [data, weight], v)).to(torch.int32)

    def matmul_integer(m, n, a, x, v):
        left = centred(n, x[0], optional(x, 2), [-1, 1])
        right = centred(n, x[1], optional(x, 3), [-1])
        return torch.round(left @ right).to(torch.int32)

    def dequantize(m, n, a, x, v):
        scale = x[1]
        if x[0].dtype not in qrange:
            unsupported(n, f"{x[0].dtype} input")
        rank = x[0].dim()
        y = x[0].to(scale.dtype)
        zero = optional(x, 2)
        if zero is not None:
            y = y - per_axis(n, a, zero, rank).to(scale.dtype)
        return y * per_axis(n, a, scale, rank)

    def quantize(m, n, a, x, v):
        from onnx import helper

        zero = optional(x, 2)
        if "output_dtype" in a and a["output_dtype"]:
            dtype = getattr(torch, np.dtype(helper.tensor_dtype_to_np_dtype(a["output_dtype"])).name)
        else:
            dtype = zero.dtype if zero is not None else torch.uint8
        if dtype not in qrange or dtype == torch.int32:
            unsupported(n, f"output type {dtype}")
        rank = x[0].dim()
        y = torch.round(x[0] / per_axis(n, a, x[1], rank))
        if zero is not None:
            y = y + per_axis(n, a, zero, rank).to(y.dtype)
        lo, hi = qrange[dtype]
        return torch.clamp(y, lo, hi).to(dtype)

    return {
        "QuantizeLinear": quantize, "DequantizeLinear": dequantize, "DynamicQuantizeLinear": dynamic_quantize,
        "ConvInteger": conv_integer, "MatMulInteger": matmul_integer,
    }
