"""What SPA accepts, checked once right after loading: IR and opset versions, op domains, unique
tensor names, no empty weights. A model that fails here gets a one-line refusal instead of a
failure deep inside canonicalization or ONNX Runtime."""
from __future__ import annotations

import onnx
import onnx_ir as ir

from spa.core.errors import InputError, UnsupportedError

MIN_IR_VERSION = 3            # the first with opset imports
MIN_OPSET = 7                 # the oldest opset ONNX Runtime runs
MAX_OPSET = onnx.defs.onnx_opset_version()
# Domains ONNX Runtime has kernels for; nodes of any other domain could never be validated.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}


def check_supported(model: ir.Model) -> None:
    _check_versions(model)
    _check_domains(model)
    _check_no_empty_tensors(model)


def _check_versions(model: ir.Model) -> None:
    if not MIN_IR_VERSION <= model.ir_version <= onnx.IR_VERSION:
        raise UnsupportedError(f"IR version {model.ir_version} is not supported "
                               f"(SPA reads {MIN_IR_VERSION} to {onnx.IR_VERSION})")
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if opset is None:
        raise UnsupportedError("the model imports no default ONNX opset")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedError(f"opset {opset} is not supported (SPA reads opsets {MIN_OPSET} to {MAX_OPSET})")


def _check_domains(model: ir.Model) -> None:
    local = set(model.functions)
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain in ("", "ai.onnx"):
            _check_schema(node, opset)
            continue
        if node.domain in KNOWN_DOMAINS or (node.domain, node.op_type, node.overload) in local:
            continue
        raise UnsupportedError(f"{node.op_type} '{node.name}' is a custom op of domain '{node.domain}'; "
                               "ONNX Runtime has no kernel for it, so a pruned model could not be validated")


def check_unique_names(proto: onnx.ModelProto) -> None:
    """Each tensor name is defined once (ONNX's single static assignment rule). Checked on the
    protobuf: onnx-ir would silently keep one of two same-named initializers."""
    graph = proto.graph
    inputs = {v.name for v in graph.input}
    defined = [v.name for v in graph.input] + [t.name for t in graph.initializer if t.name not in inputs]
    defined += [name for node in graph.node for name in node.output if name]
    seen: set[str] = set()
    for name in defined:
        if name in seen:
            raise InputError(f"not a valid ONNX model: tensor name '{name}' is defined more than once")
        seen.add(name)


def _check_schema(node: ir.Node, opset: int) -> None:
    try:
        onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        raise InputError(f"{node.op_type} '{node.name}' is not an ONNX operator in opset {opset}") from None


def _check_no_empty_tensors(model: ir.Model) -> None:
    """Empty 1-D constants are normal (Resize's unused roi); an empty weight or I/O tensor is not."""
    for value in model.graph.initializers.values():
        shape = value.const_value.shape if value.const_value is not None else value.shape
        if shape is not None and len(shape) >= 2 and 0 in tuple(shape):
            raise UnsupportedError(f"weight '{value.name}' has a zero-sized dimension {list(shape)}; "
                                   "SPA does not prune empty tensors")
    for kind, values in (("input", model.graph.inputs), ("output", model.graph.outputs)):
        for value in values:
            if value.shape is not None and 0 in [d for d in value.shape if isinstance(d, int)]:
                raise UnsupportedError(f"graph {kind} '{value.name}' has a zero-sized dimension "
                                       f"{list(value.shape)}; SPA does not prune empty tensors")
