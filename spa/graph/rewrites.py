"""The rewrite rules canonicalization runs: SPA's own (below), then onnxscript's defaults, each
tried only on the nodes its pattern can match (`rewrite_rules`). Public onnxscript API only.

Each SPA rule turns one exporter's spelling of an operation into the spelling the op rules analyse;
two more rewrites that are not patterns run as passes after the rules (`DropReshapeAllowzeroPass`,
`UnshareUniformConstantsPass`).

- `unflatten_gemm`: jax2onnx (and other exporters) apply a Dense layer to [..., D] as
  Reshape → [prod(...), D] → Gemm → Reshape → [..., N]. Flattening merges every leading axis into
  the batch axis, so a channel axis among them (MLP-Mixer's token mixing runs Dense over tokens
  with the channels leading) would merge with the batch. MatMul + Add on the unflattened tensor
  computes the same and keeps each axis its own.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet
from onnxscript.rewriter.rules import common as onnxscript_rules


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].as_tensor().numpy()
    return None


class UnflattenGemm(RewriteRuleClassBase):
    """Reshape(x → [M, K]) → Gemm(·, W[, C]) → Reshape(→ [..., N]) with the leading dims of x
    restored ⇒ MatMul(x, W) (+ C)."""

    def pattern(self, op, x, shape_in, w, c, shape_out):
        flat = op.Reshape(x, shape_in, _allow_other_attributes=True)
        y = op.Gemm(flat, w, c, _allow_other_attributes=True, _outputs=["gemm"])
        return op.Reshape(y, shape_out, _allow_other_attributes=True)

    def check(self, context, x, shape_in, w, c, shape_out, gemm, **_) -> MatchResult:
        result = MatchResult()
        node = gemm.producer()
        attrs = node.attributes
        if attrs.get_int("transA", 0) or attrs.get_float("alpha", 1.0) != 1.0 or attrs.get_float("beta", 1.0) != 1.0:
            return result.fail("Gemm with transA, alpha or beta")
        if len(gemm.uses()) != 1 or len(node.inputs[0].uses()) != 1:
            return result.fail("the flattened values have other users")
        if x.shape is None or len(x.shape) < 3 or w.shape is None or len(w.shape) != 2:
            return result.fail("x of rank < 3 or W not a matrix")
        if c is not None and (c.shape is None or len(c.shape) > 1):
            return result.fail("a bias that is not a vector or scalar")
        out = context.output_values[0]
        if out.shape is None or len(out.shape) != len(x.shape):
            return result.fail("the output rank differs from x's")
        if any(not isinstance(d, int) for d in list(x.shape)[:-1]):
            # symbolic leading dims: they must be the same symbols in the output
            if [str(d) for d in list(x.shape)[:-1]] != [str(d) for d in list(out.shape)[:-1]]:
                return result.fail("the output does not restore x's leading dims")
        elif list(x.shape)[:-1] != list(out.shape)[:-1]:
            return result.fail("the output does not restore x's leading dims")
        flat = _const(shape_in)
        if flat is None or len(flat) != 2:
            return result.fail("the first Reshape's target is not a constant [M, K]")
        self._trans_b = attrs.get_int("transB", 0)
        return result

    def rewrite(self, op, x, shape_in, w, c, shape_out, gemm, **_):
        weight = op.Transpose(w, perm=[1, 0]) if self._trans_b else w
        y = op.MatMul(x, weight)
        return op.Add(y, c) if c is not None else y


class UnflattenGemmNoBias(UnflattenGemm):
    """The same without C (onnxscript drops an all-zero Gemm bias first)."""

    def pattern(self, op, x, shape_in, w, shape_out):
        flat = op.Reshape(x, shape_in, _allow_other_attributes=True)
        y = op.Gemm(flat, w, _allow_other_attributes=True, _outputs=["gemm"])
        return op.Reshape(y, shape_out, _allow_other_attributes=True)

    def check(self, context, x, shape_in, w, shape_out, gemm, **_) -> MatchResult:
        return super().check(context, x, shape_in, w, None, shape_out, gemm)

    def rewrite(self, op, x, shape_in, w, shape_out, gemm, **_):
        return super().rewrite(op, x, shape_in, w, None, shape_out, gemm)


RULES = [UnflattenGemm.rule(), UnflattenGemmNoBias.rule()]
rules = RewriteRuleSet(RULES)

_r = onnxscript_rules
#: onnxscript.rewriter's default rules (its private `_DEFAULT_REWRITE_RULES`, in the same order),
#: by their public names, each with the op type of its pattern's (first) output node: a rule can
#: only fire on a node of that type. tests/graph/test_canon_rules.py checks both against onnxscript.
ONNXSCRIPT_DEFAULTS: list[tuple[str, object]] = [
    *[("Mul", rule) for rule in _r.mul_by_1_rule.commute()],
    *[("Add", rule) for rule in _r.add_0_rule.commute()],
    ("Sub", _r.sub_0_rule), ("Div", _r.div_by_1_rule),
    ("Dropout", _r.dropout_zero_rule), ("Dropout", _r.dropout_inference_rule),
    ("Reshape", _r.two_reshapes_matmul_reshape_rule), ("Reshape", _r.one_reshape_matmul_reshape_rule),
    ("Cast", _r.cast_constant_of_shape_rule), ("Cast", _r.cast_constant_of_shape_without_value_rule),
    ("Slice", _r.collapse_slice_rule), ("Slice", _r.collapse_slice2_rule),
    ("Reshape", _r.materialize_reshape_shape_rule),
    ("Min", _r.min_min_rule), ("Max", _r.max_max_rule), ("Max", _r.min_max_rule), ("Min", _r.max_min_rule),
    ("Clip", _r.successive_clip_relu_rule), ("Relu", _r.successive_relu_clip_rule),
    ("Relu", _r.successive_relu_rule), ("Clip", _r.successive_clip_rule),
    ("Cast", _r.cast_cast_rule), ("Cast", _r.no_op_cast_rule), ("Expand", _r.no_op_expand_rule),
    ("Flatten", _r.flatten_to_reshape_rule), ("Reshape", _r.reshape_reshape_rule),
    ("Slice", _r.slice_split_rule), ("Transpose", _r.no_op_transpose_rule),
    ("Transpose", _r.transpose_transpose_rule), ("Unsqueeze", _r.unsqueeze_unsqueeze_rule),
    ("Reshape", _r.squeeze_reshape_1d_rule),
    ("ScatterND", _r.no_op_dynamic_scatter_nd_rule), ("ScatterND", _r.no_op_static_scatter_nd_rule),
    ("Conv", _r.normalize_pad_format_conv_rule), ("ConvInteger", _r.normalize_pad_format_conv_integer_rule),
    ("Conv", _r.fuse_pad_into_conv_rule), ("ConvInteger", _r.fuse_pad_into_conv_integer_rule),
    ("BatchNormalization", _r.fuse_batchnorm_into_conv_rule),
    ("BatchNormalization", _r.fuse_batchnorm_into_conv_transpose_rule),
    ("BatchNormalization", _r.fuse_batchnorm_into_gemm_rule),
    ("Conv", _r.remove_optional_bias_from_conv_rule),
    ("ConvTranspose", _r.remove_optional_bias_from_conv_transpose_rule),
    ("QLinearConv", _r.remove_optional_bias_from_qlinear_conv_rule),
    ("Gemm", _r.remove_optional_bias_from_gemm_rule),
]
SPA_RULES: list[tuple[str, object]] = [("Reshape", rule) for rule in RULES]  # both end in a Reshape
BATCHNORM_FUSIONS = (_r.fuse_batchnorm_into_conv_rule, _r.fuse_batchnorm_into_conv_transpose_rule,
                     _r.fuse_batchnorm_into_gemm_rule)

_CACHE: dict[bool, list] = {}


def rewrite_rules(fuse_batchnorm: bool = True) -> list:
    """SPA's rules first (exporters' spellings onnxscript leaves alone), then onnxscript's defaults
    (less the BatchNorm fusions unless `fuse_batchnorm`), each tried only on nodes of its op type.

    onnxscript tries every rule on every node; skipping the nodes a rule cannot match keeps
    rewriting linear in the graph (SlicesSplit, a two-output pattern, indexes the whole graph on
    every try: 3.3 s of 3.7 s at 2,505 nodes)."""
    key = bool(fuse_batchnorm)
    if key not in _CACHE:
        _CACHE[key] = [_only_on(op, rule) for op, rule in [*SPA_RULES, *ONNXSCRIPT_DEFAULTS]
                       if fuse_batchnorm or rule not in BATCHNORM_FUSIONS]
    return _CACHE[key]


def _only_on(op_type: str, rule):
    """The same rule, tried only on default-domain nodes of `op_type` (and SlicesSplit only where
    it can succeed); every skipped try would have failed, so the rewrites are the same."""
    fast = copy.copy(rule)
    try_rewrite = rule.try_rewrite
    applies = _split_candidate if rule is onnxscript_rules.slice_split_rule else None

    def filtered(model, graph_or_function, node, **kwargs):
        if node.op_type != op_type or node.domain != "" or (applies is not None and not applies(node)):
            return None
        return try_rewrite(model, graph_or_function, node, **kwargs)

    fast.try_rewrite = filtered
    return fast


def _split_candidate(node: ir.Node) -> bool:
    """Whether SlicesSplit (`Slice(x, 0, h, axes), Slice(x, h, 2h, axes)` → Split) can rewrite at
    this Slice: it has no `steps`, starts at a constant 0, and another Slice of the same graph
    reads the same x. onnxscript's matcher then pairs it with every Slice of the graph, so this
    test keeps those tries for the few Slices that may succeed (the pairing with itself fails)."""
    if not node.inputs or len(node.inputs) > 4 or node.inputs[0] is None:
        return False
    starts = node.inputs[1] if len(node.inputs) > 1 else None
    if starts is None or starts.const_value is None or starts.const_value.numpy().tolist() != [0]:
        return False
    return any(user is not node and index == 0 and user.op_type == "Slice" and user.domain == ""
               and user.graph is node.graph for user, index in node.inputs[0].uses())


class DropReshapeAllowzeroPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=drop_reshape_allowzero(model) > 0)


class UnshareUniformConstantsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=unshare_uniform_constants(model) > 0)


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


class RememberNodeNamesPass(ir.passes.InPlacePass):
    """Record the node names and which node wrote each value (its name, op type and inputs), for
    `RestoreNodeNamesPass`."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()
        self.writers: dict[str, tuple[str, str, tuple[str, ...]]] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.names = {node.name for node in ir.traversal.RecursiveGraphIterator(model.graph) if node.name}
        self.writers = {out.name: (node.name, node.op_type, tuple(v.name for v in node.inputs if v is not None))
                        for node in ir.traversal.RecursiveGraphIterator(model.graph) if node.name
                        for out in node.outputs if out.name}
        return ir.passes.PassResult(model, modified=False)


class RestoreNodeNamesPass(ir.passes.InPlacePass):
    """Give the exporter's node names back to the nodes folding and rewriting re-created. A
    replaced node's outputs keep their names but the new node gets a made-up one (`node_Conv_0`):
    it takes the name of the node of its op type that wrote that output, or wrote
    what that node read, a few steps up (a Conv fused with its BatchNormalization writes the
    BatchNormalization's output and takes the Conv's name). A name still in use is not taken."""

    def __init__(self, remembered: RememberNodeNamesPass, depth: int = 4):
        super().__init__()
        self.remembered = remembered
        self.depth = depth

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
        taken = {node.name for node in nodes if node.name}
        restored = 0
        for node in nodes:
            if node.name in self.remembered.names:
                continue
            name = self._origin(node, taken)
            if name is not None:
                node.name = name
                taken.add(name)
                restored += 1
        return ir.passes.PassResult(model, modified=restored > 0)

    def _origin(self, node: ir.Node, taken: set[str]) -> str | None:
        writers = self.remembered.writers
        frontier = [out.name for out in node.outputs if out.name]
        seen: set[str] = set()
        for _ in range(self.depth):
            following = []
            for value in frontier:
                writer = writers.get(value)
                if writer is None or writer[0] in seen:
                    continue
                seen.add(writer[0])
                if writer[1] == node.op_type and writer[0] not in taken:
                    return writer[0]
                following.extend(writer[2])
            frontier = following
        return None
