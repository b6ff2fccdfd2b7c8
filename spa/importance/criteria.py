"""Weight criteria: one score per root channel from the group's weights alone.

Each parameter member is scored per position (a norm over its other axes), positions are summed
into their root channel, each member's scores are normalised, and members are reduced to one
score per channel (spa.importance.combine). Each criterion registers itself below."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from spa.analysis.rules.base import rule_for
from spa.core.errors import SpaError
from spa.importance.combine import check_combination, normalize, reduce_members
from spa.importance.registry import Criterion, Scoring, get_criterion, register_criterion


class WeightCriterion(Criterion):
    """Scores each member's positions by an Lp norm (`p`; None: the caller's p), per group."""
    kind = "weights"
    p: ClassVar[float | None] = 2.0

    def scores(self, analysis, scoring: Scoring) -> dict[str, np.ndarray]:
        check_combination(scoring.normalizer, scoring.reduction)
        return {g.key: self.group_scores(g, analysis.model, scoring) for g in analysis.prunable_groups()}

    def members(self, group, model) -> list:
        return group.params

    def channel_scores(self, member, data: np.ndarray, width: int, p: float) -> np.ndarray:
        """One member's score per root channel, before normalisation."""
        return member_scores(member, data, p, width)

    def group_scores(self, group, model, scoring: Scoring) -> np.ndarray:
        p = scoring.p if self.p is None else self.p
        if p <= 0:
            raise SpaError(f"the Lp norm needs p > 0, got {p}")
        members = self.members(group, model)
        initializers = model.graph.initializers
        real = {m.value: dequantized(initializers[m.value]) for m in members}
        helpers = {name for _, used in real.values() for name in used}  # scales and zero points
        if all(m.value in helpers for m in members):
            helpers = set()
        per_member = [normalize(self.channel_scores(m, real[m.value][0], group.width, p), scoring.normalizer)
                      for m in members if m.value not in helpers]
        return reduce_members(per_member, group.width, scoring.reduction)


@register_criterion
class L1(WeightCriterion):
    name, summary, p = "l1", "L1 norm of the channel's weights", 1.0


@register_criterion
class L2(WeightCriterion):
    name, summary, p = "l2", "L2 norm of the channel's weights", 2.0


@register_criterion
class Lp(WeightCriterion):
    name, summary, p, takes_p = "lp", "Lp norm of the channel's weights (p given)", None, True


@register_criterion
class Random(WeightCriterion):
    name, summary = "random", "uniform random scores (a baseline)"

    def group_scores(self, group, model, scoring: Scoring) -> np.ndarray:
        return np.random.default_rng([scoring.seed, group.id]).random(group.width)


@register_criterion
class Lamp(WeightCriterion):
    name, summary, p = "lamp", "layer-adaptive magnitude (LAMP)", 2.0

    def channel_scores(self, member, data, width, p):
        return lamp(member_scores(member, data, p, width) ** 2)


@register_criterion
class Fpgm(WeightCriterion):
    name, summary, p = "fpgm", "distance to the geometric median of the filters (FPGM)", 2.0

    def channel_scores(self, member, data, width, p):
        return np.bincount(member.pos2class, weights=fpgm_positions(member, data), minlength=width)


@register_criterion
class BnScale(WeightCriterion):
    name, summary, p = "bn_scale", "|γ| of the group's norms (L1 where it has none)", 1.0

    def members(self, group, model) -> list:
        return norm_scale_members(group, model) or group.params


def weight_criterion(name) -> WeightCriterion:
    found = get_criterion(name)
    if not isinstance(found, WeightCriterion):
        raise SpaError(f"criterion '{found.name}' reads {found.kind}, not weights alone: rank it through "
                       "spa.prune or spa.flow.pipeline.rank")
    return found


def group_importance(group, model, criterion: str = "l2", normalizer: str = "mean",
                     reduction: str = "mean", seed: int = 0, p: float = 2.0) -> np.ndarray:
    """One group's scores by a weight criterion."""
    return weight_criterion(criterion).group_scores(group, model, Scoring(normalizer, reduction, seed, p))


def score_groups(analysis, criterion="l2", normalizer="mean", reduction="mean", seed=0,
                 p: float = 2.0) -> dict[str, np.ndarray]:
    """Every prunable group's scores by a weight criterion."""
    return weight_criterion(criterion).scores(analysis, Scoring(normalizer, reduction, seed, p))


# ---------------------------------------------------------------- the scoring arithmetic

def member_scores(member, data: np.ndarray, p: float, width: int) -> np.ndarray:
    """Lp norm of every position of a parameter member, summed per root channel.

    L1 and L2 take |w| or w² in the weights' own float32 (half types widened to float32) and sum
    in float64, reducing over the other axes in place: no moved float64 copy of the weight (7×
    faster on a BERT FFN matrix; within 1e-8 relative of the all-float64 norm). Other p: float64."""
    others = tuple(a for a in range(data.ndim) if a not in member.axes)
    if p in (1, 2):
        x = data if data.dtype in (np.float32, np.float64) else data.astype(np.float32)
        summed = np.add.reduce(np.abs(x) if p == 1 else np.square(x), axis=others, keepdims=True, dtype=np.float64)
    else:
        summed = np.add.reduce(np.power(np.abs(data.astype(np.float64)), p), axis=others, keepdims=True)
    per_position = np.moveaxis(summed, member.axes, range(len(member.axes))).reshape(member.size)
    if p != 1:
        per_position = np.power(per_position, 1.0 / p) if p != 2 else np.sqrt(per_position)
    return np.bincount(member.pos2class, weights=per_position, minlength=width)


def lamp(scores: np.ndarray) -> np.ndarray:
    """LAMP (Lee et al., 2021) on squared channel norms: each channel's share of the mass of the
    channels at least as large as it. Scale-free across layers: the largest channel scores 1."""
    order = np.argsort(scores, kind="stable")
    tail = np.cumsum(scores[order][::-1])[::-1]  # Σ of the sorted scores from each one upward
    out = np.empty_like(scores)
    out[order] = np.divide(scores[order], tail, out=np.zeros(len(scores)), where=tail > 0)
    return out


def fpgm_positions(member, data: np.ndarray) -> np.ndarray:
    """FPGM (He et al., 2019): a filter's summed distance to the others. Filters near the geometric
    median are the ones the rest can stand in for, so they score low."""
    moved = np.moveaxis(data, member.axes, range(len(member.axes)))
    flat = moved.reshape(member.size, -1).astype(np.float64)
    sq = (flat * flat).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0)
    return np.sqrt(d2).sum(1)


def norm_scale_members(group, model) -> list:
    """Members that are the scale (γ) of a BatchNormalization/LayerNormalization in the group."""
    scales = {n.inputs[1].name for n in model.graph
              if n.op_type in ("BatchNormalization", "LayerNormalization", "InstanceNormalization")
              and len(n.inputs) > 1 and n.inputs[1] is not None}
    return [m for m in group.params if m.value in scales]


def dequantized(value) -> tuple[np.ndarray, set[str]]:
    """A weight's real values and the constants read to get them: an integer weight is followed
    through the ops that dequantize it ((q - zero point) · scale, a Cast then a Mul by a scale)."""
    data = value.const_value.numpy()
    used: set[str] = set()
    if data.dtype.kind not in "iu":
        return data, used
    current = value
    for _ in range(4):
        uses = list(current.uses())
        if len(uses) != 1 or rule_for(uses[0][0]) is None:
            break
        node, index = uses[0][0], uses[0][1]
        step = rule_for(node).dequantize_input(node, index, data)
        if step is None:
            break
        data, constants, follows = step
        used.update(c.name for c in constants)
        if not follows:
            break
        current = node.outputs[0]
    return data, used
