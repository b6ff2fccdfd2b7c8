"""The Optimal-Brain-Surgeon cost of removing input columns of a sink (see shared/docs/OBSPA.md):
the sink's system (W̃ = [W, b], damped H̃ = E[x̃x̃ᵀ]), the symmetric-positive-definite algebra on it,
and the obspa criterion's per-channel scores. spa.passes.compensate.obs re-weights sinks with the
same system; the cost of removing the column set P is ½·tr(W̃_P ((H̃⁻¹)_PP)⁻¹ W̃_Pᵀ)."""
from __future__ import annotations

import numpy as np

from spa.statistics.sinks import SinkPlan, SinkWeight

DAMP = 0.01


def damped(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    return h + damp * float(np.mean(np.diag(h))) * np.eye(len(h))


def spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a⁻¹ b for a symmetric positive definite `a` (Cholesky; a general solve if that fails)."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    try:
        return cho_solve(cho_factor(a, check_finite=False), b, check_finite=False)
    except LinAlgError:
        return np.linalg.solve(a, b)


def spd_inverse(h: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix (damped H̃) by Cholesky: faster than a
    general inverse and symmetric by construction; falls back to it if the factorisation fails.
    The factor's copy is the only work space (a 1B decoder's FFN sink: 0.25 GB a copy)."""
    from scipy.linalg import lapack

    factor, info = lapack.dpotrf(h, lower=False)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
        if info == 0:
            return _mirror_upper(inverse)
    return np.linalg.inv(h)


def _mirror_upper(a: np.ndarray, block: int = 512) -> np.ndarray:
    """`a` with its lower triangle set from the upper one, in place, a block of rows at a time."""
    for start in range(0, len(a), block):
        end = min(start + block, len(a))
        a[start:end, :start] = a[:start, start:end].T
        diagonal = a[start:end, start:end]
        diagonal[:] = np.triu(diagonal) + np.triu(diagonal, 1).T
    return a


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


def summed_over_sinks(analysis, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray], channel_scores) -> dict:
    """Per prunable group with a measured sink, the sum over its sinks of
    `channel_scores(plan, h, width)` (one score per root channel); groups without one are left out."""
    scores = {}
    for group in analysis.prunable_groups():
        measured = [s.node for s in group.sinks if s.node in sinks and s.node in hs]
        if measured:
            scores[group.key] = sum(channel_scores(sinks[node], hs[node], group.width) for node in measured)
    return scores


def obs_scores(analysis, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per group, the summed sink cost of removing each root channel alone."""
    def costs(plan: SinkPlan, h: np.ndarray, width: int) -> np.ndarray:
        w, h = system(plan.sink, h)
        return channel_costs(w, spd_inverse(h), plan, width)

    return summed_over_sinks(analysis, sinks, hs, costs)


def channel_costs(w: np.ndarray, h_inv: np.ndarray, plan: SinkPlan, width: int) -> np.ndarray:
    """removal_cost of each root channel's columns alone, the channels with the same number of
    columns in one batched solve (a 5632-neuron FFN is 5632 one-column solves)."""
    total = np.zeros(width)
    columns: dict[int, list[np.ndarray]] = {}
    classes: dict[int, list[int]] = {}
    order = np.argsort(plan.space.pos2class, kind="stable")
    bounds = np.searchsorted(plan.space.pos2class[order], np.arange(width + 1))
    for cls in range(width):
        positions = order[bounds[cls]:bounds[cls + 1]]
        if len(positions):
            cols = plan.sink.columns(positions)
            columns.setdefault(len(cols), []).append(cols)
            classes.setdefault(len(cols), []).append(cls)
    for size, found in columns.items():
        cols = np.asarray(found)                                   # (channels, size)
        blocks = h_inv[cols[:, :, None], cols[:, None, :]]         # (channels, size, size)
        wp = np.moveaxis(w[:, cols], 0, -1)                        # (channels, size, rows)
        solved = np.linalg.solve(blocks, wp)
        total[classes[size]] = 0.5 * np.einsum("csr,csr->c", wp, solved)
    return total
