"""torchvision zoo through both torch exporters: groups are found, `--ratio 0.3` gives a valid
model, the oracle holds, and an empty plan is bit-identical. `make test` runs a representative
subset (every group checked alone too); `pytest -m zoo` runs every classification model
(`bench/zoo_table.py` runs the same check and writes the table in BENCHMARKS.md)."""
import pytest

from models import torchvision_zoo as zoo
from models.zoo_check import check_zoo_model, failures

EXPORTERS = ("dynamo", "torchscript")


ZOO_REPORT: list[dict] = []  # printed at the end of the run by conftest.pytest_terminal_summary


def report(result):
    ZOO_REPORT.append(result)


# alexnet's every-group-alone check is the slowest of the subset (about 45 s per exporter): one
# exporter here, both in the full sweep (-m zoo). `make test` checks every subset model through
# TorchScript, and resnet18, squeezenet1_1 (residual Add, Concat) and alexnet through dynamo; the
# subset's other dynamo runs (15 to 50 s each) are marked zoo: -m zoo runs them, every group alone
# as here, beside the full sweep below.
FAST_DYNAMO = ("resnet18", "squeezenet1_1", "alexnet")
SUBSET_RUNS = [pytest.param(name, exporter,
                            marks=[] if exporter == "torchscript" or name in FAST_DYNAMO else [pytest.mark.zoo])
               for name in zoo.SUBSET for exporter in EXPORTERS if (name, exporter) != ("alexnet", "torchscript")]


@pytest.mark.parametrize("name,exporter", SUBSET_RUNS)
def test_zoo_subset(name, exporter):
    result = check_zoo_model(name, exporter, per_group=True)
    report(result)
    assert len(result["errors"]) == result["prunable"] + 1  # every group alone, and all together
    assert not failures(result)


@pytest.mark.zoo
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", zoo.classification_names())
def test_zoo_full(name, exporter):
    result = check_zoo_model(name, exporter)
    report(result)
    assert not failures(result)
