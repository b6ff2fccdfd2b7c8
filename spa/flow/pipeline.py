"""The stages strung together: load → canonicalize → analyze → (measure statistics) → score →
allocate → compensate → slice → validate → record. The CLI and the Python API are thin layers over
`prune`; tests and the zoo checks reuse the same stages (`apply_plan`, spa.flow.oracle)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx_ir as ir

from spa.allocation.allocate import Budget
from spa.allocation.plan import PruningPlan
from spa.analysis.groups import SCOPES, Analysis, analyze
from spa.core.errors import UnsupportedError, UsageError
from spa.core.timing import Stopwatch
from spa.flow.defaults import AUTO, default_config
from spa.flow.compensation import (Compensation, check_feeds, compensation_for, measure, resolve_method,
                                   update_sinks)
from spa.flow.oracle import OracleResult, oracle
from spa.flow.ranking import make_plan, rank, ranking_defaults
from spa.flow.record import annotate, prune_report, report_scores
from spa.graph import io
from spa.graph.canon import canonicalize, restore_initializer_inputs
from spa.graph.kv_inputs import HAD_KV_CACHE, drop_kv_cache
from spa.importance.registry import Criterion, criterion_names, get_criterion
from spa.passes.slice import slice_model
from spa.runtime import examples
from spa.runtime.validate import REFERENCE, copy_model, reference_run, validate


def load_canonical(source, *, input_shapes: dict | None = None, fuse_batchnorm: bool = True,
                   reference: bool = False) -> ir.Model:
    """Load any accepted model form and canonicalize a private copy (the input is never changed).
    With `reference`, the model as given is first run on example inputs (spa.runtime.validate.Reference)
    that every later check reuses."""
    model = io.load(source)
    from_file = isinstance(source, (str, os.PathLike))
    if not from_file:
        model = copy_model(model)
    drop_kv_cache(model)  # the decoder without its cache (the file runs with an empty one); the writer gives it back
    ran = None
    if reference:
        try:
            ran = reference_run(model, source if from_file else None, input_shapes)
        except UnsupportedError as exc:  # raised once the analysis has had its say (require_reference)
            ran = exc
    batchnorms = sum(n.op_type == "BatchNormalization" for n in model.graph.all_nodes())
    canonical = canonicalize(model, fuse_batchnorm=fuse_batchnorm, input_shapes=input_shapes)
    canonical.meta["spa.batchnorms"] = batchnorms  # how many the input had (fusion may remove them)
    canonical.meta[HAD_KV_CACHE] = model.meta.get(HAD_KV_CACHE, False)
    if ran is not None:
        canonical.meta[REFERENCE] = ran
        if examples.CHOICE in model.meta:
            canonical.meta[examples.CHOICE] = model.meta[examples.CHOICE]
    return canonical


def require_reference(model: ir.Model) -> None:
    """Raise the reason the original could not be run on example inputs, if it could not."""
    if isinstance(model.meta.get(REFERENCE), Exception):
        raise model.meta[REFERENCE]


def batchnorm_model(source, original: ir.Model, input_shapes: dict | None, fuse_batchnorm: bool) -> ir.Model | None:
    """The model with its BatchNormalization statistics, for the statistics sources that read them:
    `original` itself when it kept them, a second canonicalization without fusion when fusion took
    them out, None when the model has none."""
    if not original.meta.get("spa.batchnorms"):
        return None
    if not fuse_batchnorm:
        return original
    return load_canonical(source, input_shapes=input_shapes, fuse_batchnorm=False)


def analyze_scope(model: ir.Model, scope: str | None = None) -> Analysis:
    """The analysis with only `scope`'s groups prunable ("heads", "ffn", "hidden", "all"; None:
    heads and FFN/conv channels). The hidden width is analysed only when asked for."""
    if scope is not None and scope not in SCOPES:
        raise UsageError(f"unknown scope '{scope}' (choose from {', '.join(s for s in SCOPES if s != 'default')})")
    analysis = analyze(model, hidden=scope in ("hidden", "all"))
    analysis.restrict_to(scope)
    return analysis


def top_reason(analysis: Analysis) -> str:
    """The most common reason the analysis gives for a group it cannot prune."""
    from collections import Counter

    reasons = Counter(g.reason for g in analysis.groups if g.reason)
    return reasons.most_common(1)[0][0] if reasons else _no_groups_reason(analysis.model)


def _no_groups_reason(model: ir.Model) -> str:
    """Why a model has no channel group at all, in terms of its own nodes."""
    bodies = [n for n in model.graph if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
                                            for a in n.attributes.values())]
    if bodies:
        named = ", ".join(f"{n.op_type} '{n.name}'" for n in bodies[:3])
        return (f"the model has no channel groups: its layers sit inside {named}, whose bodies carry every "
                "width across iterations or out of the body (a recurrent cell spelled as a Loop); SPA prunes "
                "inside a body only where a width stays within it")
    return "the model has no channel groups: no Conv, ConvTranspose, MatMul or Gemm reads a weight"


@dataclass
class PruneResult:
    """A pruned model, the plan that made it, and a JSON-ready report (what `spa report` shows)."""
    model: ir.Model                             # pruned, with the plan and report in its metadata
    plan: PruningPlan
    report: dict
    original: ir.Model = field(repr=False)      # canonicalized, unpruned
    analysis: Analysis = field(repr=False)
    oracle: OracleResult | None = None          # with verify=True
    scores: dict | None = field(default=None, repr=False)  # what the plan was ranked by (None: plan given)
    seconds: dict = field(default_factory=dict, repr=False)  # wall-clock seconds per stage (spa.core.timing)

    def save(self, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        return io.save(self.model, path, external_data=external_data)

    @property
    def before(self) -> dict:
        """Statistics of the (canonicalized) original: params, macs, bytes, nodes, ops."""
        return self.report["before"]

    @property
    def after(self) -> dict:
        return self.report["after"]

    def __repr__(self) -> str:  # short: the model itself prints thousands of lines
        from spa.graph.external_data import SOURCE_FILES
        from spa.report.tables import human

        files = sorted(f for f in self.original.meta.get(SOURCE_FILES, ()) if Path(f).suffix == ".onnx")
        name = "/".join(Path(files[0]).parts[-2:]) if files else self.model.graph.name or "model"
        meta = self.plan.meta
        share = "plan given" if meta.get("ratio") is None else f"ratio {meta['ratio']:g} of {meta.get('target', '?')}"
        before, after = self.report.get("before") or {}, self.report.get("after") or {}
        sizes = ", ".join(f"{label} {human(before[key])} → {human(after[key])}" for key, label in
                          (("params", "params"), ("macs", "MACs")) if key in before and key in after)
        pruned = sum(1 for removed in self.plan.removed.values() if removed)
        criterion = self.report.get("criterion") or meta.get("criterion")
        return (f"PruneResult({name!r}, {f'criterion {criterion}, ' if criterion else ''}{share}, {pruned} of "
                f"{len(self.analysis.prunable_groups())} prunable groups pruned "
                f"({sum(len(v) for v in self.plan.removed.values())} channels), {sizes})")


def compensated_copy(original: ir.Model, analysis: Analysis, plan: PruningPlan,
                     compensation: Compensation | None = None, stats=None) -> ir.Model:
    """A copy of `original` with its sinks compensated for `plan` (the update reads the removed
    columns, so it comes before slicing); a plain copy without compensation."""
    model = copy_model(original)
    if compensation is not None:
        update_sinks(model, analysis, plan, compensation, stats)
    return model


def apply_plan(original: ir.Model, analysis: Analysis, plan: PruningPlan, compensation: Compensation | None = None,
               stats=None, *, compensated: ir.Model | None = None) -> ir.Model:
    """A pruned copy of `original`: the sinks compensated (or `compensated`, made by
    compensated_copy, which is sliced in place), sliced, its interface restored, and validated
    against the original."""
    pruned = compensated if compensated is not None else compensated_copy(original, analysis, plan, compensation,
                                                                          stats)
    slice_model(pruned, analysis, plan)
    restore_initializer_inputs(pruned)
    with np.errstate(invalid="ignore"):  # Inf outputs (from Inf weights) compare as NaN errors, which pass
        validate(original, pruned, same_values=not any(plan.removed.values()))
    return pruned


def prune(source, budget: Budget | None = None, *, criterion: str | Criterion = "l2", plan: PruningPlan | None = None,
          input_shapes: dict | None = None, fuse_batchnorm: bool = True, verify: bool = False,
          seed: int = 0, normalizer: str | None = None, reduction: str | None = None, p: float = 2.0,
          compensation: Compensation | None = None, scope: str | None = None) -> PruneResult:
    """Prune a model (path, ModelProto, onnx_ir.Model or gs.Graph); the result holds the pruned
    onnx-ir model, annotated with its plan and report.

    `criterion` is a registered name (spa.importance.registry.criterion_names()), a Criterion, or
    "auto": the model family's default (spa.flow.defaults), recorded in the plan's meta.
    Statistics criteria (obspa, wanda, flap) rank by the sinks' input statistics and get their own
    sink update by default (compensation_for); gradient criteria rank by gradients on the
    statistics inputs; `compensation` sets where statistics come from and turns the OBS update on
    for any criterion."""
    watch = Stopwatch()
    with watch("load"):
        original = load_canonical(source, input_shapes=input_shapes, fuse_batchnorm=fuse_batchnorm, reference=True)
    with watch("analysis"):
        analysis = analyze_scope(original, scope)
    default = None
    if isinstance(criterion, str) and criterion == AUTO and plan is not None:
        # re-applying a saved plan: the criterion that made it, so its sink update is made again
        criterion = plan.meta.get("criterion") if plan.meta.get("criterion") in criterion_names() else "l2"
    elif isinstance(criterion, str) and criterion == AUTO:  # the model family's default (spa.flow.defaults)
        default = default_config(original, analysis)
        criterion = default.criterion
        budget = budget or Budget()
        if budget.global_rank is None:
            budget = replace(budget, global_rank=default.global_rank)
    chosen = get_criterion(criterion)
    compensation = resolve_method(compensation, chosen)
    if plan is None and (budget is None or budget.ratio > 0) and not analysis.prunable_groups():
        raise UnsupportedError(f"nothing to prune: no group of channels is prunable ({top_reason(analysis)}); "
                               "`spa groups MODEL` lists every group and why")
    require_reference(original)
    if compensation is None:
        compensation = compensation_for(chosen, seed=seed)
    if compensation is not None:
        check_feeds(chosen, compensation)
    stats = scores = None
    # NaN or Inf weights make NaN scores and statistics, not warnings: allocate leaves those groups whole
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if compensation is not None:
            keep_feeds = compensation.sequential or chosen.needs_feeds and plan is None
            with watch("statistics"):
                stats = measure(source, original, analysis, compensation, input_shapes, fuse_batchnorm, keep_feeds)
        if plan is None:
            with watch("ranking"):
                budget, normalizer = ranking_defaults(chosen, budget or Budget(), normalizer)
                scores = rank(analysis, chosen, stats, normalizer, reduction, seed, p)
                plan = make_plan(analysis, budget, chosen, seed, normalizer, reduction, p, scores)
                if compensation is not None and compensation.greedy:
                    from spa.passes.compensate.greedy import greedy_selection

                    greedy_selection(analysis, plan, stats.sinks, stats.hs)
        else:
            plan.check_against(analysis)
    if compensation is not None:
        plan.meta.update(compensation=stats.source if stats is not None else compensation.statistics,
                         update=compensation.method)
        if compensation.sequential:
            plan.meta.update(sequential=compensation.stages or "per sink")
    if scope:
        plan.meta.update(scope=scope)
    if default is not None:
        plan.meta.update(default=default.as_dict())
    with watch("compensation"):
        compensated = compensated_copy(original, analysis, plan, compensation, stats)
    # the oracle checks what is written: the compensated model, sliced vs masked
    with watch("oracle"):
        result_oracle = oracle(compensated, analysis, plan, seed) if verify else None
    with watch("slicing and validation"):
        pruned = apply_plan(original, analysis, plan, compensated=compensated)
    report = prune_report(original, pruned, analysis, plan, *report_scores(scores, plan),
                          oracle_error=None if result_oracle is None else result_oracle.error,
                          canonical={"fuse_batchnorm": fuse_batchnorm, "input_shapes": input_shapes or None})
    annotate(pruned, analysis, plan, report)
    return PruneResult(pruned, plan, report, original, analysis, result_oracle, scores, watch.seconds)

