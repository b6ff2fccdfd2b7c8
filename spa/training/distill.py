"""Knowledge distillation of a pruned ONNX model toward the dense one it was pruned from.

The student is the pruned graph as a trainable torch module (spa.runtime.to_torch); the teacher is
the dense graph under ONNX Runtime. Each step draws `batch` training feeds (spa.training.data or
data_free), runs the teacher, and moves the student's weights down the distillation loss
(spa.training.losses) with AdamW: linear warm-up over the first 3% of the budget, then a cosine
decay to a tenth of the rate, the budget being steps or minutes, whichever ends first. Every tenth
of the budget the student is scored on the held-out feeds (top-1 / next-token agreement, else
1 − relative error: what `--min-fidelity` compares); the best-scoring weights — the pruned input's own
included, so fine-tuning never hands back something worse on held-out data — are written into the
same pruned graph: nodes, names, I/O and metadata unchanged.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from spa.core.errors import InputError, UsageError
from spa.flow.fidelity import Fidelity, compare_runs, measure_fidelity
from spa.training.data import DistillData
from spa.training.losses import LM_LOGITS, distillation_loss, output_losses
from spa.training.runners import StudentRunner, Teacher

WARMUP_SHARE, FINAL_LR_SHARE, EVALUATIONS = 0.03, 0.1, 10
#: Default learning rates: a language model's weights move less than a vision model's.
LR_LANGUAGE_MODEL, LR_OTHER = 2e-5, 1e-4


@dataclass
class FinetuneConfig:
    steps: int | None = None           # optimizer steps (None: as many as max_minutes allows)
    max_minutes: float | None = None   # wall-clock budget (None with steps None: DEFAULT_MINUTES)
    batch: int = 8
    lr: float | None = None            # None: LR_LANGUAGE_MODEL or LR_OTHER
    temperature: float = 2.0
    device: str = "cpu"
    seed: int = 0
    checkpoint: str | None = None      # file for resumable state (spa.training.checkpoint)
    checkpoint_every_s: float = 120.0
    resume: bool = False


DEFAULT_MINUTES = 5.0


@dataclass
class FinetuneResult:
    model: ir.Model                    # the student with the best weights written in
    before: Fidelity                   # the pruned input on the held-out feeds
    after: Fidelity                    # what is written, on the same feeds (ONNX Runtime)
    steps: int
    best_step: int
    seconds: float
    samples_seen: int
    data: str
    held_out: str
    history: list[dict] = field(default_factory=list)   # {step, seconds, loss, score} per evaluation

    def as_dict(self) -> dict:
        return {"before": self.before.as_dict(), "after": self.after.as_dict(), "steps": self.steps,
                "best_step": self.best_step, "seconds": self.seconds, "samples_seen": self.samples_seen,
                "data": self.data, "held_out": self.held_out, "history": self.history}


def finetune(student: ir.Model, teacher: ir.Model, data: DistillData, config: FinetuneConfig) -> FinetuneResult:
    """Distil `teacher` into `student` (same inputs and outputs) and return the student with the
    best held-out weights written into its initializers (`student` itself is updated)."""
    import torch

    from spa.core.progress import Meter
    from spa.runtime.to_torch import to_torch
    from spa.training import checkpoint

    check_interface(student, teacher)
    device = resolve_device(config.device)
    teacher_run = Teacher(teacher, device)
    names = [v.name for v in teacher.graph.outputs]
    held_targets = [teacher_run(feed) for feed in data.held_out]
    losses = output_losses(teacher, held_targets[0])
    lr = config.lr or (LR_LANGUAGE_MODEL if any(x.kind == LM_LOGITS for x in losses) else LR_OTHER)
    module = to_torch(student).to(device)
    trainable = trainable_parameters(module, student)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    run = StudentRunner(module, device, data.held_out[:2])
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    held_tensors = [[torch.as_tensor(a).to(device) for a in target] for target in held_targets]

    def evaluate() -> tuple[Fidelity, float]:
        """Held-out fidelity, and the held-out distillation loss (which breaks ties in agreement)."""
        outs, loss = [], 0.0
        with torch.no_grad():
            for feed, target in zip(data.held_out, held_tensors):
                student_outs = run.outputs(feed)
                loss += float(distillation_loss(losses, student_outs, target, run.torch_feed(feed),
                                                config.temperature))
                outs.append([o.detach().float().cpu().numpy() for o in student_outs])
        fidelity = compare_runs(teacher, names, zip(data.held_out, held_targets, outs), data.held_out_description)
        return fidelity, loss / len(data.held_out)

    state = checkpoint.State(step=0, seconds=0.0, samples=0, best_score=[-math.inf], best_step=0, history=[])
    before, before_loss = evaluate()
    state.best_score, best_weights = rank(before, before_loss), snapshot(module)
    if config.resume and config.checkpoint:
        state, best_weights = checkpoint.load(config.checkpoint, module, optimizer, rng, state, best_weights)
    budget_s = (config.max_minutes if config.max_minutes is not None
                else (None if config.steps else DEFAULT_MINUTES))
    budget_s = None if budget_s is None else budget_s * 60.0
    eval_every_s = budget_s / EVALUATIONS if budget_s else math.inf
    eval_every_steps = max(1, config.steps // EVALUATIONS) if config.steps else None
    start = time.monotonic() - state.seconds
    last_eval = last_save = time.monotonic()
    recent = []

    def progress_share() -> float:
        shares = [state.step / config.steps if config.steps else 0.0,
                  (time.monotonic() - start) / budget_s if budget_s else 0.0]
        return min(1.0, max(shares))

    with Meter("fine-tuning", total=config.steps, unit="step") as meter:
        while progress_share() < 1.0:
            for group in optimizer.param_groups:
                group["lr"] = lr * schedule(progress_share())
            feeds = data.sample(rng, config.batch)
            targets = teacher_run.many(feeds)
            optimizer.zero_grad(set_to_none=True)
            loss = run.backward(feeds, targets, losses, config.temperature)
            if not math.isfinite(loss):
                raise InputError(f"fine-tuning diverged (loss {loss}) at step {state.step + 1}; try a smaller --lr")
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            state.step += 1
            state.samples += len(feeds)
            recent = (recent + [loss])[-20:]
            elapsed = time.monotonic() - start
            meter.update(1, f"loss {np.mean(recent):.4g}, {state.samples / max(elapsed, 1e-9):.1f} samples/s")
            due = (eval_every_steps and state.step % eval_every_steps == 0) or \
                time.monotonic() - last_eval >= eval_every_s or progress_share() >= 1.0
            if due:
                last_eval = time.monotonic()
                fidelity, held_loss = evaluate()
                score = rank(fidelity, held_loss)
                state.history.append({"step": state.step, "seconds": round(elapsed, 1),
                                      "loss": float(np.mean(recent)), "held_out_loss": held_loss,
                                      "score": fidelity.score()})
                if score > state.best_score:
                    state.best_score, state.best_step, best_weights = score, state.step, snapshot(module)
            if config.checkpoint and (time.monotonic() - last_save >= config.checkpoint_every_s
                                      or progress_share() >= 1.0):
                state.seconds = time.monotonic() - start
                checkpoint.save(config.checkpoint, module, optimizer, rng, state, best_weights)
                last_save = time.monotonic()
    seconds = time.monotonic() - start
    module.load_state_dict(best_weights)
    write_weights(student, module)
    after = measure_fidelity(teacher, student, feeds=data.held_out, inputs=data.held_out_description)
    return FinetuneResult(student, before, after, state.step, state.best_step, seconds, state.samples,
                          data.description, data.held_out_description, state.history)


def rank(fidelity: Fidelity, held_loss: float) -> list[float]:
    """What picks the best step (compared as a sequence): held-out fidelity, ties (agreement moves in
    steps of 1/rows) broken by the lower held-out distillation loss."""
    return [fidelity.score(), -held_loss if math.isfinite(held_loss) else -math.inf]


def schedule(share: float) -> float:
    """The learning-rate factor at this share of the budget: warm-up, then cosine to FINAL_LR_SHARE."""
    if share < WARMUP_SHARE:
        return max(share / WARMUP_SHARE, 0.01)
    t = (share - WARMUP_SHARE) / (1 - WARMUP_SHARE)
    return FINAL_LR_SHARE + (1 - FINAL_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def check_interface(student: ir.Model, teacher: ir.Model) -> None:
    """The student must read and write what the teacher does (a model pruned from it does)."""
    def names(values):
        return [v.name for v in values]

    s_in = [v for v in names(student.graph.inputs) if v not in student.graph.initializers]
    t_in = [v for v in names(teacher.graph.inputs) if v not in teacher.graph.initializers]
    if sorted(s_in) != sorted(t_in) or names(student.graph.outputs) != names(teacher.graph.outputs):
        raise InputError(f"the teacher's inputs/outputs ({t_in} → {names(teacher.graph.outputs)}) differ from the "
                         f"pruned model's ({s_in} → {names(student.graph.outputs)}); --teacher must be the model "
                         "it was pruned from")


def resolve_device(device: str) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device here")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device takes cpu, cuda or auto, not '{device}'")
    return device


def trainable_parameters(module, student: ir.Model) -> list:
    """The parameters that are initializers of the student (weights lifted from Constant nodes
    would have nowhere to go) and floating point."""
    params = []
    for attr, onnx_name in module.onnx_names.items():
        tensor = getattr(module, attr)
        if not tensor.requires_grad:
            continue
        if onnx_name in student.graph.initializers:
            params.append(tensor)
        else:
            tensor.requires_grad_(False)
    if not params:
        raise InputError("the pruned model has no floating-point weights to fine-tune")
    return params


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def write_weights(model: ir.Model, module) -> None:
    """The module's current values into the model's initializers, in their own dtypes."""
    for onnx_name, array in module.onnx_state().items():
        value = model.graph.initializers.get(onnx_name)
        if value is None or value.const_value is None:
            continue
        dtype = value.const_value.dtype.numpy()
        value.const_value = ir.Tensor(np.ascontiguousarray(array.astype(dtype, copy=False)), name=onnx_name)
