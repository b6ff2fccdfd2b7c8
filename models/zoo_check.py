"""End-to-end check of one zoo model, shared by tests/flow/test_zoo.py and bench/zoo_table.py:
export → canonicalize → groups → oracle at ratio 0.3 → `prune --ratio 0.3` validated → a plan
that removes nothing is bit-identical."""
from __future__ import annotations

from collections import Counter

import numpy as np

from models import torchvision_zoo as zoo
from spa.allocation.allocate import Budget
from spa.analysis.groups import analyze
from spa.flow.oracle import check_groups
from spa.flow.pipeline import load_canonical, prune
from spa.runtime.validate import random_inputs, run

TOL = 1e-4


def check_zoo_model(name: str, exporter: str, per_group: bool = False, cache_dir=None) -> dict:
    path = zoo.cached_export(name, exporter, cache_dir=cache_dir)
    model = load_canonical(path)
    analysis = analyze(model)
    prunable = analysis.prunable_groups()
    refusals = Counter(g.reason for g in analysis.groups if not g.prunable)
    result = {"name": name, "exporter": exporter, "groups": len(analysis.groups), "prunable": len(prunable),
              "refusals": dict(refusals), "errors": {}, "params_after": 1.0, "macs_after": 1.0, "identical": None}
    if not prunable:
        return result
    result["errors"] = check_groups(model, analysis, ratio=0.3, per_group=per_group)
    pruned = prune(path, Budget(ratio=0.3))  # validates: checker, ONNX Runtime run, same I/O
    result["params_after"] = pruned.after["params"] / pruned.before["params"]
    result["macs_after"] = pruned.after["macs"] / max(pruned.before["macs"], 1)
    nothing = prune(path, Budget(ratio=0.0))  # the whole pipeline with a plan that removes nothing
    feeds = random_inputs(model)
    result["identical"] = nothing.plan.is_empty() and all(
        np.array_equal(a, b) for a, b in zip(run(model, feeds), run(nothing.model, feeds)))
    return result


def failures(result: dict) -> list[str]:
    """What is wrong with a check result (empty when it passes)."""
    problems = []
    if result["prunable"] == 0:
        problems.append("no prunable group")
    bad = {k: v for k, v in result["errors"].items() if not v <= TOL}
    if bad:
        problems.append(f"oracle fails: {bad}")
    if result["prunable"] and not result["params_after"] < 1.0:
        problems.append("nothing was removed")
    if result["prunable"] and not result["identical"]:
        problems.append("empty plan is not bit-identical")
    return problems
