"""The stages strung together: load → canonicalize → analyze → score → allocate → slice → validate.
The CLI and the Python API are thin layers over these functions."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import onnx_ir as ir

from spa.graph import io
from spa.allocation.allocate import Budget, allocate
from spa.analysis.groups import SCOPES, Analysis, analyze
from spa.graph.canon import canonicalize, restore_initializer_inputs
from spa.core.errors import UnsupportedError, UsageError
from spa.importance.criteria import normalize, score_groups
from spa.analysis.metrics import count
from spa.flow.oracle import OracleResult, oracle
from spa.passes.slice import slice_model
from spa.allocation.plan import PruningPlan
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
    ran = None
    if reference:
        try:
            ran = reference_run(model, source if from_file else None, input_shapes)
        except UnsupportedError as exc:  # raised once the analysis has had its say (require_reference)
            ran = exc
    batchnorms = sum(n.op_type == "BatchNormalization" for n in model.graph.all_nodes())
    canonical = canonicalize(model, fuse_batchnorm=fuse_batchnorm, input_shapes=input_shapes)
    canonical.meta["spa.batchnorms"] = batchnorms  # how many the input had (fusion may remove them)
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
    original: ir.Model            # canonicalized, unpruned
    model: ir.Model               # pruned
    analysis: Analysis
    plan: PruningPlan
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    oracle: OracleResult | None = None
    scores: dict | None = None    # the per-group scores the plan was ranked by (None: plan given)

    def save(self, path) -> None:
        io.save(self.model, path)


def make_plan(analysis: Analysis, budget: Budget, criterion: str = "l2", seed: int = 0,
              normalizer: str = "mean", reduction: str = "mean", p: float = 2.0,
              scores: dict | None = None) -> PruningPlan:
    """Allocate `budget` by `criterion`'s scores (or the given `scores`); the plan's meta says how."""
    if scores is None:
        scores = score_groups(analysis, criterion, normalizer, reduction, seed, p)
    plan = allocate(analysis, scores, budget)
    plan.meta.update(criterion=criterion, normalizer=normalizer, reduction=reduction)
    if criterion == "lp":
        plan.meta["p"] = p
    return plan


@dataclass
class Compensation:
    """Sink statistics and what is done with them (see shared/docs/OBSPA.md): where the input
    moments come from, and the sink update — "obs" (re-weight the remaining inputs and the bias),
    "flap" (fold the removed channels' means into the bias) or "none" (statistics only rank).
    `greedy` re-picks each group's channels one at a time with H⁻¹ downdates; `sequential`
    measures each sink's moments on the model as compensated so far (data and synthetic sources;
    `stages` > 0 shares one statistics pass among that many runs of sinks)."""
    hessian: str = "auto"          # "auto", "synthetic", "bn", "weights" (no data) or "data"
    calib: str | None = None       # .npz file or folder of .npy/.npz, for hessian="data"
    samples: int | None = None     # None: obs.default_samples (32; more for a language model)
    seed: int = 0
    method: str = "obs"
    greedy: bool = False
    sequential: bool = False
    stages: int | None = None


#: Criteria that rank by sink statistics, and the update each applies by default.
STATISTICS_CRITERIA = {"obspa": "obs", "wanda": "none", "flap": "flap"}
#: Criteria that rank by gradients through a PyTorch copy of the graph (spa.importance.gradient).
GRADIENT_CRITERIA = ("taylor", "snip", "grasp", "crop")
FEED_SOURCES = ("synthetic", "data")


@dataclass
class Statistics:
    """What the statistics pass measured: the compensable sinks, their moments, the source they
    came from ("auto" resolved), and the input feeds it ran (kept where a later step runs them
    again)."""
    sinks: dict
    hs: dict
    source: str
    feeds: list | None = None


def measure(source, original: ir.Model, analysis: Analysis, compensation: Compensation, input_shapes,
            fuse_batchnorm: bool, keep_feeds: bool) -> Statistics:
    """The sinks' input moments from the compensation's source. "auto" (the default) reads the
    BatchNorm statistics for every compensable sink they reach (when no input samples are needed,
    keep_feeds) and makes synthetic inputs for the rest — the calibration-free choice
    bench/fidelity.py found best for each kind of model."""
    from spa.passes.compensate import obs

    wanted = compensation.hessian
    if wanted not in obs.HESSIAN_SOURCES + ("auto",):
        raise UsageError(f"unknown statistics source '{wanted}' (choose from auto, {', '.join(obs.HESSIAN_SOURCES)})")
    if compensation.sequential and wanted not in FEED_SOURCES + ("auto",):
        raise UsageError("sequential compensation re-measures the pruned prefix: it needs --hessian data or synthetic")
    if wanted == "data" and not compensation.calib:
        raise UsageError("--hessian data needs calibration inputs (--calib FILE.npz|DIR)")
    sinks = obs.compensable_sinks(original, analysis.prunable_groups())
    if compensation.samples is None:
        compensation = replace(compensation, samples=obs.default_samples(original, sinks))
    bn_model = (batchnorm_model(source, original, input_shapes, fuse_batchnorm)
                if wanted in ("auto", "synthetic", "bn") else None)
    if wanted == "auto":
        if bn_model is not None and not keep_feeds:
            hs = obs.hessians(original, sinks, "bn", bn_model=bn_model)
            rest = {name: sp for name, sp in sinks.items() if name not in hs}
            if not rest:
                return Statistics(sinks, hs, "bn")
            if hs:  # consumers the BatchNorm statistics do not reach get synthetic inputs' moments
                hs |= obs.hessians(original, rest, "synthetic", compensation.samples, seed=compensation.seed,
                                   bn_model=bn_model)
                return Statistics(sinks, hs, "bn+synthetic")
        wanted = "synthetic"
    feeds = None
    if wanted in FEED_SOURCES and keep_feeds:
        feeds = obs.statistics_feeds(original, wanted, compensation.samples, compensation.calib,
                                     compensation.seed, bn_model)
    hs = obs.hessians(original, sinks, wanted, compensation.samples, compensation.calib,
                      compensation.seed, bn_model, feeds)
    return Statistics(sinks, hs, wanted, feeds)


#: Criteria whose scores share one unit across groups (OBS cost: the consumers' output error): ranked
#: globally, they compare unnormalised.
COMPARABLE_CRITERIA = ("obspa",)


def ranking_defaults(criterion: str, budget: Budget, normalizer: str | None) -> tuple[Budget, str]:
    """Fill in what the caller left open: local ranking, and the normalizer — "mean" (each group's
    scores relative to the group), or "none" for a comparable criterion ranked globally.
    (Global raw OBS costs help EfficientNet-Lite0 and MiniLM but hurt SmolLM2's FFN: BENCHMARKS.md.)"""
    if budget.global_rank is None:
        budget = replace(budget, global_rank=False)
    if normalizer is None:
        normalizer = "none" if criterion in COMPARABLE_CRITERIA and budget.global_rank else "mean"
    return budget, normalizer


def rank(analysis: Analysis, criterion: str, stats: Statistics | None, normalizer: str, reduction: str,
         seed: int, p: float) -> dict:
    """Per-group channel scores (higher = keep) by `criterion`."""
    if criterion in STATISTICS_CRITERIA:
        from spa.passes.compensate import obs
        from spa.importance.activation import activation_scores

        ranked = (obs.obs_scores(analysis, stats.sinks, stats.hs) if criterion == "obspa"
                  else activation_scores(analysis, stats.sinks, stats.hs, criterion))
        ranked = {key: normalize(s, normalizer) for key, s in ranked.items()}
        # groups without a compensable sink rank by L2, scaled to the typical statistics score
        fallback = score_groups(analysis, "l2", normalizer if normalizer != "none" else "mean", reduction, seed)
        means = [float(s.mean()) for s in ranked.values() if np.isfinite(s).all()]
        if normalizer == "none" and means:
            typical = float(np.median(means))
            fallback = {key: s * typical for key, s in fallback.items()}
        return fallback | ranked
    if criterion in GRADIENT_CRITERIA:
        from spa.importance.gradient import gradient_scores

        return gradient_scores(analysis.model, analysis, criterion, stats.feeds, normalizer, reduction)
    return score_groups(analysis, criterion, normalizer, reduction, seed, p)


def update_sinks(pruned: ir.Model, analysis: Analysis, plan: PruningPlan, compensation: Compensation,
                 stats: Statistics) -> None:
    """Apply the compensation's sink update to `pruned` (before slicing)."""
    from spa.passes.compensate import obs
    from spa.importance.activation import flap_bias

    if compensation.method == "obs" and compensation.sequential:
        obs.compensate_sequential(pruned, analysis.model, analysis, plan, stats.sinks, stats.feeds,
                                  compensation.stages)
    elif compensation.method == "obs":
        obs.compensate(pruned, analysis, plan, stats.sinks, stats.hs)
    elif compensation.method == "flap":
        flap_bias(pruned, analysis, plan, stats.sinks, stats.hs)


def prune(source, budget: Budget | None = None, *, criterion: str = "l2", plan: PruningPlan | None = None,
          input_shapes: dict | None = None, fuse_batchnorm: bool = True, verify: bool = False,
          seed: int = 0, normalizer: str | None = None, reduction: str = "mean", p: float = 2.0,
          compensation: Compensation | None = None, scope: str | None = None) -> PruneResult:
    """Prune a model (path, ModelProto, onnx_ir.Model or gs.Graph); returns the pruned onnx-ir model.

    criterion "obspa" ranks channels by their OBS cost and compensates the sinks (calibration-free
    by default); "wanda" and "flap" rank by the sinks' input statistics (FLAP also folds the removed
    means into the sink biases); "taylor", "snip", "grasp", "crop" rank by gradients on the
    statistics inputs; `compensation` sets where statistics come from and turns the OBS update on
    for any criterion."""
    original = load_canonical(source, input_shapes=input_shapes, fuse_batchnorm=fuse_batchnorm, reference=True)
    analysis = analyze_scope(original, scope)
    if plan is None and (budget is None or budget.ratio > 0) and not analysis.prunable_groups():
        raise UnsupportedError(f"nothing to prune: no group of channels is prunable ({top_reason(analysis)}); "
                               "`spa groups MODEL` lists every group and why")
    require_reference(original)
    if compensation is None and (criterion in STATISTICS_CRITERIA or criterion in GRADIENT_CRITERIA):
        compensation = Compensation(seed=seed, method=STATISTICS_CRITERIA.get(criterion, "none"))
    if criterion in GRADIENT_CRITERIA and compensation.hessian not in FEED_SOURCES + ("auto",):
        raise UsageError(f"'{criterion}' needs input samples: --hessian data or synthetic")
    stats = scores = None
    # NaN or Inf weights make NaN scores and statistics, not warnings: allocate leaves those groups whole
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if compensation is not None:
            keep_feeds = compensation.sequential or criterion in GRADIENT_CRITERIA and plan is None
            stats = measure(source, original, analysis, compensation, input_shapes, fuse_batchnorm, keep_feeds)
        if plan is None:
            budget, normalizer = ranking_defaults(criterion, budget or Budget(), normalizer)
            scores = rank(analysis, criterion, stats, normalizer, reduction, seed, p)
            plan = make_plan(analysis, budget, criterion, seed, normalizer, reduction, p, scores)
            if compensation is not None and compensation.greedy:
                from spa.passes.compensate import obs

                obs.greedy_selection(analysis, plan, stats.sinks, stats.hs)
        else:
            plan.check_against(analysis)
    if compensation is not None:
        plan.meta.update(compensation=stats.source if stats is not None else compensation.hessian,
                         update=compensation.method)
        if compensation.sequential:
            plan.meta.update(sequential=compensation.stages or "per sink")
    if scope:
        plan.meta.update(scope=scope)
    result_oracle = oracle(original, analysis, plan, seed) if verify else None
    pruned = copy_model(original)
    if compensation is not None:
        update_sinks(pruned, analysis, plan, compensation, stats)
    slice_model(pruned, analysis, plan)
    restore_initializer_inputs(pruned)
    with np.errstate(invalid="ignore"):  # Inf outputs (from Inf weights) compare as NaN errors, which pass
        validate(original, pruned, same_values=not any(plan.removed.values()))
    return PruneResult(original, pruned, analysis, plan, count(original), count(pruned), result_oracle, scores)
