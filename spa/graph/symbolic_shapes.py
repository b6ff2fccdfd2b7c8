"""Symbolic shapes: name the dims ONNX shape inference leaves anonymous.

Transformer exports compute their Reshape targets from `Shape` of the input (a dynamic batch and
sequence length), and ONNX's own inference gives every such result a fresh unknown dim. The
analysis then cannot tell that `[batch, seq, 384]` and `[batch, seq, 12, 32]` share their first two
axes. ONNX Runtime's symbolic shape inference follows Shape → Slice/Gather → Concat → Reshape
chains and keeps the input's dim names, so it is run on a weight-free copy of the graph (large
weights become shaped graph inputs: the copy stays small whatever the model size).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

_KEEP_DATA_UP_TO = 4096  # elements: shape constants and small tables keep their values


class NameSymbolicDimsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=name_symbolic_dims(model) > 0)


def name_symbolic_dims(model: ir.Model) -> int:
    """Replace anonymous or unknown dims with ORT's symbolic results; returns values changed."""
    if not _has_unknown_dims(model):
        return 0
    try:
        # it saves temporary files (sym_shape_infer_temp.onnx, <uuid>.data) into the working
        # folder when its own inference is incomplete: run it in a private one
        with tempfile.TemporaryDirectory(prefix="spa-") as tmp, _working_folder(tmp):
            inferred = _symbolic_shape_inference().infer_shapes(_weightless_proto(model), auto_merge=True)
    except Exception:  # an op it does not know: keep ONNX's answer, the analysis explains the rest
        return 0
    if inferred is None:
        return 0
    shapes = {vi.name: _dims(vi) for vi in inferred.graph.value_info}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    changed = 0
    for node in model.graph:
        for value in node.outputs:
            if value.type is None and types.get(value.name):  # ops ONNX's inference does not know
                value.type = ir.TensorType(ir.DataType(types[value.name]))
            new = shapes.get(value.name)
            if new is None or not _better(value.shape, new):
                continue
            old = value.shape
            merged = new if old is None or len(old) != len(new) else [
                o if isinstance(o, int) else n for o, n in zip(old, new)]
            value.shape = ir.Shape(merged)
            changed += 1
    return changed


@contextlib.contextmanager
def _working_folder(path: str):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _symbolic_shape_inference():
    """ONNX Runtime's `SymbolicShapeInference`, without importing `onnxruntime.tools`: that
    package's `__init__` imports torch when it is installed (1.5 s), and the module needs none of it.
    The file is loaded on its own under a private name (once per process)."""
    module = sys.modules.get("onnxruntime.tools.symbolic_shape_infer") or sys.modules.get(_MODULE)
    if module is None:
        spec = importlib.util.find_spec("onnxruntime")
        path = Path(spec.origin).parent / "tools" / "symbolic_shape_infer.py"
        spec = importlib.util.spec_from_file_location(_MODULE, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[_MODULE] = module
    return module.SymbolicShapeInference


_MODULE = "spa._ort_symbolic_shape_infer"


def _has_unknown_dims(model: ir.Model) -> bool:
    named = {str(d) for v in model.graph.inputs if v.shape is not None for d in v.shape if not isinstance(d, int)}
    for node in model.graph:
        for v in node.outputs:
            if v.shape is None or any(not isinstance(d, int) and str(d) not in named for d in v.shape):
                return True
    return False


def _better(old: ir.Shape | None, new: list) -> bool:
    if old is None:
        return True
    if len(old) != len(new):
        return False
    return any(not isinstance(o, int) and n != str(o) for o, n in zip(old, new))


def _dims(vi: onnx.ValueInfoProto) -> list | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            return None
    return dims


def _weightless_proto(model: ir.Model) -> onnx.ModelProto:
    """The graph with large initializers turned into graph inputs of the same type and shape."""
    big = [v for v in model.graph.initializers.values()
           if v.const_value is not None and v.const_value.size > _KEEP_DATA_UP_TO]
    saved = {v.name: v.const_value for v in big}
    inputs_before = list(model.graph.inputs)
    try:
        for v in big:
            model.graph.initializers.pop(v.name)
            model.graph.inputs.append(v)
            v.const_value = None
        proto = ir.serde.serialize_model(model)
    finally:
        for v in big:
            v.const_value = saved[v.name]
        model.graph.inputs.clear()
        model.graph.inputs.extend(inputs_before)
        for v in big:
            model.graph.register_initializer(v)
    del proto.graph.value_info[:]  # stale anonymous dims would be kept as they are
    return proto
