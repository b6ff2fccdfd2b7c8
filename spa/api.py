"""The Python API, the same functions the `spa` command calls.

    import spa
    result = spa.prune("model.onnx", ratio=0.3, criterion="l2")
    spa.save(result, "small.onnx")          # the plan and report travel in the model's metadata
    spa.inspect("model.onnx")               # dict: opset, I/O, ops, params, MACs, groups summary
    spa.groups("model.onnx").rows           # one dict per coupled channel group
    spa.pruning_report("small.onnx", original="model.onnx")  # dict; spa.write_report(it, "r.html")
    spa.diff("model.onnx", "small.onnx")    # spa.report.compare.DiffResult: structural deltas, output comparison

Models may be paths, onnx.ModelProto, onnx_ir.Model or onnx-graphsurgeon Graphs; inputs are never
modified. Failures raise spa.SpaError with a one-line message."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir

from spa.allocation.allocate import Budget
from spa.analysis.groups import Analysis
from spa.core.errors import InputError, SpaError
from spa.allocation.plan import PruningPlan

# Keys of the pruned model's metadata_props (Netron lists them under the model's properties).
PLAN_KEY = "spa.allocation.plan"
REPORT_KEY = "spa.report.tables"
SUMMARY_KEY = "spa.summary"
REPORT_FORMAT = 1


@dataclass
class PruneResult:
    """A pruned model, the plan that made it, and a JSON-ready report (what `spa report` shows)."""
    model: ir.Model
    plan: PruningPlan
    report: dict
    original: ir.Model = field(repr=False)      # canonicalized, unpruned
    analysis: Analysis = field(repr=False)
    oracle: Any = None                          # spa.flow.oracle.OracleResult with verify=True

    def save(self, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        return save(self, path, external_data=external_data)

    @property
    def before(self) -> dict:
        """Statistics of the (canonicalized) original: params, macs, bytes, nodes, ops."""
        return self.report["before"]

    @property
    def after(self) -> dict:
        return self.report["after"]


def prune(model, ratio: float | Budget = 0.3, *, criterion: str = "l2", scope: str | None = None,
          target: str = "channels", budget: Budget | None = None, plan: PruningPlan | None = None,
          compensation=None, verify: bool = False, seed: int = 0, normalizer: str | None = None,
          reduction: str = "mean", p: float = 2.0, input_shapes: dict | None = None,
          fuse_batchnorm: bool = True) -> PruneResult:
    """Prune `model` and return the pruned model, its plan and a report.

    ratio: share of `target` ("channels", "params" or "macs") to remove, in [0, 1); a full
    spa.Budget (global ranking, round_to, min_width, protect …) may be given as `budget` instead.
    criterion: "l1", "l2", "lp" (with p), "random", "lamp", "fpgm", "bn_scale", or the statistics
    criteria "obspa", "wanda", "flap". scope: which groups to prune
    ("heads", "ffn", "hidden" or "all"; None: heads and FFN/convolution channels — the hidden
    width is opt-in because norm statistics change). compensation: a spa.flow.pipeline.Compensation for
    OBS sink updates. verify: also check the oracle (sliced == masked); see result.oracle."""
    from spa.flow import pipeline

    if isinstance(ratio, Budget):  # spa.prune(model, spa.Budget(...)), the older call form
        budget = ratio
    budget = budget or Budget(ratio=float(ratio), target=target)
    result = pipeline.prune(model, budget, criterion=criterion, plan=plan, input_shapes=input_shapes,
                            fuse_batchnorm=fuse_batchnorm, verify=verify, seed=seed, normalizer=normalizer,
                            reduction=reduction, p=p, compensation=compensation, scope=scope)
    scores, note = _scores_for_report(result)
    report = prune_report(result.original, result.model, result.analysis, result.plan, scores, note,
                          oracle_error=None if result.oracle is None else result.oracle.error,
                          canonical={"fuse_batchnorm": fuse_batchnorm, "input_shapes": input_shapes or None})
    annotate(result.model, result.analysis, result.plan, report)
    return PruneResult(result.model, result.plan, report, result.original, result.analysis, result.oracle)


def _scores_for_report(result) -> tuple[dict | None, str | None]:
    """The scores the plan was ranked by, for the report's histogram (the pipeline keeps them)."""
    if result.scores is None:
        return None, "the plan was given, not ranked here: no scores"
    return {k: v for k, v in result.scores.items() if k in result.plan.removed}, None


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
    from spa.report.tables import change, human

    model.metadata_props[PLAN_KEY] = json.dumps(plan.to_json())
    model.metadata_props[REPORT_KEY] = json.dumps({k: v for k, v in report.items() if k != "plan"})
    b, a = report["before"], report["after"]
    model.metadata_props[SUMMARY_KEY] = (
        f"pruned by {report['created_by']} ({report['criterion']}): parameters {human(b['params'])} → "
        f"{human(a['params'])}, MACs {human(b['macs'])} → {human(a['macs'])}; "
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


def save(obj: PruneResult | ir.Model | Any, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write a PruneResult's model (with its annotations) or any model form, atomically."""
    from spa.graph import io

    model = obj.model if isinstance(obj, PruneResult) else io.load(obj)
    return io.save(model, path, external_data=external_data)


def inspect(model, *, input_shapes: dict | None = None, fuse_batchnorm: bool = True,
            scope: str | None = None) -> dict:
    """Opset, producer, inputs/outputs, op histogram, parameters, MACs and a groups summary."""
    from spa.report.tables import inspect_summary

    loaded, analysis = _analyzed(model, input_shapes, fuse_batchnorm, scope)
    return inspect_summary(loaded, analysis)


@dataclass
class Groups:
    """The coupled channel groups of a model: `rows` (what `spa groups --json` prints) and the
    full analysis (channel spaces, couplings) for drawing."""
    rows: list[dict]
    analysis: Analysis = field(repr=False)

    def to_dot(self, plan: PruningPlan | None = None) -> str:
        from spa.report.dot import to_dot

        return to_dot(self.analysis, plan)


def groups(model, *, input_shapes: dict | None = None, fuse_batchnorm: bool = True,
           scope: str | None = None) -> Groups:
    """One row per coupled group (kind, width, members, sinks, constraints, why not prunable);
    `scope` as in `prune`."""
    from spa.report.tables import group_rows

    _, analysis = _analyzed(model, input_shapes, fuse_batchnorm, scope)
    return Groups(group_rows(analysis), analysis)


def _analyzed(model, input_shapes, fuse_batchnorm, scope=None):
    from spa.flow.pipeline import analyze_scope, load_canonical

    loaded = load_canonical(model, input_shapes=input_shapes, fuse_batchnorm=fuse_batchnorm)
    return loaded, analyze_scope(loaded, scope)


def pruning_report(pruned, *, original=None, measure: bool = False, samples: int = 4, rounds: int = 50,
           seed: int = 0, input_shapes: dict | None = None) -> dict:
    """The report of a pruned model: what `spa prune` stored in its metadata, with fresh statistics
    of the model as it is. `original` adds per-layer before→after widths (matched by weight name
    after the same canonicalization); `measure` (needs `original`) adds output fidelity on random
    inputs and ONNX Runtime CPU latency of both."""
    from spa.graph import io
    from spa.report.tables import layer_rows, model_stats

    if measure and original is None:
        raise SpaError("measuring fidelity and latency needs the original model (--original)")
    model = io.load(pruned)
    stored = _stored(model)
    rep = dict(stored) if stored else {"spa_report": REPORT_FORMAT, "before": None, "layers": [], "groups": [],
                                       "scores": None, "fidelity": None, "latency": None}
    rep["model"] = _label(pruned)
    rep["stored"] = bool(stored)
    rep["after"] = model_stats(model)
    plan_text = model.metadata_props.get(PLAN_KEY)
    try:
        rep["plan"] = json.loads(plan_text) if plan_text else None
    except (ValueError, RecursionError):
        raise InputError(f"the model's '{PLAN_KEY}' metadata is not JSON") from None
    if original is not None:
        from spa.flow.pipeline import load_canonical

        how = rep.get("canonical") or {}
        before = load_canonical(original, input_shapes=input_shapes or how.get("input_shapes"),
                                fuse_batchnorm=how.get("fuse_batchnorm", True))
        rep["original"] = _label(original)
        rep["before"] = model_stats(before)
        rep["layers"] = layer_rows(before, model)
        if measure:
            rep["fidelity"], rep["latency"] = _measure(before, model, samples, rounds, seed)
    return rep


def _stored(model: ir.Model) -> dict | None:
    text = model.metadata_props.get(REPORT_KEY)
    if not text:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(f"the model's '{REPORT_KEY}' metadata is not JSON") from None
    if not isinstance(data, dict) or data.get("spa_report") != REPORT_FORMAT:
        raise InputError(f"the model's '{REPORT_KEY}' metadata is not an SPA report of format {REPORT_FORMAT}")
    return data


def _measure(before: ir.Model, after: ir.Model, samples: int, rounds: int, seed: int) -> tuple[dict, dict]:
    from dataclasses import asdict

    from spa.runtime.benchmark import median_latency_ms
    from spa.report.compare import compare_outputs, feeds_for

    feeds = feeds_for(before, after, None, samples, seed)
    outputs = compare_outputs(before, after, feeds)
    before_ms, after_ms = median_latency_ms([before, after], feeds[0], rounds)
    fidelity = {"samples": samples, "inputs": "random normal", "outputs": [asdict(o) for o in outputs]}
    latency = {"before_ms": before_ms, "after_ms": after_ms, "speedup": before_ms / after_ms if after_ms else None,
               "rounds": rounds, "runtime": "ONNX Runtime CPU"}
    return fidelity, latency


def write_report(rep: dict, path: str | os.PathLike, *, inputs=()) -> list[Path]:
    """Write `rep` as HTML (.html) or Markdown (.md) with its PNG plots beside it; returns the files.
    No file is written over one of `inputs` (paths; compared by inode)."""
    from spa.report.html import write

    return write(rep, Path(path), inputs=inputs)


def _label(model) -> str:
    from spa.report.compare import model_label

    return model_label(model)
