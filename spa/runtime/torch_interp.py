"""The ONNX interpreter behind spa.runtime.to_torch: an nn.Module running the graph node by node with
torch ops from the op-table modules (spa/runtime/torch_ops_*.py), and the weights written back."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from spa.core.errors import SpaError, UnsupportedError
from spa.runtime.torch_ops_common import import_torch


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


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


_CLASS: list = []  # the nn.Module subclass, built on first use (torch stays an optional import)


def _module_class():
    if _CLASS:
        return _CLASS[0]
    torch = import_torch()
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
            self._node_attrs = [_attrs(node) for node in self.nodes]  # parsed once, not on every forward
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
            for node, attrs in zip(self.nodes, self._node_attrs):
                args = [values[i] if i else None for i in node.input]
                out = _OPS[node.op_type](self, node, dict(attrs), args, values)
                outs = out if isinstance(out, (list, tuple)) else [out]
                for name, v in zip(node.output, outs):
                    if name:
                        values[name] = v
            results = [values[n] for n in self.output_names]
            return results[0] if len(results) == 1 else tuple(results)

    _OnnxModule.__name__ = _OnnxModule.__qualname__ = "OnnxModule"
    _CLASS.append(_OnnxModule)
    return _OnnxModule


def build_ops() -> dict:
    """The op table: every family module's ops, torch imported once."""
    from spa.runtime import (torch_ops_math, torch_ops_nn, torch_ops_quant, torch_ops_recurrent, torch_ops_resize,
                             torch_ops_shape)

    torch = import_torch()
    import torch.nn.functional as F

    table = {}
    for family in (torch_ops_nn, torch_ops_math, torch_ops_shape, torch_ops_resize, torch_ops_recurrent,
                   torch_ops_quant):
        table.update(family.ops(torch, F))
    return table


_OPS: dict = {}


def to_torch(source):
    """A trainable torch.nn.Module running the ONNX model (path, ModelProto or onnx_ir.Model)."""
    if not _OPS:
        _OPS.update(build_ops())
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
