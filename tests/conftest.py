import os

import numpy as np
import pytest

# `--round-to auto` follows this CPU's NCHWc block (8 with AVX2, 16 with AVX-512): the suite plans for
# one block on every machine, and the CLI runs it starts inherit the setting
os.environ["SPA_CPU_BLOCK"] = "16"

from spa.allocation.plan import PruningPlan
from spa.analysis.groups import analyze
from spa.flow.oracle import oracle, oracle_plans
from spa.flow.pipeline import apply_plan
from spa.graph.canon import canonicalize
from spa.runtime.validate import copy_model


def prune_and_check(model, ratio: float = 0.3, tol: float = 1e-4, per_group: bool = True, canon: bool = True):
    """Canonicalize, analyze, and check the oracle for each prunable group alone and all together.

    Returns the analysis; asserts the sliced model validates and equals the masked model."""
    if canon:
        model = canonicalize(copy_model(model))
    analysis = analyze(model)
    for label, plan in oracle_plans(analysis, ratio, per_group):
        result = oracle(model, analysis, plan)
        assert result.holds(tol), f"oracle failed for group {label}: {result.error:.3e}"
        apply_plan(model, analysis, plan)  # slices and validates
    return analysis


def random_plan(analysis, fraction=0.3, seed=0) -> PruningPlan:
    rng = np.random.default_rng(seed)
    plan = PruningPlan()
    for g in analysis.prunable_groups():
        n = int(fraction * g.width)
        plan.removed[g.key] = sorted(rng.choice(g.width, n, replace=False).tolist())
        plan.widths[g.key] = g.width
    return plan


@pytest.fixture
def check():
    return prune_and_check


def pytest_terminal_summary(terminalreporter):
    """List every zoo model's groups and refusals (with reasons) at the end of the run."""
    import re
    from collections import Counter

    import sys

    # the zoo module as pytest imported it (its import name depends on pytest's import mode)
    ZOO_REPORT = next((m.ZOO_REPORT for name, m in list(sys.modules.items())
                       if name.split(".")[-1] == "test_zoo" and hasattr(m, "ZOO_REPORT")), None)
    if not ZOO_REPORT:
        return
    terminalreporter.section("zoo: prunable groups and refusals")
    for r in ZOO_REPORT:
        kinds = Counter()
        for reason, n in r["refusals"].items():
            kinds[re.sub(r"'[^']*'", "…", reason)] += n
        refused = "; ".join(f"{n}× {k}" for k, n in kinds.most_common())
        terminalreporter.write_line(f"{r['name']} [{r['exporter']}]: {r['prunable']}/{r['groups']} prunable; "
                                    f"refused: {refused}")
