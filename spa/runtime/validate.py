"""Validation of a written model: the ONNX checker, an ONNX Runtime run, and the same interface
(input/output names, dtypes, ranks) as the original."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from spa.runtime import examples
from spa.core.errors import SpaError, UnsupportedError, ValidationError
from spa.graph.io import save_with_external_data, to_proto, weight_bytes
from spa.graph.model_copy import copy_model  # noqa: F401 - callers import it from here
from spa.runtime.sessions import cannot_load, open_session, quiet_options


# ONNX protobufs cannot exceed 2 GB; above this, models go to ONNX tools as files with external data.
_IN_MEMORY_LIMIT = 1 << 30


@contextmanager
def as_file_if_needed(model: ir.Model):
    """Yield serialized bytes for a small self-contained model, else a path to a temporary copy
    written with external data (big models, or weights that live in external files)."""
    external = any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())
    if not external and weight_bytes(model) < _IN_MEMORY_LIMIT:
        yield to_proto(model).SerializeToString()
        return
    with tempfile.TemporaryDirectory(prefix="spa-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_with_external_data(model, path)  # streamed, aligned so ONNX Runtime can map it
        yield str(path)


@contextmanager
def _source(model: ir.Model, source: bytes | str | None):
    if source is not None:
        yield source
    else:
        with as_file_if_needed(model) as made:
            yield made


def checker(model: ir.Model, source: bytes | str | None = None) -> None:
    try:
        with _source(model, source) as source:
            onnx.checker.check_model(source, full_check=True)  # bytes go to the C++ checker as they are
    except Exception as exc:
        raise ValidationError(f"the model fails onnx.checker: {str(exc).strip().splitlines()[0][:300]}") from None


def signature(model: ir.Model) -> list[tuple[str, str, str, int]]:
    sig = []
    for kind, values in (("input", model.graph.inputs), ("output", model.graph.outputs)):
        for v in values:
            if kind == "input" and v.is_initializer():  # an overridable weight (see canon.restore_initializer_inputs)
                continue
            sig.append((kind, v.name, str(v.dtype), len(v.shape) if v.shape is not None else -1))
    return sig


def session(model: ir.Model, providers=None, source: bytes | str | None = None,
            lean: bool = False) -> ort.InferenceSession:
    """lean: for a model read from a file, keep ONNX Runtime's memory near the mapped weights —
    graph optimizations (which fold fp16 weights into fp32 copies), prepacking and the arena off.
    For checking that a model runs; never for timing it."""
    options = quiet_options()
    # between runs, ONNX Runtime's idle threads would spin and starve the numpy/torch work SPA does
    # on each run's outputs (statistics: 3x slower on 2 cores); timing sessions are built elsewhere
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if lean:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # by default ONNX Runtime runs every weight's fp16→fp32 Cast up front, holding them all
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:  # writing the model out for ONNX Runtime can fail too: the same one-line error
        # not for graphs with If/Loop bodies: ONNX Runtime moves weights into the bodies and then
        # cannot replace them by name (silero_vad)
        if source is None and not any(a.type == ir.AttributeType.GRAPH for n in model.graph.all_nodes()
                                      for a in n.attributes.values()):
            with _weightless_file(model) as light:
                if light is not None:  # only the graph is serialized; ONNX Runtime reads the arrays
                    path, names, arrays = light
                    sess = open_session(path, options, providers=providers, error=None,
                                        initializers=dict(zip(names, arrays)))
                    sess.spa_weights = arrays  # ONNX Runtime reads them from here while the session lives
                    return sess
        with _source(model, source) as source:
            return open_session(source, options, providers=providers, error=None)
    except Exception as exc:
        raise cannot_load(exc) from None


def random_inputs(model: ir.Model, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Example inputs (spa.runtime.examples): the shapes the original model ran on when it was loaded for
    pruning, else the first candidate (a sequence of 7, so attention mixes several positions and a
    wrong head would show)."""
    return examples.random_feeds(model, seed, batch=batch)


@dataclass
class Reference:
    """The original model, as given, run on the example inputs before anything changed it."""
    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    varying: dict[str, set[int]]  # output name → axes whose size depends on input values


#: model.meta key of the Reference
REFERENCE = "spa.reference"
#: At ratio 0 the written model's outputs equal the original's within this, relative to each
#: output's largest magnitude (BatchNorm fusion and constant folding reassociate float sums).
RATIO_ZERO_RTOL = 1e-4


def reference_run(model: ir.Model, source=None, given: dict | None = None, seed: int = 0) -> Reference:
    """Choose example inputs by running the original model (`source`: its file, when it came from
    one) and keep its outputs. Refuses (exit 5) a model ONNX Runtime cannot load, or that runs on
    none of the candidate shapes."""
    names = [v.name for v in model.graph.outputs]
    with _source(model, str(source) if source is not None else None) as src:
        try:
            sess = session(model, source=src, lean=isinstance(src, str) and weight_bytes(model) >= _IN_MEMORY_LIMIT)
        except ValidationError as exc:
            raise UnsupportedError(f"{str(exc).replace('the model', 'the original model')}; SPA validates a pruned "
                                   "model by running it next to the original") from None
        # a decoder read without its KV cache (spa.graph.kv_inputs) runs from its file with an empty one
        choice, feeds, outputs = examples.choose(
            model, lambda f: sess.run(names, {**f, **examples.empty_cache(sess, f)}), given, seed=seed)
        varying: dict[str, set[int]] = {}
        if any(_value_dependent(v, model) for v in model.graph.outputs):
            # run once more on other values of the same shapes: axes that change size (a detector's
            # box count) depend on the values, so pruning may change them too
            again_feeds = examples.fill(examples.input_specs(model), choice.shapes, seed + 1)
            again = sess.run(names, {**again_feeds, **examples.empty_cache(sess, again_feeds)})
            for name, a, b in zip(names, outputs, again):
                axes = {i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y}
                if axes:
                    varying[name] = axes
    model.meta[examples.CHOICE] = choice
    return Reference(feeds, dict(zip(names, outputs)), varying)


def _value_dependent(output: ir.Value, model: ir.Model) -> bool:
    """Whether an output's declared shape leaves a dim that is not an input's dim open."""
    named = {str(d) for v in model.graph.inputs for d in (v.shape or []) if not isinstance(d, int)}
    return output.shape is None or any(not isinstance(d, int) and str(d) not in named for d in output.shape)


def compare_to_reference(reference: Reference, outputs: dict[str, np.ndarray], values: bool) -> None:
    """Every output keeps the original's dtype and shape (but for value-dependent axes); with
    `values`, also its values within RATIO_ZERO_RTOL."""
    for name, ref in reference.outputs.items():
        got = outputs[name]
        if got.dtype != ref.dtype:
            raise ValidationError(f"output '{name}' is {got.dtype}, the original's is {ref.dtype}")
        fixed = [i for i in range(ref.ndim) if i not in reference.varying.get(name, ())]
        if got.ndim != ref.ndim or [got.shape[i] for i in fixed] != [ref.shape[i] for i in fixed]:
            raise ValidationError(f"output '{name}' has shape {list(got.shape)} where the original's has "
                                  f"{list(ref.shape)} on the same inputs; SPA changed what the model computes")
        if values and got.shape == ref.shape:
            error = relative_error([ref], [got])
            if error > RATIO_ZERO_RTOL:
                raise ValidationError(f"output '{name}' differs from the original's by {error:.1e} (relative) "
                                      "although nothing was pruned; SPA changed what the model computes")


def run(model: ir.Model, feeds: dict[str, np.ndarray], source: bytes | str | None = None,
        lean: bool = False) -> list[np.ndarray]:
    try:
        return session(model, source=source, lean=lean).run(None, feeds)
    except SpaError:
        raise
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime failed to run the model: {str(exc).strip().splitlines()[0][:300]}") from None


def validate(original: ir.Model, pruned: ir.Model, feeds: dict | None = None,
             same_values: bool = False) -> list[np.ndarray]:
    """Raise SpaError unless `pruned` passes the checker, runs, and keeps the interface. When the
    original was run as given (its Reference in meta), `pruned` runs on the same inputs and must give
    outputs of the same dtypes and shapes — with `same_values` (nothing pruned), the same values."""
    reference = original.meta.get(REFERENCE)
    if reference is not None and feeds is None:
        feeds = reference.feeds
    with _weightless_file(pruned) as light:
        if light is not None:  # weights in memory: only the graph is written, ORT reads the arrays
            path, names, values = light
            checker(pruned, path)
            _check_signature(original, pruned)
            outputs = _run_with_initializers(path, names, values, feeds or random_inputs(pruned))
        else:
            with as_file_if_needed(pruned) as source:  # one temporary copy serves both checks
                checker(pruned, source)
                _check_signature(original, pruned)
                outputs = run(pruned, feeds or random_inputs(pruned), source, lean=isinstance(source, str))
    for value, array in zip(pruned.graph.outputs, outputs):
        if value.shape is not None and array.ndim != len(value.shape):
            raise ValidationError(f"output '{value.name}' has rank {array.ndim} at run time")
    if reference is not None:
        compare_to_reference(reference, {v.name: a for v, a in zip(pruned.graph.outputs, outputs)}, same_values)
    return outputs


def _check_signature(original: ir.Model, pruned: ir.Model) -> None:
    if signature(original) != signature(pruned):
        raise ValidationError("the pruned model's inputs/outputs differ from the original's")


# Weights at least this big are handed to ONNX Runtime as arrays (smaller ones, shape constants
# among them, stay in the graph, so the checker's shape inference still reads their values).
_HANDED_OVER_MIN_BYTES = 1024
_HANDED_OVER_DTYPES = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                              np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}
_PLACEHOLDER = "spa-weights.bin"


@contextmanager
def _weightless_file(model: ir.Model):
    """For a model whose weights are all in memory: a temporary folder holding the graph with every
    big weight turned into a reference to external data (type and shape kept) and a sparse file of
    the right size standing in for that data, so `onnx.checker` (full check) reads only the graph;
    yields (path, names, arrays) for ONNX Runtime, which gets the arrays themselves
    (`add_external_initializers`). Serializing a model's weights into one protobuf, which the
    checker and ONNX Runtime then each parse again, was most of validation's time on BERT-base.
    Yields None where this does not apply (external or big weights: as_file_if_needed)."""
    values = [v for v in model.graph.initializers.values() if v.const_value is not None]
    if any(isinstance(v.const_value, ir.ExternalTensor) for v in values) or weight_bytes(model) >= _IN_MEMORY_LIMIT:
        yield None
        return
    moved, names, arrays, offset = {}, [], [], 0
    for v in values:
        t = v.const_value
        if t.nbytes < _HANDED_OVER_MIN_BYTES or not isinstance(t, (ir.Tensor, ir.LazyTensor)) \
                and type(t).__name__ != "TensorProtoTensor":
            continue
        try:
            array = np.ascontiguousarray(t.numpy())
        except Exception:
            continue
        if array.dtype not in _HANDED_OVER_DTYPES or array.nbytes != t.nbytes:
            continue
        moved[v] = t
        names.append(v.name)
        arrays.append(array)
        v.const_value = ir.ExternalTensor(_PLACEHOLDER, offset, t.nbytes, t.dtype, shape=t.shape, name=v.name)
        offset += t.nbytes
    try:
        proto = to_proto(model)
    finally:
        for v, t in moved.items():
            v.const_value = t
    with tempfile.TemporaryDirectory(prefix="spa-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(proto.SerializeToString())
        del proto
        with open(Path(tmp) / _PLACEHOLDER, "wb") as f:
            f.truncate(offset)  # sparse: no byte of it is written or read
        yield str(path), names, arrays


def _run_with_initializers(path: str, names: list[str], arrays: list[np.ndarray],
                           feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = open_session(path, initializers=dict(zip(names, arrays)))
    try:
        return sess.run(None, feeds)
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime failed to run the model: {str(exc).strip().splitlines()[0][:300]}") from None


#: The smallest scale relative errors are taken against: an output that stays within ±0.01 on the
#: inputs (a detector's probability map with nothing found: a saturated sigmoid) is compared
#: absolutely, where float32 rounding alone leaves differences of ~1e-7.
ERROR_SCALE_FLOOR = 1e-2


def relative_error(a: list[np.ndarray], b: list[np.ndarray], floor: float = ERROR_SCALE_FLOOR) -> float:
    """max |a - b| / max |a| over the outputs (the scale floored at `floor`); a shape mismatch is
    infinite, a differing integer output 1."""
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        if x.dtype.kind not in "fc":
            worst = max(worst, float(np.any(x != y)))
            continue
        scale = max(float(np.max(np.abs(x))) if x.size else 0.0, floor)
        worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))) / scale if x.size else 0.0)
    return worst
