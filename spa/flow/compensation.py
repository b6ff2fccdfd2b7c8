"""The compensation stage: which statistics a run measures, and what it does to the sinks with them.

`compensation_for` is the one policy for "does this run need a statistics pass, and which sink
update does it make"; the CLI and the pipeline both call it."""
from __future__ import annotations

from dataclasses import InitVar, dataclass, replace
from pathlib import Path

import onnx_ir as ir

from spa.analysis.groups import Analysis
from spa.core.errors import UsageError
from spa.flow.defaults import AUTO
from spa.importance.registry import Criterion, get_criterion
from spa.statistics.sources import (Statistics, StatisticsRequest, default_samples, feed_source_names,
                                    get_statistics_source)
from spa.statistics.sinks import compensable_sinks

#: The sink updates: re-weight the kept inputs and the bias (OBS), fold the removed means into the
#: bias (FLAP), or leave the sinks alone (statistics only rank).
METHODS = ("obs", "flap", "none")


@dataclass
class Compensation:
    """Sink statistics and what is done with them (see shared/docs/OBSPA.md): where the input
    moments come from (a spa.statistics.sources name), and the sink update (METHODS). `greedy`
    re-picks each group's channels one at a time with H⁻¹ downdates; `sequential` measures each
    sink's moments on the model as compensated so far (feed sources; `stages` > 0 shares one
    statistics pass among that many runs of sinks)."""
    statistics: str = "auto"       # the statistics source (CLI --statistics)
    calib: str | None = None       # .npz file or folder of .npy/.npz, for the "data" source
    samples: int | None = None     # None: spa.statistics.sources.default_samples
    seed: int = 0
    method: str | None = "obs"  # None: the criterion's own (resolve_method)
    greedy: bool = False
    sequential: bool = False
    stages: int | None = None
    cache: str | None = None       # a folder keeping the moments between runs (spa.statistics.cache)
    hessian: InitVar[str | None] = None  # the older keyword for `statistics` (bench/fidelity.py)

    def __post_init__(self, hessian: str | None) -> None:
        if hessian is not None:
            self.statistics = hessian


def compensation_for(criterion: str | Criterion, *, obs: bool = False, greedy: bool = False,
                     sequential: int | None = None, statistics: str = "auto", calib: str | None = None,
                     samples: int | None = None, seed: int = 0, cache: str | None = None) -> Compensation | None:
    """The compensation a run gets: None when neither the criterion nor the caller needs sink
    statistics; else the OBS update where asked for (`obs`, `greedy` or `sequential`, which are all
    OBS), or the criterion's own update ("none" for criteria that only rank by statistics or
    gradients). `sequential`: None (off), 0 (one statistics pass per sink) or a number of stages."""
    asked = obs or greedy or sequential is not None
    if criterion == AUTO:  # the criterion is chosen once the model is loaded: its own update then
        own = None
    else:
        chosen = get_criterion(criterion)
        if not (chosen.needs_statistics or asked):
            return None
        own = chosen.compensation
    return Compensation(statistics, calib, samples, seed, "obs" if asked else own,
                        greedy=greedy, sequential=sequential is not None, stages=sequential or None, cache=cache)


def resolve_method(compensation: Compensation | None, criterion: Criterion) -> Compensation | None:
    """A compensation made before the criterion was known ("auto": method None) gets the chosen
    criterion's own update, or none at all when that criterion needs no statistics."""
    if compensation is None or compensation.method is not None:
        return compensation
    return replace(compensation, method=criterion.compensation) if criterion.needs_statistics else None


def measure(source, original: ir.Model, analysis: Analysis, compensation: Compensation, input_shapes,
            fuse_batchnorm: bool, keep_feeds: bool) -> Statistics:
    """The sinks' input moments from the compensation's statistics source (with the input feeds
    when `keep_feeds`). `source` is the model as given: a source that reads BatchNorm statistics
    gets it canonicalized without fusion where fusion took them out."""
    from spa.flow.pipeline import batchnorm_model

    found = get_statistics_source(compensation.statistics)
    if compensation.sequential and not found.yields_feeds:
        raise UsageError("sequential compensation re-measures the pruned prefix: it needs --statistics "
                         + " or ".join(feed_source_names()))
    if found.needs_data and not compensation.calib:
        raise UsageError(f"--statistics {found.name} needs calibration inputs (--calib FILE.npz|DIR)")
    sinks = compensable_sinks(original, analysis.prunable_groups())
    if compensation.samples is None:
        compensation = replace(compensation, samples=default_samples(original, sinks))
    key = _cache_key(original, compensation, found.name, input_shapes, fuse_batchnorm) \
        if compensation.cache and not keep_feeds else None
    if key is not None:
        from spa.statistics import cache

        hs = cache.load(Path(compensation.cache), key, sorted(sinks))
        if hs is not None:
            return Statistics(sinks, hs, found.name)
    bn_model = batchnorm_model(source, original, input_shapes, fuse_batchnorm) if found.reads_batchnorm else None
    stats = found.measure(StatisticsRequest(original, sinks, compensation.samples, compensation.seed,
                                            compensation.calib, bn_model, keep_feeds))
    if key is not None and set(stats.hs) == set(sinks):
        cache.store(Path(compensation.cache), key, stats.hs)
    return stats


def _cache_key(original: ir.Model, compensation: Compensation, source: str, input_shapes, fuse_batchnorm) -> str | None:
    """The statistics cache's key for this run: None for a model that was not read from files."""
    from spa.graph.external_data import SOURCE_FILES
    from spa.statistics import cache
    from spa.statistics.generation import OWN_TEXT_LENGTH

    files = sorted(original.meta.get(SOURCE_FILES, ()))
    if not files:
        return None
    calib = Path(compensation.calib) if compensation.calib else None  # its bytes count, not its name
    calib_files = [] if calib is None else sorted(str(p) for p in calib.iterdir() if p.is_file()) \
        if calib.is_dir() else [str(calib)] if calib.is_file() else []
    return cache.cache_key(files + calib_files, source=source, samples=compensation.samples, seed=compensation.seed,
                           input_shapes=input_shapes, fuse_batchnorm=fuse_batchnorm, text=OWN_TEXT_LENGTH, version=1)


def update_sinks(pruned: ir.Model, analysis: Analysis, plan, compensation: Compensation, stats: Statistics) -> None:
    """Apply the compensation's sink update to `pruned` (before slicing)."""
    from spa.passes.compensate import flap, obs

    if compensation.method == "obs" and compensation.sequential:
        obs.compensate_sequential(pruned, analysis.model, analysis, plan, stats.sinks, stats.feeds,
                                  compensation.stages)
    elif compensation.method == "obs":
        obs.compensate(pruned, analysis, plan, stats.sinks, stats.hs)
    elif compensation.method == "flap":
        flap.flap_bias(pruned, analysis, plan, stats.sinks, stats.hs)


def check_feeds(criterion: Criterion, compensation: Compensation) -> None:
    """A gradient criterion runs the statistics pass's input feeds: its source must make some."""
    if criterion.needs_feeds and not get_statistics_source(compensation.statistics).yields_feeds:
        raise UsageError(f"'{criterion.name}' needs input samples: --statistics {' or '.join(feed_source_names())}")
