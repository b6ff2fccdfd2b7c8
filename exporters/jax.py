"""JAX/Flax models to ONNX through jax2onnx (extra `jax`).

The source is a Flax `nnx.Module`, any JAX-traceable function of arrays, or `module:function`
returning one. Input shapes are required (JAX functions carry none); a name of a dim other than an
int (`"B"`) makes it dynamic. jax2onnx writes NHWC convolutions framed by Transposes and, for some
layers, ONNX functions, which canonicalization inlines.
"""
from __future__ import annotations

from pathlib import Path

from spa.exporters.framework import (check_opset, is_factory_reference, load_factory, output_path, require,
                                 shapes_from_cli, write_atomically)
from spa.errors import SpaError, UsageError


def export(source, output, *, input_shapes, opset: int | None = None) -> Path:
    """Export `source` called on inputs of `input_shapes` ({name: dims} or [(name, dims)] or [dims])."""
    require("jax")
    opset = check_opset(opset)
    out = output_path(output)
    fn = load_factory(source) if isinstance(source, str) and is_factory_reference(source) else source
    if isinstance(source, str) and fn is source:
        raise UsageError(f"'{source}': spa export jax takes module:function (a function returning the model)")
    if not input_shapes:
        raise UsageError("spa export jax needs --input-shape NAME=D1,D2,... for every input")
    if isinstance(input_shapes, (list, tuple)) and input_shapes and not isinstance(input_shapes[0], tuple):
        names, shapes = None, [list(s) for s in input_shapes]
    else:
        pairs = shapes_from_cli(input_shapes)
        names, shapes = [n for n, _ in pairs], [d for _, d in pairs]
    shapes = [[d if d > 0 else "B" for d in dims] if all(isinstance(d, int) for d in dims) else dims
              for dims in shapes]
    import jax2onnx

    try:
        proto = jax2onnx.to_onnx(fn, shapes, opset=opset, input_names=names, return_mode="proto")
    except Exception as exc:
        raise SpaError(f"jax2onnx could not convert the model: {str(exc).splitlines()[0][:200]}") from None
    return write_atomically(proto, out)
