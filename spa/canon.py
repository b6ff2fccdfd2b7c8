"""Canonicalization: put any exporter's graph into the one shape the analysis expects.

Everything here is delegated to onnx-ir passes and onnxscript's optimizer; SPA adds only the order.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common
import onnxscript.optimizer
import onnxscript.rewriter
from onnxscript.rewriter.rules import common as rewrite_rules

from spa.errors import InputError, UnsupportedError, UsageError
from spa.shape_eval import resolve_reshapes
from spa.detours import fold_merge_transpose_split
from spa.symbolic_shapes import name_symbolic_dims

_BN_FUSIONS = [
    rewrite_rules.fuse_batchnorm_into_conv_rule,
    rewrite_rules.fuse_batchnorm_into_conv_transpose_rule,
    rewrite_rules.fuse_batchnorm_into_gemm_rule,
]


def canonicalize(model: ir.Model, *, fuse_batchnorm: bool = True, input_shapes: dict | None = None) -> ir.Model:
    """Inline functions, lift weights out of Constant nodes, fix given input shapes, fold shape
    subgraphs, fuse BatchNorm into the preceding Conv/ConvTranspose/Gemm, infer shapes, toposort.
    Works in place and returns the model."""
    if input_shapes:
        set_input_shapes(model, input_shapes)
    model.meta[ALIASES] = weight_aliases(model)
    # Old exporters list every weight as a graph input too; as inputs they could be overridden at
    # run time, so nothing would be prunable. They are weights: keep them as initializers only.
    common.RemoveInitializersFromInputsPass()(model)
    common.InlinePass()(model)
    # onnxscript.optimizer.optimize minus two of its steps: it always fuses BatchNorm, and it
    # deduplicates equal initializers, which would couple unrelated groups (all-zero biases).
    rules = [r for r in onnxscript.rewriter._DEFAULT_REWRITE_RULES if fuse_batchnorm or r not in _BN_FUSIONS]
    try:
        for _ in range(2):
            onnxscript.optimizer.fold_constants_ir(model, onnx_shape_inference=True, should_fold=_fold_small_fills)
            onnxscript.rewriter.rewrite(model, pattern_rewrite_rules=rules)
            common.RemoveUnusedNodesPass()(model)
    except Exception as exc:
        raise UnsupportedError(f"could not canonicalize the model: {str(exc).splitlines()[0][:200]}") from None
    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    common.RemoveUnusedNodesPass()(model)
    unshare_uniform_constants(model)
    infer_shapes(model)
    if resolve_reshapes(model):
        infer_shapes(model)  # carry the recovered dims downstream
    name_symbolic_dims(model)
    if fold_merge_transpose_split(model):
        common.RemoveUnusedNodesPass()(model)
    common.TopologicalSortPass()(model)
    common.NameFixPass()(model)  # rules and plans refer to nodes and values by unique names
    return model


def unshare_uniform_constants(model: ir.Model) -> int:
    """Give each user its own copy of a shared weight whose elements are all equal.

    Exporters deduplicate equal initializers (torch.onnx does), so every all-zero bias of a freshly
    initialised transformer becomes one tensor read by every layer: that would couple unrelated
    groups. Sharing a uniform constant means nothing, unlike tied weights, which stay shared."""
    copies = 0
    for value in list(model.graph.initializers.values()):
        tensor = value.const_value
        if tensor is None or tensor.size < 2 or len(value.uses()) < 2 or value.is_graph_output():
            continue
        if tensor.size > 1 << 20:
            continue
        data = tensor.numpy()
        if not (data == data.reshape(-1)[0]).all():
            continue
        for node, index in list(value.uses())[1:]:
            copies += 1
            name = f"{value.name}_spa_copy{copies}"
            copy = ir.Value(name=name, shape=value.shape, type=value.type,
                            const_value=ir.tensor(data.copy(), name=name))
            model.graph.register_initializer(copy)
            node.replace_input_with(index, copy)
    return copies


def _fold_small_fills(node: ir.Node) -> bool | None:
    """The optimizer keeps ConstantOfShape unfolded (it could be huge); exporters use small ones to
    build pads and shapes, which must fold for widths to be static."""
    if node.op_type == "ConstantOfShape" and node.inputs and node.inputs[0] is not None:
        shape = node.inputs[0].const_value
        if shape is not None and int(np.prod(shape.numpy(), dtype=np.int64)) <= 4096:
            return True
    return None


ALIASES = "spa.weight_aliases"


def weight_aliases(model: ir.Model) -> dict[str, list[str]]:
    """Node and tensor names of the model as given, mapped to the weights their node reads.

    Fusions rename nodes and tensors but keep weight names, so a user's name (say `--protect`)
    still finds its layer after canonicalization."""
    aliases: dict[str, list[str]] = {}
    for node in model.graph:
        weights = [v.name for v in node.inputs if v is not None and v.is_initializer()]
        if weights:
            for name in [node.name] + [v.name for v in node.outputs]:
                if name:
                    aliases[name] = weights
    return aliases


def infer_shapes(model: ir.Model) -> None:
    try:
        common.ShapeInferencePass(strict_mode=True)(model)
    except Exception as exc:
        raise InputError(f"shape inference failed: {str(exc).splitlines()[0][:200]}") from None


def set_input_shapes(model: ir.Model, input_shapes: dict) -> None:
    by_name = {v.name: v for v in model.graph.inputs}
    for name, dims in input_shapes.items():
        if name not in by_name:
            raise UsageError(f"--input-shape names '{name}', but the model's inputs are {sorted(by_name)}")
        value = by_name[name]
        if value.shape is not None and len(value.shape) != len(dims):
            raise UsageError(f"input '{name}' has rank {len(value.shape)}, the given shape has rank {len(dims)}")
        value.shape = ir.Shape(list(dims))
