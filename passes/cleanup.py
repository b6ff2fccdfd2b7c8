"""Clean-up after slicing: drop constants the rewrites left unused, and re-infer shapes (strict,
so a width that disagrees anywhere in the graph fails here rather than at run time)."""
from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common

from spa.graph.canon import infer_shapes


def cleanup(model: ir.Model) -> bool:
    removed = common.RemoveUnusedNodesPass()(model).modified
    infer_shapes(model)
    return removed
