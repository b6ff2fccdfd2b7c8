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

# The interpreter (spa/runtime/torch_interp.py) and its op table by family (spa/runtime/torch_ops_*.py);
# _OPS is the table itself (filled on the first to_torch call).
from spa.runtime.torch_interp import _OPS, export, to_torch  # noqa: F401
