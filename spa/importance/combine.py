"""How per-member scores become one score per channel: each member's scores are normalised (so
that groups compare under global ranking), then members are reduced."""
from __future__ import annotations

import numpy as np

from spa.core.errors import SpaError

NORMALIZERS = ("mean", "max", "sum", "none")
REDUCTIONS = ("mean", "sum", "max")


def check_combination(normalizer: str, reduction: str) -> None:
    for name, value, choices in (("normalizer", normalizer, NORMALIZERS), ("reduction", reduction, REDUCTIONS)):
        if value not in choices:
            raise SpaError(f"unknown {name} '{value}' (choose from {', '.join(choices)})")


def normalize(scores: np.ndarray, how: str) -> np.ndarray:
    """Scale one member's (or one group's) scores so that groups compare under global ranking."""
    if how == "none":
        return scores
    scale = {"mean": scores.mean(), "max": scores.max(), "sum": scores.sum()}[how]
    return scores / scale if scale > 0 else scores


def signed_normalize(scores: np.ndarray, how: str) -> np.ndarray:
    """`normalize` with the scale read off the magnitudes, so signed scores keep their sign."""
    if how == "none":
        return scores
    size = np.abs(scores)
    scale = {"mean": size.mean(), "max": size.max(), "sum": size.sum()}[how]
    return scores / scale if scale > 0 else scores


def reduce_members(per_member: list[np.ndarray], width: int, how: str) -> np.ndarray:
    """One score per channel from the members' (already normalised) scores; zeros without members."""
    if not per_member:
        return np.zeros(width)
    stacked = np.stack(per_member)
    return {"mean": stacked.mean(0), "sum": stacked.sum(0), "max": stacked.max(0)}[how]
