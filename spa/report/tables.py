"""Tables and JSON-ready summaries for the CLI."""
from __future__ import annotations

from collections import Counter

import onnx_ir as ir

from spa.graph.io import serialized_bytes
from spa.analysis.metrics import MacsDims, count, node_macs, node_params, sizes_text
from spa.analysis.rules import Rule, standard_rule


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def number(x: float | None, spec: str = ".3g") -> str:
    """A float for a table cell; '-' when it was not measured."""
    return "-" if x is None else format(x, spec)


def change(before, after, fmt=str) -> str:
    """'64 → 45', or just '64' when nothing changed."""
    return fmt(after) if before == after else f"{fmt(before)} → {fmt(after)}"


def model_stats(model: ir.Model, input_shapes: dict | None = None) -> dict:
    """Parameters, MACs (at the input sizes in 'macs_at', see spa.analysis.metrics.count), nodes,
    file size and the op histogram."""
    stats = count(_with_shapes(model), input_shapes=input_shapes)
    stats["nodes"] = len(model.graph)
    stats["bytes"] = serialized_bytes(model)  # does not read the weights of a big model
    stats["ops"] = dict(sorted(Counter(n.op_type for n in model.graph).items()))
    return stats


def _with_shapes(model: ir.Model) -> ir.Model:
    """The model, or a shape-inferred copy where its compute nodes' outputs carry no shapes (SPA
    saves only the shape annotations the exporter wrote, so MACs need inference when read back)."""
    compute = [n for n in model.graph if _layer_rule(n) is not None]
    if all(n.outputs[0].shape is not None for n in compute):
        return model
    from spa.graph.canon import infer_shapes
    from spa.runtime.validate import copy_model

    copy = copy_model(model)
    infer_shapes(copy)
    return copy


def describe_value(v: ir.Value) -> dict:
    return {"name": v.name, "dtype": str(v.dtype), "shape": [d if isinstance(d, int) else str(d) for d in (v.shape or [])]}


def inspect_summary(model: ir.Model, analysis) -> dict:
    stats = model_stats(model)
    reasons = Counter(g.reason for g in analysis.groups if not g.prunable)
    return {
        "opset": model.opset_imports.get("", None),
        "producer": f"{model.producer_name or ''} {model.producer_version or ''}".strip(),
        "inputs": [describe_value(v) for v in model.graph.inputs],
        "outputs": [describe_value(v) for v in model.graph.outputs],
        "params": stats["params"], "macs": stats["macs"], "macs_at": stats["macs_at"], "nodes": stats["nodes"],
        "ops": stats["ops"],
        "groups": {"total": len(analysis.groups), "prunable": len(analysis.prunable_groups()),
                   "prunable_channels": sum(g.width for g in analysis.prunable_groups()),
                   "unprunable": [{"reason": r, "groups": n} for r, n in reasons.most_common()]},
    }


def constraints(group) -> list[str]:
    out = []
    products = Counter()
    for m in group.members:
        if m.kind == "virtual" and not m.label.startswith("projection of "):
            out.append(f"whole groups ({m.label}, {m.size})")
        elif len(m.axes) > 1 and group.kind != "heads":
            products[m.dims] += 1
    out.extend(f"product structure {dims} on {n} tensor{'s' * (n > 1)}" for dims, n in products.items())
    heads = head_structure(group)
    if heads:
        out.append(heads)
    sizes = set(group.class_sizes().tolist())
    if sizes != {1}:
        out.append(f"unit of {min(sizes)}" + (f"-{max(sizes)}" if len(sizes) > 1 else "") + " channels")
    return out


def head_structure(group) -> str | None:
    """'4 heads × 8' (or with GQA '2 key/value heads, 2 query heads each, × 8'): what one
    head group holds; its root channels are whole key/value heads with their query heads."""
    if group.kind != "heads":
        return None
    composite = [m for m in group.members if m.role == "heads" and len(m.dims) == 2]
    if not composite:
        return None
    heads = max(m.dims[0] for m in composite)
    size = max(m.dims[1] for m in composite)
    if heads == group.width:
        return f"{heads} heads × {size}"
    return f"{group.width} key/value heads, {heads // group.width} query heads each, × {size}"


def group_rows(analysis) -> list[dict]:
    rows = []
    for g in analysis.groups:
        rows.append({
            "id": g.id, "key": g.key, "old_key": g.old_key, "kind": g.kind, "width": g.width,
            "members": [m.key for m in g.members if m.kind != "virtual"],
            "params": [m.key for m in g.params],
            "sinks": sorted({s.node for s in g.sinks}),
            "constraints": constraints(g),
            "prunable": g.prunable, "reason": g.reason,
        })
    return rows


def macs_label(*stats: dict) -> str:
    """'MACs (batch_size 1, sequence_length 128)': the input sizes the MACs were counted at."""
    at = next((s.get("macs_at") for s in stats if s and s.get("macs_at")), None)
    return "MACs" + sizes_text(at)


def before_after(before: dict, after: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, label in (("params", "parameters"), ("macs", macs_label(before, after)), ("bytes", "file size"),
                       ("nodes", "nodes")):
        b, a = before[key], after[key]
        rows.append((label, human(b), human(a), f"{a / b:.1%}" if b else "-"))
        if key == "params":
            rows += _params_by_dtype(before, after)
    for op in sorted(set(before["ops"]) | set(after["ops"])):
        b, a = before["ops"].get(op, 0), after["ops"].get(op, 0)
        if a != b:
            rows.append((f"{op} nodes", str(b), str(a), f"{a - b:+d}"))
    return rows


def _params_by_dtype(before: dict, after: dict) -> list[tuple[str, str, str, str]]:
    """One row per weight dtype, where a model mixes them (a quantized model's uint8 weights next to
    its float scales): which part of the parameters pruning removed."""
    kinds = sorted(set(before.get("params_by_dtype", {})) | set(after.get("params_by_dtype", {})))
    if len(kinds) < 2:
        return []
    rows = []
    for kind in kinds:
        b, a = before.get("params_by_dtype", {}).get(kind, 0), after.get("params_by_dtype", {}).get(kind, 0)
        rows.append((f"  {kind}", human(b), human(a), f"{a / b:.1%}" if b else "-"))
    return rows


# ---------------------------------------------------------------- per-layer before→after

def _layer_rule(node: ir.Node) -> Rule | None:
    """The op rule of a float compute layer (Conv, ConvTranspose, Gemm, MatMul: whose weight fixes
    its input and output widths, what a reader calls "a layer"), or None."""
    rule = standard_rule(node)
    return None if rule is None or rule.quantized or rule.weight_input(node) is None else rule


def _weight(node: ir.Node) -> ir.Value | None:
    rule = _layer_rule(node)
    index = None if rule is None else rule.weight_input(node)
    if index is None or len(node.inputs) <= index or node.inputs[index] is None:
        return None
    w = node.inputs[index]
    return w if w.is_initializer() and w.shape is not None and len(w.shape) >= 2 else None


def layer_widths(node: ir.Node, w: ir.Value) -> tuple[int, int]:
    """(input channels, output channels) read from the weight's shape and the node's attributes."""
    return _layer_rule(node).layer_widths(node, list(w.shape))


def block_of(name: str, weight: str = "") -> str:
    """The block a layer belongs to: the first two scopes of its node name ('/layer1/layer1.0/conv1/Conv'
    → 'layer1/layer1.0', the TorchScript exporter's names), else of its weight's module path
    ('features.0.0.weight' → 'features/features.0', the dynamo exporter keeps those); else the layer."""
    scopes = [s for s in name.split("/") if s][:-1]
    if not scopes and "." in weight and "::" not in weight:
        parts = weight.split(".")[:-1]  # the module path, without the parameter's own name
        scopes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return "/".join(scopes[:2]) if scopes else name


def layer_rows(before: ir.Model, after: ir.Model, input_shapes: dict | None = None) -> list[dict]:
    """One row per weighted layer of `after`, in graph order, with its widths, parameters and MACs
    before and after (each model's own, at the input sizes `count` uses). Layers are matched by
    weight name, which canonicalization and slicing keep; a model read back from a file gets its
    shapes inferred first (SPA saves only the exporter's shape annotations)."""
    def index(model):
        table = {}
        for node in model.graph:
            w = _weight(node)
            if w is not None:
                table[w.name] = (node, w)
        return table

    before, after = _with_shapes(before), _with_shapes(after)
    b_dims, a_dims = MacsDims(before, None, input_shapes), MacsDims(after, None, input_shapes)
    old = index(before)
    rows = []
    for name, (node, w) in index(after).items():
        if name not in old:
            continue
        b_node, b_w = old[name]
        (b_in, b_out), (a_in, a_out) = layer_widths(b_node, b_w), layer_widths(node, w)
        rows.append({"layer": node.name, "op": node.op_type, "weight": name, "block": block_of(node.name, name),
                     "in_before": b_in, "in_after": a_in, "out_before": b_out, "out_after": a_out,
                     "params_before": node_params(b_node), "params_after": node_params(node),
                     "macs_before": node_macs(b_node, b_dims), "macs_after": node_macs(node, a_dims)})
    return rows


def block_rows(layers: list[dict]) -> list[dict]:
    """Layer rows summed per block, in order of first appearance."""
    blocks: dict[str, dict] = {}
    for row in layers:
        entry = blocks.setdefault(row["block"], {"block": row["block"], "layers": 0, "params_before": 0,
                                                 "params_after": 0, "macs_before": 0, "macs_after": 0})
        entry["layers"] += 1
        for key in ("params_before", "params_after", "macs_before", "macs_after"):
            entry[key] += row[key]
    return list(blocks.values())


def score_histogram(scores: dict, plan, bins: int = 30) -> dict:
    """Counts of kept and removed channels per score bin, over the groups the plan ranked."""
    import numpy as np

    kept, removed = [], []
    for key, values in scores.items():
        gone = set(plan.removed.get(key, []))
        for i, s in enumerate(np.asarray(values, dtype=float)):
            (removed if i in gone else kept).append(s)
    # NaN/Inf scores (from NaN/Inf weights) have no bin: counted apart, never a crash
    nonfinite = sum(1 for s in kept + removed if not np.isfinite(s))
    kept = [s for s in kept if np.isfinite(s)]
    removed = [s for s in removed if np.isfinite(s)]
    everything = np.asarray(kept + removed)
    if everything.size == 0:
        return {"edges": [], "kept": [], "removed": []}
    edges = np.histogram_bin_edges(everything, bins=bins)
    hist = {"edges": [float(e) for e in edges], "kept": np.histogram(kept, edges)[0].tolist(),
            "removed": np.histogram(removed, edges)[0].tolist()}
    if nonfinite:
        hist["nonfinite"] = nonfinite
    return hist
