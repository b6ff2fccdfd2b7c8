"""Activation-aware criteria from the sinks' input statistics (the same moments OBS uses:
H = E[x̃ x̃ᵀ] with x̃ = [x, 1], so E[x²] is its diagonal and E[x] its last column).

- Wanda-sp: a channel's importance is its input's RMS times the absolute weights that read it,
  Σ_rows |W[:, j]| · sqrt(E[x_j²]) (Sun et al., 2023, structured).
- FLAP fluctuation: Var(x_j) · ||W[:, j]||² — a channel that barely varies can be dropped, and
  its mean folded into the sink's bias, b += W[:, removed] · E[x_removed] (An et al., 2024).
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.passes.compensate.obs import SinkPlan, can_take_bias, pruned_values, store_bias
from spa.statistics.sinks import sink_weight

ACTIVATION_CRITERIA = ("wanda", "flap")


def activation_scores(analysis, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray],
                      criterion: str) -> dict[str, np.ndarray]:
    """Per group, the summed per-channel score over its compensable sinks (groups without one are
    left out: the caller falls back to a weight criterion there)."""
    scores = {}
    for group in analysis.prunable_groups():
        total = np.zeros(group.width)
        used = False
        for s in group.sinks:
            plan = sinks.get(s.node)
            if plan is None or s.node not in hs:
                continue
            used = True
            w = plan.sink.matrix().astype(np.float64)
            h = hs[s.node]
            second, mean = np.diag(h)[:-1], h[:-1, -1]
            if criterion == "wanda":
                per_column = np.abs(w).sum(0) * np.sqrt(np.maximum(second, 0))
            else:
                per_column = np.maximum(second - mean ** 2, 0) * (w ** 2).sum(0)
            per_position = per_column.reshape(plan.space.size, plan.sink.taps).sum(1)
            total += np.bincount(plan.space.pos2class, weights=per_position, minlength=group.width)
        if used:
            scores[group.key] = total
    return scores


def flap_bias(model: ir.Model, analysis, plan, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray]) -> int:
    """Fold the removed channels' means into each sink's bias, in place; returns the sinks changed.
    A MatMul without a bias gets one (see obs.store_bias)."""
    groups = analysis.group_by_key()
    nodes = {n.name: n for n in model.graph}
    narrowed = pruned_values(analysis, plan)
    done = 0
    for key, remove in plan.removed.items():
        for s in groups[key].sinks if remove else ():
            sp = sinks.get(s.node)
            if sp is None or s.node not in hs:
                continue
            positions = np.nonzero(np.isin(sp.space.pos2class, remove))[0]
            if not len(positions):
                continue
            sink = sink_weight(nodes[s.node], s.input_index)  # this model's node, not the analysed one
            if not can_take_bias(sink, narrowed):
                continue
            cols = sink.columns(positions)
            shift = sink.matrix().astype(np.float64)[:, cols] @ hs[s.node][cols, -1]
            bias = np.zeros(len(shift)) if sink.bias is None else sink.bias.const_value.numpy().reshape(-1)
            store_bias(model, sink, bias + shift)
            done += 1
    return done
