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
from spa.core.errors import SpaError, UsageError

JAX_DEFAULT_OPSET = 18


def export(source, output, *, input_shapes, opset: int | None = None) -> Path:
    """Export `source` called on inputs of `input_shapes` ({name: dims} or [(name, dims)] or [dims])."""
    require("jax")
    opset = check_opset(JAX_DEFAULT_OPSET if opset is None else opset)
    if opset < JAX_DEFAULT_OPSET:  # jax2onnx 0.17 writes ReduceMean/ReduceSum with an axes input
        raise UsageError(f"--opset {opset}: jax2onnx writes opset {JAX_DEFAULT_OPSET} forms; use --opset "
                         f"{JAX_DEFAULT_OPSET} to 20")
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
    drop_value_info(proto)
    return write_atomically(proto, out)


def drop_value_info(proto) -> int:
    """jax2onnx 0.17 annotates values inside its NCHW-converted convolutions with their NHWC
    shapes; ONNX Runtime ignores them but shape inference trusts them. Drop the intermediate
    annotations: shape inference recomputes them from the graph."""
    count = len(proto.graph.value_info)
    del proto.graph.value_info[:]
    return count
