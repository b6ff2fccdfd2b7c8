"""Structured Optimal Brain Surgeon on every sink of a pruned group (see shared/docs/OBSPA.md).

For a sink with weight matrix W̃ = [W, b] and input moments H̃ = E[x̃x̃ᵀ] (x̃ = [x, 1]), removing the
column set P costs ½·tr(W̃_P ((H̃⁻¹)_PP)⁻¹ W̃_Pᵀ), and the best re-weighting of the kept columns K is
W̃_K ← W̃_K + W̃_P H̃_PK H̃_KK⁻¹ — the bias column is always kept, so the bias absorbs the removed
inputs' mean."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.passes.compensate import hessian as hess
from spa.passes.compensate.sinks import SinkWeight, sink_weight
from spa.progress import progress

DAMP = 0.01


def damped(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    return h + damp * float(np.mean(np.diag(h))) * np.eye(len(h))


def obs_update(w: np.ndarray, h: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Return W̃ with the columns `removed` zeroed and the rest re-weighted to compensate."""
    keep = np.setdiff1d(np.arange(h.shape[0]), removed)
    # Δ_K = W_P H_PK H_KK⁻¹, computed with a solve (H_KK is symmetric positive definite once damped)
    delta = np.linalg.solve(h[np.ix_(keep, keep)], h[np.ix_(keep, removed)]) .T
    out = w.astype(np.float64).copy()
    out[:, keep] += out[:, removed] @ delta
    out[:, removed] = 0.0
    return out


def removal_cost(w: np.ndarray, h_inv: np.ndarray, removed: np.ndarray) -> float:
    block = h_inv[np.ix_(removed, removed)]
    wp = w[:, removed].astype(np.float64)
    return 0.5 * float(np.trace(wp @ np.linalg.solve(block, wp.T)))


def system(sink: SinkWeight, h: np.ndarray, with_bias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(W̃, H̃): the weight with its bias column and the damped moments; without a bias (one that
    cannot be added) the plain (W, H), and the removed inputs' mean is lost."""
    w = sink.matrix().astype(np.float64)
    if not with_bias:
        return w, damped(h[:-1, :-1])
    b = np.zeros(w.shape[0]) if sink.bias is None else sink.bias.const_value.numpy().reshape(-1)
    return np.concatenate([w, b[:, None]], axis=1), damped(h)


@dataclass
class SinkPlan:
    sink: SinkWeight
    space: object      # the sink's input channel space (positions → classes)


def compensable_sinks(model: ir.Model, groups) -> dict[str, SinkPlan]:
    nodes = {n.name: n for n in model.graph}
    found = {}
    for group in groups:
        for s in group.sinks:
            sw = sink_weight(nodes[s.node], s.input_index)
            if sw is not None and sw.matrix().shape[1] == s.space.size * sw.taps:
                found[s.node] = SinkPlan(sw, s.space)
    return found


HESSIAN_SOURCES = ("synthetic", "data", "bn", "weights")


def hessians(model: ir.Model, sinks: dict[str, SinkPlan], source: str = "synthetic", samples: int = 32,
             calib: str | None = None, seed: int = 0, bn_model: ir.Model | None = None) -> dict[str, np.ndarray]:
    """H̃ for every sink from `source`: "data" (the calibration file run through the model),
    "synthetic" (inputs made without data; BatchNorm-statistics-matched ones where `bn_model` has
    BatchNormalization nodes), "bn" (analytic moments from BatchNorm statistics) or "weights" (the
    producer weights as a proxy). `bn_model` is the same model canonicalized without BatchNorm
    fusion, where fusion removed statistics that these sources read."""
    if source in ("bn", "weights"):
        from spa.passes.compensate import analytic

        return analytic.hessians(bn_model if bn_model is not None else model, model,
                                 {name: sp.sink for name, sp in sinks.items()}, source)
    return hess.collect(model, {name: sp.sink for name, sp in sinks.items()},
                        statistics_feeds(model, source, samples, calib, seed, bn_model))


def statistics_feeds(model: ir.Model, source: str, samples: int = 32, calib: str | None = None, seed: int = 0,
                     bn_model: ir.Model | None = None) -> list[dict]:
    """The input feeds a statistics pass runs (a list: sequential mode runs them more than once)."""
    if source == "synthetic":
        feeds = None
        if bn_model is not None:
            from spa.passes.compensate import distill

            feeds = distill.bn_matched_feeds(bn_model, samples, seed)
        if feeds is None:
            feeds = hess.synthetic_feeds(model, samples, seed)
    elif source == "data":
        feeds = hess.data_feeds(model, calib, samples)
    else:
        raise ValueError(source)
    return list(progress(feeds, "collecting statistics", total=samples))  # at most `samples` feeds


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
            h_inv = np.linalg.inv(h)
            for cls in range(group.width):
                positions = np.nonzero(plan.space.pos2class == cls)[0]
                if len(positions):
                    total[cls] += removal_cost(w, h_inv, plan.sink.columns(positions))
        if used:
            scores[group.key] = total
    return scores


def compensate(model: ir.Model, analysis, plan, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray]) -> int:
    """Re-weight every compensable sink of the plan's removed channels, in place; returns how many."""
    groups = analysis.group_by_key()
    nodes = {n.name: n for n in model.graph}
    narrowed = pruned_values(analysis, plan)
    done = 0
    for key, remove in progress(list(plan.removed.items()), "compensating sinks"):
        if not remove:
            continue
        for s in groups[key].sinks:
            sp = sinks.get(s.node)
            if sp is None or s.node not in hs:
                continue
            positions = np.nonzero(np.isin(sp.space.pos2class, remove))[0]
            if not len(positions):
                continue
            sink = sink_weight(nodes[s.node], s.input_index)  # this model's node, not the analysed one
            with_bias = can_take_bias(sink, narrowed)
            w, h = system(sink, hs[s.node], with_bias)
            updated = obs_update(w, h, sink.columns(positions))
            if with_bias:
                sink.store(updated[:, :-1])
                store_bias(model, sink, updated[:, -1])
            else:
                sink.store(updated)
            done += 1
    return done


def pruned_values(analysis, plan) -> set[str]:
    """Names of the values whose channels the plan narrows."""
    groups = analysis.group_by_key()
    return {m.value for key, remove in plan.removed.items() if remove for m in groups[key].members}


def can_take_bias(sink: SinkWeight, narrowed: set[str]) -> bool:
    """A sink has a bias, or one can be added: a MatMul gets an Add after it, unless its output is
    narrowed too (the new bias would not be sliced with it)."""
    return sink.bias is not None or sink.kind != "matmul" or sink.node.outputs[0].name not in narrowed


def store_bias(model: ir.Model, sink: SinkWeight, bias: np.ndarray) -> None:
    """Write the sink's new bias; where it has none, add one (Conv/Gemm: a third input; MatMul: an
    Add after it)."""
    dtype = sink.weight.const_value.numpy().dtype
    if sink.bias is not None:
        old = sink.bias.const_value.numpy()
        sink.bias.const_value = ir.tensor(bias.reshape(old.shape).astype(old.dtype), name=sink.bias.name)
        return
    if not np.any(bias):
        return
    name = f"{sink.node.name}_spa_bias"
    value = ir.Value(name=name, const_value=ir.tensor(bias.astype(dtype), name=name),
                     shape=ir.Shape([len(bias)]), type=ir.TensorType(ir.DataType.from_numpy(dtype)))
    model.graph.register_initializer(value)
    if sink.kind != "matmul":
        sink.node.resize_inputs(3)
        sink.node.replace_input_with(2, value)
        return
    out = sink.node.outputs[0]
    graph = sink.node.graph
    biased = ir.Value(name=f"{out.name}_spa_biased", shape=out.shape, type=out.type)
    if out in graph.outputs:  # the model's output keeps its name: it now comes from the Add
        graph.outputs[graph.outputs.index(out)] = biased
    ir.convenience.replace_all_uses_with(out, biased)
    if biased in graph.outputs:
        name = out.name
        out.name = f"{name}_spa_unbiased"
        biased.name = name
    add = ir.Node("", "Add", [out, value], outputs=[biased], name=f"{sink.node.name}_spa_bias_add")
    sink.node.graph.insert_after(sink.node, add)
    sink.bias = value
