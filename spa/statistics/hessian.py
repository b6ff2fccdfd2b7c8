"""Second moments of every sink's input columns, H = E[x̃ x̃ᵀ] with x̃ = [x, 1] (the constant
column carries the mean, so the same update corrects the bias). Inputs come from running the
model under ONNX Runtime with the sink inputs as extra outputs, a batch of samples at a time; sinks
whose moments pass the memory budget are measured in stages (spa.statistics.staged), and a language
model's own text hands them over while it is written (Watcher)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from spa.core.errors import InputError, SpaError, UnsupportedError
from spa.runtime.examples import embedding_rows, natural_image as natural_noise  # noqa: F401 (re-exported)
from spa.statistics.generation import (can_generate, generated_feeds, last_position_logits,  # noqa: F401
                                       next_token_logits, synthetic_feeds, synthetic_input)
from spa.statistics.sinks import SinkWeight, conv_geometry
from spa.runtime.validate import copy_model, session


def columns_of(sink: SinkWeight, x: np.ndarray, rows: int | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """(rows, columns) view of one input tensor as the sink's weight matrix reads it. With `rows`,
    a convolution reads only a random window of about that many output positions (a large feature
    map has far more positions than its moments need: cost, not accuracy)."""
    if sink.kind != "conv":
        return x.reshape(-1, x.shape[-1])
    return conv_columns(x, conv_geometry(sink.node, x.ndim - 2), rows, rng)


def conv_columns(x: np.ndarray, g: dict, rows: int | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """im2col for any number of spatial axes (1-D speech/text, 2-D images, 3-D volumes): rows are
    output positions (of a random window of about `rows` of them, when given), columns are
    (channel, kernel taps) in the weight's order."""
    x = _padded_window(x, g, rows, rng or np.random.default_rng(0))
    spatial = x.ndim - 2
    extents = [(k - 1) * d + 1 for k, d in zip(g["kernel"], g["dilations"])]
    windows = np.lib.stride_tricks.sliding_window_view(x, extents, axis=tuple(range(2, 2 + spatial)))
    windows = windows[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in g["strides"])
                      + tuple(slice(None, None, d) for d in g["dilations"])]
    positions = list(range(2, 2 + spatial))
    taps = list(range(2 + spatial, 2 + 2 * spatial))
    by_position = windows.transpose([0] + positions + [1] + taps)
    return by_position.reshape(-1, x.shape[1] * int(np.prod(g["kernel"])))


def _padded_window(x: np.ndarray, g: dict, rows: int | None, rng: np.random.Generator) -> np.ndarray:
    """The zero-padded input, or with `rows` only the padded input of a random window of about that
    many output positions (padding a whole large map would cost more than the window's columns)."""
    spatial = x.ndim - 2
    before, after = g["pads"][:spatial], g["pads"][spatial:]
    size = [x.shape[2 + i] + before[i] + after[i] for i in range(spatial)]  # padded
    extent = [(k - 1) * d + 1 for k, d in zip(g["kernel"], g["dilations"])]
    out = [(size[i] - extent[i]) // g["strides"][i] + 1 for i in range(spatial)]
    lo, hi = [0] * spatial, list(size)
    if rows is not None and int(np.prod(out)) > rows:
        scale = (rows / int(np.prod(out))) ** (1 / spatial)
        keep = [max(1, min(o, int(round(o * scale)))) for o in out]
        start = [int(rng.integers(0, o - k + 1)) for o, k in zip(out, keep)]
        lo = [s * st for s, st in zip(start, g["strides"])]
        hi = [(s + k - 1) * st + e for s, k, st, e in zip(start, keep, g["strides"], extent)]
    crop = x[(slice(None), slice(None)) + tuple(slice(max(lo[i] - before[i], 0), min(hi[i] - before[i], x.shape[2 + i]))
                                                for i in range(spatial))]
    widths = [(0, 0), (0, 0)] + [(max(before[i] - lo[i], 0), max(hi[i] - before[i] - x.shape[2 + i], 0))
                                 for i in range(spatial)]
    return np.pad(crop, widths) if any(a or b for a, b in widths) else crop


_BLOCK_ROWS = 4096  # rows per float32 product: its sums stay short enough to keep ~1e-6 relative accuracy


class Moments:
    """Running E[ã b̃ᵀ] over rows of column blocks (ã = [a, 1]); b defaults to a (then it is H̃).
    Rows are buffered and multiplied in one float32 product (threaded BLAS; a.T @ a is a symmetric
    rank-k update), summed into float64. One product per few rows would cost a full n×n pass each
    time: a 1B model's 16-token samples took 0.14 s a sample for one 5632-wide sink, against 1.1 s
    for 4096 rows at once. From about n/2 rows on the product outweighs that pass, so the buffer
    holds at most that many (up to _BLOCK_ROWS): held are the float64 sums (8 bytes an entry) and
    at most 2 bytes an entry of rows. The ones column is kept as column sums."""

    def __init__(self, size: int):
        self.product = np.zeros((size, size))             # Σ a bᵀ over the rows already multiplied
        self.buffered: list[tuple[np.ndarray, np.ndarray | None]] = []  # rows not yet multiplied
        self.buffered_rows = 0
        self.flush_rows = min(_BLOCK_ROWS, max(256, size // 2))
        self.sum_a = np.zeros(size)
        self.sum_b = np.zeros(size)
        self.rows = 0

    def add(self, cols: np.ndarray, other: np.ndarray | None = None) -> None:
        a = cols if cols.dtype == np.float32 else cols.astype(np.float32)
        b = None if other is None else (other if other.dtype == np.float32 else other.astype(np.float32))
        sum_a = a.sum(axis=0, dtype=np.float64)
        self.sum_a += sum_a
        self.sum_b += sum_a if b is None else b.sum(axis=0, dtype=np.float64)
        self.rows += len(a)
        if len(a) >= _BLOCK_ROWS:  # a block of its own: no copy (a strided view is read as it is)
            for start in range(0, len(a), _BLOCK_ROWS):
                self._multiply(a[start:start + _BLOCK_ROWS], None if b is None else b[start:start + _BLOCK_ROWS])
            return
        self.buffered.append((a, b))
        self.buffered_rows += len(a)
        if self.buffered_rows >= self.flush_rows:
            self._flush()

    def _multiply(self, a: np.ndarray, b: np.ndarray | None) -> None:
        self.product += a.T @ (a if b is None else b)

    def _flush(self) -> None:
        if not self.buffered:
            return
        a = np.concatenate([x for x, _ in self.buffered]) if len(self.buffered) > 1 else self.buffered[0][0]
        b = None if self.buffered[0][1] is None else \
            np.concatenate([y for _, y in self.buffered]) if len(self.buffered) > 1 else self.buffered[0][1]
        self.buffered, self.buffered_rows = [], 0
        self._multiply(a, b)

    def hessian(self) -> np.ndarray:
        self._flush()
        n = len(self.product)
        h = np.empty((n + 1, n + 1))
        h[:n, :n] = self.product
        h[:n, n] = self.sum_a
        h[n, :n] = self.sum_b
        h[n, n] = self.rows
        return h / max(self.rows, 1)


def data_feeds(model: ir.Model, path: str, samples: int):
    """Calibration samples from an .npz file (one array per input name, first axis = samples) or a
    folder of such .npz files (or of .npy files, for a one-input model), read in name order."""
    inputs = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
    done = 0
    for arrays, where in _calibration_files(Path(path), [v.name for v in inputs]):
        count = min(len(a) for a in arrays.values())
        for i in range(count):
            if done == samples:
                return
            try:
                yield {v.name: arrays[v.name][i: i + 1].astype(v.dtype.numpy()) for v in inputs}
            except (TypeError, ValueError) as exc:
                raise InputError(f"{where}: cannot be read as model inputs ({exc})") from None
            done += 1


def _calibration_files(path: Path, names: list[str]):
    """(arrays by input name, file) for every calibration file under `path`."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise InputError(f"{path}: no .npz or .npy calibration files in this folder")
    elif path.exists():
        files = [path]
    else:
        raise InputError(f"{path}: calibration file not found")
    for file in files:
        try:
            loaded = np.load(file)
            arrays = {names[0]: loaded} if isinstance(loaded, np.ndarray) else dict(loaded)
        except (OSError, ValueError) as exc:
            raise InputError(f"{file}: not a readable .npz/.npy file ({exc})") from None
        if len(arrays) == 1 and len(names) == 1:
            arrays = {names[0]: next(iter(arrays.values()))}
        missing = [n for n in names if n not in arrays]
        if missing:
            raise InputError(f"{file} has no array for input '{missing[0]}'")
        yield arrays, file


ROWS_PER_COLUMN = 32


def collect(model: ir.Model, sinks: dict[str, SinkWeight], feeds, budget: int | None = None) -> Mapping[str, np.ndarray]:
    """H̃ for every sink (keyed by node name) from the given input feeds. Sinks whose moments
    together pass `budget` bytes (default spa.statistics.staged.MOMENTS_BUDGET) are measured in
    stages, and the finished H̃ past it are kept in a temporary file (spa.statistics.staged)."""
    from spa.core.progress import progress
    from spa.statistics import staged

    if not sinks:  # a probe without outputs is not a model ONNX Runtime loads
        return {}
    budget = staged.MOMENTS_BUDGET if budget is None else budget
    feeds = list(feeds)
    rng = np.random.default_rng(0)
    # a matrix sink's rows are every position of every sample: samples of one shape run as one batch
    batch = PROBE_BATCH if takes_any_batch(model) and all(s.kind != "conv" for s in sinks.values()) else 1
    batches = list(stacked(feeds, batch))
    runs = staged.split_sinks(model, sinks, budget)
    # moments that fit the budget together stay in memory; a staged pass keeps few of them there
    result = staged.SpilledArrays(staged.HELD_BUDGET if len(runs) > 1 else float("inf"))
    for index, (names, values_of) in enumerate(_runs(model, sinks, runs, batches)):
        moments = {name: None for name in names}
        # a convolution reads enough positions per input for ~ROWS_PER_COLUMN rows per column overall
        rows = {name: max(256, -(-ROWS_PER_COLUMN * sinks[name].matrix().shape[1] // len(feeds))) for name in names}
        label = "measuring statistics" + (f" (sinks, part {index + 1} of {len(runs)})" if len(runs) > 1 else "")
        for values in progress(values_of, label, total=len(batches)):
            for name in names:
                sink = sinks[name]
                cols = columns_of(sink, values[sink.node.inputs[0].name], rows=rows[name], rng=rng)
                if moments[name] is None:
                    moments[name] = Moments(cols.shape[1])
                moments[name].add(cols)
        for name, h in _finished(moments).items():
            result[name] = h
    return result


def _runs(model: ir.Model, sinks: dict[str, SinkWeight], runs: list[list[str]], batches: list[dict]):
    """(sink names, the values of every batch) per run of sinks: one probe of the whole model for a
    single run, else the staged cuts."""
    from spa.statistics import staged

    if len(runs) > 1:
        yield from staged.staged_runs(model, runs, batches)
        return
    run, _ = probe(model, sinks)
    yield runs[0], ({**feed, **run(feed)} for feed in batches)


class Watcher:
    """The sinks' moments summed from values a text writer hands over as it writes
    (spa.statistics.generation.generated_feeds): the statistics pass without running the text
    through the model a second time. `watching` says whether a model's sinks can be measured so."""

    def __init__(self, sinks: dict[str, SinkWeight]):
        self.sinks = sinks
        self.names = [sink.node.inputs[0].name for sink in sinks.values()]
        self.reset()

    @staticmethod
    def watching(model: ir.Model, sinks: dict[str, SinkWeight]) -> bool:
        """Matrix sinks only (a convolution reads a window of positions per sample), and all of
        them measured at once (the staged pass is for moments past the memory budget)."""
        from spa.statistics import staged

        return bool(sinks) and all(s.kind != "conv" for s in sinks.values()) \
            and len(staged.split_sinks(model, sinks)) == 1

    def reset(self) -> None:
        self.moments = {name: None for name in self.sinks}
        self.complete = False

    def add(self, values: dict[str, np.ndarray]) -> None:
        for name, sink in self.sinks.items():
            cols = columns_of(sink, values[sink.node.inputs[0].name])
            if self.moments[name] is None:
                self.moments[name] = Moments(cols.shape[1])
            self.moments[name].add(cols)

    def result(self) -> dict[str, np.ndarray]:
        return _finished(self.moments)


def _finished(moments: dict) -> dict[str, np.ndarray]:
    """Each sink's H̃, its running sums dropped as soon as it is made: at no time are all the sums
    and all the results held together (a 1B model's would be ~16 bytes an entry instead of ~8)."""
    result = {}
    for name in list(moments):
        running = moments.pop(name)
        if running is not None:
            result[name] = running.hessian()
    return result


PROBE_BATCH = 16  # samples per statistics run of a model that takes any batch (fewer, larger runs)


def takes_any_batch(model: ir.Model) -> bool:
    """Every input's first dim is symbolic: samples can be stacked into one run."""
    inputs = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
    return bool(inputs) and all(v.shape is not None and len(v.shape) > 0 and not isinstance(v.shape[0], int)
                                for v in inputs)


def stacked(feeds: list[dict], batch: int):
    """The feeds, consecutive ones of the same shapes (one sample each) stacked up to `batch` per feed."""
    group: list[dict] = []

    def key(feed):
        return tuple((name, a.shape, a.dtype.str) for name, a in sorted(feed.items()))

    for feed in feeds:
        if batch <= 1 or any(a.ndim == 0 or a.shape[0] != 1 for a in feed.values()):
            yield from ([_stack(group)] if group else [])
            group = []
            yield feed
            continue
        if group and (key(feed) != key(group[0]) or len(group) == batch):
            yield _stack(group)
            group = []
        group.append(feed)
    if group:
        yield _stack(group)


def _stack(group: list[dict]) -> dict:
    return group[0] if len(group) == 1 else {name: np.concatenate([f[name] for f in group]) for name in group[0]}


def collect_cross(model: ir.Model, reference, sinks: dict[str, SinkWeight], feeds
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per sink, (H̃ of its input in `model`, E[x̃_ref x̃ᵀ]: the same input in `reference`, e.g.
    the dense model, against it): what a sink needs to re-create the reference's output from the
    inputs `model` now gives it. `reference` is a model or a probe of it (see probe) that
    reads at least these sinks' inputs."""
    run, read = probe(model, sinks)
    run_ref, read_ref = reference if isinstance(reference, tuple) else probe(reference, sinks)
    own = {name: None for name in sinks}
    cross = {name: None for name in sinks}
    for feed in feeds:
        values, ref = run(feed), run_ref(feed)
        for name, sink in sinks.items():
            cols = columns_of(sink, values[read[name]])
            ref_cols = columns_of(sink, ref[read_ref[name]])
            if own[name] is None:
                own[name], cross[name] = Moments(cols.shape[1]), Moments(cols.shape[1])
            own[name].add(cols)
            cross[name].add(ref_cols, cols)
    return {name: (own[name].hessian(), cross[name].hessian()) for name in sinks if own[name] is not None}


def probe(model: ir.Model, sinks: dict[str, SinkWeight]):
    """(run(feed) → {value name: array}, sink name → the value it reads): an ONNX Runtime session
    whose only outputs are the sinks' inputs, so it skips the layers after the last sink."""
    probe = copy_model(model)
    nodes = {n.name: n for n in probe.graph}
    wanted, read = {}, {}
    for name in sinks:
        value = nodes[name].inputs[0]
        wanted.setdefault(value.name, value)
        read[name] = value.name
    probe.graph.outputs.clear()
    probe.graph.outputs.extend(wanted.values())
    RemoveUnusedNodesPass()(probe)
    sess = session(probe)
    out_names = [o.name for o in sess.get_outputs()]

    def run(feed: dict) -> dict:
        try:
            return dict(zip(out_names, sess.run(None, feed)))
        except Exception as exc:  # ONNX Runtime rejects inputs of the wrong shape or type
            raise InputError(f"the calibration inputs do not fit the model: {str(exc).strip().splitlines()[0][:200]}") from None

    return run, read
