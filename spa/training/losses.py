"""The distillation loss, by what an output is (decided once from the dense model's outputs):

- next-token logits of a language model ([batch, sequence, vocabulary], the ids → logits pair of
  spa.statistics.hessian.next_token_logits): KL(teacher ‖ student) of the softened next-token
  distributions at every position the attention mask counts, × T² (Hinton et al.);
- class logits ([batch, classes], classes > 1): the same KL per row;
- any other float output (embeddings, feature maps, boxes): MSE divided by the teacher output's
  mean square (scale-free) plus 1 − cosine similarity along the last axis;
- integer and boolean outputs: not differentiable, left out (at least one output must remain).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.core.errors import UnsupportedError

LM_LOGITS, CLASS_LOGITS, FEATURES = "next-token logits", "class logits", "features"


@dataclass
class OutputLoss:
    name: str
    index: int         # position among the model's outputs
    kind: str
    mask_input: str | None = None   # a language model's attention mask input (positions that count)


def output_losses(teacher: ir.Model, outputs: list[np.ndarray]) -> list[OutputLoss]:
    """What each output of `teacher` is distilled with, from one run's outputs."""
    from spa.runtime import examples
    from spa.statistics.hessian import next_token_logits

    lm = next_token_logits(teacher)
    mask = next((s.name for s in examples.input_specs(teacher) if s.role == "mask"), None)
    losses = []
    for i, (value, array) in enumerate(zip(teacher.graph.outputs, outputs)):
        if array.dtype.kind != "f":
            continue
        if lm is not None and value.name == lm[1]:
            losses.append(OutputLoss(value.name, i, LM_LOGITS, mask))
        elif array.ndim == 2 and array.shape[1] > 1 and len(outputs) == 1:
            losses.append(OutputLoss(value.name, i, CLASS_LOGITS))
        else:
            losses.append(OutputLoss(value.name, i, FEATURES))
    if not losses:
        raise UnsupportedError("nothing to distil: the model has no floating-point output")
    if lm is not None and any(x.kind == LM_LOGITS for x in losses):  # a language model learns its logits only
        losses = [x for x in losses if x.kind == LM_LOGITS]
    return losses


def distillation_loss(losses: list[OutputLoss], student: list, teacher: list, feed: dict, temperature: float):
    """The summed loss of one sample (or batch): student outputs are torch tensors, teacher outputs
    torch tensors on the same device (no gradient)."""
    total = 0.0
    for spec in losses:
        s, t = student[spec.index].float(), teacher[spec.index].float()
        if spec.kind in (LM_LOGITS, CLASS_LOGITS):
            mask = None
            if spec.kind == LM_LOGITS and spec.mask_input in feed:
                mask = feed[spec.mask_input].to(s.device).reshape(s.shape[:-1]) != 0
            total = total + softened_kl(s, t, temperature, mask)
        else:
            total = total + feature_loss(s, t)
    return total


def softened_kl(student, teacher, temperature: float, mask=None):
    """KL(softmax(t/T) ‖ softmax(s/T)) per row, × T², averaged over the rows the mask keeps."""
    import torch

    log_s = torch.log_softmax(student / temperature, -1)
    log_t = torch.log_softmax(teacher / temperature, -1)
    rows = (log_t.exp() * (log_t - log_s)).sum(-1)
    if mask is not None:
        rows = rows[mask]
    return rows.mean() * temperature ** 2


def feature_loss(student, teacher):
    """MSE ÷ the teacher's mean square, + 1 − cosine along the last axis (both scale-free)."""
    import torch

    scale = teacher.pow(2).mean().clamp_min(1e-12)
    mse = (student - teacher).pow(2).mean() / scale
    if teacher.ndim == 0 or teacher.shape[-1] < 2:
        return mse
    cosine = torch.nn.functional.cosine_similarity(student, teacher, dim=-1, eps=1e-8).mean()
    return mse + (1 - cosine)
