"""What SPA's passes share with onnx-ir's pass contract (`onnx_ir.passes.PassBase`: `requires`,
`call` returning a `PassResult`, `ensures`).

A pass's `requires` refuses a plan that does not fit the model with `PlanMismatchError`: a
`PlanError` for SPA's callers (same message, exit code 8) and a `PreconditionError` for onnx-ir,
which would otherwise wrap the PlanError in its own PreconditionError and hide its type."""
from __future__ import annotations

import onnx_ir as ir

from spa.core.errors import PlanError


class PlanMismatchError(PlanError, ir.passes.PreconditionError):
    """The plan does not fit the model the pass was given."""


def check_plan(plan, analysis) -> None:
    """`plan.check_against(analysis)`, raising its PlanError as a PlanMismatchError."""
    try:
        plan.check_against(analysis)
    except PlanMismatchError:
        raise
    except PlanError as exc:
        raise PlanMismatchError(str(exc)) from None


class PlanPass(ir.passes.InPlacePass):
    """A pass that applies a pruning plan made from `analysis` (of this model or a copy of it);
    `requires` refuses a plan that does not fit the analysis."""

    def __init__(self, analysis, plan):
        super().__init__()
        self.analysis = analysis
        self.plan = plan

    def requires(self, model: ir.Model) -> None:
        check_plan(self.plan, self.analysis)
