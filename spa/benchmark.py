"""Latency of models under ONNX Runtime (CPU), measured the same way for each so they compare."""
from __future__ import annotations

import time

import numpy as np
import onnx_ir as ir

from spa.errors import SpaError


def median_latency_ms(models: list[ir.Model], feeds: dict, rounds: int = 50, warmup: int = 3) -> list[float]:
    """Median milliseconds per run of each model on `feeds`. Rounds alternate between the models so
    that machine load drifts affect all of them alike."""
    from spa.progress import progress
    from spa.validate import session

    if rounds < 1:
        raise SpaError("--rounds must be at least 1")
    sessions = [session(m) for m in models]
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feeds)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in progress(range(rounds), "measuring latency"):
        for s, bucket in zip(sessions, times):
            start = time.perf_counter()
            s.run(None, feeds)
            bucket.append(time.perf_counter() - start)
    return [1000.0 * float(np.median(t)) for t in times]
