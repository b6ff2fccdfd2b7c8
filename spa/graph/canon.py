"""Canonicalization: put any exporter's graph into the one shape the analysis expects.

Everything here is delegated to onnx-ir passes and onnxscript's optimizer; SPA adds only the order.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common
import onnxscript.optimizer
import onnxscript.rewriter

from spa.graph import rewrites as spa_rewrites
from spa.graph import subgraphs
from spa.core.errors import InputError, UnsupportedError, UsageError
from spa.graph.io import EXPORTER_ANNOTATED
from spa.graph.shape_eval import resolve_reshapes
from spa.graph.detours import fold_merge_transpose_split
from spa.graph.symbolic_shapes import name_symbolic_dims

def canonicalize(model: ir.Model, *, fuse_batchnorm: bool = True, input_shapes: dict | None = None) -> ir.Model:
    """Inline functions, lift weights out of Constant nodes, fix given input shapes, fold shape
    subgraphs, fuse BatchNorm into the preceding Conv/ConvTranspose/Gemm, infer shapes, toposort.
    Returns the canonical model (the given one, changed in place, unless a branch needed care).

    A model with If/Loop bodies is first canonicalized with folding inside the bodies too; if that
    leaves a body the ONNX checker rejects (a branch the inputs never take can be inconsistent with
    shapes fixed outside it), the model is canonicalized again folding the main graph only."""
    if not _has_bodies(model):
        return _canonicalize(model, fuse_batchnorm, input_shapes, fold_bodies=True)
    from spa.runtime.validate import copy_model

    spare = copy_model(model)
    folded = _canonicalize(model, fuse_batchnorm, input_shapes, fold_bodies=True)
    if _bodies_valid(folded):
        return folded
    return _canonicalize(spare, fuse_batchnorm, input_shapes, fold_bodies=False)


def _has_bodies(model: ir.Model) -> bool:
    return any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
               for node in model.graph.all_nodes() for a in node.attributes.values())


def _bodies_valid(model: ir.Model) -> bool:
    import onnx

    from spa.graph.io import to_proto

    try:
        onnx.checker.check_model(to_proto(model), full_check=True)
    except Exception:  # noqa: BLE001 - the checker raises several types
        return False
    return True


def _canonicalize(model: ir.Model, fuse_batchnorm: bool, input_shapes: dict | None, fold_bodies: bool) -> ir.Model:
    if input_shapes:
        set_input_shapes(model, input_shapes)
    model.meta[ALIASES] = weight_aliases(model)
    if EXPORTER_ANNOTATED not in model.meta:  # a second canonicalization keeps the exporter's set
        model.meta[EXPORTER_ANNOTATED] = annotated_values(model)
    # Old exporters list every weight as a graph input too; as inputs they could be overridden at
    # run time, so nothing would be prunable. They are weights: keep them as initializers only.
    model.meta[INITIALIZER_INPUTS] = [v.name for v in model.graph.inputs if v.name in model.graph.initializers]
    common.RemoveInitializersFromInputsPass()(model)
    declared = forget_declared_output_shapes(model)
    common.InlinePass()(model)
    # onnxscript.optimizer.optimize minus two of its steps: it always fuses BatchNorm, and it
    # deduplicates equal initializers, which would couple unrelated groups (all-zero biases).
    rules = spa_rewrites.rewrite_rules(fuse_batchnorm)
    try:
        for _ in range(2):
            onnxscript.optimizer.fold_constants_ir(model, onnx_shape_inference=True, should_fold=lambda node: _fold_small_fills(node, None if fold_bodies else model.graph))
            onnxscript.rewriter.rewrite(model, pattern_rewrite_rules=rules)
            common.RemoveUnusedNodesPass()(model)
    except Exception as exc:
        raise UnsupportedError(f"could not canonicalize the model: {str(exc).splitlines()[0][:200]}") from None
    drop_reshape_allowzero(model)
    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    common.RemoveUnusedNodesPass()(model)
    unshare_uniform_constants(model)
    infer_shapes(model)
    restore_declared_output_shapes(model, declared)
    if resolve_reshapes(model):
        infer_shapes(model)  # carry the recovered dims downstream
    name_symbolic_dims(model)
    if fold_merge_transpose_split(model):
        common.RemoveUnusedNodesPass()(model)
    common.TopologicalSortPass()(model)
    common.NameFixPass()(model)  # rules and plans refer to nodes and values by unique names
    subgraphs.prepare(model)  # names unique across branches; branch weights where every stage looks
    return model


INITIALIZER_INPUTS = "spa.initializer_inputs"


def restore_initializer_inputs(model: ir.Model) -> None:
    """List again as graph inputs the weights the given file listed there (IR 3 requires it, and
    later IRs let a caller override them): the interface stays the original's. Analysis ran
    without them, so their widths could change like any weight's."""
    listed = {v.name for v in model.graph.inputs}
    for name in model.meta.get(INITIALIZER_INPUTS, []):
        value = model.graph.initializers.get(name)
        if value is not None and name not in listed:
            model.graph.inputs.append(value)


def forget_declared_output_shapes(model: ir.Model) -> dict[str, ir.Shape]:
    """Clear the shapes the file declares for its outputs, returning them. Exporters sometimes
    declare an output shape the graph does not compute (a CRNN declaring [1, seqlen] for a
    [T, 1, classes] result), and rewrites that trust declared shapes (onnxscript's
    MaterializeReshapeShape) would then change what the model computes."""
    declared = {}
    for value in model.graph.outputs:
        if value.shape is not None and not value.is_graph_input() and not value.is_initializer():
            declared[value.name] = value.shape
            value.shape = None
    return declared


def restore_declared_output_shapes(model: ir.Model, declared: dict[str, ir.Shape]) -> None:
    """Put back each declared output shape that agrees with the inferred one (it keeps the
    exporter's dim names); an inferred shape that contradicts the declaration wins."""
    for value in model.graph.outputs:
        old = declared.get(value.name)
        if old is None:
            continue
        new = value.shape
        if new is None or (len(new) == len(old) and all(
                not isinstance(a, int) or not isinstance(b, int) or a == b for a, b in zip(old, new))):
            value.shape = old if new is None else ir.Shape(
                [b if isinstance(b, int) and not isinstance(a, int) else a for a, b in zip(old, new)])


def drop_reshape_allowzero(model: ir.Model) -> int:
    """onnxscript's rewriter writes Reshape(allowzero=1) whatever the opset; before opset 14 the
    attribute does not exist (a paddle2onnx opset-11 export then fails the checker). Without a 0
    in the shape it changes nothing: drop it there."""
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 14))
    if opset >= 14:
        return 0
    dropped = 0
    for node in model.graph:
        if node.op_type == "Reshape" and "allowzero" in node.attributes and len(node.inputs) > 1:
            shape = node.inputs[1].const_value if node.inputs[1] is not None else None
            if shape is None and node.inputs[1] is not None and node.inputs[1].producer() is not None:
                producer = node.inputs[1].producer()
                if producer.op_type == "Constant" and "value" in producer.attributes:
                    shape = producer.attributes["value"].as_tensor()
            if shape is not None and not (shape.numpy() == 0).any():
                del node.attributes["allowzero"]
                dropped += 1
    return dropped


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


def _fold_small_fills(node: ir.Node, top: ir.Graph | None) -> bool | None:
    """The optimizer keeps ConstantOfShape unfolded (it could be huge); exporters use small ones to
    build pads and shapes, which must fold for widths to be static. With `top`, nodes of other
    graphs (If/Loop bodies) are not folded at all (see canonicalize)."""
    if top is not None and node.graph is not top:
        return False
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


def annotated_values(model: ir.Model) -> set[str]:
    """Names of the node outputs the model as given annotates with a type or shape (value_info).

    Shape inference below annotates every value; `spa.graph.io.save` writes only these annotations back,
    because the extra ones change ONNX Runtime's fusions (see `spa.graph.io._exporter_annotations`)."""
    return {value.name for node in ir.traversal.RecursiveGraphIterator(model.graph) for value in node.outputs
            if value.name and (value.type is not None or value.shape is not None)}


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
