"""The statistics pass in stages (spa.statistics.staged): sinks split under a memory budget, each stage
a cut of the model fed by what earlier stages stored, must give the moments one probe of the whole
model gives; every node runs in one stage only; moments past the budget come back from a file."""
import numpy as np
import pytest

from models import hf_zoo
from spa.analysis.groups import analyze
from spa.flow.pipeline import load_canonical
from spa.statistics import generation, hessian, staged
from spa.statistics.sinks import compensable_sinks, sink_weight

from tests.graphs import GraphBuilder


@pytest.fixture(scope="module")
def llama():
    return load_canonical(hf_zoo.cached_export("llama", "optimum"))


def _sinks(model):
    return {name: sp.sink for name, sp in compensable_sinks(model, analyze(model).prunable_groups()).items()}


def _same(whole, parts):
    assert sorted(whole) == sorted(parts)
    for name in whole:
        np.testing.assert_allclose(np.asarray(parts[name]), whole[name], rtol=1e-5, atol=1e-7)


def test_a_decoder_measured_in_stages_gives_the_moments_of_one_pass(llama, monkeypatch):
    sinks = _sinks(llama)
    feeds = list(generation.generated_feeds(llama, 12, seed=0, length=9, batch=12))
    whole = hessian.collect(llama, sinks, feeds)
    smallest = min(staged.moment_bytes(s.matrix().shape[1]) for s in sinks.values())
    runs = staged.split_sinks(llama, sinks, smallest)  # one sink a stage
    assert len(runs) == len(sinks) > 2
    stages = staged.plan_stages(llama, runs)
    ran = [id(n) for s in stages for n in s.nodes]
    assert len(ran) == len(set(ran))  # no node runs twice
    assert any(s.stored_inputs for s in stages[1:])  # later stages start from stored values
    monkeypatch.setattr(staged, "HELD_BUDGET", smallest)  # one H̃ in memory, the rest in the file
    parts = hessian.collect(llama, sinks, feeds, budget=smallest)
    assert isinstance(parts, staged.SpilledArrays) and parts.spilled_bytes > 0
    assert any(isinstance(parts[name], np.memmap) for name in parts)
    _same(whole, parts)


def residual_cnn():
    """conv → relu → conv → relu → conv, with the first relu added again after the last conv: a
    value read two stages after the one that makes it."""
    b = GraphBuilder(seed=2)
    x = b.input("x", [2, 3, 10, 10])
    first = b.op("Relu", [b.conv(x, 3, 6)])
    second = b.op("Relu", [b.conv(first, 6, 6)])
    third = b.conv(second, 6, 6)
    out = b.conv(b.op("Relu", [b.op("Add", [third, first])]), 6, 4)
    b.output(out)
    return b.model()


def test_a_cnn_measured_in_stages_gives_the_moments_of_one_pass():
    model = residual_cnn()
    convs = [n for n in model.graph if n.op_type == "Conv"]
    sinks = {n.name: sink_weight(n, 0) for n in convs[1:]}
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 3, 10, 10)).astype(np.float32)} for i in range(3)]
    whole = hessian.collect(model, sinks, feeds)
    smallest = min(staged.moment_bytes(s.matrix().shape[1]) for s in sinks.values())
    assert len(staged.split_sinks(model, sinks, smallest)) == 3
    _same(whole, hessian.collect(model, sinks, feeds, budget=smallest))


def test_spilled_arrays_come_back_as_written_and_read_only():
    store = staged.SpilledArrays(budget=300)  # the first array (280 bytes) stays in memory
    arrays = {f"a{i}": np.random.default_rng(i).standard_normal((7, 5)) for i in range(3)}
    for name, array in arrays.items():
        store[name] = array
    assert list(store) == list(arrays) and store.spilled_bytes == 2 * 7 * 5 * 8
    for name, array in arrays.items():
        np.testing.assert_array_equal(store[name], array)
    with pytest.raises(ValueError):
        store["a2"][0, 0] = 1.0
