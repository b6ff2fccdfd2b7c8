"""Op rules: one module per op family; importing this package fills the registry."""
from spa.analysis.rules import attention, conv, elementwise, linear, norm, pooling, quant, shape_ops  # noqa: F401
from spa.analysis.rules.base import RULES, Block, Rule, register, rule_for  # noqa: F401
