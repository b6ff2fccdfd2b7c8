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
    monkeypatch.setattr(generation, "_cached_writer", lambda *args: None)  # and no KV cache
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


def test_kv_cache_copy_gives_the_full_graphs_logits_step_by_step(llama):
    """The cached copy fed one token at a time (positions counting, empty cache first) returns, at
    every step, the logits the plain graph gives for that position of the whole text."""
    from spa.runtime.examples import spec_of
    from spa.statistics.kv_cache import with_kv_cache

    ids_name, logits_name, vocab = generation.next_token_logits(llama)
    cached = with_kv_cache(llama, ids_name, logits_name)
    assert cached is not None and len(cached.past) == 2 * sum(n.op_type == "Softmax" for n in llama.graph)
    text = np.random.default_rng(4).integers(0, vocab, (3, 7))
    specs = [spec_of(v) for v in llama.graph.inputs if v.name != ids_name]
    feed = {ids_name: text, **{s.name: generation.examples.fill_one(s, [3, 7], None) for s in specs}}
    full = session(llama).run([logits_name], feed)[0]
    step_session, cache = session(cached.model), cached.empty_cache(3)
    for t in range(7):
        step = {ids_name: text[:, t:t + 1], **cache}
        step.update({s.name: generation.examples.fill_one(s, [3, t + 1], None)[:, -1:] for s in specs})
        logits, *present = step_session.run([logits_name, *cached.present], step)
        np.testing.assert_allclose(logits[:, 0], full[:, t], rtol=1e-4, atol=1e-4)
        cache = dict(zip((name for name, _, _ in cached.past), present))


def test_text_with_kv_cache_equals_text_without(llama, monkeypatch):
    ids_name = generation.next_token_logits(llama)[0]
    cached = [f[ids_name] for f in generation.generated_feeds(llama, 5, seed=7, length=10, batch=3)]
    monkeypatch.setattr(generation, "_cached_writer", lambda *args: None)
    plain = [f[ids_name] for f in generation.generated_feeds(llama, 5, seed=7, length=10, batch=3)]
    assert len(cached) == 5 and all(np.array_equal(a, b) for a, b in zip(cached, plain))


def test_a_cached_copy_that_disagrees_is_dropped(llama, monkeypatch):
    """A copy that loses the first layer's keys and values between steps writes other logits than the whole
    prefix gives: the first batch's check catches it, and the text is the plain writer's."""
    ids_name = generation.next_token_logits(llama)[0]
    plain_writer, real_init = generation._PlainWriter, generation._CachedWriter.__init__
    used = []

    def forgetful(self, *args):
        real_init(self, *args)
        real = self.session

        class Session:
            def run(self_, names, feed):
                outputs = real.run(names, feed)
                if feed[ids_name].shape[1] == 1:  # a step: keep only the newest key and value of layer 0
                    outputs[1], outputs[2] = outputs[1][..., -1:], outputs[2][..., -1:, :]
                return outputs
        self.session = Session()

    monkeypatch.setattr(generation._CachedWriter, "__init__", forgetful)
    monkeypatch.setattr(generation, "_PlainWriter", lambda *args: used.append(1) or plain_writer(*args))
    text = [f[ids_name] for f in generation.generated_feeds(llama, 4, seed=2, length=8, batch=4)]
    monkeypatch.setattr(generation, "_cached_writer", lambda *args: None)
    plain = [f[ids_name] for f in generation.generated_feeds(llama, 4, seed=2, length=8, batch=4)]
    assert used and all(np.array_equal(a, b) for a, b in zip(text, plain))


def test_no_kv_cache_without_a_position_input(llama):
    """Positions counted inside the graph would restart at 0 on every one-token step."""
    from spa.runtime.validate import copy_model
    from spa.statistics.kv_cache import with_kv_cache

    model = copy_model(llama)
    ids_name, logits_name, _ = generation.next_token_logits(model)
    for v in model.graph.inputs:
        if "position" in v.name:
            v.name = "offsets"
    assert with_kv_cache(model, ids_name, logits_name) is None


def test_moments_watched_while_writing_equal_a_second_run_of_the_text(llama):
    """The KV-cache writer hands every sink input of every position over as it writes (one more
    step for each last token): the moments equal those of the whole text run through the model,
    and the text is the one written without a watcher."""
    analysis = analyze(llama)
    sinks = {name: sp.sink for name, sp in compensable_sinks(llama, analysis.prunable_groups()).items()}
    assert hessian.Watcher.watching(llama, sinks)
    watcher = hessian.Watcher(sinks)
    feeds = list(generation.generated_feeds(llama, 7, seed=4, length=9, batch=4, observer=watcher))
    assert watcher.complete
    plain = list(generation.generated_feeds(llama, 7, seed=4, length=9, batch=4))
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(feeds, plain) for k in a)
    assert all(m.rows == 7 * 9 for m in watcher.moments.values())  # every position once
    watched, run = watcher.result(), hessian.collect(llama, sinks, feeds)
    assert watched.keys() == run.keys()
    for name in run:
        np.testing.assert_allclose(watched[name], run[name], rtol=1e-4, atol=1e-6)


def test_a_watcher_is_reset_when_the_cached_copy_is_given_up(llama, monkeypatch):
    analysis = analyze(llama)
    sinks = {name: sp.sink for name, sp in compensable_sinks(llama, analysis.prunable_groups()).items()}
    watcher = hessian.Watcher(sinks)
    monkeypatch.setattr(generation._CachedWriter, "_agrees", lambda self, prefix, logits: False)
    feeds = list(generation.generated_feeds(llama, 5, seed=4, length=8, batch=4, observer=watcher))
    assert len(feeds) == 5 and not watcher.complete
    assert all(m is None for m in watcher.moments.values())
