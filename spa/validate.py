"""Validation of a written model: the ONNX checker, an ONNX Runtime run, and the same interface
(input/output names, dtypes, ranks) as the original."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from spa.errors import SpaError
from spa.io import to_proto


def copy_model(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(to_proto(model))


def checker(model: ir.Model) -> None:
    try:
        onnx.checker.check_model(to_proto(model), full_check=True)
    except Exception as exc:
        raise SpaError(f"the model fails onnx.checker: {str(exc).strip().splitlines()[0][:300]}") from None


def signature(model: ir.Model) -> list[tuple[str, str, str, int]]:
    sig = []
    for kind, values in (("input", model.graph.inputs), ("output", model.graph.outputs)):
        for v in values:
            sig.append((kind, v.name, str(v.dtype), len(v.shape) if v.shape is not None else -1))
    return sig


def session(model: ir.Model, providers=None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(to_proto(model).SerializeToString(), options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:
        raise SpaError(f"ONNX Runtime cannot load the model: {str(exc).strip().splitlines()[0][:300]}") from None


def random_inputs(model: ir.Model, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in model.graph.inputs:
        if v.name in model.graph.initializers:
            continue
        dims = [d if isinstance(d, int) else batch for d in (v.shape or [])]
        dtype = v.dtype.numpy()
        if np.issubdtype(dtype, np.floating):
            feeds[v.name] = rng.standard_normal(dims).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[v.name] = rng.integers(0, 2, dims).astype(dtype)
        else:
            feeds[v.name] = rng.integers(0, 2, dims).astype(dtype)
    return feeds


def run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session(model).run(None, feeds)
    except SpaError:
        raise
    except Exception as exc:
        raise SpaError(f"ONNX Runtime failed to run the model: {str(exc).strip().splitlines()[0][:300]}") from None


def validate(original: ir.Model, pruned: ir.Model, feeds: dict | None = None) -> list[np.ndarray]:
    """Raise SpaError unless `pruned` passes the checker, runs, and keeps the interface."""
    checker(pruned)
    if signature(original) != signature(pruned):
        raise SpaError("the pruned model's inputs/outputs differ from the original's")
    outputs = run(pruned, feeds or random_inputs(pruned))
    for value, array in zip(pruned.graph.outputs, outputs):
        if value.shape is not None and array.ndim != len(value.shape):
            raise SpaError(f"output '{value.name}' has rank {array.ndim} at run time")
    return outputs


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
