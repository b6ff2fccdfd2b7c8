"""Validation of a written model: the ONNX checker, an ONNX Runtime run, and the same interface
(input/output names, dtypes, ranks) as the original."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from spa.errors import SpaError, ValidationError
from spa.io import save_with_external_data, to_proto, weight_bytes


# ONNX protobufs cannot exceed 2 GB; above this, models go to ONNX tools as files with external data.
_IN_MEMORY_LIMIT = 1 << 30


def copy_model(model: ir.Model) -> ir.Model:
    """A structural copy; weight tensors are shared (passes replace tensors, never write into them),
    so memory-mapped external data stays mapped."""
    copy = ir.Model(model.graph.clone(), ir_version=model.ir_version, producer_name=model.producer_name,
                    producer_version=model.producer_version, domain=model.domain,
                    model_version=model.model_version, doc_string=model.doc_string,
                    functions=list(model.functions.values()), metadata_props=dict(model.metadata_props))
    copy.meta.update(model.meta)
    return copy


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
            sig.append((kind, v.name, str(v.dtype), len(v.shape) if v.shape is not None else -1))
    return sig


def session(model: ir.Model, providers=None, source: bytes | str | None = None,
            lean: bool = False) -> ort.InferenceSession:
    """lean: for a model read from a file, keep ONNX Runtime's memory near the mapped weights —
    graph optimizations (which fold fp16 weights into fp32 copies), prepacking and the arena off.
    For checking that a model runs; never for timing it."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures come back as exceptions (one line); no C++ log on stderr
    if lean:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # by default ONNX Runtime runs every weight's fp16→fp32 Cast up front, holding them all
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        with _source(model, source) as source:
            return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime cannot load the model: {str(exc).strip().splitlines()[0][:300]}") from None


def random_inputs(model: ir.Model, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds, symbols = {}, {}
    for v in model.graph.inputs:
        if v.name in model.graph.initializers:
            continue
        # The first symbolic dim is the batch; others (a sequence length) get 7, so attention
        # mixes several positions and a wrong head would show.
        dims = [d if isinstance(d, int) else symbols.setdefault(str(d), batch if not symbols else 7)
                for d in (v.shape or [])]
        dtype = v.dtype.numpy()
        if np.issubdtype(dtype, np.floating):
            feeds[v.name] = rng.standard_normal(dims).astype(dtype)
        elif np.issubdtype(dtype, np.integer) and "mask" in v.name:
            feeds[v.name] = np.ones(dims, dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[v.name] = rng.integers(0, 2, dims).astype(dtype)
        else:
            feeds[v.name] = rng.integers(0, 2, dims).astype(dtype)
    return feeds


def run(model: ir.Model, feeds: dict[str, np.ndarray], source: bytes | str | None = None,
        lean: bool = False) -> list[np.ndarray]:
    try:
        return session(model, source=source, lean=lean).run(None, feeds)
    except SpaError:
        raise
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime failed to run the model: {str(exc).strip().splitlines()[0][:300]}") from None


def validate(original: ir.Model, pruned: ir.Model, feeds: dict | None = None) -> list[np.ndarray]:
    """Raise SpaError unless `pruned` passes the checker, runs, and keeps the interface."""
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
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        if names:
            options.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays])
        sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime cannot load the model: {str(exc).strip().splitlines()[0][:300]}") from None
    try:
        return sess.run(None, feeds)
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime failed to run the model: {str(exc).strip().splitlines()[0][:300]}") from None


def relative_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        if x.dtype.kind not in "fc":
            worst = max(worst, float(np.any(x != y)))
            continue
        scale = max(float(np.max(np.abs(x))) if x.size else 0.0, 1e-12)
        worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))) / scale if x.size else 0.0)
    return worst
