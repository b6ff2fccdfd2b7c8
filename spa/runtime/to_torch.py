"""ONNX → a trainable PyTorch module, and the trained weights back into the ONNX model.

`to_torch(model)` builds an `OnnxModule` (a torch.nn.Module) that runs the ONNX graph node by node with torch ops.
Every floating-point initializer becomes an `nn.Parameter` (BatchNormalization's running mean and
variance, and scalars such as clip bounds, become buffers); `module.onnx_names` maps each parameter's attribute name to its ONNX
initializer name, so an optimiser, a checkpoint or a freeze list can speak either language.
`export(module, output)` writes the current parameter values into the initializers of the same
ONNX graph (same nodes, names and I/O): the pruned architecture stays exactly as SPA wrote it.
(ONNX functions are inlined and weights held in Constant nodes become initializers first; SPA's
canonical and pruned models have neither.)

onnx2torch (1.5.15) works with torch 2.14 but names parameters after nodes, not initializers, and
stops at opset 20 Transposes; this interpreter covers the ops SPA's zoo exporters produce and every
main-graph op of the real-file zoo (models/realfiles.py) except If/Loop and com.microsoft ops. An
attribute combination it cannot reproduce exactly raises UnsupportedError naming node and attribute.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from spa.core.errors import SpaError, UnsupportedError


def _torch():
    try:
        import torch
    except ImportError:
        raise SpaError("to_torch needs PyTorch: pip install torch") from None
    return torch


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _axes(node, attrs, values, index: int):
    if len(node.input) > index and node.input[index]:
        return [int(a) for a in np.asarray(values[node.input[index]].tolist()).reshape(-1)]
    return attrs.get("axes")


def _load(source):
    import onnx

    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (str, os.PathLike)):
        return onnx.load(str(source))
    import onnx_ir as ir

    if isinstance(source, ir.Model):
        return ir.to_proto(source)
    raise SpaError(f"to_torch takes a path, ModelProto or onnx_ir.Model, not {type(source).__name__}")


def _prepare(proto):
    """Inline ONNX functions and lift weight-holding Constant nodes into initializers, so that
    every weight becomes a parameter (the graph computes the same)."""
    import onnx
    from onnx import numpy_helper

    if proto.functions:
        import onnx.inliner

        proto = onnx.inliner.inline_local_functions(proto)
    lifted = []
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            array = numpy_helper.to_array(node.attribute[0].t)
            if array.dtype.kind == "f" and array.size > 1:
                lifted.append(node)
                proto.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
    for node in lifted:
        proto.graph.node.remove(node)
    return proto


def _conv_pads(attrs, spatial: int, x_shape, kernel, strides, dilations):
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


def _pad_input(F, x, pads, spatial, value=0.0):
    begin, end = pads[:spatial], pads[spatial:]
    if begin == end:
        return x, list(begin)
    flat = []
    for i in reversed(range(spatial)):
        flat += [begin[i], end[i]]
    return F.pad(x, flat, value=value), [0] * spatial


_CLASS: list = []  # the nn.Module subclass, built on first use (torch stays an optional import)


def _module_class():
    if _CLASS:
        return _CLASS[0]
    torch = _torch()
    from onnx import numpy_helper

    class _OnnxModule(torch.nn.Module):
        def __init__(self, proto):
            super().__init__()
            graph = proto.graph
            self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
            self.input_names = [i.name for i in graph.input]
            inits = {t.name for t in graph.initializer}
            self.input_names = [n for n in self.input_names if n not in inits]
            self.output_names = [o.name for o in graph.output]
            self.nodes = list(graph.node)
            for node in self.nodes:
                if node.domain not in ("", "ai.onnx"):
                    raise UnsupportedError(f"to_torch: {node.domain}::{node.op_type} '{node.name}' is not an ONNX "
                                           "standard op")
                if node.op_type not in _OPS:
                    raise UnsupportedError(f"to_torch: no torch equivalent for {node.op_type} '{node.name}'")
            stats = {n.input[i] for n in self.nodes if n.op_type == "BatchNormalization" for i in (3, 4)
                     if len(n.input) > i}
            self.onnx_names: dict[str, str] = {}
            self._attr_of: dict[str, str] = {}
            self._consts: dict[str, object] = {}
            taken = set()
            for tensor in graph.initializer:
                array = numpy_helper.to_array(tensor)
                if array.dtype.kind != "f":
                    self._consts[tensor.name] = torch.from_numpy(array.copy())
                    continue
                attr = re.sub(r"\W", "_", tensor.name) or "w"
                if attr[0].isdigit():
                    attr = "w_" + attr
                while attr in taken or hasattr(self, attr):
                    attr += "_"
                taken.add(attr)
                value = torch.from_numpy(array.copy())
                if tensor.name in stats or array.size <= 1:  # running stats; scalars (eps, clip bounds)
                    self.register_buffer(attr, value)
                else:
                    self.register_parameter(attr, torch.nn.Parameter(value))
                self.onnx_names[attr] = tensor.name
                self._attr_of[tensor.name] = attr
            self._proto = proto

        def parameter(self, onnx_name: str):
            return getattr(self, self._attr_of[onnx_name])

        def onnx_state(self) -> dict[str, np.ndarray]:
            """Current values by ONNX initializer name."""
            return {onnx: getattr(self, attr).detach().cpu().numpy() for attr, onnx in self.onnx_names.items()}

        def forward(self, *inputs):
            if len(inputs) != len(self.input_names):
                raise TypeError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)})")
            values = dict(self._consts)
            values.update({name: getattr(self, attr) for attr, name in self.onnx_names.items()})
            for name, x in zip(self.input_names, inputs):
                values[name] = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            for node in self.nodes:
                args = [values[i] if i else None for i in node.input]
                out = _OPS[node.op_type](self, node, _attrs(node), args, values)
                outs = out if isinstance(out, (list, tuple)) else [out]
                for name, v in zip(node.output, outs):
                    if name:
                        values[name] = v
            results = [values[n] for n in self.output_names]
            return results[0] if len(results) == 1 else tuple(results)

    _OnnxModule.__name__ = _OnnxModule.__qualname__ = "OnnxModule"
    _CLASS.append(_OnnxModule)
    return _OnnxModule


# ---- the op table: each entry (module, node, attrs, args, values) → tensor or tuple ----------------

def _ints(t) -> list[int]:
    return [int(v) for v in np.asarray(t.tolist() if hasattr(t, "tolist") else t).reshape(-1)]


def _build_ops():
    torch = _torch()
    import torch.nn.functional as F

    def conv(m, n, a, x, v):
        w = x[1]
        spatial = w.dim() - 2
        strides = a.get("strides", [1] * spatial)
        dil = a.get("dilations", [1] * spatial)
        pads = _conv_pads(a, spatial, x[0].shape, w.shape[2:], strides, dil)
        inp, pad = _pad_input(F, x[0], pads, spatial)
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
            pads = _conv_pads(a, spatial, x[0].shape, k, strides, dil)
            ceil = bool(a.get("ceil_mode", 0))
            if kind == "max":
                inp, pad = _pad_input(F, x[0], pads, spatial, value=float("-inf"))
                fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
                return fn(inp, k, strides, pad, dil, ceil_mode=ceil)
            include = bool(a.get("count_include_pad", 0))
            if any(d != 1 for d in dil):
                raise UnsupportedError(f"to_torch: AveragePool '{n.name}' with dilations={list(dil)}")
            fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial]
            if not include and pads[:spatial] != pads[spatial:]:
                # asymmetric pads that do not count: window sums over the zero-padded input divided by
                # the number of real elements in each window (the same pool over a mask of ones)
                inp, _ = _pad_input(F, x[0], pads, spatial)
                ones, _ = _pad_input(F, torch.ones_like(x[0][:1, :1]), pads, spatial)
                total = fn(inp, k, strides, 0, ceil_mode=ceil, count_include_pad=True)
                return total / fn(ones, k, strides, 0, ceil_mode=ceil, count_include_pad=True)
            inp, pad = _pad_input(F, x[0], pads, spatial) if include else (x[0], pads[:spatial])
            return fn(inp, k, strides, pad, ceil_mode=ceil, count_include_pad=include)
        return run

    def reduce(fn):
        def run(m, n, a, x, v):
            axes = _axes(n, a, v, 1)
            keep = bool(a.get("keepdims", 1))
            if not axes:
                if a.get("noop_with_empty_axes", 0):
                    return x[0]
                axes = list(range(x[0].dim()))
            return fn(x[0], [int(i) for i in axes], keep)
        return run

    def reshape(m, n, a, x, v):
        shape = _ints(x[1])
        if not a.get("allowzero", 0):
            shape = [x[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return x[0].reshape(shape)

    def flatten(m, n, a, x, v):
        axis = a.get("axis", 1) % max(x[0].dim(), 1)
        return x[0].reshape(int(np.prod(x[0].shape[:axis], dtype=np.int64)), -1)

    def squeeze(m, n, a, x, v):
        axes = _axes(n, a, v, 1)
        if axes is None:
            return x[0].squeeze()
        y = x[0]
        for ax in sorted((i % y.dim() for i in axes), reverse=True):
            y = y.squeeze(ax)
        return y

    def unsqueeze(m, n, a, x, v):
        axes = _axes(n, a, v, 1)
        y = x[0]
        rank = y.dim() + len(axes)
        for ax in sorted(i % rank for i in axes):
            y = y.unsqueeze(ax)
        return y

    def slice_(m, n, a, x, v):
        if m.opset < 10:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            starts, ends = _ints(x[1]), _ints(x[2])
            axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else None
            steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else None
        axes = axes or list(range(len(starts)))
        steps = steps or [1] * len(starts)
        index = [slice(None)] * x[0].dim()
        y = x[0]
        for s, e, ax, st in zip(starts, ends, axes, steps):
            ax %= y.dim()
            dim = y.shape[ax]
            s, e = s + dim if s < 0 else s, e + dim if e < 0 else e
            if st > 0:
                index[ax] = slice(max(0, min(dim, s)), max(0, min(dim, e)), st)
            elif st < 0:  # starts clamp to [0, dim-1], ends to [-1, dim-1]; torch has no negative steps
                picked = list(range(max(0, min(dim - 1, s)), max(-1, min(dim - 1, e)), st))
                y = torch.index_select(y, ax, torch.tensor(picked, dtype=torch.long))
            else:
                raise UnsupportedError(f"to_torch: Slice '{n.name}' with a zero step")
        return y[tuple(index)]

    def split(m, n, a, x, v):
        axis = a.get("axis", 0)
        sizes = _ints(x[1]) if len(x) > 1 and x[1] is not None else a.get("split")
        if sizes is None:
            parts = len(n.output)
            size = -(-x[0].shape[axis] // parts)
            sizes = [min(size, x[0].shape[axis] - i * size) for i in range(parts)]
        return list(torch.split(x[0], list(sizes), dim=axis))

    def gather(m, n, a, x, v):
        idx = x[1].long()
        axis = a.get("axis", 0) % x[0].dim()
        idx = torch.where(idx < 0, idx + x[0].shape[axis], idx)
        out = torch.index_select(x[0], axis, idx.reshape(-1))
        return out.reshape(tuple(x[0].shape[:axis]) + tuple(idx.shape) + tuple(x[0].shape[axis + 1:]))

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

    def clip(m, n, a, x, v):
        lo = a.get("min") if m.opset < 11 else (x[1] if len(x) > 1 and x[1] is not None else None)
        hi = a.get("max") if m.opset < 11 else (x[2] if len(x) > 2 and x[2] is not None else None)
        return torch.clamp(x[0], lo, hi)

    def softmax(fn):
        def run(m, n, a, x, v):
            axis = a.get("axis", -1 if m.opset >= 13 else 1)
            if m.opset < 13:
                shape = x[0].shape
                flat = x[0].reshape(int(np.prod(shape[:axis % x[0].dim()], dtype=np.int64)), -1)
                return fn(flat, -1).reshape(shape)
            return fn(x[0], axis)
        return run

    def gelu(m, n, a, x, v):
        approx = a.get("approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        return F.gelu(x[0], approximate="tanh" if approx == "tanh" else "none")

    def cast(m, n, a, x, v):
        from onnx import helper

        return x[0].to(getattr(torch, np.dtype(helper.tensor_dtype_to_np_dtype(a["to"])).name))

    def pad(m, n, a, x, v):
        pads = _ints(x[1]) if m.opset >= 11 else a["pads"]
        value = float(x[2]) if m.opset >= 11 and len(x) > 2 and x[2] is not None else a.get("value", 0.0)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        rank = x[0].dim()
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(rank))
        half = len(pads) // 2
        axes = [ax % rank for ax in axes]
        if len(axes) != half:
            raise UnsupportedError(f"to_torch: Pad '{n.name}' with {len(pads)} pads for axes {axes}")
        if mode == "constant":
            full = [0] * (2 * rank)
            for i, ax in enumerate(axes):
                full[ax], full[ax + rank] = pads[i], pads[i + half]
            flat = []
            for i in reversed(range(rank)):
                flat += [full[i], full[i + rank]]
            return F.pad(x[0], flat, value=value)
        if mode not in ("edge", "reflect", "wrap"):
            raise UnsupportedError(f"to_torch: Pad '{n.name}' with mode={mode}")
        y = x[0]
        for i, ax in enumerate(axes):  # every axis by a gather: edge, reflect and wrap on any axis
            begin, end, dim = pads[i], pads[i + half], y.shape[ax]
            if begin == 0 and end == 0:
                continue
            where = np.arange(-begin, dim + end)
            if mode == "edge":
                where = np.clip(where, 0, dim - 1)
            elif mode == "wrap":
                where = where % dim
            else:
                if dim == 1:
                    where = np.zeros_like(where)
                else:
                    period = 2 * (dim - 1)
                    where = np.abs(where) % period
                    where = np.where(where >= dim, period - where, where)
            y = torch.index_select(y, ax, torch.from_numpy(where.astype(np.int64)))
        return y

    def constant(m, n, a, x, v):
        from onnx import numpy_helper

        if "value" in a:
            return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
        for key in ("value_float", "value_int"):
            if key in a:
                return torch.tensor(a[key])
        for key in ("value_floats", "value_ints"):
            if key in a:
                return torch.tensor(list(a[key]))
        raise UnsupportedError(f"to_torch: Constant '{n.name}' with {sorted(a)}")

    def constant_of_shape(m, n, a, x, v):
        from onnx import numpy_helper

        fill = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
        return torch.full(_ints(x[0]), fill.reshape(-1)[0].item(), dtype=getattr(torch, fill.dtype.name))

    def binary(fn):
        return lambda m, n, a, x, v: fn(x[0], x[1])

    def unary(fn):
        return lambda m, n, a, x, v: fn(x[0])

    def variadic(fn):
        def run(m, n, a, x, v):
            y = x[0]
            for other in x[1:]:
                y = fn(y, other)
            return y
        return run

    def mean_of(m, n, a, x, v):
        return sum(x) / len(x)

    def resize(m, n, a, x, v):
        data = x[0]
        rank = data.dim()
        if m.opset < 11:  # Resize-10: (X, scales), asymmetric coordinates
            scales, sizes, roi = _optional(x, 1), None, None
            ctm, nearest = "asymmetric", "simple"
        else:
            roi, scales, sizes = _optional(x, 1), _optional(x, 2), _optional(x, 3)
            ctm = _text(a.get("coordinate_transformation_mode"), "half_pixel")
            nearest = _text(a.get("nearest_mode"), "round_prefer_floor")
        mode = _text(a.get("mode"), "nearest")
        antialias = bool(a.get("antialias", 0)) and mode != "nearest"
        axes = [int(i) % rank for i in a.get("axes", range(rank))]
        policy = _text(a.get("keep_aspect_ratio_policy"), "stretch")
        full_scales, full_sizes = [1.0] * rank, [int(d) for d in data.shape]
        if sizes is not None and sizes.numel():
            given = _ints(sizes)
            if policy == "stretch":
                for ax, size in zip(axes, given):
                    full_sizes[ax] = size
                    full_scales[ax] = float(np.float32(size) / np.float32(data.shape[ax]))
            elif policy in ("not_larger", "not_smaller"):
                ratios = [np.float32(size) / np.float32(data.shape[ax]) for ax, size in zip(axes, given)]
                scale = min(ratios) if policy == "not_larger" else max(ratios)
                for ax in axes:
                    full_sizes[ax] = int(np.floor(scale * np.float32(data.shape[ax]) + np.float32(0.5)))
                    full_scales[ax] = float(scale)
            else:
                _unsupported(n, f"keep_aspect_ratio_policy={policy}")
        elif scales is not None and scales.numel():
            given = [float(s) for s in np.asarray(scales.tolist(), np.float32).reshape(-1)]
            for ax, scale in zip(axes, given):
                if scale <= 0:
                    _unsupported(n, f"scale {scale}")
                full_scales[ax] = scale
                length = np.float32(data.shape[ax]) * np.float32(scale)
                if ctm == "tf_crop_and_resize" and roi is not None and roi.numel():
                    r = np.asarray(roi.tolist(), np.float32).reshape(-1)
                    i = axes.index(ax)
                    length = length * (r[i + len(axes)] - r[i])
                full_sizes[ax] = int(np.floor(length))
        else:
            _unsupported(n, "neither scales nor sizes")
        full_roi = None
        if ctm == "tf_crop_and_resize":
            if roi is None or not roi.numel():
                _unsupported(n, "coordinate_transformation_mode=tf_crop_and_resize and no roi")
            r = [float(t) for t in np.asarray(roi.tolist(), np.float32).reshape(-1)]
            full_roi = [0.0] * rank + [1.0] * rank
            for i, ax in enumerate(axes):
                full_roi[ax], full_roi[ax + rank] = r[i], r[i + len(axes)]
        if antialias and any(s < 1 for s in full_scales):
            _unsupported(n, "antialias=1 when downscaling")
        return _resize(torch, n, data, full_sizes, full_scales, mode, ctm, nearest, a.get("cubic_coeff_a", -0.75),
                       bool(a.get("exclude_outside", 0)), full_roi, a.get("extrapolation_value", 0.0))

    def upsample(m, n, a, x, v):
        scales = a["scales"] if "scales" in a else [float(s) for s in np.asarray(x[1].tolist()).reshape(-1)]
        mode = _text(a.get("mode"), "nearest")
        mode = "linear" if mode == "bilinear" else mode
        sizes = [int(np.floor(np.float32(d) * np.float32(s))) for d, s in zip(x[0].shape, scales)]
        return _resize(torch, n, x[0], sizes, list(scales), mode, "asymmetric", "simple")

    def conv_transpose(m, n, a, x, v):
        w = x[1]
        spatial = w.dim() - 2
        strides = list(a.get("strides", [1] * spatial))
        dil = list(a.get("dilations", [1] * spatial))
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        if kernel != list(w.shape[2:]):
            _unsupported(n, f"kernel_shape={kernel} unlike its weight {list(w.shape[2:])}")
        extra = list(a.get("output_padding", [0] * spatial))
        auto = _text(a.get("auto_pad"), "NOTSET")
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
        bias = _optional(x, 2)
        return y if bias is None else y + bias.reshape([1, -1] + [1] * spatial)

    def prelu(m, n, a, x, v):
        return torch.where(x[0] >= 0, x[0], x[0] * x[1])

    def instance_norm(m, n, a, x, v):
        return F.instance_norm(x[0], weight=x[1], bias=x[2], eps=a.get("epsilon", 1e-5))

    def arg(largest: bool):
        def run(m, n, a, x, v):
            axis = a.get("axis", 0) % x[0].dim()
            keep = bool(a.get("keepdims", 1))
            t = x[0]
            fn = torch.argmax if largest else torch.argmin
            if a.get("select_last_index", 0):
                flipped = fn(t.flip(axis), dim=axis, keepdim=keep)
                return t.shape[axis] - 1 - flipped
            return fn(t, dim=axis, keepdim=keep)
        return run

    def one_hot(m, n, a, x, v):
        depth = int(np.asarray(x[1].tolist()).reshape(-1)[0])
        values = x[2].reshape(-1)
        idx = x[0]
        idx = idx.long() if not idx.is_floating_point() else idx.floor().long()  # float indices: cast
        idx = torch.where(idx < 0, idx + depth, idx)
        axis = a.get("axis", -1) % (idx.dim() + 1)
        shape = [1] * (idx.dim() + 1)
        shape[axis] = depth
        hot = idx.unsqueeze(axis) == torch.arange(depth).reshape(shape)
        return torch.where(hot, values[1], values[0])

    def lrn(m, n, a, x, v):
        size = int(a["size"])
        square = x[0] * x[0]
        front, back = (size - 1) // 2, size - 1 - (size - 1) // 2
        padded = F.pad(square.transpose(1, -1), (front, back)).transpose(1, -1)
        channels = x[0].shape[1]
        total = sum(padded.narrow(1, j, channels) for j in range(size))
        return x[0] / (a.get("bias", 1.0) + a.get("alpha", 1e-4) / size * total) ** a.get("beta", 0.75)

    def gather_nd(m, n, a, x, v):
        data, idx = x[0], x[1].long()
        b = int(a.get("batch_dims", 0))
        k = idx.shape[-1]
        batch = tuple(data.shape[:b])
        count = int(np.prod(batch, dtype=np.int64))
        middle = tuple(idx.shape[b:-1])
        flat_data = data.reshape((count,) + tuple(data.shape[b:]))
        flat_idx = idx.reshape(count, -1, k)
        sizes = torch.tensor(data.shape[b:b + k])
        flat_idx = torch.where(flat_idx < 0, flat_idx + sizes, flat_idx)
        rows = torch.arange(count).reshape(count, 1)
        picked = flat_data[(rows,) + tuple(flat_idx[..., j] for j in range(k))]
        return picked.reshape(batch + middle + tuple(data.shape[b + k:]))

    def scatter_elements(m, n, a, x, v):
        data, idx, upd = x[0], x[1].long(), x[2]
        axis = a.get("axis", 0) % data.dim()
        idx = torch.where(idx < 0, idx + data.shape[axis], idx)
        how = _text(a.get("reduction"), "none")
        if how == "none":
            return data.scatter(axis, idx, upd)
        if how not in ("add", "mul", "max", "min"):
            _unsupported(n, f"reduction={how}")
        return data.scatter_reduce(axis, idx, upd, {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[how])

    def per_axis(n, a, param, rank):
        if param.numel() == 1 and param.dim() <= 1:
            return param.reshape(())
        if a.get("block_size", 0):
            _unsupported(n, "block_size (blocked quantization)")
        if param.dim() != 1:
            _unsupported(n, f"a rank-{param.dim()} scale")
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
            _unsupported(n, f"{t.dtype} input")
        y = t.to(torch.float64)
        if zero is not None:
            zero = zero.to(torch.float64)
            y = y - (zero.reshape(axis_shape) if axis_shape is not None and zero.numel() > 1 else zero.reshape(()))
        return y

    def conv_integer(m, n, a, x, v):
        spatial = x[1].dim() - 2
        data = centred(n, x[0], _optional(x, 2))
        weight = centred(n, x[1], _optional(x, 3), [-1] + [1] * (spatial + 1))
        return torch.round(conv(m, n, a, [data, weight], v)).to(torch.int32)

    def matmul_integer(m, n, a, x, v):
        left = centred(n, x[0], _optional(x, 2), [-1, 1])
        right = centred(n, x[1], _optional(x, 3), [-1])
        return torch.round(left @ right).to(torch.int32)

    def dequantize(m, n, a, x, v):
        scale = x[1]
        if x[0].dtype not in qrange:
            _unsupported(n, f"{x[0].dtype} input")
        rank = x[0].dim()
        y = x[0].to(scale.dtype)
        zero = _optional(x, 2)
        if zero is not None:
            y = y - per_axis(n, a, zero, rank).to(scale.dtype)
        return y * per_axis(n, a, scale, rank)

    def quantize(m, n, a, x, v):
        from onnx import helper

        zero = _optional(x, 2)
        if "output_dtype" in a and a["output_dtype"]:
            dtype = getattr(torch, np.dtype(helper.tensor_dtype_to_np_dtype(a["output_dtype"])).name)
        else:
            dtype = zero.dtype if zero is not None else torch.uint8
        if dtype not in qrange or dtype == torch.int32:
            _unsupported(n, f"output type {dtype}")
        rank = x[0].dim()
        y = torch.round(x[0] / per_axis(n, a, x[1], rank))
        if zero is not None:
            y = y + per_axis(n, a, zero, rank).to(y.dtype)
        lo, hi = qrange[dtype]
        return torch.clamp(y, lo, hi).to(dtype)

    return {
        "Conv": conv, "Gemm": gemm, "MatMul": binary(torch.matmul),
        "Add": binary(torch.add), "Sub": binary(torch.sub), "Mul": binary(torch.mul),
        "Div": lambda m, n, a, x, v: (torch.div(x[0], x[1], rounding_mode="trunc")
                                      if not x[0].is_floating_point() else x[0] / x[1]),
        "Pow": binary(torch.pow), "Max": variadic(torch.maximum), "Min": variadic(torch.minimum),
        "Sum": variadic(torch.add), "Mean": mean_of,
        "Equal": binary(torch.eq), "Less": binary(torch.lt), "Greater": binary(torch.gt),
        "LessOrEqual": binary(torch.le), "GreaterOrEqual": binary(torch.ge),
        "And": binary(torch.logical_and), "Or": binary(torch.logical_or), "Xor": binary(torch.logical_xor),
        "Not": unary(torch.logical_not), "IsNaN": unary(torch.isnan),
        "IsInf": lambda m, n, a, x, v: _isinf(torch, x[0], a),
        "Range": lambda m, n, a, x, v: torch.arange(x[0].item(), x[1].item(), x[2].item(), dtype=x[0].dtype),
        "Sin": unary(torch.sin), "Cos": unary(torch.cos), "Sign": unary(torch.sign),
        "Where": lambda m, n, a, x, v: torch.where(x[0].bool(), x[1], x[2]),
        "Relu": unary(F.relu), "Sigmoid": unary(torch.sigmoid), "Tanh": unary(torch.tanh),
        "Erf": unary(torch.erf), "Exp": unary(torch.exp), "Log": unary(torch.log), "Sqrt": unary(torch.sqrt),
        "Neg": unary(torch.neg), "Abs": unary(torch.abs), "Reciprocal": unary(torch.reciprocal),
        "Floor": unary(torch.floor), "Ceil": unary(torch.ceil), "Softplus": unary(F.softplus),
        "Identity": unary(lambda t: t), "Dropout": lambda m, n, a, x, v: x[0],
        "LeakyRelu": lambda m, n, a, x, v: F.leaky_relu(x[0], a.get("alpha", 0.01)),
        "Elu": lambda m, n, a, x, v: F.elu(x[0], a.get("alpha", 1.0)),
        "HardSigmoid": lambda m, n, a, x, v: torch.clamp(a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0, 1),
        "HardSwish": unary(F.hardswish), "Clip": clip, "Gelu": gelu,
        "Softmax": softmax(torch.softmax), "LogSoftmax": softmax(torch.log_softmax),
        "Transpose": lambda m, n, a, x, v: x[0].permute(a.get("perm", list(range(x[0].dim()))[::-1])),
        "Reshape": reshape, "Flatten": flatten, "Squeeze": squeeze, "Unsqueeze": unsqueeze,
        "Concat": lambda m, n, a, x, v: torch.cat(x, dim=a["axis"]), "Split": split, "Slice": slice_,
        "Gather": gather, "Cast": cast, "Pad": pad, "Constant": constant, "ConstantOfShape": constant_of_shape,
        "Shape": lambda m, n, a, x, v: torch.tensor(x[0].shape[a.get("start", 0):a.get("end", None)]),
        "Expand": lambda m, n, a, x, v: x[0] * torch.ones(_ints(x[1]), dtype=x[0].dtype),
        "Tile": lambda m, n, a, x, v: x[0].repeat(_ints(x[1])),
        "GlobalAveragePool": lambda m, n, a, x, v: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
        "GlobalMaxPool": lambda m, n, a, x, v: x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True),
        "MaxPool": pool("max"), "AveragePool": pool("avg"),
        "ReduceMean": reduce(lambda t, ax, k: t.mean(dim=ax, keepdim=k)),
        "ReduceSum": reduce(lambda t, ax, k: t.sum(dim=ax, keepdim=k)),
        "ReduceMax": reduce(lambda t, ax, k: t.amax(dim=ax, keepdim=k)),
        "ReduceMin": reduce(lambda t, ax, k: t.amin(dim=ax, keepdim=k)),
        "ReduceProd": reduce(lambda t, ax, k: _prod(t, ax, k)),
        "BatchNormalization": batchnorm, "LayerNormalization": layernorm,
        "ReduceSumSquare": reduce(lambda t, ax, k: (t * t).sum(dim=ax, keepdim=k)),
        "ReduceL1": reduce(lambda t, ax, k: t.abs().sum(dim=ax, keepdim=k)),
        "ReduceL2": reduce(lambda t, ax, k: (t * t).sum(dim=ax, keepdim=k).sqrt()),
        "ReduceLogSum": reduce(lambda t, ax, k: t.sum(dim=ax, keepdim=k).log()),
        "ReduceLogSumExp": reduce(lambda t, ax, k: t.logsumexp(dim=ax, keepdim=k)),
        "Resize": resize, "Upsample": upsample, "ConvTranspose": conv_transpose, "PRelu": prelu,
        "InstanceNormalization": instance_norm, "ArgMax": arg(True), "ArgMin": arg(False),
        "LSTM": lambda m, n, a, x, v: _recurrent(torch, F, m, n, a, x, "LSTM"),
        "GRU": lambda m, n, a, x, v: _recurrent(torch, F, m, n, a, x, "GRU"),
        "OneHot": one_hot, "LRN": lrn, "GatherND": gather_nd, "ScatterElements": scatter_elements,
        "QuantizeLinear": quantize, "DequantizeLinear": dequantize, "DynamicQuantizeLinear": dynamic_quantize,
        "ConvInteger": conv_integer, "MatMulInteger": matmul_integer,
    }


def _isinf(torch, t, a):
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    return (torch.isposinf(t) if pos else torch.zeros_like(t, dtype=torch.bool)) | \
        (torch.isneginf(t) if neg else torch.zeros_like(t, dtype=torch.bool))


def _prod(t, axes, keep):
    for ax in sorted((a % t.dim() for a in axes), reverse=True):
        t = t.prod(dim=ax, keepdim=keep)
    return t


# ---- ops beyond the SPA zoo's exporters: Resize/Upsample, ConvTranspose, recurrent layers, … -----------

def _text(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _unsupported(n, what: str):
    raise UnsupportedError(f"to_torch: {n.op_type} '{n.name}' with {what}")


def _optional(x, i):
    return x[i] if len(x) > i and x[i] is not None else None


def _resize_axis_weights(n, in_len: int, out_len: int, scale, mode: str, ctm: str, nearest: str, cubic_a: float,
                         exclude_outside: bool, roi: tuple):
    """(indices [out, taps] int64, weights [out, taps] float32, outside [out] bool or None) for one axis,
    computed in float32 with ONNX Runtime's order of operations."""
    f32 = np.float32
    x = np.arange(out_len, dtype=f32)
    scale = f32(scale)
    if ctm == "half_pixel":
        orig = (x + f32(0.5)) / scale - f32(0.5)
    elif ctm == "pytorch_half_pixel":
        orig = (x + f32(0.5)) / scale - f32(0.5) if out_len > 1 else np.zeros_like(x)
    elif ctm == "align_corners":
        orig = x * f32(in_len - 1) / f32(out_len - 1) if out_len > 1 else np.zeros_like(x)
    elif ctm == "asymmetric":
        orig = x / scale
    elif ctm == "half_pixel_symmetric":
        width = scale * f32(in_len)
        offset = f32(in_len) / f32(2) * (f32(1) - f32(out_len) / width)
        orig = offset + (x + f32(0.5)) / scale - f32(0.5)
    elif ctm == "tf_crop_and_resize":
        start, end = f32(roi[0]), f32(roi[1])
        if out_len > 1:
            orig = start * f32(in_len - 1) + x * (end - start) * f32(in_len - 1) / f32(out_len - 1)
        else:
            orig = np.full_like(x, f32(0.5) * (start + end) * f32(in_len - 1))
    else:
        _unsupported(n, f"coordinate_transformation_mode={ctm}")
    orig = orig.astype(f32)
    outside = (orig < 0) | (orig > in_len - 1) if ctm == "tf_crop_and_resize" else None
    if mode == "nearest":
        if nearest == "round_prefer_floor":
            idx = np.where(orig - np.floor(orig) == f32(0.5), np.floor(orig), np.floor(orig + f32(0.5)))
        elif nearest == "round_prefer_ceil":
            idx = np.floor(orig + f32(0.5))
        elif nearest == "floor":
            idx = np.floor(orig)
        elif nearest == "ceil":
            idx = np.ceil(orig)
        elif nearest == "simple":  # Resize-10 and Upsample: truncation up, ceiling down
            idx = np.ceil(orig) if scale < 1 else np.trunc(orig)
        else:
            _unsupported(n, f"nearest_mode={nearest}")
        idx = np.clip(idx, 0, in_len - 1).astype(np.int64)[:, None]
        return idx, np.ones(idx.shape, f32), outside
    base = np.floor(orig)
    ratio = (orig - base).astype(f32)
    base = base.astype(np.int64)
    if mode == "linear":
        clamped = np.clip(orig, 0, in_len - 1)
        base = np.minimum(np.floor(clamped).astype(np.int64), in_len - 1)
        ratio = (clamped - base).astype(f32)
        idx = np.stack([base, base + 1], 1)
        weights = np.stack([f32(1) - ratio, ratio], 1)
    elif mode == "cubic":
        a = f32(cubic_a)

        def kernel(d):
            d = np.abs(d)
            near = ((a + 2) * d - (a + 3)) * d * d + 1
            far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
            return np.where(d <= 1, near, np.where(d < 2, far, f32(0))).astype(f32)

        idx = np.stack([base - 1, base, base + 1, base + 2], 1)
        weights = np.stack([kernel(ratio + 1), kernel(ratio), kernel(f32(1) - ratio), kernel(f32(2) - ratio)], 1)
        if exclude_outside:
            weights = np.where((idx < 0) | (idx > in_len - 1), f32(0), weights)
            weights = weights / weights.sum(1, keepdims=True)
    else:
        _unsupported(n, f"mode={mode}")
    return np.clip(idx, 0, in_len - 1), weights.astype(f32), outside


def _resize(torch, n, x, out_sizes: list[int], scales: list[float], mode: str, ctm: str, nearest: str,
            cubic_a: float = -0.75, exclude_outside: bool = False, roi=None, extrapolation: float = 0.0):
    """Separable resampling of every axis whose size, scale or region changes."""
    if mode != "nearest" and not x.is_floating_point():
        _unsupported(n, f"mode={mode} on {x.dtype} input")
    y = x
    for axis in range(x.dim()):
        in_len, out_len = int(x.shape[axis]), int(out_sizes[axis])
        region = (float(roi[axis]), float(roi[axis + x.dim()])) if roi is not None else (0.0, 1.0)
        if in_len == out_len and float(scales[axis]) == 1.0 and (ctm != "tf_crop_and_resize"
                                                                   or region == (0.0, 1.0)):
            continue
        if in_len == 0 or out_len == 0:
            _unsupported(n, f"an empty axis {axis}")
        idx, weights, outside = _resize_axis_weights(n, in_len, out_len, scales[axis], mode, ctm, nearest,
                                                     cubic_a, exclude_outside, region)
        shape = [1] * y.dim()
        shape[axis] = out_len
        out = None
        for k in range(idx.shape[1]):
            tap = torch.index_select(y, axis, torch.from_numpy(idx[:, k].copy()))
            if mode != "nearest":
                tap = tap * torch.from_numpy(weights[:, k].copy()).to(y.dtype).reshape(shape)
            out = tap if out is None else out + tap
        if outside is not None and outside.any():
            mask = torch.from_numpy(outside).reshape(shape)
            out = torch.where(mask, torch.tensor(extrapolation, dtype=out.dtype), out)
        y = out
    return y


def _rnn_activation(torch, F, n, name: str, alphas: list, betas: list):
    """The activation called `name`, taking its alpha/beta from the front of the given lists."""
    def take(values, default):
        return values.pop(0) if values else default

    name = _text(name, "")
    plain = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu, "Softsign": F.softsign,
             "Softplus": F.softplus}
    if name in plain:
        return plain[name]
    if name == "LeakyRelu":
        alpha = take(alphas, 0.01)
        return lambda t: F.leaky_relu(t, alpha)
    if name == "ThresholdedRelu":
        alpha = take(alphas, 1.0)
        return lambda t: torch.where(t > alpha, t, torch.zeros_like(t))
    if name == "Elu":
        alpha = take(alphas, 1.0)
        return lambda t: F.elu(t, alpha)
    if name == "HardSigmoid":
        alpha, beta = take(alphas, 0.2), take(betas, 0.5)
        return lambda t: torch.clamp(alpha * t + beta, 0, 1)
    if name == "Affine":
        alpha, beta = take(alphas, 1.0), take(betas, 0.0)
        return lambda t: alpha * t + beta
    if name == "ScaledTanh":
        alpha, beta = take(alphas, 1.0), take(betas, 1.0)
        return lambda t: alpha * torch.tanh(beta * t)
    _unsupported(n, f"activations={name}")


def _recurrent(torch, F, m, n, a, x, kind: str):
    """LSTM (gates i, o, f, c; peepholes i, o, f) and GRU (gates z, r, h), every direction and layout,
    sequence_lens (states stop at each sequence's end, Y is 0 beyond it), clip and input_forget."""
    gates = 4 if kind == "LSTM" else 3
    X, W, R = x[0], x[1], x[2]
    B, lens, h0 = _optional(x, 3), _optional(x, 4), _optional(x, 5)
    c0, P = (_optional(x, 6), _optional(x, 7)) if kind == "LSTM" else (None, None)
    layout = a.get("layout", 0)
    if layout:
        X = X.transpose(0, 1)
        h0 = h0.transpose(0, 1) if h0 is not None else None
        c0 = c0.transpose(0, 1) if c0 is not None else None
    direction = _text(a.get("direction"), "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        _unsupported(n, f"direction={direction}")
    dirs = 2 if direction == "bidirectional" else 1
    hidden = int(a.get("hidden_size", R.shape[-1]))
    steps, batch = X.shape[0], X.shape[1]
    per = 3 if kind == "LSTM" else 2
    names = [_text(s, "") for s in a.get("activations", [])] or \
        (["Sigmoid", "Tanh", "Tanh"] if kind == "LSTM" else ["Sigmoid", "Tanh"]) * dirs
    if len(names) != per * dirs:
        _unsupported(n, f"{len(names)} activations for {dirs} direction(s)")
    alphas, betas = list(a.get("activation_alpha", [])), list(a.get("activation_beta", []))
    acts = [_rnn_activation(torch, F, n, s, alphas, betas) for s in names]
    clip = a.get("clip")
    bound = (lambda t: torch.clamp(t, -clip, clip)) if clip is not None else (lambda t: t)
    input_forget = bool(a.get("input_forget", 0))
    before_reset = bool(a.get("linear_before_reset", 0))
    valid = None
    if lens is not None:
        lens = lens.long().reshape(-1)
        if bool((lens < steps).any()):
            valid = [(t < lens).unsqueeze(1) for t in range(steps)]
    H = hidden
    ys, hs, cs = [], [], []
    for d in range(dirs):
        f, g = acts[per * d], acts[per * d + 1]
        h_act = acts[per * d + 2] if kind == "LSTM" else None
        w, r = W[d], R[d]
        xw = X @ w.transpose(0, 1)
        if B is not None:
            xw = xw + B[d, :gates * H]
            rb = B[d, gates * H:]
        else:
            rb = None
        h = h0[d] if h0 is not None else X.new_zeros(batch, H)
        c = c0[d] if c0 is not None else X.new_zeros(batch, H)
        p = P[d] if P is not None else None
        out = [None] * steps
        order = range(steps - 1, -1, -1) if (direction == "reverse" or d == 1) else range(steps)
        for t in order:
            if kind == "LSTM":
                gate = xw[t] + h @ r.transpose(0, 1)
                if rb is not None:
                    gate = gate + rb
                gi, go, gf, gc = gate.split(H, -1)
                if p is not None:
                    gi, gf = gi + p[:H] * c, gf + p[2 * H:] * c
                i = f(bound(gi))
                forget = 1 - i if input_forget else f(bound(gf))
                c_new = forget * c + i * g(bound(gc))
                if p is not None:
                    go = go + p[H:2 * H] * c_new
                h_new = f(bound(go)) * h_act(c_new)
            else:
                gz, gr, gh = xw[t].split(H, -1)
                rz, rr, rh = r.split(H, 0)
                bz, br, bh = rb.split(H, -1) if rb is not None else (0, 0, 0)
                z = f(bound(gz + h @ rz.transpose(0, 1) + bz))
                reset = f(bound(gr + h @ rr.transpose(0, 1) + br))
                if before_reset:
                    cand = g(bound(gh + reset * (h @ rh.transpose(0, 1) + bh)))
                else:
                    cand = g(bound(gh + (reset * h) @ rh.transpose(0, 1) + bh))
                h_new = (1 - z) * cand + z * h
                c_new = c
            if valid is not None:
                h_new = torch.where(valid[t], h_new, h)
                c_new = torch.where(valid[t], c_new, c)
                out[t] = torch.where(valid[t], h_new, torch.zeros_like(h_new))
            else:
                out[t] = h_new
            h, c = h_new, c_new
        ys.append(torch.stack(out) if steps else X.new_zeros(0, batch, H))
        hs.append(h)
        cs.append(c)
    Y, Y_h, Y_c = torch.stack(ys, 1), torch.stack(hs), torch.stack(cs)
    if layout:
        Y, Y_h, Y_c = Y.permute(2, 0, 1, 3), Y_h.transpose(0, 1), Y_c.transpose(0, 1)
    return [Y, Y_h, Y_c] if kind == "LSTM" else [Y, Y_h]


_OPS: dict = {}


def to_torch(source):
    """A trainable torch.nn.Module running the ONNX model (path, ModelProto or onnx_ir.Model)."""
    if not _OPS:
        _OPS.update(_build_ops())
    cls = _module_class()
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(_load(source))
    return cls(_prepare(proto))


def export(module, output, source=None) -> Path:
    """Write `module`'s current parameters into its ONNX graph (or `source`'s) and save to `output`
    atomically. The graph, names and I/O stay those of the model it was built from."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto()
    proto.CopyFrom(_load(source) if source is not None else module._proto)
    state = module.onnx_state()
    for i, tensor in enumerate(proto.graph.initializer):
        if tensor.name in state:
            array = state[tensor.name].astype(numpy_helper.to_array(tensor).dtype, copy=False)
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
    return _write_checked(proto, output)


def _write_checked(proto, output) -> Path:
    """Check the ModelProto and write it atomically (spa.core.output): a failure leaves no partial file."""
    import onnx

    from spa.core.output import write_files

    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # the checker raises several types
        raise SpaError(f"the exporter wrote an invalid ONNX model: {str(exc).splitlines()[0][:200]}") from None
    return write_files({Path(output): lambda tmp: onnx.save(proto, str(tmp))}, what="-o")[0]
