"""Importance: one score per root channel of a group.

Each parameter member is scored per position (a norm over its other axes), positions are summed
into their root channel, each member's scores are normalised, and members are reduced to one
score per channel. Data-free criteria read weights only."""
from __future__ import annotations

import numpy as np

from spa.errors import SpaError

CRITERIA = ("l1", "l2", "lp", "random")
NORMALIZERS = ("mean", "max", "sum", "none")
REDUCTIONS = ("mean", "sum", "max")


def member_scores(member, data: np.ndarray, p: float, width: int) -> np.ndarray:
    """Lp norm of every position of a parameter member, summed per root channel."""
    moved = np.moveaxis(data, member.axes, range(len(member.axes)))
    flat = np.abs(moved.reshape(member.size, -1).astype(np.float64))
    per_position = flat.sum(axis=1) if p == 1 else np.power(np.power(flat, p).sum(axis=1), 1.0 / p)
    return np.bincount(member.pos2class, weights=per_position, minlength=width)


def normalize(scores: np.ndarray, how: str) -> np.ndarray:
    """Scale one member's (or one group's) scores so that groups compare under global ranking."""
    if how == "none":
        return scores
    scale = {"mean": scores.mean(), "max": scores.max(), "sum": scores.sum()}[how]
    return scores / scale if scale > 0 else scores


def group_importance(group, model, criterion: str = "l2", normalizer: str = "mean",
                     reduction: str = "mean", seed: int = 0, p: float = 2.0) -> np.ndarray:
    if criterion not in CRITERIA:
        raise SpaError(f"unknown criterion '{criterion}' (choose from {', '.join(CRITERIA)})")
    if criterion == "random":
        return np.random.default_rng([seed, group.id]).random(group.width)
    p = {"l1": 1.0, "l2": 2.0}.get(criterion, p)
    if p <= 0:
        raise SpaError(f"the Lp norm needs p > 0, got {p}")
    initializers = model.graph.initializers
    per_member = []
    for member in group.params:
        scores = member_scores(member, initializers[member.value].const_value.numpy(), p, group.width)
        per_member.append(normalize(scores, normalizer))
    if not per_member:
        return np.zeros(group.width)
    stacked = np.stack(per_member)
    return {"mean": stacked.mean(0), "sum": stacked.sum(0), "max": stacked.max(0)}[reduction]


def score_groups(analysis, criterion="l2", normalizer="mean", reduction="mean", seed=0,
                 p: float = 2.0) -> dict[str, np.ndarray]:
    for name, value, choices in (("normalizer", normalizer, NORMALIZERS), ("reduction", reduction, REDUCTIONS)):
        if value not in choices:
            raise SpaError(f"unknown {name} '{value}' (choose from {', '.join(choices)})")
    return {g.key: group_importance(g, analysis.model, criterion, normalizer, reduction, seed, p)
            for g in analysis.prunable_groups()}
