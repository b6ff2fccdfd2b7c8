"""End-to-end check of one Hugging Face zoo model, shared by tests/exporters/test_hf.py and
bench/hf_zoo_table.py: export → `--scope all` analysis → oracle on every head, FFN and hidden-width group at
ratio 0.3 → prune `--scope all --ratio 0.3` (validated) with finite outputs → whole heads removed
(every member of a head group keeps the same share, in multiples of the head size, so the GQA
query/key-value ratio holds)."""
from __future__ import annotations

from collections import Counter

import numpy as np

from models import hf_zoo
from spa.allocation.allocate import Budget
from spa.flow.oracle import check_groups
from spa.flow.pipeline import analyze_scope, load_canonical, prune
from spa.runtime.validate import random_inputs, run

TOL = 1e-4
RATIO = 0.3


def check_hf_model(name: str, exporter: str) -> dict:
    folder = hf_zoo.cached_export(name, exporter)
    path = folder / "model.onnx"
    model = load_canonical(path)
    analysis = analyze_scope(model, "all")
    kinds = Counter(g.kind for g in analysis.prunable_groups())
    refusals = Counter(g.reason for g in analysis.groups if not g.prunable)
    result = {"name": name, "exporter": exporter, "groups": len(analysis.groups),
              "prunable": len(analysis.prunable_groups()), "kinds": dict(kinds), "refusals": dict(refusals),
              "oracle": None, "params_after": 1.0, "finite": None, "whole_heads": None}
    if not analysis.prunable_groups():
        return result
    result["oracle"] = check_groups(model, analysis, ratio=RATIO)["all"]  # hidden width too (kept-channel norms)
    pruned = prune(path, Budget(ratio=RATIO), scope="all")  # validates: checker, ONNX Runtime, same I/O
    result["params_after"] = pruned.after["params"] / pruned.before["params"]
    outputs = run(pruned.model, random_inputs(pruned.model))
    result["finite"] = all(np.isfinite(o).all() for o in outputs if np.issubdtype(o.dtype, np.floating))
    result["whole_heads"] = whole_heads(pruned)
    return result


def whole_heads(pruned) -> bool | None:
    """Every weight of a pruned head group keeps the same share of its width, and what it keeps is a
    multiple of the head size (read from the pruned model's initializers)."""
    after = {name: v.const_value.shape for name, v in pruned.model.graph.initializers.items()
             if v.const_value is not None}
    checked = None
    for group in pruned.analysis.groups:
        if group.kind != "heads" or not pruned.plan.removed.get(group.key):
            continue
        size = max(m.dims[1] for m in group.members if m.role == "heads" and len(m.dims) == 2)
        shares = set()
        for m in group.params:
            old = m.dims[0]
            new = after[m.value][m.axes[0]]
            if old % size == 0 and new % size:  # per-head tables (a relative position bias) are narrower
                return False
            shares.add(new * 1_000_000 // old)
        if len(shares) != 1:
            return False
        checked = True
    return checked


def failures(result: dict) -> list[str]:
    problems = []
    if result["prunable"] == 0:
        problems.append("no prunable group")
        return problems
    if result["oracle"] is None or not result["oracle"] <= TOL:
        problems.append(f"oracle error {result['oracle']}")
    if not result["params_after"] < 1.0:
        problems.append("nothing was removed")
    if not result["finite"]:
        problems.append("non-finite outputs")
    if result["whole_heads"] is False:
        problems.append("head groups not cut at whole heads")
    return problems
