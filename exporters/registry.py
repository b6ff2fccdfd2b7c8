"""The exporters' registry: each exporter's name (`spa export NAME`), the optional extra it needs, and
the function that runs it. Adding an exporter is a module with an `export(source, output, **options)`
function plus one entry here (and its test); the CLI takes its choices from `exporter_names()`.

Nothing here imports a framework: each exporter's module is imported when it runs, and its extra is
checked first (`spa.exporters.framework.require`), so a missing extra is a one-line error."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from spa.core.errors import SpaError, UsageError
from spa.core.plugins import import_submodules


@dataclass(frozen=True)
class Exporter:
    name: str                     # `spa export NAME`
    module: str                   # spa.exporters.<module> holds export(source, output, **options)
    summary: str                  # one line for help texts
    extra: str | None = None      # pip extra (`pip install 'spa-prune[EXTRA]'`); None: core dependencies
    imports: tuple[str, ...] = ()  # modules the extra provides (checked before the export runs)
    install: str = ""             # how to install the extra
    options: tuple[str, ...] = ("opset", "input_shapes")  # the keyword options its export takes
    takes_folder: bool = False    # the source is a folder
    file_suffixes: tuple[str, ...] = ()  # … or a file with one of these suffixes

    def missing(self) -> str | None:
        """Why this exporter cannot run here (one line), or None. An extra's modules are imported
        (a broken install shows); core dependencies are only looked up (the export imports them)."""
        if self.extra is not None:
            from spa.exporters.framework import missing_extra

            return missing_extra(self.extra)
        for name in self.imports:
            if not _installed(name):
                return (f"spa export {self.name} needs {name}, which is not installed; pip install spa-prune "
                        f"installs it ({', '.join(self.imports)})")
        return None

    def export_function(self):
        """The module's export function (imports the module, not the framework)."""
        return importlib.import_module(f"spa.exporters.{self.module}").export

    def export(self, source, output, **options) -> Path:
        """Run the exporter: what it needs checked first (SpaError, exit code 2, when missing)."""
        if self.takes_folder and not Path(source).is_dir() and not str(source).lower().endswith(self.file_suffixes):
            also = f" or a {' / '.join(self.file_suffixes)} file" if self.file_suffixes else ""
            raise SpaError(f"{source}: not a folder (spa export {self.name} takes a local model folder{also})")
        problem = self.missing()
        if problem:
            raise SpaError(problem)
        return self.export_function()(source, output, **options)


_EXPORTERS = (
    Exporter("hf", "hf", "a local Hugging Face model folder or .gguf file, through optimum (or torch.onnx)",
             imports=("torch", "transformers", "optimum"), options=("opset", "task", "exporter"), takes_folder=True,
             file_suffixes=(".gguf",)),
    Exporter("tf", "tf", "a Keras model, .keras/.h5 file or SavedModel folder, through tf2onnx",
             extra="tf", imports=("tensorflow", "tf2onnx"),
             install="pip install 'spa-prune[tf]' (tensorflow-cpu, tf2onnx)"),
    Exporter("jax", "jax", "a JAX/Flax function or module, through jax2onnx (input shapes required)",
             extra="jax", imports=("jax", "flax", "jax2onnx"),
             install="pip install 'spa-prune[jax]' (jax, flax, jax2onnx)"),
    Exporter("paddle", "paddle", "a PaddlePaddle layer or saved inference model, through paddle2onnx",
             extra="paddle", imports=("paddle", "paddle2onnx"),
             install="pip install 'spa-prune[paddle]' && pip install --no-deps paddle2onnx==2.1.0"),
)
EXPORTERS: dict[str, Exporter] = {e.name: e for e in _EXPORTERS}


def register_exporter(exporter: Exporter) -> Exporter:
    """Add an exporter: a module of spa.exporters calls this at import with its own entry, so a
    new exporter is that one module (it is found by `_discover`)."""
    EXPORTERS[exporter.name] = exporter
    return exporter


def _discover() -> None:
    """Import every module of spa.exporters once (none imports a framework at import time)."""
    import_submodules(__package__)


def exporter_names() -> list[str]:
    """The names `spa export` accepts, in registry order."""
    _discover()
    return list(EXPORTERS)


def get_exporter(name: str) -> Exporter:
    """The exporter called `name`; UsageError naming the choices when there is none."""
    _discover()
    try:
        return EXPORTERS[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown exporter '{name}' (choose from {', '.join(EXPORTERS)})") from None


def _installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):  # a broken install, or an import blocked on purpose
        return False
