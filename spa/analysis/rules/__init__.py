"""Op rules: one module per op family; importing this package imports every module of it, which
fills the registry (a new family's module needs no other edit)."""
import importlib as _importlib
import pkgutil as _pkgutil

from spa.analysis.rules.base import (  # noqa: F401
    RULES, Block, Rule, SinkLayout, register, register_rule, rule_for, standard_rule, unregister_rule,
)

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")
