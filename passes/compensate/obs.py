"""Structured Optimal Brain Surgeon on every sink of a pruned group (see shared/docs/OBSPA.md).

For a sink with weight matrix W̃ = [W, b] and input moments H̃ = E[x̃x̃ᵀ] (x̃ = [x, 1]), removing the
column set P costs ½·tr(W̃_P ((H̃⁻¹)_PP)⁻¹ W̃_Pᵀ), and the best re-weighting of the kept columns K is
W̃_K ← W̃_K + W̃_P H̃_PK H̃_KK⁻¹ — the bias column is always kept, so the bias absorbs the removed
inputs' mean."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.core.progress import progress
# the OBS system and its cost live a layer down (the obspa criterion uses them); greedy and callers
# may keep importing damped, removal_cost, system, spd_inverse, obs_scores from here
from spa.importance.obs_cost import (  # noqa: F401
    DAMP, damped, obs_scores, removal_cost, spd_inverse, spd_solve, system)
from spa.passes.compensate.bias import can_take_bias, pruned_values, store_bias
from spa.statistics import hessian as hess
from spa.statistics.sinks import SinkPlan, sink_weight


def obs_update(w: np.ndarray, h: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Return W̃ with the columns `removed` zeroed and the rest re-weighted to compensate."""
    keep = np.setdiff1d(np.arange(h.shape[0]), removed)
    # Δ_K = W_P H_PK H_KK⁻¹, computed with a solve (H_KK is symmetric positive definite once damped)
    delta = spd_solve(h[np.ix_(keep, keep)], h[np.ix_(keep, removed)]).T
    out = w.astype(np.float64).copy()
    out[:, keep] += out[:, removed] @ delta
    out[:, removed] = 0.0
    return out


def compensate(model: ir.Model, analysis, plan, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray],
               only: set[str] | None = None, cross: dict[str, np.ndarray] | None = None) -> int:
    """Re-weight every compensable sink of the plan's removed channels (or the sinks named in
    `only`), in place; returns how many. With `cross` (E[x̃_ref x̃ᵀ] per sink), a sink re-creates
    the reference model's output rather than its own (see reconstruct)."""
    groups = analysis.group_by_key()
    nodes = {n.name: n for n in model.graph}
    narrowed = pruned_values(analysis, plan)
    done = 0
    for key, remove in progress(list(plan.removed.items()), "compensating sinks"):
        if not remove:
            continue
        for s in groups[key].sinks:
            sp = sinks.get(s.node)
            if sp is None or s.node not in hs or only is not None and s.node not in only:
                continue
            positions = np.nonzero(np.isin(sp.space.pos2class, remove))[0]
            if not len(positions):
                continue
            sink = sink_weight(nodes[s.node], s.input_index)  # this model's node, not the analysed one
            with_bias = can_take_bias(sink, narrowed)
            w, h = system(sink, hs[s.node], with_bias)
            removed = sink.columns(positions)
            if cross is None:
                updated = obs_update(w, h, removed)
            else:
                c = cross[s.node] if with_bias else cross[s.node][:-1, :-1]
                updated = reconstruct(w, h, c, removed)
            if with_bias:
                sink.store(updated[:, :-1])
                store_bias(model, sink, updated[:, -1])
            else:
                sink.store(updated)
            done += 1
    return done


def reconstruct(w: np.ndarray, h: np.ndarray, cross: np.ndarray, removed: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """The weights over the kept columns that best re-create W̃ x̃_ref from this model's input x̃:
    W̃'_K = (W̃ C_·K + λ W̃_K)(H̃_KK + λ I)⁻¹ with C = E[x̃_ref x̃ᵀ] and H̃ = E[x̃ x̃ᵀ] undamped here
    (`h` arrives damped: λ = damp·mean diag). The ridge pulls toward the old W̃_K; where x̃ = x̃_ref
    this is exactly obs_update. Removed columns are zeroed."""
    lam = damp / (1 + damp) * float(np.mean(np.diag(h)))  # undo `damped`'s scaling of the mean diagonal
    keep = np.setdiff1d(np.arange(h.shape[0]), removed)
    rhs = w @ cross[:, keep] + lam * w[:, keep]
    out = np.zeros_like(w)
    out[:, keep] = np.linalg.solve(h[np.ix_(keep, keep)], rhs.T).T
    return out


def compensate_sequential(model: ir.Model, reference: ir.Model, analysis, plan, sinks: dict[str, SinkPlan],
                          feeds: list[dict], stages: int | None = None) -> int:
    """Compensate sink by sink in topological order (as OBC/SparseGPT do layer by layer): each
    sink's moments are measured on the model as compensated so far, and it re-creates the
    `reference` (dense) model's output from them — so it also absorbs the error of the pruned
    layers before it. A compensated sink reads its removed channels with zero weights, so the
    layers after it already behave as pruned. `stages` consecutive runs of sinks share one
    statistics pass (fewer passes, less exact); None: one pass per sink."""
    groups = analysis.group_by_key()
    order = {n.name: i for i, n in enumerate(model.graph)}
    pending = sorted({s.node for key, remove in plan.removed.items() if remove for s in groups[key].sinks
                      if s.node in sinks}, key=order.__getitem__)
    done = 0
    chunks = [c for c in np.array_split(np.asarray(pending, dtype=object), stages or max(len(pending), 1)) if len(c)]
    dense = hess.probe(reference, {name: sinks[name].sink for name in pending})  # one session for every stage
    for chunk in progress(chunks, "sequential compensation"):
        nodes = {n.name: n for n in model.graph}
        measured = hess.collect_cross(model, dense, {name: sink_weight(nodes[name], 0) for name in chunk}, feeds)
        hs = {name: m[0] for name, m in measured.items()}
        done += compensate(model, analysis, plan, sinks, hs, only=set(chunk),
                           cross={name: m[1] for name, m in measured.items()})
    return done
