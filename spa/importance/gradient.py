"""Gradient criteria: one score per root channel from ∂L/∂w, computed on a differentiable PyTorch
copy of the ONNX graph (`spa.runtime.to_torch`).

For every parameter element the saliency is s = w ⊙ g with g = ∂L/∂w; a group's channel owns the
elements of every member slice that maps to it (producer rows, sink columns, biases, norm scales).

- ``taylor`` — Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019,
  group form: I_c = mean over mini-batches b of (Σ_{elements e of channel c in all members} w_e·g_e,b)².
  The first-order estimate of the loss change from zeroing the whole channel, squared. ≥ 0.
  It is one score for the whole group (the members are summed before squaring), so `reduction`
  does not apply; `normalizer` does.
- ``snip`` — Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
  ICLR 2019: Σ_e |w_e·g_e| per member with g the gradient of the loss over all samples. ≥ 0.
- ``grasp`` — Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow",
  ICLR 2020: Σ_e w_e·(Hg)_e per member, signed, with g the gradient over all samples and H the
  Hessian of the loss (H g by double backprop: Hg = ∂(g(θ)·stop_grad(g))/∂θ, mini-batch by
  mini-batch). GraSP removes the weights with the highest −w·Hg (removing them least reduces the
  gradient norm), so a high w·Hg means keep; this function returns +w·Hg. Signed member scores
  are normalised by the mean (max, sum) of their magnitudes so that the sign survives.
- ``crop`` — Rachwan et al., "Winning the Lottery Ahead of Time: Efficient Early Network
  Pruning" (CroP), ICML 2022: Σ_e |w_e·(Hg)_e| per member (the magnitude of each weight's
  contribution to the gradient flow). ≥ 0.

Higher is more important for all four. Per-member scores are normalised with
`spa.importance.combine.normalize` and reduced over members (mean/sum/max) as the weight criteria are, so
global ranking compares groups.

The loss needs no labels:
- a language model (`next_token_logits` finds token ids in, [batch, sequence, vocab] logits out):
  next-token cross-entropy of the logits on the feed's own ids, shifted by one;
- else a float output shaped [batch, classes]: cross-entropy against the dense model's own
  argmax (pseudo-labels; the weights are not changed, so it is the forward's own argmax);
- else half the mean squared value of every float output (the output energy).

Taylor and SNIP only need gradients of the group members, so only those require grad; GraSP and
CroP differentiate through every floating-point parameter, as H g in the papers is over all weights.
Feeds (batch 1 each) are stacked into mini-batches of `batch` where their shapes agree and the
model accepts a larger batch; otherwise they run one by one.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_ir as ir

from spa.core.errors import SpaError
from spa.importance.combine import check_combination, normalize, reduce_members, signed_normalize
from spa.importance.registry import Criterion, Scoring, criteria, criterion_names, register_criterion


class GradientCriterion(Criterion):
    """A saliency w ⊙ (g or H g) summed per channel. `product`: "gradient" (g over all samples),
    "hessian-gradient" (H g) or "taylor" (per mini-batch group sums of w ⊙ g, squared);
    `signed`: member scores keep their sign. Needs input feeds from the statistics pass."""
    kind = "gradient"
    product: ClassVar[str] = "gradient"
    signed: ClassVar[bool] = False

    def scores(self, analysis, scoring: Scoring) -> dict[str, np.ndarray]:
        return gradient_scores(analysis.model, analysis, self, scoring.statistics.feeds, scoring.normalizer,
                               scoring.reduction)


@register_criterion
class Taylor(GradientCriterion):
    name, summary, product = "taylor", "first-order Taylor estimate of the loss change (Molchanov)", "taylor"


@register_criterion
class Snip(GradientCriterion):
    name, summary, product = "snip", "connection sensitivity |w·g| (SNIP)", "gradient"


@register_criterion
class Grasp(GradientCriterion):
    name, summary, product, signed = "grasp", "gradient-flow preservation w·Hg (GraSP)", "hessian-gradient", True


@register_criterion
class Crop(GradientCriterion):
    name, summary, product = "crop", "gradient-flow magnitude |w·Hg| (CroP)", "hessian-gradient"


def gradient_scores(model: ir.Model, analysis, criterion: str | GradientCriterion, feeds, normalizer: str = "mean",
                    reduction: str = "mean", batch: int = 8) -> dict[str, np.ndarray]:
    """One score per root channel (higher = keep) for every prunable group, keyed by group key."""
    found = criterion if isinstance(criterion, Criterion) else {c.name: c for c in criteria("gradient")}.get(criterion)
    if not isinstance(found, GradientCriterion):
        raise SpaError(f"unknown gradient criterion '{getattr(found, 'name', criterion)}' "
                       f"(choose from {', '.join(criterion_names('gradient'))})")
    check_combination(normalizer, reduction)
    if batch < 1:
        raise SpaError(f"the gradient batch must be at least 1, got {batch}")
    import torch

    from spa.runtime.to_torch import to_torch

    groups = list(analysis.prunable_groups())
    module = to_torch(model)
    module.eval()
    members = {m.value for g in groups for m in g.params}
    params = {}
    for attr, onnx_name in module.onnx_names.items():
        tensor = getattr(module, attr)
        if not isinstance(tensor, torch.nn.Parameter):
            continue
        wanted = onnx_name in members or found.product == "hessian-gradient"
        tensor.requires_grad_(wanted)
        if wanted:
            params[onnx_name] = tensor
    names = list(params)
    tensors = [params[n] for n in names]
    if not tensors:
        return {g.key: np.zeros(g.width) for g in groups}
    loss_of = _loss(model, module)
    feeds = list(feeds)
    batches = list(_batches(model, module, feeds, batch))
    if not batches:
        raise SpaError("gradient criteria need at least one input sample")
    if batches[0][1] > 1:  # a batch size baked into the graph (a Reshape constant) fails: go one by one
        try:
            with torch.no_grad():
                _run(module, loss_of, batches[0][0])
        except SpaError:
            batches = list(_batches(model, module, feeds, 1))
    total = sum(size for _, size in batches)
    layout = _Layout(groups, params)

    def grads(inputs, create_graph=False):
        loss = _run(module, loss_of, inputs)
        out = torch.autograd.grad(loss, tensors, allow_unused=True, create_graph=create_graph)
        return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, out)]

    with torch.enable_grad():
        if found.product == "taylor":
            squares = {g.key: torch.zeros(g.width, dtype=torch.float64) for g in groups}
            for inputs, _ in batches:
                gs = dict(zip(names, grads(inputs)))
                for g in groups:
                    squares[g.key] += layout.group_sum(g, gs) ** 2
            return {g.key: normalize(squares[g.key].numpy() / len(batches), normalizer) for g in groups}
        g_total = [torch.zeros_like(t) for t in tensors]
        for inputs, size in batches:
            for acc, g in zip(g_total, grads(inputs)):
                acc += g.detach() * (size / total)
        if found.product == "gradient":
            saliency = dict(zip(names, g_total))
        else:
            saliency = {n: torch.zeros_like(t) for n, t in zip(names, tensors)}
            for inputs, size in batches:
                gs = grads(inputs, create_graph=True)
                dot = sum((g * v).sum() for g, v in zip(gs, g_total) if g.requires_grad)
                if not torch.is_tensor(dot) or not dot.requires_grad:
                    continue  # the loss is linear in every parameter: H g = 0
                hg = torch.autograd.grad(dot, tensors, allow_unused=True)
                for n, h in zip(names, hg):
                    if h is not None:
                        saliency[n] += h.detach() * (size / total)
        signed = found.signed
        return {g.key: layout.reduce(g, saliency, signed, normalizer, reduction) for g in groups}


class _Layout:
    """Where each group's members sit in their parameters: per-channel sums of w ⊙ (something)."""

    def __init__(self, groups, params):
        import torch

        self.params = params
        self.index = {}
        for g in groups:
            for m in g.params:
                if m.value in params:
                    self.index[(g.key, m.value, tuple(m.axes))] = torch.as_tensor(np.asarray(m.pos2class, np.int64))

    def channel_sums(self, group, member, values, absolute: bool):
        """Σ over the member's elements of each channel of w ⊙ values (or |w ⊙ values|)."""
        import torch

        w = self.params[member.value].detach()
        prod = (w * values).double()
        if absolute:
            prod = prod.abs()
        moved = torch.movedim(prod, list(member.axes), list(range(len(member.axes))))
        per_position = moved.reshape(member.size, -1).sum(1)
        out = torch.zeros(group.width, dtype=torch.float64)
        return out.index_add_(0, self.index[(group.key, member.value, tuple(member.axes))], per_position)

    def group_sum(self, group, grads):
        import torch

        total = torch.zeros(group.width, dtype=torch.float64)
        for m in group.params:
            if m.value in self.params:
                total += self.channel_sums(group, m, grads[m.value], absolute=False)
        return total

    def reduce(self, group, values, signed: bool, normalizer: str, reduction: str) -> np.ndarray:
        per_member = []
        for m in group.params:
            if m.value not in self.params:
                continue
            scores = self.channel_sums(group, m, values[m.value], absolute=not signed).numpy()
            per_member.append(signed_normalize(scores, normalizer) if signed else normalize(scores, normalizer))
        return reduce_members(per_member, group.width, reduction)


def _loss(model: ir.Model, module):
    """The label-free loss (see the module docstring) as a function of the module's outputs."""
    import torch
    import torch.nn.functional as F

    from spa.statistics.hessian import next_token_logits

    outputs = list(module.output_names)
    lm = next_token_logits(model)
    if lm is not None:
        ids_name, logits_name, _ = lm
        at = outputs.index(logits_name)

        def next_token(results, inputs):
            logits, ids = results[at], inputs[ids_name]
            if logits.shape[1] < 2:
                raise SpaError("the next-token loss needs sequences of at least two tokens")
            return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), torch.as_tensor(ids)[:, 1:].reshape(-1).long())
        return next_token
    declared = {v.name: v for v in model.graph.outputs}
    for i, name in enumerate(outputs):
        v = declared.get(name)
        if v is not None and v.shape is not None and len(v.shape) == 2 and v.dtype is not None \
                and v.dtype.is_floating_point() and isinstance(v.shape[1], int) and v.shape[1] > 1:
            def pseudo_labels(results, inputs, at=i):
                logits = results[at].float()
                return F.cross_entropy(logits, logits.detach().argmax(-1))
            return pseudo_labels

    def energy(results, inputs):
        terms = [0.5 * r.float().pow(2).mean() for r in results if torch.is_tensor(r) and r.is_floating_point()]
        if not terms:
            raise SpaError("gradient criteria need a floating-point model output")
        return sum(terms)
    return energy


def _run(module, loss_of, inputs):
    import torch

    try:
        results = module(*[torch.from_numpy(inputs[n]) for n in module.input_names])
    except SpaError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:  # e.g. a batch baked into a Reshape
        raise SpaError(f"the PyTorch copy of the model failed: {str(exc).strip().splitlines()[0][:200]}") from None
    results = list(results) if isinstance(results, (list, tuple)) else [results]
    return loss_of(results, inputs)


def _batches(model: ir.Model, module, feeds, batch: int):
    """(feed dict, sample count) mini-batches: consecutive feeds of equal shapes stacked along
    axis 0 up to `batch`, when every input's first axis is symbolic (a batch axis)."""
    names = list(module.input_names)
    declared = {v.name: v for v in model.graph.inputs}
    stackable = batch > 1 and all(
        declared.get(n) is not None and declared[n].shape is not None and len(declared[n].shape) > 0
        and not isinstance(declared[n].shape[0], int) for n in names)
    pending: list[dict] = []

    def flush():
        if not pending:
            return None
        stacked = {n: np.ascontiguousarray(np.concatenate([f[n] for f in pending], axis=0)) for n in names}
        out = (stacked, len(pending))
        pending.clear()
        return out

    for feed in feeds:
        missing = [n for n in names if n not in feed]
        if missing:
            raise SpaError(f"the input samples have no array for input '{missing[0]}'")
        feed = {n: np.asarray(feed[n]) for n in names}
        if not stackable or any(feed[n].ndim == 0 or feed[n].shape[0] != 1 for n in names):
            done = flush()
            if done:
                yield done
            yield {n: np.ascontiguousarray(feed[n]) for n in names}, int(feed[names[0]].shape[0]) if names and feed[names[0]].ndim else 1
            continue
        if pending and any(pending[0][n].shape != feed[n].shape or pending[0][n].dtype != feed[n].dtype for n in names):
            yield flush()
        pending.append(feed)
        if len(pending) == batch:
            yield flush()
    done = flush()
    if done:
        yield done
