"""torchvision zoo through both torch exporters: groups are found, `--ratio 0.3` gives a valid
model, the oracle holds, and an empty plan is bit-identical. `make test` runs a representative
subset; `pytest -m zoo` runs every classification model (results in BENCHMARKS.md)."""
import numpy as np
import pytest

from models import torchvision_zoo as zoo
from spa.analysis import analyze
from spa.oracle import check_groups
from spa.pipeline import load_canonical, prune
from spa.allocate import Budget
from spa.validate import random_inputs, run

EXPORTERS = ("dynamo", "torchscript")
TOL = 1e-4


def check_zoo_model(name: str, exporter: str, per_group: bool) -> dict:
    path = zoo.cached_export(name, exporter)
    model = load_canonical(path)
    analysis = analyze(model)
    prunable = analysis.prunable_groups()
    refused = sorted({g.reason for g in analysis.groups if not g.prunable})
    errors = check_groups(model, analysis, ratio=0.3, per_group=per_group)
    result = prune(path, Budget(ratio=0.3))  # validates (checker, ORT run, same I/O)
    nothing = prune(path, Budget(ratio=0.0))  # the whole pipeline with a plan that removes nothing
    feeds = random_inputs(model)
    identical = all(np.array_equal(a, b) for a, b in zip(run(model, feeds), run(nothing.model, feeds)))
    return {"groups": len(analysis.groups), "prunable": len(prunable), "refused": refused,
            "errors": errors, "params_after": result.after["params"] / result.before["params"],
            "identical": identical and nothing.plan.is_empty()}


def assert_zoo_result(name, exporter, res):
    print(f"\n{name} [{exporter}]: {res['prunable']}/{res['groups']} groups prunable; "
          f"refusals: {res['refused']}")
    assert res["prunable"] > 0
    bad = {k: v for k, v in res["errors"].items() if not v <= TOL}
    assert not bad, f"oracle fails for {name} [{exporter}]: {bad}"
    assert res["params_after"] < 1.0
    assert res["identical"]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", zoo.SUBSET)
def test_zoo_subset(name, exporter):
    assert_zoo_result(name, exporter, check_zoo_model(name, exporter, per_group=True))


@pytest.mark.zoo
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", zoo.classification_names())
def test_zoo_full(name, exporter):
    assert_zoo_result(name, exporter, check_zoo_model(name, exporter, per_group=False))
