"""Calibration-free sink moments without running the model (placeholder until written)."""
from __future__ import annotations

from spa.errors import UsageError


def hessians(moments_model, model, sinks, source):
    raise UsageError(f"the '{source}' statistics source is not available yet")
