"""The ranking stage: per-group channel scores by a registered criterion, and the plan allocated
from them."""
from __future__ import annotations

from dataclasses import replace

from spa.allocation.allocate import Budget, allocate
from spa.allocation.plan import PruningPlan
from spa.analysis.groups import Analysis
from spa.core.errors import UsageError
from spa.importance.registry import Criterion, Scoring, get_criterion


def ranking_defaults(criterion: str | Criterion, budget: Budget, normalizer: str | None) -> tuple[Budget, str]:
    """Fill in what the caller left open: local ranking, and the criterion's normalizer — "none"
    for a comparable criterion ranked globally, else "mean" (each group's scores relative to the
    group). (Global raw OBS costs help EfficientNet-Lite0 and MiniLM but hurt SmolLM2's FFN:
    BENCHMARKS.md.)"""
    if budget.global_rank is None:
        budget = replace(budget, global_rank=False)
    if normalizer is None:
        normalizer = get_criterion(criterion).default_normalizer(budget.global_rank)
    return budget, normalizer


def rank(analysis: Analysis, criterion: str | Criterion, stats=None, normalizer: str = "mean",
         reduction: str | None = None, seed: int = 0, p: float = 2.0) -> dict:
    """Per-group channel scores (higher = keep) by `criterion`; statistics and gradient criteria
    need `stats` (spa.statistics.sources.Statistics) from the compensation stage."""
    chosen = get_criterion(criterion)
    if chosen.needs_statistics and stats is None:
        raise UsageError(f"criterion '{chosen.name}' ranks by {chosen.kind}: it needs a statistics pass")
    return chosen.scores(analysis, Scoring(normalizer, reduction or chosen.reduction, seed, p, stats))


def make_plan(analysis: Analysis, budget: Budget, criterion: str | Criterion = "l2", seed: int = 0,
              normalizer: str = "mean", reduction: str | None = None, p: float = 2.0,
              scores: dict | None = None) -> PruningPlan:
    """Allocate `budget` by `criterion`'s scores (or the given `scores`); the plan's meta says how."""
    chosen = get_criterion(criterion)
    reduction = reduction or chosen.reduction
    if scores is None:
        scores = rank(analysis, chosen, None, normalizer, reduction, seed, p)
    plan = allocate(analysis, scores, budget)
    plan.meta.update(criterion=chosen.name, normalizer=normalizer, reduction=reduction)
    if chosen.takes_p:
        plan.meta["p"] = p
    return plan
