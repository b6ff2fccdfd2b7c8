"""Op rules: one module per op family; importing this package fills the registry."""
from spa.analysis.rules import (  # noqa: F401
    attention, conv, elementwise, indexing, linear, norm, offsets, pooling, quant, shape_ops,
)
from spa.analysis.rules.base import (  # noqa: F401
    RULES, Block, Rule, SinkLayout, register, register_rule, rule_for, standard_rule, unregister_rule,
)
