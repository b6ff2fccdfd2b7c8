"""Load a model from any accepted form into onnx-ir, refusing malformed payloads and unsafe external
data before anything reads them; and find the model file of an exported Hugging Face folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from spa.core.errors import InputError
from spa.graph.external_data import SOURCE_FILES, check_external_data, files_read_by
from spa.graph.input_files import check_input_file
from spa.graph.mapped import map_on_demand



def load(model) -> ir.Model:
    """Return an onnx-ir model from a path, an onnx.ModelProto, an onnx_ir.Model or a gs.Graph.

    Paths are read with onnx-ir, which memory-maps external data instead of copying it.
    """
    from spa.graph.support import check_supported, check_unique_names

    if isinstance(model, ir.Model):
        loaded = model
    elif isinstance(model, onnx.ModelProto):
        check_unique_names(model)
        loaded = _deserialize(model, "the ModelProto")
    elif isinstance(model, (str, os.PathLike)):
        loaded = _load_path(model_path(model))
    elif type(model).__module__.startswith("onnx_graphsurgeon"):
        import onnx_graphsurgeon as gs

        loaded = _deserialize(gs.export_onnx(model), "the onnx-graphsurgeon graph")
    else:
        raise InputError(f"cannot load a model from an object of type {type(model).__name__}")
    check_supported(loaded)
    return loaded


def _deserialize(proto: onnx.ModelProto, what: str) -> ir.Model:
    try:
        return ir.serde.deserialize_model(proto)
    except Exception as exc:  # onnx-ir raises many types for malformed protos
        raise InputError(f"{what} is not a valid ONNX model ({first_line(exc)})") from None


def _load_path(path: Path) -> ir.Model:
    from spa.graph.support import check_unique_names

    check_input_file(path, "model")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not an ONNX model")
    try:
        proto = onnx.load(path, load_external_data=False)  # the protobuf only; no external data read
    except Exception as exc:  # protobuf raises many types for corrupt input
        raise InputError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    check_unique_names(proto)
    check_tensor_payloads(proto, path)
    model = _deserialize(proto, str(path))
    del proto
    ir.external_data.set_base_dir(model.graph, path.parent)
    if len(model.graph) == 0 and not model.graph.outputs:
        raise InputError(f"{path}: not an ONNX model (the graph is empty)")
    check_external_data(model, path)
    map_on_demand(model)
    # every copy made from this model remembers which files it came from: saves never overwrite them
    model.meta[SOURCE_FILES] = {Path(os.path.realpath(path))} | files_read_by(model)
    return model


def check_tensor_payloads(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse, with the tensor's name, what would otherwise fail deep inside a later stage:
    sparse initializers, raw bytes that do not match the declared shape, and node inputs that
    nothing in the graph defines."""
    from spa.core.errors import UnsupportedError

    graph = proto.graph
    if graph.sparse_initializer:
        name = graph.sparse_initializer[0].values.name
        raise UnsupportedError(f"{path}: sparse initializer '{name}': SPA reads dense weights only")
    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or not t.HasField("raw_data"):
            continue
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except Exception:  # strings, sub-byte and unknown types: sized elsewhere
            continue
        if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            continue
        need = int(np.prod(t.dims, dtype=np.int64)) * itemsize
        if len(t.raw_data) != need:
            raise InputError(f"{path}: initializer '{t.name}' holds {len(t.raw_data)} bytes, its shape "
                             f"{list(t.dims)} needs {need}")
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        defined.update(node.output)
    for node in graph.node:
        for name in node.input:
            if name not in defined:
                raise InputError(f"{path}: node '{node.name or node.op_type}' reads '{name}', which no "
                                 "input, initializer or node defines")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def model_path(path: str | os.PathLike) -> Path:
    """The ONNX file a model path stands for: the path itself, or the model file of a Hugging Face
    folder (model_file). Every command and API function that reads a model resolves it here."""
    if not os.fspath(path):
        raise InputError("the model path is empty")
    return model_file(path) if os.path.isdir(path) else Path(path)  # isdir: False, not an error, for odd paths


def model_file(folder: str | os.PathLike) -> Path:
    """The ONNX model of an exported folder (model.onnx, as optimum and `spa export hf` write it)."""
    folder = Path(folder)
    if (folder / "model.onnx").is_file():
        return folder / "model.onnx"
    try:
        candidates = sorted(p for p in folder.glob("*.onnx") if p.is_file())
    except OSError as exc:
        raise InputError(f"{folder}: the model folder cannot be read ({exc.strerror or exc})") from None
    if len(candidates) != 1:
        raise InputError(f"{folder}: expected one .onnx model in the folder (model.onnx, as optimum and `spa "
                         f"export hf` write), found {len(candidates) or 'none'}"
                         + (" (a KV-cache export has several; export text-generation without past)"
                            if candidates else ""))
    return candidates[0]


def model_label(model) -> str:
    """How a model is named in reports: its path, or the type of the in-memory object."""
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
