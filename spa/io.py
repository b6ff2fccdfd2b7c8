"""Load models from any accepted form into onnx-ir, and save them atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from spa.errors import SpaError

# Above this many bytes of weights a model is saved with its tensors in an external data file.
EXTERNAL_DATA_THRESHOLD = 1 << 30


def load(model) -> ir.Model:
    """Return an onnx-ir model from a path, an onnx.ModelProto, an onnx_ir.Model or a gs.Graph.

    Paths are read with onnx-ir, which memory-maps external data instead of copying it.
    """
    if isinstance(model, ir.Model):
        return model
    if isinstance(model, onnx.ModelProto):
        return ir.serde.deserialize_model(model)
    if isinstance(model, (str, os.PathLike)):
        return _load_path(Path(model))
    if type(model).__module__.startswith("onnx_graphsurgeon"):
        import onnx_graphsurgeon as gs

        return ir.serde.deserialize_model(gs.export_onnx(model))
    raise SpaError(f"cannot load a model from an object of type {type(model).__name__}")


def _load_path(path: Path) -> ir.Model:
    if not path.exists():
        raise SpaError(f"{path}: no such file")
    if not path.is_file():
        raise SpaError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise SpaError(f"{path}: empty file, not an ONNX model")
    try:
        model = ir.load(path)
    except Exception as exc:  # protobuf and onnx-ir raise many types for corrupt input
        raise SpaError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    if len(model.graph) == 0 and not model.graph.outputs:
        raise SpaError(f"{path}: not an ONNX model (the graph is empty)")
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and not Path(tensor.path).is_file():
            raise SpaError(f"{path}: external data file '{tensor.location}' of tensor '{value.name}' is missing")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save(model: ir.Model, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write the model atomically: to temporary files beside the target, then renamed into place.

    With external_data None, weights go to `<name>.data` when they exceed EXTERNAL_DATA_THRESHOLD.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise SpaError(f"{path.parent}: output folder does not exist")
    if external_data is None:
        external_data = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    tmpdir = Path(tempfile.mkdtemp(prefix=".spa-", dir=path.parent))
    try:
        tmp_model = tmpdir / path.name
        if external_data:
            ir.save(model, tmp_model, external_data=data_name, size_threshold_bytes=1024)
            os.replace(tmpdir / data_name, path.parent / data_name)
        else:
            ir.save(model, tmp_model)
        os.replace(tmp_model, path)
    except SpaError:
        raise
    except Exception as exc:
        raise SpaError(f"{path}: could not write the model ({_first_line(exc)})") from None
    finally:
        for leftover in tmpdir.iterdir():
            leftover.unlink()
        tmpdir.rmdir()
    return path


def to_proto(model: ir.Model) -> onnx.ModelProto:
    return ir.serde.serialize_model(model)


def to_graphsurgeon(model: ir.Model):
    """For users whose pipelines hold an onnx-graphsurgeon Graph."""
    import onnx_graphsurgeon as gs

    return gs.import_onnx(to_proto(model))
