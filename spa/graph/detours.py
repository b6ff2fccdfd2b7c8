"""Shape detours that hide channel axes: Reshape (merge leading axes) → Transpose → Reshape (split
them back) is one Transpose of the original tensor.

torch.onnx writes `k.transpose(-2, -1)` inside attention as [B, H, S, D] → [B·H, S, D] →
[B·H, D, S] → [B, H, D, S]. On the merged axis the head count is fused with the dynamic batch, so
no channel space can live there; as a single Transpose the heads stay visible.
"""
from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common


class FoldDetoursPass(ir.passes.InPlacePass):
    """`fold_merge_transpose_split`, then drop the detours' nodes it left unused."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        folded = fold_merge_transpose_split(model)
        if folded:
            common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=folded > 0)


def fold_merge_transpose_split(model: ir.Model) -> int:
    """Replace every such detour with one Transpose; returns how many."""
    folded = 0
    for split in list(model.graph):
        found = _detour(split)
        if found is None:
            continue
        merge, transpose, perm = found
        x = merge.inputs[0]
        node = ir.Node("", "Transpose", [x], attributes=[ir.AttrInt64s("perm", perm)],
                       name=f"{transpose.name}_unfolded", num_outputs=1)
        out = node.outputs[0]
        out.shape, out.type = split.outputs[0].shape, split.outputs[0].type
        model.graph.insert_before(split, node)
        _replace_all_uses(model, split.outputs[0], out)
        folded += 1
    return folded


def _detour(split: ir.Node):
    """(merge Reshape, Transpose, perm on the unmerged tensor) when `split` ends a detour."""
    if split.op_type != "Reshape" or split.domain not in ("", "ai.onnx"):
        return None
    transpose = split.inputs[0].producer()
    if transpose is None or transpose.op_type != "Transpose" or len(transpose.outputs[0].uses()) != 1:
        return None
    merge = transpose.inputs[0].producer()
    if merge is None or merge.op_type != "Reshape" or len(merge.outputs[0].uses()) != 1:
        return None
    x, merged, y = merge.inputs[0], merge.outputs[0], split.outputs[0]
    if x.shape is None or merged.shape is None or y.shape is None or "perm" not in transpose.attributes:
        return None
    inner = list(transpose.attributes["perm"].as_ints())
    lead = len(x.shape) - len(merged.shape) + 1  # leading axes merged into axis 0
    if lead < 2 or inner[0] != 0 or len(y.shape) != len(x.shape):
        return None
    rest_x = [str(d) for d in x.shape][lead:]
    if rest_x != [str(d) for d in merged.shape][1:]:
        return None  # the merge must only fuse the leading axes
    perm = list(range(lead)) + [lead - 1 + p for p in inner[1:]]
    expected = [str(x.shape[p]) for p in perm]
    if expected != [str(d) for d in y.shape]:
        return None
    return merge, transpose, perm


def _replace_all_uses(model: ir.Model, old: ir.Value, new: ir.Value) -> None:
    for node, index in list(old.uses()):
        node.replace_input_with(index, new)
    outputs = model.graph.outputs
    for i, value in enumerate(outputs):
        if value is old:
            new.name, old.name = old.name, f"{old.name}_spa_unused"
            outputs[i] = new
