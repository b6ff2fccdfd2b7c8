"""The criteria registry: one place that knows every criterion's name, kind and defaults.

A criterion is a small object (Torch-Pruning's `Importance` idea): it scores every prunable group
of an analysis, one score per root channel (higher = keep), and says what it needs. Its module
registers it with the `register_criterion` class decorator next to the scoring code; every module
of this package is imported on the first query, so a new criterion module needs no other edit.
The pipeline, the Python API and the CLI take their choices from `criterion_names()`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from spa.core.errors import UsageError
from spa.core.plugins import import_submodules

#: What a criterion reads: the weights only, the sinks' input statistics, or gradients.
KINDS = ("weights", "statistics", "gradient")


@dataclass
class Scoring:
    """How one ranking runs: the member normalizer and reduction, the seed (random), the norm's
    exponent (lp), and — for statistics and gradient criteria — what the statistics pass measured
    (a spa.statistics.sources.Statistics: the sinks, their moments, the input feeds)."""
    normalizer: str = "mean"
    reduction: str = "mean"
    seed: int = 0
    p: float = 2.0
    statistics: Any = None


class Criterion:
    """One ranking criterion. Subclasses set the class attributes and implement `scores`.

    kind: "weights", "statistics" (needs a statistics pass) or "gradient" (needs input feeds).
    normalizer, reduction: the defaults when the caller leaves them open.
    comparable: scores share one unit across groups, so global ranking compares them unnormalised.
    compensation: the sink update the criterion implies when the caller asks for none ("obs",
    "flap" or "none"; see spa.flow.pipeline.Compensation).
    takes_p: the norm's exponent `p` is the caller's (recorded in the plan)."""
    name: ClassVar[str] = ""
    kind: ClassVar[str] = "weights"
    summary: ClassVar[str] = ""
    normalizer: ClassVar[str] = "mean"
    reduction: ClassVar[str] = "mean"
    comparable: ClassVar[bool] = False
    compensation: ClassVar[str] = "none"
    takes_p: ClassVar[bool] = False

    def scores(self, analysis, scoring: Scoring) -> dict[str, np.ndarray]:
        """One score per root channel (higher = keep) for every prunable group, by group key."""
        raise NotImplementedError

    @property
    def needs_statistics(self) -> bool:
        return self.kind != "weights"

    @property
    def needs_feeds(self) -> bool:
        return self.kind == "gradient"

    def default_normalizer(self, global_rank: bool) -> str:
        """Comparable scores ranked globally compare raw; otherwise each group's scores are scaled."""
        return "none" if self.comparable and global_rank else self.normalizer

    def __repr__(self) -> str:
        return f"<criterion {self.name} ({self.kind})>"


_CRITERIA: dict[str, Criterion] = {}


def register_criterion(criterion, *, replace: bool = False):
    """Register a Criterion subclass (as a class decorator) or instance under its `name`; returns
    what it was given. A taken name is refused unless `replace`."""
    instance = criterion() if isinstance(criterion, type) else criterion
    if not isinstance(instance, Criterion) or not instance.name:
        raise TypeError(f"{criterion!r} is not a named spa Criterion")
    if instance.kind not in KINDS:
        raise ValueError(f"criterion '{instance.name}': kind must be one of {', '.join(KINDS)}, not '{instance.kind}'")
    if instance.name in _CRITERIA and not replace and type(_CRITERIA[instance.name]) is not type(instance):
        raise ValueError(f"a criterion named '{instance.name}' is already registered")
    _CRITERIA[instance.name] = instance
    return criterion


def unregister_criterion(name: str) -> None:
    _CRITERIA.pop(name, None)


def get_criterion(criterion: str | Criterion) -> Criterion:
    """The registered criterion of that name (a Criterion instance is returned as it is)."""
    if isinstance(criterion, Criterion):
        return criterion
    _discover()
    found = _CRITERIA.get(criterion)
    if found is None:
        raise UsageError(f"unknown criterion '{criterion}' (choose from {', '.join(criterion_names())})")
    return found


def criteria(kind: str | None = None) -> list[Criterion]:
    """Every registered criterion (of one kind), weights first, then statistics, then gradient."""
    _discover()
    ordered = sorted(_CRITERIA.values(), key=lambda c: KINDS.index(c.kind))  # stable: registration order within a kind
    return [c for c in ordered if kind is None or c.kind == kind]


def criterion_names(kind: str | None = None) -> tuple[str, ...]:
    return tuple(c.name for c in criteria(kind))


def _discover() -> None:
    """Import every module of spa.importance once, so that their criteria register."""
    import_submodules(__package__)
