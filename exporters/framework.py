"""What the framework exporters (tf, jax, paddle) share: the optional-extra check, loading a model
from a `module:factory` reference, and writing the exported ONNX file atomically.

Each framework is an optional extra (`pip install 'spa-prune[tf]'` …). Importing tensorflow and then
paddle in one process crashes (their bundled libraries clash), so `spa export` handles one
framework per process and the zoo builders in `models/` run in child processes.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from spa.core.errors import InputError, OutputError, SpaError, UsageError
from spa.exporters.registry import EXPORTERS, get_exporter

# extra → (modules that must import, what to install), from the registry (spa.exporters.registry)
EXTRAS = {e.extra: (e.imports, e.install) for e in EXPORTERS.values() if e.extra is not None}
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 9, 20  # what the exporters are tested to produce and SPA to prune


def missing_extra(extra: str) -> str | None:
    """Why the extra cannot be used (a one-line message), or None when every module imports."""
    modules, install = EXTRAS[extra]
    if extra == "tf":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before tensorflow's C++ side starts logging
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"spa export {extra} needs the '{extra}' extra ({name} does not import: {exc}); {install}"
    return None


def require(extra: str) -> None:
    problem = missing_extra(extra)
    if problem:
        raise SpaError(problem)


def check_opset(opset: int | None) -> int:
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset {opset}: the framework exporters write opsets {MIN_OPSET} to {MAX_OPSET}")
    return opset


def load_factory(reference: str, *args, **kwargs):
    """`package.module:function` → function(*args, **kwargs): a model built by user code."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise UsageError(f"'{reference}': expected a file path or module:function")
    import sys

    if os.getcwd() not in sys.path:  # as `python -m` would: the user's modules beside them
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"'{reference}': cannot import {module_name} ({exc})") from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise InputError(f"'{reference}': {module_name} has no attribute {attr}") from None
    return factory(*args, **kwargs)


def is_factory_reference(source) -> bool:
    return isinstance(source, str) and ":" in source and not Path(source).exists() and "/" not in source


def output_path(output: str | os.PathLike) -> Path:
    out = Path(output)
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give the .onnx file to write")
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent}: no such folder")
    return out


def write_atomically(proto, output: str | os.PathLike) -> Path:
    """Check the exported ModelProto and write it; a failure leaves no partial file."""
    import onnx

    out = output_path(output)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise SpaError(f"the exporter wrote an invalid ONNX model: {str(exc).splitlines()[0][:200]}") from None
    from spa.core.output import write_files

    write_files({out: lambda tmp: onnx.save(proto, str(tmp))}, what="-o")
    return out


def shapes_from_cli(input_shapes) -> list[tuple[str, list[int]]]:
    """`--input-shape NAME=D1,D2` pairs (dict or list) as an ordered list; -1/0 mean a dynamic dim."""
    if not input_shapes:
        return []
    items = input_shapes.items() if isinstance(input_shapes, dict) else input_shapes
    return [(str(name), [int(d) for d in dims]) for name, dims in items]


def export_framework(framework: str, source, output, *, opset: int | None = None, input_shapes=None) -> Path:
    """`spa export tf|jax|paddle`: the framework's exporter on `source` (spa.exporters.registry)."""
    return get_exporter(framework).export(source, output, opset=opset, input_shapes=input_shapes)
