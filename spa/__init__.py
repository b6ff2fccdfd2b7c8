"""SPA — Structurally Prune Anything: structured pruning of any model through ONNX."""
__version__ = "0.1.0"

from spa.allocation.allocate import Budget  # noqa: E402,F401
from spa.core.errors import SpaError  # noqa: E402,F401
from spa.allocation.plan import PruningPlan  # noqa: E402,F401


# The public API (spa/api.py): spa.prune, spa.finetune, spa.inspect, spa.groups, spa.save, spa.pruning_report, …;
# spa.register_rule / spa.unregister_rule for custom ops (see their docstrings).
# (no API name may equal a submodule's: importing spa.report.tables or spa.report.compare would shadow it)
_API = ("prune", "finetune", "inspect", "groups", "save", "pruning_report", "write_report", "PruneResult")


def __getattr__(name):
    # The heavier stages load on first use, so `import spa` stays cheap.
    if name in _API:
        from spa import api

        return getattr(api, name)
    if name == "diff":
        from spa.report.compare import diff

        return diff
    if name in ("load_canonical", "make_plan"):
        from spa.flow import pipeline

        return getattr(pipeline, name)
    if name in ("register_rule", "unregister_rule"):
        # custom ops: teach SPA what an op does to channels (spa/analysis/rules/base.py)
        from spa.analysis.rules import base

        return getattr(base, name)
    if name == "analyze":
        from spa.analysis.groups import analyze

        return analyze
    raise AttributeError(name)
