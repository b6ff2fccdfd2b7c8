"""SPA — Structurally Prune Anything: structured pruning of any model through ONNX."""
__version__ = "0.1.0"

from spa.allocate import Budget  # noqa: E402,F401
from spa.errors import SpaError  # noqa: E402,F401
from spa.plan import PruningPlan  # noqa: E402,F401


def __getattr__(name):
    # The heavier stages load on first use, so `import spa` stays cheap.
    if name in ("prune", "load_canonical", "make_plan"):
        from spa import pipeline

        return getattr(pipeline, name)
    if name == "analyze":
        from spa.analysis import analyze

        return analyze
    raise AttributeError(name)
