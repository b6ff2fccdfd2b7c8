"""PaddlePaddle models to ONNX through paddle2onnx (extra `paddle`).

The source is a `paddle.nn.Layer`, a saved inference model (the path prefix, or its `.json` /
`.pdmodel` file, with `.pdiparams` beside it), or `module:function` returning a Layer. A Layer
needs input shapes (-1 for a dynamic dim).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from spa.exporters.framework import (check_opset, is_factory_reference, load_factory, output_path, require,
                                 shapes_from_cli, write_atomically)
from spa.core.errors import InputError, SpaError, UsageError


def _saved_files(source) -> tuple[Path, Path] | None:
    path = Path(source)
    stem = path.with_suffix("") if path.suffix in (".json", ".pdmodel", ".pdiparams") else path
    params = stem.with_name(stem.name + ".pdiparams")
    for suffix in (".json", ".pdmodel"):
        program = stem.with_name(stem.name + suffix)
        if program.is_file() and params.is_file():
            return program, params
    return None


def export(source, output, *, input_shapes=None, opset: int | None = None) -> Path:
    require("paddle")
    opset = check_opset(opset)
    out = output_path(output)
    import onnx
    import paddle2onnx

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.onnx"
        if isinstance(source, (str, os.PathLike)) and not is_factory_reference(str(source)):
            files = _saved_files(source)
            if files is None:
                raise InputError(f"{source}: not a saved Paddle inference model (.json or .pdmodel with .pdiparams)")
        else:
            layer = load_factory(source) if isinstance(source, str) else source
            files = _save_layer(layer, input_shapes, Path(tmp) / "inference")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                paddle2onnx.export(str(files[0]), str(files[1]), str(target), opset_version=opset,
                                   auto_upgrade_opset=False, verbose=False)
        except Exception as exc:
            raise SpaError(f"paddle2onnx could not convert the model: {str(exc).splitlines()[0][:200]}") from None
        if not target.is_file():
            raise SpaError("paddle2onnx wrote no model (see its log above)")
        return write_atomically(onnx.load(target), out)


def _save_layer(layer, input_shapes, prefix: Path) -> tuple[Path, Path]:
    import paddle

    pairs = shapes_from_cli(input_shapes)
    if not pairs:
        raise UsageError("spa export paddle needs --input-shape NAME=D1,D2,... for a Layer")
    specs = [paddle.static.InputSpec([d if d > 0 else None for d in dims], "float32", name) for name, dims in pairs]
    layer.eval()
    try:
        paddle.jit.save(layer, str(prefix), input_spec=specs)
    except Exception as exc:
        raise SpaError(f"paddle.jit.save could not trace the Layer: {str(exc).splitlines()[0][:200]}") from None
    files = _saved_files(prefix)
    if files is None:
        raise SpaError("paddle.jit.save wrote no inference model")
    return files
