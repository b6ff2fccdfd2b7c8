"""Second moments of every sink's input columns, H = E[x̃ x̃ᵀ] with x̃ = [x, 1] (the constant
column carries the mean, so the same update corrects the bias). Inputs come from running the
model under ONNX Runtime with the sink inputs as extra outputs, one sample at a time (memory stays
at one activation set plus the H matrices)."""
from __future__ import annotations

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
    Products are float32 (threaded BLAS, no copy of the columns: a strided view is read as it is),
    summed into float64 every _BLOCK_ROWS rows; the ones column is kept as column sums."""

    def __init__(self, size: int):
        self.product = np.zeros((size, size))             # Σ a bᵀ
        self.pending = np.zeros((size, size), np.float32)  # float32 products not yet in `product`
        self.pending_rows = 0
        self.sum_a = np.zeros(size)
        self.sum_b = np.zeros(size)
        self.rows = 0

    def add(self, cols: np.ndarray, other: np.ndarray | None = None) -> None:
        a = cols if cols.dtype == np.float32 else cols.astype(np.float32)
        b = a if other is None else (other if other.dtype == np.float32 else other.astype(np.float32))
        for start in range(0, len(a), _BLOCK_ROWS):
            block_a, block_b = a[start:start + _BLOCK_ROWS], b[start:start + _BLOCK_ROWS]
            self.pending += block_a.T @ block_b
            self.pending_rows += len(block_a)
            if self.pending_rows >= _BLOCK_ROWS:
                self._flush()
        sum_a = a.sum(axis=0, dtype=np.float64)
        self.sum_a += sum_a
        self.sum_b += sum_a if other is None else b.sum(axis=0, dtype=np.float64)
        self.rows += len(a)

    def _flush(self) -> None:
        self.product += self.pending
        self.pending[:] = 0
        self.pending_rows = 0

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


def collect(model: ir.Model, sinks: dict[str, SinkWeight], feeds) -> dict[str, np.ndarray]:
    """H̃ for every sink (keyed by node name) from the given input feeds."""
    if not sinks:  # a probe without outputs is not a model ONNX Runtime loads
        return {}
    run, read = probe(model, sinks)
    moments = {name: None for name in sinks}
    feeds = list(feeds)
    rng = np.random.default_rng(0)
    # a matrix sink's rows are every position of every sample: samples of one shape run as one batch
    batch = PROBE_BATCH if takes_any_batch(model) and all(s.kind != "conv" for s in sinks.values()) else 1
    for feed in stacked(feeds, batch):
        values = run(feed)
        for name, sink in sinks.items():
            # a convolution reads enough positions per input for ~ROWS_PER_COLUMN rows per column overall
            budget = max(256, -(-ROWS_PER_COLUMN * sink.matrix().shape[1] // len(feeds)))
            cols = columns_of(sink, values[read[name]], rows=budget, rng=rng)
            if moments[name] is None:
                moments[name] = Moments(cols.shape[1])
            moments[name].add(cols)
    return _finished(moments)


def _finished(moments: dict) -> dict[str, np.ndarray]:
    """Each sink's H̃, its running sums dropped as soon as it is made: at no time are all the sums
    and all the results held together (a 1B model's would be ~20 bytes an entry instead of ~12)."""
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
