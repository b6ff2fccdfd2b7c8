"""The language model's own text for statistics (generated with a last-position copy of the graph) and
the batched statistics pass: both must give what the plain, one-at-a-time computation gives."""
import numpy as np
import pytest

from models import hf_zoo
from spa.analysis.groups import analyze
from spa.flow.pipeline import load_canonical
from spa.runtime.validate import session
from spa.statistics import generation, hessian
from spa.statistics.sinks import compensable_sinks


@pytest.fixture(scope="module")
def llama():
    return load_canonical(hf_zoo.cached_export("llama", "optimum"))


def test_last_position_copy_gives_the_last_logits_and_the_same_text(llama, monkeypatch):
    ids_name, logits_name, vocab = generation.next_token_logits(llama)
    short = generation.last_position_logits(llama, logits_name)
    assert short is not llama
    feed = {ids_name: np.random.default_rng(1).integers(0, vocab, (3, 9))}
    feed.update({v.name: generation.synthetic_input(v, [3, 9], np.random.default_rng(2)) for v in llama.graph.inputs
                 if v.name != ids_name})
    full = session(llama).run([logits_name], feed)[0]
    last = session(short).run([logits_name], feed)[0]
    assert last.shape == (3, 1, vocab)
    np.testing.assert_allclose(last, full[:, -1:], rtol=1e-5, atol=1e-5)
    text = [f[ids_name] for f in generation.generated_feeds(llama, 6, seed=3, length=12, batch=4)]
    monkeypatch.setattr(generation, "last_position_logits", lambda model, name: model)  # the full graph
    plain = [f[ids_name] for f in generation.generated_feeds(llama, 6, seed=3, length=12, batch=4)]
    assert len(text) == 6 and all(np.array_equal(a, b) for a, b in zip(text, plain))


def test_batched_statistics_equal_one_sample_at_a_time(llama, monkeypatch):
    analysis = analyze(llama)
    sinks = {name: sp.sink for name, sp in compensable_sinks(llama, analysis.prunable_groups()).items()}
    assert sinks
    feeds = list(generation.generated_feeds(llama, 20, seed=0, length=10, batch=20))
    ids_name = generation.next_token_logits(llama)[0]
    short = {name: a[:, :6] for name, a in feeds[0].items()}  # another length: a run of its own
    feeds = feeds[:7] + [short] + feeds[7:]
    assert len(list(hessian.stacked(feeds, 16))) == 3  # 7 | 1 | 13 samples
    batched = hessian.collect(llama, sinks, feeds)
    monkeypatch.setattr(hessian, "PROBE_BATCH", 1)
    single = hessian.collect(llama, sinks, feeds)
    assert batched.keys() == single.keys() and ids_name
    for name in single:
        np.testing.assert_allclose(batched[name], single[name], rtol=1e-4, atol=1e-6)
