"""The two models of a distillation run: the dense teacher under ONNX Runtime and the pruned
student as a torch module, each fed lists of one-sample feeds (spa.training.data)."""
from __future__ import annotations

import contextlib

import numpy as np
import onnx_ir as ir

from spa.training.losses import distillation_loss


class Teacher:
    """The dense model under ONNX Runtime (CUDA when training on CUDA and ORT has it)."""

    def __init__(self, model: ir.Model, device: str):
        from spa.runtime.validate import session

        providers = None
        if device == "cuda":
            from spa.runtime.benchmark import providers_for

            providers = providers_for("cuda")
        self.session = session(model, providers=providers) if providers else session(model)
        self.names = [v.name for v in model.graph.outputs]

        self.batched: bool | None = None  # decided on the first batch: does the graph take a batch?

    def __call__(self, feed: dict) -> list[np.ndarray]:
        return self.session.run(self.names, feed)

    def many(self, feeds: list[dict]) -> list[list[np.ndarray]]:
        """Outputs per feed: one run over the concatenated batch where the graph takes one, else one
        run per feed (a fixed batch of 1)."""
        if self.batched is not False and len(feeds) > 1:
            try:
                joined = self.session.run(self.names, {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
            except Exception:  # noqa: BLE001 - ONNX Runtime refuses a batch the graph fixes to 1
                joined = None
            if joined is not None and all(np.ndim(o) and len(o) == len(feeds) for o in joined):
                self.batched = True
                return [[o[i:i + 1] for o in joined] for i in range(len(feeds))]
            self.batched = False
        return [self(feed) for feed in feeds]


class StudentRunner:
    """Runs the student on feeds of one sample each: concatenated into one batch when the graph
    takes a batch (checked once on two held-out feeds against one-by-one runs), else one by one
    with the gradients summed (a graph exported with a fixed batch of 1)."""

    def __init__(self, module, device: str, probe: list[dict]):
        self.module, self.device = module, device
        self.batched = len(probe) == 2 and self._batches(probe)

    def _tensors(self, feed: dict) -> list:
        import torch

        return [torch.as_tensor(np.asarray(feed[n])).to(self.device) for n in self.module.input_names]

    def _outputs(self, inputs: list) -> list:
        out = self.module(*inputs)
        return list(out) if isinstance(out, tuple) else [out]

    def _batches(self, probe: list[dict]) -> bool:
        import torch

        with torch.no_grad():
            try:
                joined = self._outputs(self._join(probe))
            except Exception:  # noqa: BLE001 - a fixed batch of 1 (a Reshape to [1, ...]) fails here
                return False
            alone = [self._outputs(self._tensors(f)) for f in probe]
        for i, out in enumerate(joined):
            parts = torch.cat([a[i] for a in alone]) if alone[0][i].ndim else None
            if parts is None or out.shape != parts.shape or not torch.allclose(out, parts, rtol=1e-3, atol=1e-4):
                return False
        return True

    def _join(self, feeds: list[dict]) -> list:
        import torch

        return [torch.cat(parts) for parts in zip(*(self._tensors(f) for f in feeds))]

    def outputs(self, feed: dict) -> list:
        return self._outputs(self._tensors(feed))

    def torch_feed(self, feed: dict) -> dict:
        import torch

        return {k: torch.as_tensor(np.asarray(v)) for k, v in feed.items()}

    def backward(self, feeds: list[dict], targets: list[list[np.ndarray]], losses, temperature: float) -> float:
        """Accumulate the gradient of the mean loss over `feeds`; returns the loss."""
        import torch

        def tensors(arrays):
            return [torch.as_tensor(a).to(self.device) for a in arrays]

        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.device == "cuda" else contextlib.nullcontext()
        if self.batched:
            joined_targets = [np.concatenate(parts) for parts in zip(*targets)]
            joined_feed = {k: torch.as_tensor(np.concatenate([f[k] for f in feeds])) for k in feeds[0]}
            with amp:
                loss = distillation_loss(losses, self._outputs(self._join(feeds)), tensors(joined_targets),
                                         joined_feed, temperature)
            loss.backward()
            return float(loss.detach())
        total = 0.0
        for feed, target in zip(feeds, targets):
            with amp:
                loss = distillation_loss(losses, self._outputs(self._tensors(feed)), tensors(target),
                                         {k: torch.as_tensor(v) for k, v in feed.items()}, temperature) / len(feeds)
            loss.backward()
            total += float(loss.detach())
        return total
