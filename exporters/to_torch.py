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
stops at opset 20 Transposes; this interpreter covers the ops SPA's zoo exporters produce.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from spa.exporters.framework import write_atomically

from spa.errors import SpaError, UnsupportedError


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
            inp, pad = _pad_input(F, x[0], pads, spatial) if include else (x[0], pads[:spatial])
            if not include and pads[:spatial] != pads[spatial:]:
                raise UnsupportedError(f"to_torch: AveragePool '{n.name}' with asymmetric pads")
            fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial]
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
        for s, e, ax, st in zip(starts, ends, axes, steps):
            if st < 0:
                raise UnsupportedError(f"to_torch: Slice '{n.name}' with a negative step")
            dim = x[0].shape[ax]
            s = max(0, min(dim, s + dim if s < 0 else s))
            e = max(0, min(dim, e + dim if e < 0 else e))
            index[ax] = slice(s, e, st)
        return x[0][tuple(index)]

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
        flat = []
        half = len(pads) // 2
        for i in reversed(range(half)):
            flat += [pads[i], pads[i + half]]
        if axes != list(range(rank))[-half:] and axes != list(range(rank)):
            raise UnsupportedError(f"to_torch: Pad '{n.name}' on axes {axes}")
        return F.pad(x[0], flat, mode={"edge": "replicate"}.get(mode, mode), value=value)

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
    }


def _isinf(torch, t, a):
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    return (torch.isposinf(t) if pos else torch.zeros_like(t, dtype=torch.bool)) | \
        (torch.isneginf(t) if neg else torch.zeros_like(t, dtype=torch.bool))


def _prod(t, axes, keep):
    for ax in sorted((a % t.dim() for a in axes), reverse=True):
        t = t.prod(dim=ax, keepdim=keep)
    return t


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
    return write_atomically(proto, output)
