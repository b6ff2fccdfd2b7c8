"""The oracle: a sliced model must equal the masked original (removed channels zeroed where the
sinks read them) on random inputs. Used by tests, the zoo sweep and `spa prune --verify`."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from spa.passes.mask import mask_model
from spa.passes.slice import slice_model
from spa.runtime.validate import copy_model, random_inputs, relative_error, run


@dataclass
class OracleResult:
    error: float      # max |sliced - masked| / max |masked| over all outputs
    masked_sinks: int

    def holds(self, tol: float = 1e-4) -> bool:
        return self.error <= tol


def oracle(model, analysis, plan, seed: int = 0) -> OracleResult:
    """Compare sliced and masked on the plan's groups the oracle applies to: a hidden-width group
    changes norm statistics, so masking cannot predict it (see DESIGN.md, invariant 2)."""
    plan = exempt_hidden(analysis, plan)
    masked = copy_model(model)
    count = mask_model(masked, analysis, plan)
    sliced = copy_model(model)
    slice_model(sliced, analysis, plan)
    feeds = random_inputs(model, seed)
    # ORT's layout optimizer rounds floats differently for other channel counts; a dynamic
    # quantizer turns that last bit into whole quantization steps. Compare unoptimized there.
    plain = any(n.op_type == "DynamicQuantizeLinear" for n in model.graph)
    return OracleResult(relative_error(run(masked, feeds, lean=plain), run(sliced, feeds, lean=plain)), count)


def exempt_hidden(analysis, plan):
    hidden = {g.key for g in analysis.groups if g.kind == "hidden"}
    if not hidden & set(plan.removed):
        return plan
    kept = copy.deepcopy(plan)
    kept.removed = {k: v for k, v in plan.removed.items() if k not in hidden}
    return kept


def oracle_plans(analysis, ratio: float = 0.3, per_group: bool = False, criterion: str = "l2",
                 seed: int = 0) -> list[tuple[str, object]]:
    """(label, plan) for the oracle checks: with per_group each prunable group pruned alone at
    `ratio` (labelled by its key), then every prunable group together ("all"), ranked by a weight
    criterion through the pipeline's ranking stage."""
    from spa.allocation.allocate import Budget
    from spa.flow.ranking import make_plan, rank

    scores = rank(analysis, criterion, seed=seed)
    plans = []
    if per_group:
        for group in analysis.prunable_groups():
            plan = make_plan(analysis, Budget(ratio=ratio), criterion, seed, scores={group.key: scores[group.key]})
            plan.removed = {group.key: plan.removed.get(group.key, [])}
            plans.append((group.key, plan))
    plans.append(("all", make_plan(analysis, Budget(ratio=ratio), criterion, seed, scores=scores)))
    return plans


def check_groups(model, analysis, ratio: float = 0.3, per_group: bool = False, criterion: str = "l2",
                 seed: int = 0) -> dict[str, float]:
    """Oracle errors for a plan pruning every prunable group at `ratio` (key "all"), and with
    per_group also for each group pruned alone (keyed by group key)."""
    errors = {label: oracle(model, analysis, plan, seed).error
              for label, plan in oracle_plans(analysis, ratio, per_group, criterion, seed)}
    return {"all": errors.pop("all")} | errors
