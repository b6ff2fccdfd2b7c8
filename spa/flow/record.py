"""The record of a pruning run: a JSON-ready report, and the plan, report and per-layer changes
written into the pruned model's metadata (Netron lists them; `spa report` reads them back)."""
from __future__ import annotations

import json

import onnx_ir as ir

from spa.allocation.plan import PruningPlan
from spa.analysis.groups import Analysis

# Keys of the pruned model's metadata_props (Netron lists them under the model's properties).
PLAN_KEY = "spa.allocation.plan"
REPORT_KEY = "spa.report.tables"
SUMMARY_KEY = "spa.summary"
REPORT_FORMAT = 1


def report_scores(scores: dict | None, plan: PruningPlan) -> tuple[dict | None, str | None]:
    """The scores the plan was ranked by, for the report's histogram, or why there are none."""
    if scores is None:
        return None, "the plan was given, not ranked here: no scores"
    return {k: v for k, v in scores.items() if k in plan.removed}, None


def prune_report(original: ir.Model, pruned: ir.Model, analysis: Analysis, plan: PruningPlan,
                 scores: dict | None = None, scores_note: str | None = None, oracle_error: float | None = None,
                 canonical: dict | None = None) -> dict:
    """The JSON-ready report of one pruning run (stored in the pruned model's metadata)."""
    from spa import __version__
    from spa.report.tables import layer_rows, model_stats, score_histogram

    groups = analysis.group_by_key()
    pruned_groups = [{"key": k, "width": groups[k].width, "kept": groups[k].width - len(v)}
                     for k, v in sorted(plan.removed.items()) if v]
    return {
        "spa_report": REPORT_FORMAT, "created_by": f"spa {__version__}",
        "criterion": plan.meta.get("criterion"),
        "before": model_stats(original), "after": model_stats(pruned),
        "groups_total": len(analysis.groups), "groups_prunable": len(analysis.prunable_groups()),
        "groups": pruned_groups, "channels_removed": sum(len(v) for v in plan.removed.values()),
        "layers": layer_rows(original, pruned),
        "scores": None if scores is None else score_histogram(scores, plan), "scores_note": scores_note,
        "oracle_error": oracle_error, "fidelity": None, "latency": None,
        "canonical": canonical or {},
    }


def annotate(model: ir.Model, analysis: Analysis, plan: PruningPlan, report: dict) -> None:
    """Write the plan, the report and a one-line summary into the model's metadata, and mark every
    layer whose width changed (node metadata "spa.width", "spa.groups") so Netron shows them."""
    from spa.report.tables import change, human, macs_label

    model.metadata_props[PLAN_KEY] = json.dumps(plan.to_json())
    model.metadata_props[REPORT_KEY] = json.dumps({k: v for k, v in report.items() if k != "plan"})
    b, a = report["before"], report["after"]
    model.metadata_props[SUMMARY_KEY] = (
        f"pruned by {report['created_by']} ({report['criterion']}): parameters {human(b['params'])} → "
        f"{human(a['params'])}, {macs_label(b, a)} {human(b['macs'])} → {human(a['macs'])}; "
        f"{len(report['groups'])} of {report['groups_prunable']} prunable groups pruned")
    group_of_weight: dict[str, list[str]] = {}
    for key, removed in plan.removed.items():
        if removed:
            for m in analysis.group_by_key()[key].params:
                group_of_weight.setdefault(m.value, []).append(key)
    changed = {row["layer"]: row for row in report["layers"]
               if (row["in_before"], row["out_before"]) != (row["in_after"], row["out_after"])}
    for node in model.graph:
        row = changed.get(node.name)
        if row is not None:
            node.metadata_props["spa.width"] = (f"in {change(row['in_before'], row['in_after'])}, "
                                                f"out {change(row['out_before'], row['out_after'])}")
        keys = sorted({k for v in node.inputs if v is not None for k in group_of_weight.get(v.name, ())})
        if keys:
            node.metadata_props["spa.groups"] = ", ".join(keys)
