"""Inputs a statistics pass makes without data: a language model's own text (sampled token by token,
as in LLM-QAT), otherwise example inputs. Split from spa.statistics.hessian, which re-exports these."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.runtime import examples
from spa.runtime.examples import embedding_rows
from spa.runtime.validate import session


#: Tokens per sequence of a language model's own text for statistics. SmolLM2-135M at -20% params,
#: obspa, the same 8,192 tokens: 64 × 128 sequences perplexity 201, 32 × 256 189-190 (two texts),
#: 16 × 512 201 (measured writing without a KV cache, where the cost grew with the square of the length).
OWN_TEXT_LENGTH = 32
#: Positions of a made-up sequence input (a text encoder's ids) where the model leaves the length open.
MADE_UP_SEQUENCE = 64


def synthetic_feeds(model: ir.Model, samples: int, seed: int = 0, sequence: int | None = None, observer=None):
    """Inputs made without data: a language model's own text of `sequence` tokens (default
    OWN_TEXT_LENGTH; see generated_feeds); otherwise example inputs (spa.runtime.examples: 1/f-noise
    images, ids inside the embedding table, masks of ones, positions counting up) in the shapes the
    original ran on, with `sequence` (default MADE_UP_SEQUENCE) for a sequence the default size served. `observer`:
    see generated_feeds (made-up inputs never call it)."""
    found = next_token_logits(model)
    if found is not None and can_generate(model, found[0]):
        yield from generated_feeds(model, samples, seed, sequence or OWN_TEXT_LENGTH, observer=observer)
        return
    sequence = sequence or MADE_UP_SEQUENCE
    rng = np.random.default_rng(seed)
    specs = examples.input_specs(model)
    shapes = examples.shapes(model, sequence=sequence)
    for _ in range(samples):
        yield examples.fill(specs, shapes, rng)


def synthetic_input(value: ir.Value, dims: list[int], rng: np.random.Generator) -> np.ndarray:
    return examples.fill_one(examples.spec_of(value), dims, rng)


def next_token_logits(model: ir.Model) -> tuple[str, str, int] | None:
    """(ids input, logits output, vocabulary) when the model reads token ids and writes a
    [batch, sequence, vocabulary] output over the same table size: a language model."""
    for v in model.graph.inputs:
        vocab = embedding_rows(v) if v.dtype is not None and v.dtype.is_integer() else None
        if vocab is None or "type" in v.name.lower() or "position" in v.name.lower() or len(v.shape or []) != 2:
            continue
        for out in model.graph.outputs:
            if out.shape is not None and len(out.shape) == 3 and out.shape[-1] == vocab:
                return v.name, out.name, vocab
    return None


def can_generate(model: ir.Model, ids_name: str) -> bool:
    """Whether text can be generated with the model as it is: its ids input takes any batch and
    sequence length (an export with fixed dims takes example inputs of those dims instead)."""
    ids = next(v for v in model.graph.inputs if v.name == ids_name)
    return ids.shape is not None and not any(isinstance(d, int) for d in ids.shape)


#: Sequences written together: SmolLM2-135M's 256 × 32 tokens through the KV-cache copy took 40.5/43.4 s
#: at 128 against 47.7/51.1 s at 32 (alternated, session included).
TEXT_BATCH = 128


def generated_feeds(model: ir.Model, samples: int, seed: int = 0, length: int = 64, top_k: int = 40,
                    batch: int = TEXT_BATCH, observer=None):
    """Text the language model writes itself (data-free, as in LLM-QAT): each sequence starts at a
    random token and continues by sampling the model's next-token distribution (top-k, temperature
    1). Real text's statistics, not uniform noise tokens, without any data. Written with a KV-cache
    copy of the graph (spa.statistics.kv_cache) when one can be made and gives the plain graph's
    logits on the first batch; otherwise by running the whole prefix again for every token.

    `observer` (e.g. spa.statistics.hessian.Watcher: `.names`, `.add(values)`, `.reset()`,
    `.complete`): the cached copy also returns the values named in `.names` at every step, plus one
    step for each sequence's last token, and hands them to `.add` — every position of the text once,
    what a second run of the whole text would read. `.complete` is set once all the text was written
    that way; `.reset()` is called when the copy is given up after the first batch."""
    yield from OwnText(model, seed, top_k, batch, observer).feeds(samples, length)


class OwnText:
    """The writer behind generated_feeds, kept for what else its session can tell: `logits(feed)`
    gives the dense logits of a whole written sequence without a second session of the model."""

    def __init__(self, model: ir.Model, seed: int = 0, top_k: int = 40, batch: int = TEXT_BATCH, observer=None):
        self.model, self.seed, self.top_k, self.batch, self.observer = model, seed, top_k, batch, observer
        self.ids_name, self.logits_name, self.vocab = next_token_logits(model)
        self.ids_dtype = next(v for v in model.graph.inputs if v.name == self.ids_name).dtype.numpy()
        self.others = [examples.spec_of(v) for v in model.graph.inputs
                       if v.name != self.ids_name and v.name not in model.graph.initializers]
        self.writer = None  # the _CachedWriter once it wrote a checked batch

    def feeds(self, samples: int, length: int):
        """One feed per sequence ({ids: [1, length], other inputs}), in order."""
        ids_name, vocab, ids_dtype, observer = self.ids_name, self.vocab, self.ids_dtype, self.observer
        rng = np.random.default_rng(self.seed)
        writer, first = _cached_writer(self.model, ids_name, self.logits_name, self.others, observer), None
        if writer is not None:
            first = writer.write(rng.integers(0, vocab, (min(self.batch, samples), 1)).astype(ids_dtype), length,
                                 rng, self.top_k)
            if first is None:  # the cached copy disagrees with the graph: write without it
                writer, rng = None, np.random.default_rng(self.seed)
                if observer is not None:
                    observer.reset()
        self.writer = writer
        observed = writer is not None and observer is not None
        writer = writer or _PlainWriter(self.model, ids_name, self.logits_name, self.others)
        fill = np.random.default_rng(self.seed + 1)
        done = 0
        while done < samples:
            count = min(self.batch, samples - done)
            ids = first if done == 0 and first is not None else \
                writer.write(rng.integers(0, vocab, (count, 1)).astype(ids_dtype), length, rng, self.top_k)
            for row in ids:
                feed = {ids_name: row[None]}
                feed.update({spec.name: examples.fill_one(spec, [1, length], fill) for spec in self.others})
                yield feed
            done += count
        if observed:
            observer.complete = True

    def logits(self, feed: dict) -> np.ndarray | None:
        """The dense logits of a written feed's whole sequence, from the cached copy with an empty
        cache (what the plain graph computes; checked on the first batch) — None when the text was
        written without the cached copy."""
        if self.writer is None:
            return None
        batch = len(feed[self.ids_name])
        cached = self.writer.cached  # the KV-cache copy (spa.statistics.kv_cache)
        return self.writer.session.run([cached.logits_name], {**feed, **cached.empty_cache(batch)})[0]


def _sample(logits: np.ndarray, rng: np.random.Generator, top_k: int) -> np.ndarray:
    """One token per row from the top-k of `logits` ([rows, vocabulary]) at temperature 1."""
    logits = logits.astype(np.float64)
    k = min(top_k, logits.shape[1] - 1)
    top = np.argpartition(-logits, k, axis=1)[:, :k]
    chosen = np.take_along_axis(logits, top, 1)
    p = np.exp(chosen - chosen.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return np.asarray([top[i, rng.choice(k, p=p[i])] for i in range(len(logits))])


class _PlainWriter:
    """Every token runs the whole prefix through a copy with last-position logits."""

    def __init__(self, model, ids_name, logits_name, others):
        self.session = session(last_position_logits(model, logits_name))
        self.ids_name, self.logits_name, self.others = ids_name, logits_name, others

    def write(self, ids, length, rng, top_k):
        for _ in range(length - 1):
            feed = {self.ids_name: ids}
            feed.update({spec.name: examples.fill_one(spec, list(ids.shape), rng) for spec in self.others})
            logits = self.session.run([self.logits_name], feed)[0][:, -1]
            ids = np.concatenate([ids, _sample(logits, rng, top_k).astype(ids.dtype)[:, None]], axis=1)
        return ids


def _cached_writer(model, ids_name, logits_name, others, observer=None):
    from spa.statistics.kv_cache import with_kv_cache

    try:
        cached = with_kv_cache(model, ids_name, logits_name)
        if cached is not None and observer is not None:
            _add_outputs(cached.model, observer.names)
        return None if cached is None else _CachedWriter(cached, others, observer)
    except Exception:  # an unusual graph: the plain writer always works
        return None


def _add_outputs(model: ir.Model, names) -> None:
    values = {v.name: v for n in model.graph for v in n.outputs}
    values.update({v.name: v for v in model.graph.inputs})
    have = {v.name for v in model.graph.outputs}
    for name in names:
        if name not in have:
            model.graph.outputs.append(values[name])


class _CachedWriter:
    """One token per step through the KV-cache copy; the first batch is checked against the whole
    prefix at once (the last step's logits for two rows), and a disagreement makes `write` return None."""

    CHECK_ROWS = 2

    def __init__(self, cached, others, observer=None):
        self.cached, self.others, self.observer = cached, others, observer
        self.session = session(cached.model)
        self.checked = False
        self.watched = [] if observer is None else list(dict.fromkeys(observer.names))

    def write(self, ids, length, rng, top_k):
        cache = self.cached.empty_cache(len(ids))
        names = [self.cached.logits_name, *self.cached.present, *self.watched]
        logits = None
        for step in range(length - 1):
            feed = {self.cached.ids_name: ids[:, -1:], **cache}
            feed.update({spec.name: examples.fill_one(spec, [len(ids), step + 1], rng)[:, -1:]
                         for spec in self.others})
            try:
                logits, *outputs = self.session.run(names, feed)
            except Exception:
                if self.checked:
                    raise
                return None  # the copy does not run: the caller writes without it
            present, watched = outputs[:len(self.cached.present)], outputs[len(self.cached.present):]
            self._observe(watched)
            cache = dict(zip((name for name, _, _ in self.cached.past), present))
            logits = logits[:, -1]
            ids = np.concatenate([ids, _sample(logits, rng, top_k).astype(ids.dtype)[:, None]], axis=1)
        if self.watched:  # the last token is sampled, never fed: one more step for what it reads
            feed = {self.cached.ids_name: ids[:, -1:], **cache}
            spare = np.random.default_rng(0)  # not the text's generator: the text stays what it is without a watcher
            feed.update({spec.name: examples.fill_one(spec, [len(ids), length], spare)[:, -1:] for spec in self.others})
            self._observe(self.session.run(self.watched, feed))
        if not self.checked:
            if not self._agrees(ids[:self.CHECK_ROWS, :-1], logits[:self.CHECK_ROWS]):
                return None
            self.checked = True
        return ids

    def _observe(self, arrays: list[np.ndarray]) -> None:
        if self.watched:
            self.observer.add(dict(zip(self.watched, arrays)))

    def _agrees(self, prefix: np.ndarray, logits: np.ndarray) -> bool:
        """Whether the last step's logits equal those of the whole prefix run at once through the
        same copy with an empty cache, which computes what the plain graph computes (no second
        session of the model)."""
        from spa.runtime.validate import relative_error

        feed = {self.cached.ids_name: prefix, **self.cached.empty_cache(len(prefix))}
        feed.update({spec.name: examples.fill_one(spec, list(prefix.shape), np.random.default_rng(0))
                     for spec in self.others})
        want = self.session.run([self.cached.logits_name], feed)[0][:, -1]
        return relative_error([want], [logits]) <= 1e-3


def last_position_logits(model: ir.Model, logits_name: str) -> ir.Model:
    """A copy whose logits output holds only the last position ([batch, 1, vocabulary]): sampling
    reads nothing else, and the vocabulary projection of every earlier position is a fifth of a small
    language model's work and a [batch, sequence, vocabulary] output copy per token. The model
    itself when its logits do not come from a projection of a [batch, sequence, hidden] input."""
    from spa.runtime.validate import copy_model

    short = copy_model(model)
    logits = next(v for v in short.graph.outputs if v.name == logits_name)
    head = logits.producer()
    if head is None or head.op_type != "MatMul" or head.inputs[0] is None or head.inputs[0].shape is None \
            or len(head.inputs[0].shape) != 3:
        return model
    hidden = head.inputs[0]
    starts = _constant(short, "spa_last_start", [-1])
    ends = _constant(short, "spa_last_end", [np.iinfo(np.int64).max])
    axes = _constant(short, "spa_last_axis", [1])
    sliced = ir.Node("", "Slice", [hidden, starts, ends, axes], num_outputs=1, name="spa_last_position")
    sliced.outputs[0].name = "spa_last_position_hidden"
    short.graph.insert_before(head, sliced)
    head.replace_input_with(0, sliced.outputs[0])
    logits.shape = None  # [batch, 1, vocabulary] now
    return short


def _constant(model: ir.Model, name: str, values: list[int]) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(np.asarray(values, np.int64), name=name))
    model.graph.register_initializer(value)
    return value
