"""Statistics criteria: scores from the sinks' input moments H̃ = E[x̃ x̃ᵀ] with x̃ = [x, 1] (so
E[x²] is its diagonal and E[x] its last column), measured by a statistics pass (spa.statistics).

- obspa: the OBS cost of removing each channel alone, summed over its sinks (see
  shared/docs/OBSPA.md); the costs share one unit (the consumers' output error) across groups.
- Wanda-sp: a channel's importance is its input's RMS times the absolute weights that read it,
  Σ_rows |W[:, j]| · sqrt(E[x_j²]) (Sun et al., 2023, structured).
- FLAP fluctuation: Var(x_j) · ||W[:, j]||² — a channel that barely varies can be dropped, and
  its mean folded into the sink's bias (An et al., 2024; spa.passes.compensate.flap).

Groups without a compensable sink rank by L2 instead.
"""
from __future__ import annotations

import numpy as np

from spa.importance.combine import normalize
from spa.importance.criteria import score_groups
from spa.importance.obs_cost import obs_scores, summed_over_sinks
from spa.importance.registry import Criterion, Scoring, register_criterion


class StatisticsCriterion(Criterion):
    kind = "statistics"

    def sink_scores(self, analysis, sinks: dict, hs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per group with a measured sink, one raw score per root channel."""
        raise NotImplementedError

    def scores(self, analysis, scoring: Scoring) -> dict[str, np.ndarray]:
        stats = scoring.statistics
        ranked = {key: normalize(s, scoring.normalizer)
                  for key, s in self.sink_scores(analysis, stats.sinks, stats.hs).items()}
        # groups without a compensable sink rank by L2, scaled to the typical statistics score
        fallback = score_groups(analysis, "l2", scoring.normalizer if scoring.normalizer != "none" else "mean",
                                scoring.reduction, scoring.seed)
        means = [float(s.mean()) for s in ranked.values() if np.isfinite(s).all()]
        if scoring.normalizer == "none" and means:
            typical = float(np.median(means))
            fallback = {key: s * typical for key, s in fallback.items()}
        return fallback | ranked


@register_criterion
class ObsPA(StatisticsCriterion):
    name, summary = "obspa", "Optimal-Brain-Surgeon cost; the sinks are compensated"
    comparable, compensation = True, "obs"

    def sink_scores(self, analysis, sinks, hs):
        return obs_scores(analysis, sinks, hs)


class ColumnCriterion(StatisticsCriterion):
    """Scores each sink input column from its weights and input moments; columns sum per channel."""

    def column_scores(self, w: np.ndarray, second: np.ndarray, mean: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sink_scores(self, analysis, sinks, hs):
        def channel_scores(plan, h, width):
            per_column = self.column_scores(plan.sink.matrix().astype(np.float64), np.diag(h)[:-1], h[:-1, -1])
            per_position = per_column.reshape(plan.space.size, plan.sink.taps).sum(1)
            return np.bincount(plan.space.pos2class, weights=per_position, minlength=width)

        return summed_over_sinks(analysis, sinks, hs, channel_scores)


@register_criterion
class Wanda(ColumnCriterion):
    name, summary = "wanda", "input RMS × |weights| (Wanda-sp)"

    def column_scores(self, w, second, mean):
        return np.abs(w).sum(0) * np.sqrt(np.maximum(second, 0))


@register_criterion
class Flap(ColumnCriterion):
    name, summary, compensation = "flap", "input variance × weights² (FLAP); removed means go to the biases", "flap"

    def column_scores(self, w, second, mean):
        return np.maximum(second - mean ** 2, 0) * (w ** 2).sum(0)
