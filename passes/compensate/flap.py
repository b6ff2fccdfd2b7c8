"""FLAP's sink update (An et al., 2024): a removed channel's input mean is folded into the bias of
every sink that read it, b += W[:, removed] · E[x_removed] — the mean is the last column of the
sink's input moments H̃ = E[x̃ x̃ᵀ], x̃ = [x, 1]."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.passes.compensate.bias import can_take_bias, pruned_values, store_bias
from spa.statistics.sinks import SinkPlan, sink_weight


def flap_bias(model: ir.Model, analysis, plan, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray]) -> int:
    """Fold the removed channels' means into each sink's bias, in place; returns the sinks changed.
    A MatMul without a bias gets one (see bias.store_bias)."""
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
