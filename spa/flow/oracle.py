"""The oracle: a sliced model must equal the masked original (removed channels zeroed where the
sinks read them) on random inputs. Used by tests, the zoo sweep and `spa prune --verify`."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from spa.passes.mask import UnmaskableGroup, mask_model
from spa.passes.slice import slice_model
from spa.runtime.validate import copy_model, random_inputs, relative_error, run


#: Ops that make a model quantized for the oracle's purpose (see `oracle`).
QUANTIZING_OPS = frozenset({"DynamicQuantizeLinear", "QuantizeLinear", "QLinearConv", "QLinearMatMul",
                            "ConvInteger", "MatMulInteger"})


@dataclass
class OracleResult:
    error: float      # max |sliced - masked| / max |masked| over all outputs
    masked_sinks: int
    unchecked: tuple[str, ...] = ()  # hidden-width groups a norm's rule could not mask (left out)

    def holds(self, tol: float = 1e-4) -> bool:
        return self.error <= tol


def oracle(model, analysis, plan, seed: int = 0) -> OracleResult:
    """Compare the sliced model with the masked original. A hidden-width group is masked too: its
    norms count only the kept channels in the masked copy (spa.passes.mask); a group whose norm
    cannot be rewritten that way is left out of the comparison and named in `unchecked`."""
    unchecked: list[str] = []
    while True:
        masked = copy_model(model)
        try:
            count = mask_model(masked, analysis, plan)
            break
        except UnmaskableGroup as exc:
            unchecked.append(exc.key)
            plan = _without(plan, exc.key)
    sliced = copy_model(model)
    slice_model(sliced, analysis, plan)
    feeds = random_inputs(model, seed)
    error = relative_error(run(masked, feeds), run(sliced, feeds))
    if error and any(n.op_type in QUANTIZING_OPS for n in model.graph):
        # A quantized model's result depends on summation order without a slicing fault: ONNX
        # Runtime's fused u8×s8 kernels saturate pairs of products on AVX2 without VNNI (so which
        # channels sit side by side counts), and in float another channel count's order moves a
        # value across a rounding step that the next layers amplify (smart-turn v3.2: 2.3e-2 on
        # its one output). Compared again with per-tensor activation rounding taken out and Q/DQ
        # unfused, weights still dequantized per channel, a fault still shows.
        error = min(error, relative_error(run(_unrounded(masked), feeds, lean=True),
                                          run(_unrounded(sliced), feeds, lean=True)))
    return OracleResult(error, count, tuple(unchecked))


def _unrounded(model):
    """The model with every per-tensor QuantizeLinear → DequantizeLinear pair on an activation
    bypassed (the DequantizeLinear's readers read the float input), in place."""
    for dq in list(model.graph):
        q = dq.inputs[0].producer() if dq.op_type == "DequantizeLinear" and dq.inputs[0] is not None else None
        if q is None or q.op_type != "QuantizeLinear" or q.inputs[0] is None or q.inputs[0].const_value is not None:
            continue
        if not (_same_scalar(q, dq, 1) and _same_scalar(q, dq, 2, absent_ok=True)) or dq.outputs[0].is_graph_output():
            continue
        dq.outputs[0].replace_all_uses_with(q.inputs[0])
    return model


def _same_scalar(q, dq, index: int, absent_ok: bool = False) -> bool:
    """Whether input `index` (scale or zero point) of both nodes is the same one-element constant."""
    pair = [n.inputs[index] if len(n.inputs) > index else None for n in (q, dq)]
    if pair == [None, None]:
        return absent_ok
    if any(v is None or v.const_value is None or v.const_value.numpy().size != 1 for v in pair):
        return False
    return pair[0].const_value.numpy().item() == pair[1].const_value.numpy().item()


def _without(plan, key: str):
    """A copy of `plan` that leaves group `key` whole."""
    kept = copy.deepcopy(plan)
    kept.removed = {k: v for k, v in plan.removed.items() if k != key}
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
