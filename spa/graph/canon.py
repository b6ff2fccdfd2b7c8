"""Canonicalization: put any exporter's graph into the one shape the analysis expects.

`canonicalization()` is one `onnx_ir.passes.Sequential` of named passes: onnx-ir's own, onnxscript's
constant folding and rewrite rules, and SPA's few steps (each a small pass beside its function).
SPA adds only the order and the fold-bodies-then-retry logic of `canonicalize`.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common
import onnxscript.optimizer
import onnxscript.rewriter

from spa.core.errors import InputError, UnsupportedError, UsageError
from spa.graph import rewrites as spa_rewrites
from spa.graph.detours import FoldDetoursPass
from spa.graph.io import EXPORTER_ANNOTATED
from spa.graph.kv_inputs import DropKvCachePass
from spa.graph.model_copy import copy_model
from spa.graph.rewrites import (  # noqa: F401 - also importable from here, as before
    DropReshapeAllowzeroPass, RememberNodeNamesPass, RestoreNodeNamesPass, UnshareUniformConstantsPass,
    drop_reshape_allowzero, unshare_uniform_constants,
)
from spa.graph.shape_eval import resolve_reshapes
from spa.graph.subgraphs import PrepareSubgraphsPass
from spa.graph.symbolic_shapes import NameSymbolicDimsPass


def canonicalize(model: ir.Model, *, fuse_batchnorm: bool = True, input_shapes: dict | None = None) -> ir.Model:
    """Inline functions, lift weights out of Constant nodes, fix given input shapes, fold shape
    subgraphs, fuse BatchNorm into the preceding Conv/ConvTranspose/Gemm, infer shapes, toposort.
    Returns the canonical model (the given one, changed in place, unless a branch needed care).

    A model with If/Loop bodies is first canonicalized with folding inside the bodies too; if that
    leaves a body the ONNX checker rejects (a branch the inputs never take can be inconsistent with
    shapes fixed outside it), the model is canonicalized again folding the main graph only."""
    if not _has_bodies(model):
        return _run(canonicalization(fuse_batchnorm, input_shapes, fold_bodies=True), model)
    spare = copy_model(model)
    folded = _run(canonicalization(fuse_batchnorm, input_shapes, fold_bodies=True), model)
    if _bodies_valid(folded):
        return folded
    return _run(canonicalization(fuse_batchnorm, input_shapes, fold_bodies=False), spare)


def canonicalization(fuse_batchnorm: bool = True, input_shapes: dict | None = None, *,
                     fold_bodies: bool = True) -> ir.passes.Sequential:
    """The passes of `canonicalize`, in order (one model's run: the output-shape pair shares state)."""
    forget_outputs = ForgetDeclaredOutputShapesPass()
    node_names = RememberNodeNamesPass()
    return ir.passes.Sequential(
        *([SetInputShapesPass(input_shapes)] if input_shapes else []),
        RememberOriginalNamesPass(),
        node_names,
        # Old exporters list every weight as a graph input too; as inputs they could be overridden
        # at run time, so nothing would be prunable. They are weights: keep them as initializers only.
        common.RemoveInitializersFromInputsPass(),
        DropKvCachePass(),  # a decoder's KV cache, empty, computes nothing: read it without one
        forget_outputs,
        common.InlinePass(),
        OptimizePass(fuse_batchnorm, fold_bodies),
        DropReshapeAllowzeroPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.RemoveUnusedNodesPass(),
        UnshareUniformConstantsPass(),
        InferShapesPass(),
        RestoreDeclaredOutputShapesPass(forget_outputs),
        ResolveReshapesPass(),
        NameSymbolicDimsPass(),
        FoldDetoursPass(),
        common.TopologicalSortPass(),
        RestoreNodeNamesPass(node_names),  # the exporter's names where a node was re-created, not `node_Conv_0`
        common.NameFixPass(),  # rules and plans refer to nodes and values by unique names
        PrepareSubgraphsPass(),  # names unique across branches; branch weights where every stage looks
    )


def _run(passes: ir.passes.PassBase, model: ir.Model) -> ir.Model:
    """Run `passes`, raising what a step raised (Sequential wraps it in PassError), as before."""
    try:
        return passes(model).model
    except ir.passes.PassError as exc:
        cause = exc
        while isinstance(cause, ir.passes.PassError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if cause is exc:
            raise
        raise cause from cause.__cause__


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


# ------------------------------------------------------------------------------ SPA's passes


class SetInputShapesPass(ir.passes.InPlacePass):
    def __init__(self, input_shapes: dict):
        super().__init__()
        self.input_shapes = input_shapes

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = [v.shape for v in model.graph.inputs]
        set_input_shapes(model, self.input_shapes)
        return ir.passes.PassResult(model, modified=before != [v.shape for v in model.graph.inputs])


class RememberOriginalNamesPass(ir.passes.InPlacePass):
    """Record in `model.meta` what later stages need of the model as given: weight aliases, the
    exporter's annotated values, the weights it also listed as inputs. The graph is unchanged."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model.meta[ALIASES] = weight_aliases(model)
        if EXPORTER_ANNOTATED not in model.meta:  # a second canonicalization keeps the exporter's set
            model.meta[EXPORTER_ANNOTATED] = annotated_values(model)
        model.meta[INITIALIZER_INPUTS] = [v.name for v in model.graph.inputs if v.name in model.graph.initializers]
        return ir.passes.PassResult(model, modified=False)


class ForgetDeclaredOutputShapesPass(ir.passes.InPlacePass):
    """`forget_declared_output_shapes`, keeping them for `RestoreDeclaredOutputShapesPass`."""

    def __init__(self):
        super().__init__()
        self.declared: dict[str, ir.Shape] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.declared = forget_declared_output_shapes(model)
        return ir.passes.PassResult(model, modified=bool(self.declared))


class RestoreDeclaredOutputShapesPass(ir.passes.InPlacePass):
    def __init__(self, forgotten: ForgetDeclaredOutputShapesPass):
        super().__init__()
        self.forgotten = forgotten

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = {v.name: v.shape for v in model.graph.outputs}
        restore_declared_output_shapes(model, self.forgotten.declared)
        return ir.passes.PassResult(model, modified=any(v.shape is not before[v.name] for v in model.graph.outputs))


class FoldConstantsPass(ir.passes.InPlacePass):
    """onnxscript's constant folding (with ONNX shape inference) plus small ConstantOfShape fills;
    with `fold_bodies` False, nothing inside If/Loop bodies (see canonicalize)."""

    def __init__(self, fold_bodies: bool = True):
        super().__init__()
        self.fold_bodies = fold_bodies

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        top = None if self.fold_bodies else model.graph
        result = onnxscript.optimizer.fold_constants_ir(
            model, onnx_shape_inference=True, should_fold=lambda node: _fold_small_fills(node, top))
        return ir.passes.PassResult(model, modified=result.modified)


class OptimizePass(ir.passes.InPlacePass):
    """onnxscript.optimizer.optimize minus two of its steps: it always fuses BatchNorm, and it
    deduplicates equal initializers, which would couple unrelated groups (all-zero biases). Two
    rounds of constant folding and rewriting (as `onnxscript.rewriter.rewrite` runs the rules)."""

    def __init__(self, fuse_batchnorm: bool = True, fold_bodies: bool = True):
        super().__init__()
        one_round = [FoldConstantsPass(fold_bodies), onnxscript.rewriter.RewritePass(spa_rewrites.rewrite_rules(fuse_batchnorm)),
                     common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass(),
                     common.RemoveUnusedOpsetsPass(), common.RemoveUnusedNodesPass()]
        self.rounds = ir.passes.PassManager(one_round, steps=2, early_stop=False)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        try:
            return self.rounds(model)
        except Exception as exc:
            while isinstance(exc, ir.passes.PassError) and exc.__cause__ is not None:
                exc = exc.__cause__  # the step's own error, not the pass manager's wrapping
            raise UnsupportedError(f"could not canonicalize the model: {str(exc).splitlines()[0][:200]}") from None


class InferShapesPass(ir.passes.InPlacePass):
    """ONNX shape inference, strict: a model it rejects is refused here (InputError)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=infer_shapes(model))


class ResolveReshapesPass(ir.passes.InPlacePass):
    """`resolve_reshapes`, then shape inference again to carry the recovered dims downstream."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        resolved = resolve_reshapes(model)
        if resolved:
            infer_shapes(model)
        return ir.passes.PassResult(model, modified=resolved > 0)


# ------------------------------------------------------------------------------ the steps


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


def infer_shapes(model: ir.Model) -> bool:
    """ONNX shape inference, strict; returns whether any value's type or shape changed."""
    try:
        return common.ShapeInferencePass(strict_mode=True)(model).modified
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
