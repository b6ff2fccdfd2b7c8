"""BatchNorm-statistics-matched inputs (ZeroQ, Cai et al. 2020; DeepInversion's BN term): images
made without data whose activations look like the training data's to every BatchNormalization.

Start from 1/f noise (hessian.natural_noise) and optimise the pixels with Adam so that, at every
BN, the batch mean and standard deviation of its input (over batch and positions) match the running
mean and sqrt(running variance + ε): loss = Σ_BN ‖μ_b − μ‖₂ + ‖σ_b − σ‖₂ (ZeroQ's form). The
differentiable graph is the ONNX model itself run by spa.runtime.to_torch, cut after the last BN
(only the BN inputs are outputs), so a static batch-1 Reshape at the head never runs.

Budget: on CPU a step costs about a forward and a backward pass of the batch (EfficientNet-Lite0 at
224², batch 8: ~3-6 s on 2 shared cores), so only `images` (8) images are optimised, for `steps`
(25) Adam steps at a high rate; the `samples` feeds are those images and, beyond them, circular
shifts and mirror images of them (which keep every BN's batch statistics)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from spa.statistics.hessian import natural_noise

from spa.runtime.validate import copy_model

STEPS = 25       # Adam steps
IMAGES = 8       # images optimised together (their batch statistics are matched)
#: Pixels optimised together at most (8 images of 224²): larger images are optimised fewer at a
#: time (800×608: one) — each step costs a forward and backward pass over all of them, and one
#: large image already gives every BatchNorm plenty of positions.
PIXELS = IMAGES * 224 * 224
#: Larger images are not optimised at all (None: the caller makes plain 1/f-noise images): on a CPU,
#: 25 forward and backward passes of a detector at 800×608 take minutes (PP-PicoDet: 4.5 min).
MAX_PIXELS = 320 * 320
LR = 0.2


def image_input(model: ir.Model) -> ir.Value | None:
    """The model's only data input when it is a 4-D float tensor with static C, H, W."""
    inputs = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
    if len(inputs) != 1:
        return None
    v = inputs[0]
    if v.shape is None or len(v.shape) != 4 or v.dtype is None or not v.dtype.is_floating_point():
        return None
    if not all(isinstance(d, int) for d in list(v.shape)[1:]):
        return None
    return v


def batchnorms(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")
            and all(i is not None and i.const_value is not None for i in n.inputs[1:5])]


def bn_loss_module(model: ir.Model):
    """(torch module whose outputs are the BN inputs, [(running mean, running std)] as tensors)."""
    import torch
    from onnx_ir.passes.common import RemoveUnusedNodesPass
    from spa.runtime.to_torch import to_torch

    probe = copy_model(model)
    bns = batchnorms(probe)
    targets, wanted = [], {}
    for n in bns:
        mean = n.inputs[3].const_value.numpy().astype(np.float32)
        var = n.inputs[4].const_value.numpy().astype(np.float32)
        eps = n.attributes["epsilon"].as_float() if "epsilon" in n.attributes else 1e-5
        wanted.setdefault(n.inputs[0].name, n.inputs[0])
        targets.append((n.inputs[0].name, torch.from_numpy(mean), torch.from_numpy(np.sqrt(var + eps))))
    probe.graph.outputs.clear()
    probe.graph.outputs.extend(wanted.values())
    RemoveUnusedNodesPass()(probe)
    module = to_torch(probe).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module, list(wanted), targets


def bn_loss(module, names, targets, x):
    import torch

    outs = module(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    values = dict(zip(names, outs))
    loss = x.new_zeros(())
    for name, mean, std in targets:
        a = values[name]
        dims = [0] + list(range(2, a.dim()))
        mu = a.mean(dim=dims)
        sd = torch.sqrt(a.var(dim=dims, unbiased=False) + 1e-5)
        loss = loss + torch.linalg.vector_norm(mu - mean) + torch.linalg.vector_norm(sd - std)
    return loss


def bn_matched_feeds(model: ir.Model, samples: int, seed: int = 0, steps: int = STEPS, images: int = IMAGES,
                     lr: float = LR, history: list | None = None) -> list[dict] | None:
    """`samples` feeds (batch 1 each: input name → float32 array) optimised to match the model's
    BatchNorm statistics; None when the model has no BatchNormalization, no image input, or one
    larger than MAX_PIXELS. Deterministic for a seed. `history`, when given, receives the loss
    before every step."""
    value = image_input(model)
    if value is None or not batchnorms(model) or samples <= 0:
        return None
    dims = [int(d) for d in list(value.shape)[1:]]
    pixels = int(np.prod(dims[1:] if dims[0] in (1, 2, 3, 4) else dims[:-1]))
    if pixels > MAX_PIXELS:
        return None
    import torch

    module, names, targets = bn_loss_module(model)
    rng = np.random.default_rng(seed)
    count = max(1, min(images, samples, PIXELS // max(pixels, 1)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.from_numpy(natural_noise([count] + dims, rng).astype(np.float32)).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = bn_loss(module, names, targets, x)
            loss.backward()
            opt.step()
            if history is not None:
                history.append(float(loss.detach()))
    base = x.detach().numpy()
    dtype = value.dtype.numpy()
    feeds = []
    for i in range(samples):
        image = base[i % count]
        if i >= count:  # a shifted, possibly mirrored copy: the same per-channel statistics
            image = np.roll(image, (int(rng.integers(image.shape[-2])), int(rng.integers(image.shape[-1]))), (-2, -1))
            if rng.random() < 0.5:
                image = image[..., ::-1]
        feeds.append({value.name: np.ascontiguousarray(image[None]).astype(dtype)})
    return feeds
