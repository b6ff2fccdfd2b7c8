"""TensorFlow/Keras models to ONNX through tf2onnx (extra `tf`).

The source is a `keras.Model`, a `.keras`/`.h5` file, a SavedModel folder, or `module:function`
returning a Keras model. Keras layouts stay NHWC: tf2onnx frames each Conv with Transposes, which
the channel analysis follows through `perm`; Dense becomes MatMul + Add.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from spa.exporters.framework import (check_opset, is_factory_reference, load_factory, output_path, require,
                                 shapes_from_cli, write_atomically)
from spa.core.errors import InputError, SpaError


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def load_keras(source):
    """A Keras model from an object, a .keras/.h5 file or `module:function`."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    if is_factory_reference(str(source)):
        return load_factory(str(source))
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise InputError(f"{path}: not a Keras model ({str(exc).splitlines()[0][:160]})") from None


def _signature(model, input_shapes):
    import tensorflow as tf

    given = dict(shapes_from_cli(input_shapes))
    specs = []
    for i, tensor in enumerate(model.inputs):
        name = tensor.name.split(":")[0] if getattr(tensor, "name", None) else f"input_{i}"
        dims = given.get(name, [None if d is None else int(d) for d in tensor.shape])
        dims = [None if d is None or d <= 0 else d for d in dims]
        specs.append(tf.TensorSpec(dims, tensor.dtype, name=name))
    return tuple(specs)


def export(source, output, *, opset: int | None = None, input_shapes=None) -> Path:
    """Export a Keras model (object, file, `module:function`) or SavedModel folder to `output`."""
    require("tf")
    _quiet_tf()
    opset = check_opset(opset)
    out = output_path(output)
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return _export_saved_model(Path(source), out, opset)
    model = load_keras(source)
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=_signature(model, input_shapes), opset=opset)
    except SpaError:
        raise
    except Exception as exc:
        raise SpaError(f"tf2onnx could not convert the model: {str(exc).splitlines()[0][:200]}") from None
    return write_atomically(proto, out)


def _export_saved_model(folder: Path, out: Path, opset: int) -> Path:
    import onnx

    if not (folder / "saved_model.pb").is_file():
        raise InputError(f"{folder}: not a SavedModel folder (no saved_model.pb)")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.onnx"
        done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(folder), "--output",
                               str(target), "--opset", str(opset)], capture_output=True, text=True)
        if done.returncode != 0 or not target.is_file():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SpaError(f"tf2onnx could not convert {folder}: {last[:200]}")
        return write_atomically(onnx.load(target), out)
