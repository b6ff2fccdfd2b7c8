"""Allocation: turn importance scores and a budget into a PruningPlan.

Local allocation removes the same share of every group; global allocation ranks all channels of
all groups together. A parameter or MAC target searches the channel ratio that meets it; a latency
target ranks channels by importance per millisecond they save (spa.allocation.latency measures each layer)."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

import numpy as np

from spa.core.errors import SpaError
from spa.analysis.metrics import count, planned_dims
from spa.allocation.plan import PruningPlan

TARGETS = ("channels", "params", "macs", "latency")


@dataclass
class Budget:
    ratio: float = 0.3
    target: str = "channels"
    global_rank: bool | None = None   # None: not chosen (local)
    round_to: int = 1
    min_width: int = 1
    max_group_ratio: float = 0.9   # never remove more than this share of one group
    protect: list[str] = field(default_factory=list)
    device: str = "cpu"            # where --target latency measures layer costs

    def check(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise SpaError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.target not in TARGETS:
            raise SpaError(f"target must be one of {', '.join(TARGETS)}, got '{self.target}'")
        if self.round_to < 1 or self.min_width < 1:
            raise SpaError("--round-to and --min-width must be at least 1")


#: Plan for another CPU than this one (the deployment target's NCHWc block: 8 or 16).
CPU_BLOCK_ENV = "SPA_CPU_BLOCK"


def cpu_block_size() -> int:
    """ONNX Runtime's NCHWc channel block on this CPU (MLAS): 16 with AVX-512, 8 with AVX2, or
    $SPA_CPU_BLOCK. Conv channel counts off the block leave the blocked layout (shared/docs/PRIOR_ART.md)."""
    import os

    given = os.environ.get(CPU_BLOCK_ENV, "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    return 16 if "avx512f" in flags else 8


def resolve_round_to(value: int | str | None, device: str | None) -> int:
    """--round-to: a number as given; "auto" (the default when a --device is named): 8 on cuda
    (fp16 tensor cores), the NCHWc block on cpu; neither: 1 (widths exactly as the ratio says)."""
    if value is None:
        return 1 if device is None else resolve_round_to("auto", device)
    if value == "auto":
        return 8 if device == "cuda" else cpu_block_size()
    return int(value)


def round_step(group, round_to: int) -> int:
    """Root channels per rounding step: kept channels (a root channel of a head group is a whole
    head, head_size channels) must come to a multiple of round_to."""
    if round_to <= 1:
        return 1
    sizes = np.unique(group.class_sizes())
    size = int(np.gcd.reduce(sizes)) if len(sizes) and sizes.min() > 0 else 1
    return round_to // gcd(round_to, size)


def eligible_groups(analysis, protect: list[str]):
    names = set()
    for node in analysis.model.graph:
        names.add(node.name)
        names.update(v.name for v in node.outputs)
    names.update(analysis.model.graph.initializers)
    names.update(v.name for v in analysis.model.graph.inputs)
    aliases = analysis.model.meta.get("spa.weight_aliases", {})
    protected, whole = set(), set()
    for name in protect:
        group = analysis.group_named(name)  # a group key as `spa groups` prints it (or older versions did)
        found = {name} if name in names else _protected_aliases(name, aliases, names)
        if not found and group is None:
            raise SpaError(f"--protect names {name!r}, which is neither a group, a node, a tensor nor a module "
                           "of the model (`spa groups` lists the group keys)")
        protected |= found
        if group is not None:
            whole.add(id(group))
    return [g for g in analysis.prunable_groups()
            if id(g) not in whole and not protected & ({m.value for m in g.members} | set(g.nodes))]


def _protected_aliases(name: str, aliases: dict[str, list[str]], names: set[str]) -> set[str]:
    """The names of the canonical model that stand for `name`, a name of the model as given that
    canonicalization renamed or fused away (see spa.graph.canon.weight_aliases). `name` may be a node or
    a node's output (its weights, or where they are gone, the output the fused node still writes:
    a BatchNormalization fused into its Conv), one of the given model's weights, or a module path
    as PyTorch exporters spell it (`bn1`: weights `bn1.*`, nodes in the scope `/bn1/`)."""
    if name in aliases:
        weights = set(aliases[name])
        keys = {k for k, ws in aliases.items() if ws == aliases[name]}  # the same node's other names
    else:
        weights = {w for ws in aliases.values() for w in ws if w == name or w.startswith(name + ".")}
        keys = {k for k, ws in aliases.items() if weights & set(ws) or name in k.split("/")[:-1]}
        weights |= {w for k in keys for w in aliases[k]}
        keys |= {n for n in names if name in n.split("/")[:-1]}  # a module without weights
    return (weights | keys) & names


def _kept_count(width: int, remove: int, budget: Budget, step: int | None = None) -> int:
    kept = width - remove
    step = budget.round_to if step is None else step
    if step > 1 and width >= step:
        kept = int(round(kept / step)) * step
        kept = max(step, kept)
    floor = max(budget.min_width, width - int(np.floor(budget.max_group_ratio * width)), 1)
    return int(min(width, max(kept, floor)))


def _plan_for_ratio(groups, scores, ratio: float, budget: Budget) -> PruningPlan:
    return _plan_from_counts(groups, scores, _counts_for_ratio(groups, scores, ratio, budget), budget)


def _counts_for_ratio(groups, scores, ratio: float, budget: Budget) -> dict[str, int]:
    if budget.global_rank:
        return _global_counts(groups, scores, ratio, budget)
    # the epsilon keeps 0.29 * 100 at 29 despite binary floating point
    return {g.key: int(np.floor(ratio * g.width + 1e-9)) for g in groups}


def _kept_counts(groups, remove_counts: dict[str, int], budget: Budget) -> tuple[int, ...]:
    return tuple(_kept_count(g.width, remove_counts[g.key], budget, round_step(g, budget.round_to)) for g in groups)


def _plan_from_counts(groups, scores, remove_counts: dict[str, int], budget: Budget) -> PruningPlan:
    plan = PruningPlan()
    for g, kept in zip(groups, _kept_counts(groups, remove_counts, budget)):
        plan.removed[g.key] = _lowest_leaving_every_member(g, scores[g.key], g.width - kept)
        plan.widths[g.key] = g.width
    return plan


def _lowest_leaving_every_member(group, scores: np.ndarray, n: int) -> list[int]:
    """The n lowest-scored root channels, skipping any whose removal would leave a member with no
    channel at all (a Slice or Split part that reads only some of the group's channels)."""
    order = np.argsort(scores, kind="stable")
    narrow = [np.unique(m.pos2class) for m in group.members if m.kind != "virtual"]
    narrow = [classes for classes in narrow if len(classes) < group.width]
    if not narrow:  # every member holds every channel: nothing to skip
        return sorted(int(i) for i in order[:n])
    left = [len(classes) for classes in narrow]
    holders: dict[int, list[int]] = {}
    for i, classes in enumerate(narrow):
        for c in classes:
            holders.setdefault(int(c), []).append(i)
    chosen = []
    for c in order:
        if len(chosen) == n:
            break
        held = holders.get(int(c), [])
        if any(left[i] == 1 for i in held):
            continue
        for i in held:
            left[i] -= 1
        chosen.append(int(c))
    return sorted(chosen)


def _global_counts(groups, scores, ratio: float, budget: Budget) -> dict[str, int]:
    entries = [(float(s), g.key) for g in groups for s in scores[g.key]]
    entries.sort(key=lambda e: e[0])
    return _take(groups, entries, int(np.floor(ratio * len(entries) + 1e-9)), budget)


def _take(groups, entries: list[tuple[float, str]], budget_count: int, budget: Budget) -> dict[str, int]:
    """Remove counts per group: the first `budget_count` entries of the ranked list that fit under
    each group's cap (max_group_ratio, min_width)."""
    caps = {g.key: g.width - _kept_count(g.width, g.width, budget, round_step(g, budget.round_to)) for g in groups}
    counts = {g.key: 0 for g in groups}
    taken = 0
    for _, key in entries:
        if taken >= budget_count:
            break
        if counts[key] < caps[key]:
            counts[key] += 1
            taken += 1
    return counts


def plan_metrics(analysis, plan) -> dict[str, int]:
    from spa.passes.slice import kept_indices

    return count(analysis.model, planned_dims(analysis, kept_indices(analysis, plan)))


def allocate(analysis, scores: dict[str, np.ndarray], budget: Budget,
             node_costs: dict[str, float] | None = None) -> PruningPlan:
    """The plan for `budget`. With target "latency", `node_costs` (ms per node, spa.allocation.latency) are
    measured on the analysed model unless given."""
    budget.check()
    groups = [g for g in eligible_groups(analysis, budget.protect) if g.key in scores]
    # NaN or Inf weights (or statistics) give scores that rank nothing: such a group is left whole
    unscored = sorted(g.key for g in groups if not np.isfinite(np.asarray(scores[g.key], dtype=np.float64)).all())
    groups = [g for g in groups if g.key not in unscored]
    meta = {"ratio": budget.ratio, "target": budget.target, "global": bool(budget.global_rank),
            "round_to": budget.round_to, "min_width": budget.min_width}
    if unscored:
        meta["not_finite"] = unscored
    if budget.target == "channels" or budget.ratio == 0.0:
        plan = _plan_for_ratio(groups, scores, budget.ratio, budget)
    elif budget.target == "latency":
        plan = _latency_plan(analysis, groups, scores, budget, node_costs)
    else:
        plan = _search_ratio(analysis, groups, scores, budget)
    plan.meta.update(meta)
    return plan


def _search_ratio(analysis, groups, scores, budget: Budget, reduction=None) -> PruningPlan:
    """Bisect the channel ratio until the plan removes `budget.ratio` of params or MACs (or of what
    `reduction(plan)` measures: the share it removes). The cut spreads as a channel ratio does:
    the same share of every group, or by score across groups with --global."""
    if reduction is None:
        base = count(analysis.model)[budget.target]
        if base == 0:
            raise SpaError(f"the model has no {budget.target} to reduce")

        def reduction(plan):
            return 1.0 - plan_metrics(analysis, plan)[budget.target] / base

    seen: dict[tuple, tuple[PruningPlan, float]] = {}

    def planned(ratio: float) -> tuple[PruningPlan, float]:
        """The plan at `ratio` and what it removes; ratios that keep the same widths share both
        (late bisection steps mostly do: a plan and its count cost ~0.4 s on SmolLM2)."""
        counts = _counts_for_ratio(groups, scores, ratio, budget)
        key = _kept_counts(groups, counts, budget)
        if key not in seen:
            plan = _plan_from_counts(groups, scores, counts, budget)
            seen[key] = plan, reduction(plan)
        return seen[key]

    lo, hi = 0.0, 0.99
    best, reachable = planned(hi)
    if reachable < budget.ratio:
        raise SpaError(f"cannot remove {budget.ratio:.0%} of {_TARGET_WORDS.get(budget.target, budget.target)}: "
                       f"the prunable groups allow at most {reachable:.1%}")
    for _ in range(20):
        mid = (lo + hi) / 2
        plan, removed = planned(mid)
        if removed >= budget.ratio:
            hi, best = mid, plan
        else:
            lo = mid
    best.meta["channel_ratio"] = round(hi, 4)
    return best


_TARGET_WORDS = {"latency": "the measured latency"}


def _latency_plan(analysis, groups, scores, budget: Budget, costs: dict[str, float] | None) -> PruningPlan:
    """The channel ratio whose plan's predicted time (spa.allocation.latency.estimate over measured
    per-node costs) is (1 - ratio) of the measured one. Ranking channels by importance per
    millisecond saved instead cut the group that touches the most time nearly away (ResNet-18's
    stem-and-residual group from 64 channels to 7) and left the rest whole."""
    from spa.allocation import latency

    if costs is None:
        costs = latency.node_costs(analysis.model, device=budget.device)
    total = sum(costs.values())
    if total <= 0:
        raise SpaError("--target latency: ONNX Runtime reported no time for the model's nodes")
    touching = latency.group_nodes(analysis, groups)

    def predicted(plan) -> float:
        share = {key: 1.0 - len(removed) / plan.widths[key] for key, removed in plan.removed.items()}
        return latency.estimate(costs, touching, share)

    best = _search_ratio(analysis, groups, scores, budget, reduction=lambda plan: 1.0 - predicted(plan) / total)
    best.meta["latency_ms"] = {"measured": round(total, 4), "predicted": round(predicted(best), 4)}
    return best