"""Wall-clock seconds per stage of a run (load, analysis, statistics, …), for the summary: a user
of a billion-parameter model needs to see where the time goes."""
from __future__ import annotations

import contextlib
import time


class Stopwatch:
    """`with watch("statistics"): …` adds the block's seconds to `watch.seconds["statistics"]`
    (in first-seen order; a stage timed twice accumulates)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def describe(seconds: dict[str, float]) -> str:
    """"load 3.1 s, analysis 0.8 s, statistics 41.0 s" (stages under 0.05 s left out)."""
    return ", ".join(f"{stage} {s:.1f} s" for stage, s in seconds.items() if s >= 0.05)
