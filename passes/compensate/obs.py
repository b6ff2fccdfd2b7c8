"""Structured Optimal Brain Surgeon on every sink of a pruned group (see shared/docs/OBSPA.md).

For a sink with weight matrix W̃ = [W, b] and input moments H̃ = E[x̃x̃ᵀ] (x̃ = [x, 1]), removing the
column set P costs ½·tr(W̃_P ((H̃⁻¹)_PP)⁻¹ W̃_Pᵀ), and the best re-weighting of the kept columns K is
W̃_K ← W̃_K + W̃_P H̃_PK H̃_KK⁻¹ — the bias column is always kept, so the bias absorbs the removed
inputs' mean."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.core.errors import UnsupportedError
from spa.statistics import hessian as hess
from spa.statistics.sinks import SinkWeight, sink_weight
from spa.core.progress import progress

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


@dataclass
class SinkPlan:
    sink: SinkWeight
    space: object      # the sink's input channel space (positions → classes)


#: A sink reading more columns than this gets no moments (its H̃ alone would take 12·n² bytes while
#: measured: 7.5 GB for a VGG classifier's 25088 flattened inputs); its groups rank by L2 instead.
MAX_COLUMNS = 8192


def compensable_sinks(model: ir.Model, groups) -> dict[str, SinkPlan]:
    nodes = {n.name: n for n in model.graph}
    found = {}
    for group in groups:
        for s in group.sinks:
            if s.node not in nodes:  # inside an If/Loop body: not probed; ranked by L2, not compensated
                continue
            sw = sink_weight(nodes[s.node], s.input_index)
            if sw is not None and sw.matrix().shape[1] == s.space.size * sw.taps and sw.matrix().shape[1] <= MAX_COLUMNS:
                found[s.node] = SinkPlan(sw, s.space)
    return found


HESSIAN_SOURCES = ("synthetic", "data", "bn", "weights")


def hessians(model: ir.Model, sinks: dict[str, SinkPlan], source: str = "synthetic", samples: int = 32,
             calib: str | None = None, seed: int = 0, bn_model: ir.Model | None = None,
             feeds: list[dict] | None = None) -> dict[str, np.ndarray]:
    """H̃ for every sink from `source`: "data" (the calibration file run through the model),
    "synthetic" (inputs made without data; BatchNorm-statistics-matched ones where `bn_model` has
    BatchNormalization nodes), "bn" (analytic moments from BatchNorm statistics) or "weights" (the
    producer weights as a proxy). `bn_model` is the same model canonicalized without BatchNorm
    fusion, where fusion removed statistics that these sources read."""
    if not sinks:  # e.g. every consumer sits inside an If/Loop body: nothing to measure, nothing to probe
        return {}
    if source in ("bn", "weights"):
        from spa.statistics import analytic

        return analytic.hessians(bn_model if bn_model is not None else model, model,
                                 {name: sp.sink for name, sp in sinks.items()}, source)
    if feeds is None:
        feeds = statistics_feeds(model, source, samples, calib, seed, bn_model)
    return hess.collect(model, {name: sp.sink for name, sp in sinks.items()}, feeds)


#: A statistics pass over images reads about this many pixels (32 images of 320²): each pixel is a
#: row of every convolution's moments, so a larger image needs fewer of them (8 at 640²).
IMAGE_PIXELS = 32 * 320 * 320


def default_samples(model: ir.Model, sinks: dict[str, SinkPlan]) -> int:
    """How many inputs a statistics pass runs when the caller does not say: 32, or fewer large
    images (see IMAGE_PIXELS; at least 8, for variety); a language model's text gives one row per
    token (64 a sequence), so enough sequences for about five rows per column of its widest
    consumer, in 32s (128 for a 1536-wide FFN; measured on SmolLM2-135M: perplexity 229 with 32
    sequences, 139 with 128), at most 256."""
    if hess.next_token_logits(model) is None or not sinks:
        pixels = _largest_image_pixels(model)
        return 32 if pixels is None else int(min(32, max(8, -(-IMAGE_PIXELS // pixels))))
    widest = max(sp.sink.matrix().shape[1] for sp in sinks.values())
    return int(min(256, 32 * -(-5 * widest // (64 * 32))))


def _largest_image_pixels(model: ir.Model) -> int | None:
    """Height × width of the largest image input, in the shapes examples are made in."""
    from spa.runtime import examples

    shapes = examples.shapes(model)
    sizes = []
    for spec in examples.input_specs(model):
        dims = shapes.get(spec.name)
        if spec.role == "image-nchw" and dims is not None:
            sizes.append(int(dims[2]) * int(dims[3]))
        elif spec.role == "image-nhwc" and dims is not None:
            sizes.append(int(dims[1]) * int(dims[2]))
    return max(sizes) if sizes else None


def statistics_feeds(model: ir.Model, source: str, samples: int = 32, calib: str | None = None, seed: int = 0,
                     bn_model: ir.Model | None = None) -> list[dict]:
    """The input feeds a statistics pass runs (a list: sequential mode runs them more than once)."""
    if source == "synthetic":
        feeds = None
        if bn_model is not None:
            from spa.statistics import synthesis as distill

            try:
                feeds = distill.bn_matched_feeds(bn_model, samples, seed)
            except UnsupportedError:  # an op the torch copy lacks: plain made-up inputs under ONNX Runtime
                feeds = None
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


def greedy_selection(analysis, plan, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray]) -> None:
    """Re-pick each group's removed channels one at a time, in place: keep the count the allocation
    gave, but choose each next channel by its OBS cost after the previous removals were
    compensated (W and H⁻¹ downdated), summed over the group's sinks. Joint costs of single
    channels miss that two similar channels can stand in for each other once, not twice."""
    groups = analysis.group_by_key()
    for key, remove in progress(list(plan.removed.items()), "greedy selection"):
        if not remove:
            continue
        group = groups[key]
        states = [_GreedySink(plan_.sink, plan_.space, group.width, hs[s.node])
                  for s in group.sinks if (plan_ := sinks.get(s.node)) is not None and s.node in hs]
        if not states:
            continue
        chosen: list[int] = []
        for _ in range(len(remove)):
            costs = sum(st.costs() for st in states)
            costs[chosen] = np.inf
            pick = int(np.argmin(costs))
            chosen.append(pick)
            for st in states:
                st.remove(pick)
        plan.removed[key] = sorted(chosen)
    plan.meta.update(selection="greedy")


class _GreedySink:
    """One sink's W̃ and H̃⁻¹ during greedy selection, with each channel's columns."""

    def __init__(self, sink: SinkWeight, space, width: int, h: np.ndarray):
        self.w, damped_h = system(sink, h)
        self.h_inv = np.linalg.inv(damped_h)
        self.cols = [sink.columns(np.nonzero(space.pos2class == c)[0]) for c in range(width)]
        sizes = {len(c) for c in self.cols}
        self.uniform = np.stack(self.cols) if len(sizes) == 1 and 0 not in sizes else None

    def costs(self) -> np.ndarray:
        """½·tr(W_P (H⁻¹_PP)⁻¹ W_Pᵀ) for every channel's column set P, with the current W and H⁻¹."""
        if self.uniform is not None:
            c = self.uniform
            block = self.h_inv[c[:, :, None], c[:, None, :]]                  # (n, t, t)
            wp = np.moveaxis(self.w[:, c], 0, -1)                               # (n, t, rows)
            block = block + 1e-12 * np.eye(c.shape[1])
            return 0.5 * np.einsum("ntr,ntr->n", wp, np.linalg.solve(block, wp))
        return np.array([removal_cost(self.w, self.h_inv, c) if len(c) else 0.0 for c in self.cols])

    def remove(self, channel: int) -> None:
        p = self.cols[channel]
        if not len(p):
            return
        solve = np.linalg.solve(self.h_inv[np.ix_(p, p)], self.h_inv[p, :])   # (H⁻¹_PP)⁻¹ H⁻¹_P·
        self.w -= self.w[:, p] @ solve
        self.h_inv -= self.h_inv[:, p] @ solve


def pruned_values(analysis, plan) -> set[str]:
    """Names of the values whose channels the plan narrows."""
    groups = analysis.group_by_key()
    return {m.value for key, remove in plan.removed.items() if remove for m in groups[key].members}


def can_take_bias(sink: SinkWeight, narrowed: set[str]) -> bool:
    """A sink has a bias, or one can be added (Conv/Gemm: a third input, MatMul: an Add after it)
    — unless its output is narrowed too: the slicer would not know the new bias."""
    return sink.bias is not None or sink.node.outputs[0].name not in narrowed


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
