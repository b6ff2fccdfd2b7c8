"""Tables and JSON-ready summaries for the CLI."""
from __future__ import annotations

from collections import Counter

import onnx_ir as ir

from spa.io import to_proto
from spa.metrics import count


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def model_stats(model: ir.Model) -> dict:
    stats = count(model)
    stats["nodes"] = len(model.graph)
    stats["bytes"] = to_proto(model).ByteSize()
    stats["ops"] = dict(sorted(Counter(n.op_type for n in model.graph).items()))
    return stats


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
        "params": stats["params"], "macs": stats["macs"], "nodes": stats["nodes"], "ops": stats["ops"],
        "groups": {"total": len(analysis.groups), "prunable": len(analysis.prunable_groups()),
                   "prunable_channels": sum(g.width for g in analysis.prunable_groups()),
                   "unprunable": [{"reason": r, "groups": n} for r, n in reasons.most_common()]},
    }


def constraints(group) -> list[str]:
    out = []
    for m in group.members:
        if m.kind == "virtual":
            out.append(f"whole groups ({m.label}, {m.size})")
        elif len(m.axes) > 1 and m.prune_axis is not None:
            out.append(f"product structure {m.dims} on {m.value}")
    sizes = set(group.class_sizes().tolist())
    if sizes != {1}:
        out.append(f"unit of {min(sizes)}" + (f"-{max(sizes)}" if len(sizes) > 1 else "") + " channels")
    return out


def group_rows(analysis) -> list[dict]:
    rows = []
    for g in analysis.groups:
        rows.append({
            "id": g.id, "key": g.key, "width": g.width,
            "members": [m.key for m in g.members if m.kind != "virtual"],
            "params": [m.key for m in g.params],
            "sinks": sorted({s.node for s in g.sinks}),
            "constraints": constraints(g),
            "prunable": g.prunable, "reason": g.reason,
        })
    return rows


def before_after(before: dict, after: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("bytes", "file size"), ("nodes", "nodes")):
        b, a = before[key], after[key]
        rows.append((label, human(b), human(a), f"{a / b:.1%}" if b else "-"))
    for op in sorted(set(before["ops"]) | set(after["ops"])):
        b, a = before["ops"].get(op, 0), after["ops"].get(op, 0)
        if a != b:
            rows.append((f"{op} nodes", str(b), str(a), f"{a - b:+d}"))
    return rows
