"""to_torch op table: convolutions, Gemm/MatMul, pooling and normalization layers."""
from __future__ import annotations

from spa.core.errors import UnsupportedError
from spa.runtime.torch_ops_common import as_text, conv_pads, optional, pad_input, unsupported


def ops(torch, F) -> dict:
    """Op type → (module, node, attrs, args, values) → tensor or tuple."""
    def conv(m, n, a, x, v):
        w = x[1]
        spatial = w.dim() - 2
        strides = a.get("strides", [1] * spatial)
        dil = a.get("dilations", [1] * spatial)
        pads = conv_pads(a, spatial, x[0].shape, w.shape[2:], strides, dil)
        inp, pad = pad_input(F, x[0], pads, spatial)
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
        return fn(inp, w, x[2] if len(x) > 2 else None, strides, pad, dil, a.get("group", 1))

    def gemm(m, n, a, x, v):
        A = x[0].transpose(-1, -2) if a.get("transA", 0) else x[0]
        B = x[1].transpose(-1, -2) if a.get("transB", 0) else x[1]
        y = a.get("alpha", 1.0) * (A @ B)
        if len(x) > 2 and x[2] is not None:
            y = y + a.get("beta", 1.0) * x[2]
        return y

    def pool(kind):
        def run(m, n, a, x, v):
            k = a["kernel_shape"]
            spatial = len(k)
            strides = a.get("strides", [1] * spatial)
            dil = a.get("dilations", [1] * spatial)
            pads = conv_pads(a, spatial, x[0].shape, k, strides, dil)
            ceil = bool(a.get("ceil_mode", 0))
            if kind == "max":
                inp, pad = pad_input(F, x[0], pads, spatial, value=float("-inf"))
                fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
                return fn(inp, k, strides, pad, dil, ceil_mode=ceil)
            include = bool(a.get("count_include_pad", 0))
            if any(d != 1 for d in dil):
                raise UnsupportedError(f"to_torch: AveragePool '{n.name}' with dilations={list(dil)}")
            fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial]
            if not include and pads[:spatial] != pads[spatial:]:
                # asymmetric pads that do not count: window sums over the zero-padded input divided by
                # the number of real elements in each window (the same pool over a mask of ones)
                inp, _ = pad_input(F, x[0], pads, spatial)
                ones, _ = pad_input(F, torch.ones_like(x[0][:1, :1]), pads, spatial)
                total = fn(inp, k, strides, 0, ceil_mode=ceil, count_include_pad=True)
                return total / fn(ones, k, strides, 0, ceil_mode=ceil, count_include_pad=True)
            inp, pad = pad_input(F, x[0], pads, spatial) if include else (x[0], pads[:spatial])
            return fn(inp, k, strides, pad, ceil_mode=ceil, count_include_pad=include)
        return run

    def batchnorm(m, n, a, x, v):
        # module.train(): batch statistics, running mean/var updated in place (ONNX momentum m is
        # torch's 1 - m); module.eval(): the running statistics, as ONNX Runtime computes it.
        return F.batch_norm(x[0], x[3], x[4], x[1], x[2], m.training, 1.0 - a.get("momentum", 0.9),
                            a.get("epsilon", 1e-5))

    def layernorm(m, n, a, x, v):
        axis = a.get("axis", -1) % x[0].dim()
        shape = tuple(x[0].shape[axis:])
        return F.layer_norm(x[0], shape, x[1].expand(shape) if x[1].dim() else None,
                            x[2] if len(x) > 2 and x[2] is not None else None, a.get("epsilon", 1e-5))

    def conv_transpose(m, n, a, x, v):
        w = x[1]
        spatial = w.dim() - 2
        strides = list(a.get("strides", [1] * spatial))
        dil = list(a.get("dilations", [1] * spatial))
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        if kernel != list(w.shape[2:]):
            unsupported(n, f"kernel_shape={kernel} unlike its weight {list(w.shape[2:])}")
        extra = list(a.get("output_padding", [0] * spatial))
        auto = as_text(a.get("auto_pad"), "NOTSET")
        in_sizes = [int(d) for d in x[0].shape[2:]]
        full = [s * (i - 1) + o + (k - 1) * d + 1 for s, i, o, k, d in zip(strides, in_sizes, extra, kernel, dil)]
        if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
            target = list(a["output_shape"])[-spatial:] if "output_shape" in a else \
                [i * s for i, s in zip(in_sizes, strides)]
            total = [f - t for f, t in zip(full, target)]
            if auto in ("SAME_UPPER", "SAME_LOWER"):  # ONNX Runtime never pads negatively here
                total = [max(0, t) for t in total]
            if auto == "SAME_UPPER":
                pads = [t // 2 for t in total] + [t - t // 2 for t in total]
            else:
                pads = [t - t // 2 for t in total] + [t // 2 for t in total]
        elif auto == "VALID":
            pads = [0] * (2 * spatial)
        else:
            pads = list(a.get("pads", [0] * (2 * spatial)))
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[spatial]
        y = fn(x[0], w, None, strides, 0, 0, a.get("group", 1), dil)
        flat = []  # output_padding extends the end with zeros, then pads crop (negative: extend)
        for i in reversed(range(spatial)):
            flat += [-pads[i], extra[i] - pads[i + spatial]]
        if any(flat):
            y = F.pad(y, flat)
        bias = optional(x, 2)
        return y if bias is None else y + bias.reshape([1, -1] + [1] * spatial)

    def prelu(m, n, a, x, v):
        return torch.where(x[0] >= 0, x[0], x[0] * x[1])

    def instance_norm(m, n, a, x, v):
        return F.instance_norm(x[0], weight=x[1], bias=x[2], eps=a.get("epsilon", 1e-5))

    def lrn(m, n, a, x, v):
        size = int(a["size"])
        square = x[0] * x[0]
        front, back = (size - 1) // 2, size - 1 - (size - 1) // 2
        padded = F.pad(square.transpose(1, -1), (front, back)).transpose(1, -1)
        channels = x[0].shape[1]
        total = sum(padded.narrow(1, j, channels) for j in range(size))
        return x[0] / (a.get("bias", 1.0) + a.get("alpha", 1e-4) / size * total) ** a.get("beta", 0.75)

    return {
        "Conv": conv, "Gemm": gemm, "MatMul": lambda m, n, a, x, v: torch.matmul(x[0], x[1]),
        "GlobalAveragePool": lambda m, n, a, x, v: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
        "GlobalMaxPool": lambda m, n, a, x, v: x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True),
        "MaxPool": pool("max"), "AveragePool": pool("avg"),
        "BatchNormalization": batchnorm, "LayerNormalization": layernorm,
        "ConvTranspose": conv_transpose, "PRelu": prelu, "InstanceNormalization": instance_norm, "LRN": lrn,
    }
