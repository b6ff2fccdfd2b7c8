"""Op rules: one module per op family; importing this package imports every module of it, which
fills the registry (a new family's module needs no other edit)."""
from spa.analysis.rules.base import (  # noqa: F401
    RULES, Block, Rule, SinkLayout, register, register_rule, rule_for, standard_rule, unregister_rule,
)
from spa.core.plugins import import_submodules

import_submodules(__name__)
