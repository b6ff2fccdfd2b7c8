"""The Python API, the same functions the `spa` command calls.

    import spa
    result = spa.prune("model.onnx", ratio=0.3, criterion="l2")
    spa.save(result, "small.onnx")          # the plan and report travel in the model's metadata
    spa.inspect("model.onnx")               # dict: opset, I/O, ops, params, MACs, groups summary
    spa.groups("model.onnx").rows           # one dict per coupled channel group
    spa.pruning_report("small.onnx", original="model.onnx")  # dict; spa.write_report(it, "r.html")
    spa.diff("model.onnx", "small.onnx")    # spa.report.compare.DiffResult: structural deltas, output comparison
    tuned = spa.finetune(result, "model.onnx", data="photos/", max_minutes=5)  # distil the dense model back in

Models may be paths (an .onnx file or a Hugging Face folder holding model.onnx), onnx.ModelProto,
onnx_ir.Model or onnx-graphsurgeon Graphs; inputs are never modified. Failures, bad arguments
included, raise spa.SpaError (a subclass) with a one-line message."""
from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir

from spa.allocation.allocate import Budget
from spa.allocation.plan import PruningPlan
from spa.analysis.groups import Analysis
from spa.core.errors import InputError, SpaError, UsageError
from spa.flow.pipeline import PruneResult
from spa.flow.record import PLAN_KEY, REPORT_FORMAT, REPORT_KEY, SUMMARY_KEY, annotate, prune_report  # noqa: F401


def prune(model, ratio: float | Budget = 0.3, *, criterion="l2", scope: str | None = None,
          target: str = "channels", budget: Budget | None = None, plan: PruningPlan | str | os.PathLike | None = None,
          compensation=None, verify: bool = False, seed: int = 0, normalizer: str | None = None,
          reduction: str | None = None, p: float = 2.0, input_shapes: dict | None = None,
          fuse_batchnorm: bool = True) -> PruneResult:
    """Prune `model` (a file, a Hugging Face folder or an in-memory model) and return the pruned
    model, its plan and a report.

    ratio: share of `target` ("channels", "params" or "macs") to remove, in [0, 1); a full
    spa.Budget (global ranking, round_to, min_width, protect …) may be given as `budget` instead.
    criterion: a name from spa.importance.registry.criterion_names() — weight criteria ("l1", "l2",
    "lp" with p, "random", "lamp", "fpgm", "bn_scale"), statistics criteria ("obspa", "wanda",
    "flap") and gradient criteria ("taylor", "snip", "grasp", "crop") — or a registered Criterion.
    scope: which groups to prune ("heads", "ffn", "hidden" or "all"; None: heads and
    FFN/convolution channels — the hidden width is opt-in because norm statistics change).
    plan: a PruningPlan, or the path of one saved as JSON (`spa prune --plan-out`), to apply instead
    of ranking and allocating.
    compensation: a spa.flow.compensation.Compensation (see compensation_for) for sink updates.
    verify: also check the oracle (sliced == masked); see result.oracle."""
    from spa.flow import pipeline
    from spa.flow.compensation import Compensation
    from spa.importance.registry import Criterion

    if isinstance(ratio, Budget):  # spa.prune(model, spa.Budget(...)), the older call form
        budget = ratio
    elif budget is None:
        budget = Budget(ratio=_number("ratio", ratio), target=target)
    if not isinstance(budget, Budget):
        raise UsageError(f"budget must be a spa.Budget, got {_shown(budget)}")
    _check_budget(budget)
    if compensation is not None and not isinstance(compensation, Compensation):
        raise UsageError("compensation must be a spa.flow.compensation.Compensation (see compensation_for), "
                         f"got {_shown(compensation)}")
    if not isinstance(criterion, (str, Criterion)):
        raise UsageError(f"criterion must be a criterion's name or a Criterion, got {_shown(criterion)}")
    seed = _number("seed", seed, "in [0, 2**32)", lambda v: 0 <= v < 2**32, integer=True)
    p = _number("p", p, "a finite number above 0", lambda v: v > 0)
    return pipeline.prune(_source(model), budget, criterion=criterion, plan=_plan(plan),
                          input_shapes=_input_shapes(input_shapes), fuse_batchnorm=fuse_batchnorm, verify=verify,
                          seed=seed, normalizer=normalizer, reduction=reduction, p=p, compensation=compensation,
                          scope=_scope(scope))


def _scope(scope):
    if scope is not None and not isinstance(scope, str):
        raise UsageError(f"scope must be 'heads', 'ffn', 'hidden', 'all' or None, got {_shown(scope)}")
    return scope


def _source(model):
    """A path as the file it stands for (a Hugging Face folder's model file); other forms as given."""
    from spa.graph.load import model_path

    return model_path(model) if isinstance(model, (str, os.PathLike)) else model


def _plan(plan) -> PruningPlan | None:
    """A plan given as a PruningPlan, the path of a saved plan (JSON) or its parsed JSON (a dict)."""
    if plan is None or isinstance(plan, PruningPlan):
        return plan
    if isinstance(plan, (str, os.PathLike)):
        return PruningPlan.load(plan)
    if isinstance(plan, dict):
        return PruningPlan.from_json(plan)
    raise UsageError(f"plan must be a PruningPlan, the path of a saved plan or its JSON, got {_shown(plan)}")


def _check_budget(budget: Budget) -> None:
    _number("ratio", budget.ratio)
    for name in ("round_to", "min_width"):
        _number(f"budget.{name}", getattr(budget, name), "at least 1", lambda v: v >= 1, integer=True)
    _number("budget.max_group_ratio", budget.max_group_ratio, "in (0, 1]", lambda v: 0 < v <= 1)
    if not isinstance(budget.target, str):
        raise UsageError(f"target must be a string, got {_shown(budget.target)}")
    if isinstance(budget.protect, str) or not all(isinstance(n, str) for n in _iterable(budget.protect, "protect")):
        raise UsageError(f"budget.protect must be a list of names, got {_shown(budget.protect)}")
    budget.check()


def _input_shapes(shapes) -> dict | None:
    """input_shapes as {input name: [positive dims]}; anything else is a UsageError."""
    if shapes is None:
        return None
    if not isinstance(shapes, Mapping):
        raise UsageError(f"input_shapes must be a dict {{input name: shape}}, got {_shown(shapes)}")
    checked = {}
    for name, dims in shapes.items():
        if not isinstance(name, str) or isinstance(dims, (str, bytes)) or not all(
                isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in _iterable(dims, name)):
            raise UsageError(f"input_shapes maps input names to lists of positive ints, got {name!r}: {_shown(dims)}")
        checked[name] = [int(d) for d in dims]
    return checked or None


def _iterable(value, what) -> list:
    try:
        return list(value)
    except TypeError:
        raise UsageError(f"{what} must be a list, got {_shown(value)}") from None


def _number(name: str, value, rule: str = "finite", test=lambda v: True, *, integer: bool = False,
            optional: bool = False):
    """`value` as a finite float (an int with `integer`) that passes `test`, else a UsageError."""
    if value is None and optional:
        return None
    if not isinstance(value, numbers.Integral if integer else numbers.Real) or isinstance(value, bool):
        raise UsageError(f"{name} must be {'an integer' if integer else 'a number'}, got {_shown(value)}")
    value = int(value) if integer else float(value)
    if not ((integer or math.isfinite(value)) and test(value)):
        raise UsageError(f"{name} must be {rule}, got {value}")
    return value


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def finetune(pruned, teacher, *, data=None, steps: int | None = None, max_minutes: float | None = None,
             batch: int = 8, lr: float | None = None, temperature: float = 2.0, device: str = "cpu", seed: int = 0,
             sequence: int = 128, pool: int | None = None, tokenizer=None, mean=None, std=None,
             checkpoint: str | None = None, resume: bool = False):
    """Fine-tune `pruned` (a PruneResult, path or model) toward `teacher` (the model it was pruned
    from) by distillation; returns a spa.training.distill.FinetuneResult whose `.model` holds the
    best held-out weights (spa.save writes it). `data`: a folder of images, a text file or folder
    (with `tokenizer`, a transformers tokenizer), an .npz of input arrays, or None for inputs made
    from the teacher. Without steps or max_minutes it trains for 5 minutes."""
    from spa.graph import io
    from spa.training.data import from_path
    from spa.training.data_free import data_free
    from spa.graph.model_copy import copy_model
    from spa.training.distill import FinetuneConfig
    from spa.training.distill import finetune as distil

    def model_of(obj, result_field):
        obj = getattr(obj, result_field) if isinstance(obj, PruneResult) else obj
        return copy_model(obj) if isinstance(obj, ir.Model) else io.load(obj)  # the caller's model stays as it was

    positive = ("at least 1", lambda v: v >= 1)
    steps, batch, sequence, pool = (_number(name, value, *positive, integer=True, optional=name in ("steps", "pool"))
                                    for name, value in (("steps", steps), ("batch", batch), ("sequence", sequence),
                                                        ("pool", pool)))
    max_minutes, lr, temperature = (_number(name, value, "above 0", lambda v: v > 0, optional=name != "temperature")
                                    for name, value in (("max_minutes", max_minutes), ("lr", lr),
                                                        ("temperature", temperature)))
    seed = _number("seed", seed, "in [0, 2**32)", lambda v: 0 <= v < 2**32, integer=True)
    if data is not None and not isinstance(data, (str, os.PathLike)):
        raise UsageError(f"data must be a path (a folder of images, text, an .npz) or None, got {_shown(data)}")
    student, dense = model_of(pruned, "model"), model_of(teacher, "original")
    source = (data_free(dense, seed=seed, sequence=sequence, pool=pool) if data is None else
              from_path(dense, data, tokenizer=tokenizer, sequence=sequence, mean=mean, std=std))
    config = FinetuneConfig(steps=steps, max_minutes=max_minutes, batch=batch, lr=lr, temperature=temperature,
                            device=device, seed=seed, checkpoint=checkpoint, resume=resume)
    return distil(student, dense, source, config)


def save(obj: PruneResult | ir.Model | Any, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write a PruneResult's or FinetuneResult's model (with its annotations) or any model form,
    atomically."""
    from spa.graph import io

    from spa.flow.kv_past import as_read

    _check_path(path, "path")
    model = obj.model if isinstance(getattr(obj, "model", None), ir.Model) else io.load(obj)
    return io.save(as_read(model), path, external_data=external_data)  # a decoder read with a KV cache keeps it


def inspect(model, *, input_shapes: dict | None = None, fuse_batchnorm: bool = True,
            scope: str | None = None) -> dict:
    """Opset, producer, inputs/outputs, op histogram, parameters, MACs and a groups summary."""
    from spa.report.tables import inspect_summary

    loaded, analysis = _analyzed(model, input_shapes, fuse_batchnorm, scope)
    return inspect_summary(loaded, analysis)


@dataclass
class Groups:
    """The coupled channel groups of a model: `rows` (what `spa groups --json` prints) and the
    full analysis (channel spaces, couplings) for drawing."""
    rows: list[dict]
    analysis: Analysis = field(repr=False)

    def to_dot(self, plan: PruningPlan | None = None) -> str:
        from spa.report.dot import to_dot

        return to_dot(self.analysis, plan)


def groups(model, *, input_shapes: dict | None = None, fuse_batchnorm: bool = True,
           scope: str | None = None) -> Groups:
    """One row per coupled group (kind, width, members, sinks, constraints, why not prunable);
    `scope` as in `prune`."""
    from spa.report.tables import group_rows

    _, analysis = _analyzed(model, input_shapes, fuse_batchnorm, scope)
    return Groups(group_rows(analysis), analysis)


def _analyzed(model, input_shapes, fuse_batchnorm, scope=None):
    from spa.flow.pipeline import analyze_scope, load_canonical

    loaded = load_canonical(_source(model), input_shapes=_input_shapes(input_shapes), fuse_batchnorm=fuse_batchnorm)
    return loaded, analyze_scope(loaded, _scope(scope))


def pruning_report(pruned, *, original=None, measure: bool = False, samples: int = 4, rounds: int = 50,
           seed: int = 0, input_shapes: dict | None = None) -> dict:
    """The report of a pruned model: what `spa prune` stored in its metadata, with fresh statistics
    of the model as it is. `original` adds per-layer before→after widths (matched by weight name
    after the same canonicalization); `measure` (needs `original`) adds output fidelity on random
    inputs and ONNX Runtime CPU latency of both."""
    from spa.graph import io
    from spa.report.tables import layer_rows, model_stats

    if measure and original is None:
        raise SpaError("measuring fidelity and latency needs the original model (--original)")
    samples, rounds = (_number(name, value, "at least 1", lambda v: v >= 1, integer=True)
                       for name, value in (("samples", samples), ("rounds", rounds)))
    seed, input_shapes = _number("seed", seed, integer=True), _input_shapes(input_shapes)
    model = io.load(pruned)
    stored = _stored(model)
    rep = dict(stored) if stored else {"spa_report": REPORT_FORMAT, "before": None, "layers": [], "groups": [],
                                       "scores": None, "fidelity": None, "latency": None}
    rep["model"] = _label(pruned)
    rep["stored"] = bool(stored)
    how = rep.get("canonical") or {}
    shapes = input_shapes or how.get("input_shapes")  # MACs at the sizes the original is read at
    rep["after"] = model_stats(model, shapes)
    plan_text = model.metadata_props.get(PLAN_KEY)
    try:
        rep["plan"] = json.loads(plan_text) if plan_text else None
    except (ValueError, RecursionError):
        raise InputError(f"the model's '{PLAN_KEY}' metadata is not JSON") from None
    if original is not None:
        from spa.flow.pipeline import load_canonical

        before = load_canonical(original, input_shapes=shapes,
                                fuse_batchnorm=how.get("fuse_batchnorm", True))
        rep["original"] = _label(original)
        rep["before"] = model_stats(before, shapes)
        rep["layers"] = layer_rows(before, model, shapes)
        if measure:
            rep["fidelity"], rep["latency"] = _measure(before, model, samples, rounds, seed)
    return rep


def _stored(model: ir.Model) -> dict | None:
    text = model.metadata_props.get(REPORT_KEY)
    if not text:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(f"the model's '{REPORT_KEY}' metadata is not JSON") from None
    if not isinstance(data, dict) or data.get("spa_report") != REPORT_FORMAT:
        raise InputError(f"the model's '{REPORT_KEY}' metadata is not an SPA report of format {REPORT_FORMAT}")
    return data


def _measure(before: ir.Model, after: ir.Model, samples: int, rounds: int, seed: int) -> tuple[dict, dict]:
    from dataclasses import asdict

    from spa.runtime.benchmark import median_latency_ms
    from spa.report.compare import compare_outputs, feeds_for

    feeds = feeds_for(before, after, None, samples, seed)
    outputs = compare_outputs(before, after, feeds)
    before_ms, after_ms = median_latency_ms([before, after], feeds[0], rounds)
    fidelity = {"samples": samples, "inputs": "random normal", "outputs": [asdict(o) for o in outputs]}
    latency = {"before_ms": before_ms, "after_ms": after_ms, "speedup": before_ms / after_ms if after_ms else None,
               "rounds": rounds, "runtime": "ONNX Runtime CPU"}
    return fidelity, latency


def write_report(rep: dict, path: str | os.PathLike, *, inputs=()) -> list[Path]:
    """Write `rep` as HTML (.html) or Markdown (.md) with its PNG plots beside it; returns the files.
    No file is written over one of `inputs` (paths; compared by inode)."""
    from spa.report.html import write

    if not isinstance(rep, dict):
        raise UsageError(f"write_report takes the dict spa.pruning_report returns, got {_shown(rep)}")
    _check_path(path, "path")
    return write(rep, Path(path), inputs=[_check_path(f, "inputs") for f in _iterable(inputs, "inputs")])


def _check_path(path, what: str):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise UsageError(f"{what} must be a file path, got {_shown(path)}")
    return path


def _label(model) -> str:
    from spa.report.compare import model_label

    return model_label(model)
