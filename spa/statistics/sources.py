"""Statistics sources: where the sinks' input moments H̃ = E[x̃ x̃ᵀ] come from (`spa prune --statistics`).

One registry owns each source's name, what it needs and what it yields; the pipeline, the API and
the CLI take their choices from `statistics_source_names()`. A source turns a StatisticsRequest
into Statistics. Sources that run input feeds through the model ("yields_feeds") also supply the
feeds, which the gradient criteria and sequential compensation run again."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import onnx_ir as ir

from spa.core.errors import UnsupportedError, UsageError
from spa.core.plugins import import_submodules
from spa.core.progress import progress
from spa.statistics import hessian as hess
from spa.statistics.generation import MADE_UP_SEQUENCE, OWN_TEXT_LENGTH
from spa.statistics.sinks import SinkPlan


@dataclass
class StatisticsRequest:
    """What a source is asked to measure: the moments of `sinks`' inputs in `model` (canonicalized).
    `bn_model` is the same model canonicalized without BatchNorm fusion, for the sources that read
    BatchNorm statistics; `keep_feeds`: return the input feeds too."""
    model: ir.Model
    sinks: dict[str, SinkPlan]
    samples: int = 32
    seed: int = 0
    calib: str | None = None
    bn_model: ir.Model | None = None
    keep_feeds: bool = False
    observer: object = None  # handed what a text writer computes anyway (hessian.Watcher)


@dataclass
class Statistics:
    """What a statistics pass measured: the compensable sinks, their moments, the source they came
    from ("auto" resolved, e.g. "bn+synthetic"), and the input feeds it ran when asked to keep them."""
    sinks: dict
    hs: dict
    source: str
    feeds: list | None = None


@dataclass(frozen=True)
class StatisticsSource:
    name: str
    description: str
    measure: Callable[[StatisticsRequest], Statistics]
    needs_data: bool = False        # calibration inputs (--calib)
    yields_feeds: bool = False      # runs input feeds, which it can hand back
    reads_batchnorm: bool = False   # wants the request's bn_model
    feeds: Callable[[StatisticsRequest], object] | None = None


_SOURCES: dict[str, StatisticsSource] = {}


def register_statistics_source(source: StatisticsSource) -> StatisticsSource:
    _SOURCES[source.name] = source
    return source


def _discover() -> None:
    """Import every module of spa.statistics once, so that a source defined in its own module
    (`register_statistics_source(...)` at import) needs no other edit."""
    import_submodules(__package__)


def get_statistics_source(name: str) -> StatisticsSource:
    _discover()
    found = _SOURCES.get(name)
    if found is None:
        raise UsageError(f"unknown statistics source '{name}' (choose from {', '.join(statistics_source_names())})")
    return found


def statistics_sources() -> list[StatisticsSource]:
    _discover()
    return list(_SOURCES.values())


def statistics_source_names() -> tuple[str, ...]:
    return tuple(s.name for s in statistics_sources())


def feed_source_names() -> tuple[str, ...]:
    """The concrete sources that run input feeds ("auto" resolves to one of them)."""
    return tuple(s.name for s in statistics_sources() if s.yields_feeds and s.name != "auto")


# ---------------------------------------------------------------- the sources

def statistics_feeds(model: ir.Model, source: str, samples: int = 32, calib: str | None = None, seed: int = 0,
                     bn_model: ir.Model | None = None, observer=None) -> list[dict]:
    """The input feeds a statistics pass runs (a list: sequential mode runs them more than once).
    `observer`: see spa.statistics.generation.generated_feeds."""
    found = get_statistics_source(source)
    if found.feeds is None:
        raise ValueError(f"the statistics source '{source}' runs no input feeds")
    request = StatisticsRequest(model, {}, samples, seed, calib, bn_model, observer=observer)
    return list(progress(found.feeds(request), "collecting statistics", total=samples))  # at most `samples` feeds


def measured_on(name: str) -> Callable[[StatisticsRequest], Statistics]:
    """The `measure` of a source that runs its feeds (StatisticsSource.feeds) through the model:
    the sinks' input moments on them."""
    return lambda request: _measured_on_feeds(name, request)


def _measured_on_feeds(name: str, request: StatisticsRequest) -> Statistics:
    if not request.sinks and not request.keep_feeds:  # e.g. every consumer sits inside an If/Loop body
        return Statistics(request.sinks, {}, name)
    sinks = _weights(request.sinks)
    # a language model's own text is written through a KV-cache copy that computes every sink input anyway
    watcher = hess.Watcher(sinks) if hess.Watcher.watching(request.model, sinks) else None
    feeds = statistics_feeds(request.model, name, request.samples, request.calib, request.seed, request.bn_model,
                             watcher)
    if watcher is not None and watcher.complete:
        hs = watcher.result()
    else:
        hs = hess.collect(request.model, sinks, feeds) if sinks else {}
    return Statistics(request.sinks, hs, name, feeds if request.keep_feeds else None)


def _weights(sinks: dict[str, SinkPlan]) -> dict:
    return {name: sp.sink for name, sp in sinks.items()}


def _synthetic_feeds(request: StatisticsRequest):
    """BatchNorm-statistics-matched images where the model has BatchNorm; else made-up inputs (a
    language model's own generated text)."""
    if request.bn_model is not None:
        from spa.statistics import synthesis

        try:
            matched = synthesis.bn_matched_feeds(request.bn_model, request.samples, request.seed)
        except UnsupportedError:  # an op the torch copy lacks: plain made-up inputs under ONNX Runtime
            matched = None
        if matched is not None:  # None: not an image model it can match (see bn_matched_feeds)
            return matched
    return hess.synthetic_feeds(request.model, request.samples, request.seed, observer=request.observer)


def _analytic(kind: str):
    def measure(request: StatisticsRequest) -> Statistics:
        if not request.sinks:
            return Statistics(request.sinks, {}, kind)
        from spa.statistics import analytic

        moments_model = request.bn_model if request.bn_model is not None else request.model
        return Statistics(request.sinks, analytic.hessians(moments_model, request.model, _weights(request.sinks), kind),
                          kind)
    return measure


def measure_auto(request: StatisticsRequest) -> Statistics:
    """The calibration-free default (bench/fidelity.py found it best for each kind of model): the
    BatchNorm statistics for every sink they reach — unless input feeds are wanted — and synthetic
    inputs' moments for the rest."""
    if request.bn_model is not None and not request.keep_feeds:
        hs = _analytic("bn")(request).hs
        rest = {name: sp for name, sp in request.sinks.items() if name not in hs}
        if not rest:
            return Statistics(request.sinks, hs, "bn")
        if hs:
            hs |= _measured_on_feeds("synthetic", replace(request, sinks=rest, calib=None)).hs
            return Statistics(request.sinks, hs, "bn+synthetic")
    return _measured_on_feeds("synthetic", request)


register_statistics_source(StatisticsSource(
    "auto", "bn for the consumers BatchNorm statistics reach, synthetic for the rest", measure_auto,
    yields_feeds=True, reads_batchnorm=True, feeds=_synthetic_feeds))
register_statistics_source(StatisticsSource(
    "synthetic", "made inputs: a language model's own text, BatchNorm-matched images",
    measured_on("synthetic"), yields_feeds=True, reads_batchnorm=True,
    feeds=_synthetic_feeds))
register_statistics_source(StatisticsSource(
    "bn", "analytic moments from the BatchNorm statistics", _analytic("bn"), reads_batchnorm=True))
register_statistics_source(StatisticsSource(
    "weights", "the producer weights as a proxy", _analytic("weights")))
register_statistics_source(StatisticsSource(
    "data", "calibration inputs (--calib) run through the model",
    measured_on("data"), needs_data=True, yields_feeds=True,
    feeds=lambda request: hess.data_feeds(request.model, request.calib, request.samples)))


# ---------------------------------------------------------------- how many samples

#: A statistics pass over images reads about this many pixels (32 images of 320²): each pixel is a
#: row of every convolution's moments, so a larger image needs fewer of them (8 at 640²).
IMAGE_PIXELS = 32 * 320 * 320


#: Rows (token positions) per column of the widest consumer that made-up token ids give a text
#: encoder's statistics: uniform ids make noisier moments than a language model's own text (5 rows
#: a column there). all-MiniLM-L6-v2 at -30% params, 5 seeds, Lee Pearson min (mean): 0.590 (0.617)
#: with 32 sequences of 64 tokens, 0.600 (0.628) with 64, 0.627 (0.645) with 128, 0.642 (0.653) with
#: 256 — 10 rows a column (bench/minilm_seeds.py).
MADE_UP_ROWS_PER_COLUMN = 10


def default_samples(model: ir.Model, sinks: dict[str, SinkPlan]) -> int:
    """How many inputs a statistics pass runs when the caller does not say: 32, or fewer large
    images (see IMAGE_PIXELS; at least 8, for variety). Token inputs give one row per position, so
    as many sequences as give enough rows for the widest consumer, in 32s, at most 512: a language
    model's own text (OWN_TEXT_LENGTH a sequence) about five rows per column (256 of 32 tokens for a
    1536-wide FFN; measured on SmolLM2-135M with 64-token text: perplexity 229 with 32 sequences,
    139 with 128), a text encoder's made-up ids MADE_UP_ROWS_PER_COLUMN."""
    widest = max((sp.sink.matrix().shape[1] for sp in sinks.values()), default=0)
    if widest and hess.next_token_logits(model) is not None:
        return _sequences_for(5 * widest, OWN_TEXT_LENGTH)
    pixels = _largest_image_pixels(model)
    if pixels is not None:
        return int(min(32, max(8, -(-IMAGE_PIXELS // pixels))))
    tokens = _made_up_tokens(model) if widest else None
    return 32 if tokens is None else max(32, _sequences_for(MADE_UP_ROWS_PER_COLUMN * widest, tokens))


def _sequences_for(rows: int, tokens: int) -> int:
    """Sequences of `tokens` positions for at least `rows` rows, in 32s, at most 512."""
    return int(min(512, 32 * -(-rows // (tokens * 32))))


def _made_up_tokens(model: ir.Model) -> int | None:
    """Positions of one made-up sample's token-id input (a text encoder's), None without one."""
    from spa.runtime import examples

    shapes = examples.shapes(model, sequence=MADE_UP_SEQUENCE)
    positions = [int(np.prod(shapes[spec.name][1:])) for spec in examples.input_specs(model)
                 if spec.role == "ids" and shapes.get(spec.name) is not None]
    return max(positions) if positions else None


def _largest_image_pixels(model: ir.Model) -> int | None:
    """Height × width of the largest image input, in the shapes examples are made in."""
    from spa.runtime import examples

    shapes = examples.shapes(model)
    sizes = []
    for spec in examples.input_specs(model):
        dims = shapes.get(spec.name)
        if spec.role == "image-nchw" and dims is not None:
            sizes.append(int(dims[2]) * int(dims[3]))
        elif spec.role == "image-nhwc" and dims is not None:
            sizes.append(int(dims[1]) * int(dims[2]))
    return max(sizes) if sizes else None
