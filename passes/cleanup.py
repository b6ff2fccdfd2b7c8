"""Clean-up after slicing: drop constants the rewrites left unused, and re-infer shapes (strict,
so a width that disagrees anywhere in the graph fails here rather than at run time)."""
from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir
import onnx_ir.passes.common as common

from spa.graph.canon import infer_shapes


@dataclass
class CleanupResult(ir.passes.PassResult):
    removed_nodes: bool = False  # whether unused nodes went (`modified` also counts new shapes)


class CleanupPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> CleanupResult:
        removed = common.RemoveUnusedNodesPass()(model).modified
        reshaped = infer_shapes(model)
        return CleanupResult(model, modified=removed or reshaped, removed_nodes=removed)


def cleanup(model: ir.Model) -> bool:
    """CleanupPass in place; returns whether unused nodes were removed."""
    return CleanupPass()(model).removed_nodes
