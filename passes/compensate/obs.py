"""Structured Optimal Brain Surgeon on every sink of a pruned group (see shared/docs/OBSPA.md).

For a sink with weight matrix W̃ = [W, b] and input moments H̃ = E[x̃x̃ᵀ] (x̃ = [x, 1]), removing the
column set P costs ½·tr(W̃_P ((H̃⁻¹)_PP)⁻¹ W̃_Pᵀ), and the best re-weighting of the kept columns K is
W̃_K ← W̃_K + W̃_P H̃_PK H̃_KK⁻¹ — the bias column is always kept, so the bias absorbs the removed
inputs' mean."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.core.progress import progress
from spa.passes.compensate.bias import can_take_bias, pruned_values, store_bias
from spa.statistics import hessian as hess
from spa.statistics.sinks import SinkPlan, SinkWeight, sink_weight

DAMP = 0.01


def damped(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    return h + damp * float(np.mean(np.diag(h))) * np.eye(len(h))


def obs_update(w: np.ndarray, h: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Return W̃ with the columns `removed` zeroed and the rest re-weighted to compensate."""
    keep = np.setdiff1d(np.arange(h.shape[0]), removed)
    # Δ_K = W_P H_PK H_KK⁻¹, computed with a solve (H_KK is symmetric positive definite once damped)
    delta = spd_solve(h[np.ix_(keep, keep)], h[np.ix_(keep, removed)]).T
    out = w.astype(np.float64).copy()
    out[:, keep] += out[:, removed] @ delta
    out[:, removed] = 0.0
    return out


def spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a⁻¹ b for a symmetric positive definite `a` (Cholesky; a general solve if that fails)."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    try:
        return cho_solve(cho_factor(a, check_finite=False), b, check_finite=False)
    except LinAlgError:
        return np.linalg.solve(a, b)


def spd_inverse(h: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix (damped H̃) by Cholesky: faster than a
    general inverse and symmetric by construction; falls back to it if the factorisation fails."""
    from scipy.linalg import lapack

    factor, info = lapack.dpotrf(h, lower=False)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=False)
        if info == 0:
            upper = np.triu(inverse)
            return upper + np.triu(upper, 1).T
    return np.linalg.inv(h)


def removal_cost(w: np.ndarray, h_inv: np.ndarray, removed: np.ndarray) -> float:
    block = h_inv[np.ix_(removed, removed)]
    wp = w[:, removed].astype(np.float64)
    # tr(W_P B⁻¹ W_Pᵀ) without forming the rows × rows product (a 18k-class head would make it 18k²)
    return 0.5 * float(np.sum(wp * np.linalg.solve(block, wp.T).T))


def system(sink: SinkWeight, h: np.ndarray, with_bias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(W̃, H̃): the weight with its bias column and the damped moments; without a bias (one that
    cannot be added) the plain (W, H), and the removed inputs' mean is lost."""
    w = sink.matrix().astype(np.float64)
    if not with_bias:
        return w, damped(h[:-1, :-1])
    b = np.zeros(w.shape[0]) if sink.bias is None else sink.bias.const_value.numpy().reshape(-1)
    return np.concatenate([w, b[:, None]], axis=1), damped(h)


def obs_scores(analysis, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per group, the summed sink cost of removing each root channel alone."""
    scores = {}
    for group in analysis.prunable_groups():
        total = np.zeros(group.width)
        used = False
        for s in group.sinks:
            plan = sinks.get(s.node)
            if plan is None or s.node not in hs:
                continue
            used = True
            w, h = system(plan.sink, hs[s.node])
            h_inv = spd_inverse(h)
            for cls in range(group.width):
                positions = np.nonzero(plan.space.pos2class == cls)[0]
                if len(positions):
                    total[cls] += removal_cost(w, h_inv, plan.sink.columns(positions))
        if used:
            scores[group.key] = total
    return scores


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
