"""ONNX Runtime sessions: the one place SPA builds them (validation, statistics, benchmarks and
latency profiles each choose their options, then call `open_session`)."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from spa.core.errors import ValidationError

CPU = ("CPUExecutionProvider",)


def quiet_options():
    """Session options every SPA session starts from: failures come back as exceptions (one
    line), with no C++ log on stderr."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    return options


def open_session(source: str | os.PathLike | bytes, options=None, *, providers: Sequence[str] | None = None,
                 initializers: dict[str, np.ndarray] | None = None, what: str = "the model",
                 error: type[Exception] | None = ValidationError):
    """An ONNX Runtime session of the model at path `source` (or serialized in bytes), with
    `options` (default: `quiet_options()`), `providers` (default: CPU) and `initializers` given
    from memory (weights the file leaves out). A load failure raises `error` with one line,
    "ONNX Runtime cannot load <what>: …"; with `error=None` ONNX Runtime's own exception."""
    import onnxruntime as ort

    options = quiet_options() if options is None else options
    try:
        if initializers:
            options.add_external_initializers(
                list(initializers), [ort.OrtValue.ortvalue_from_numpy(a) for a in initializers.values()])
        source = os.fspath(source) if isinstance(source, os.PathLike) else source
        return ort.InferenceSession(source, options, providers=list(providers or CPU))
    except Exception as exc:
        if error is None:
            raise
        raise cannot_load(exc, what, error) from None


def cannot_load(exc: BaseException, what: str = "the model", error: type[Exception] = ValidationError) -> Exception:
    """The one-line error for a model ONNX Runtime refused (`exc`, its exception)."""
    return error(f"ONNX Runtime cannot load {what}: {str(exc).strip().splitlines()[0][:300]}")
