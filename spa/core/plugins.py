"""Registries fill themselves by importing their package's modules: a new criterion, statistics
source, op-rule family or exporter is one module that registers itself at import."""
from __future__ import annotations

import importlib
import pkgutil

_imported: set[str] = set()


def import_submodules(package: str) -> None:
    """Import every module of `package` (a dotted name), once per process."""
    if package in _imported:
        return
    _imported.add(package)
    found = importlib.import_module(package)
    for module in pkgutil.iter_modules(found.__path__):
        importlib.import_module(f"{package}.{module.name}")
