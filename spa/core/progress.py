"""Progress bars for work that can take more than a few seconds (export, statistics, compensation,
benchmarking).

Use one function:

    from spa.core.progress import progress
    for feed in progress(feeds, "collecting statistics", total=samples):
        ...

The bar goes to stderr (stdout stays clean for `--json`). When stderr is not a terminal (a log
file, CI), work that lasts longer than LOG_EVERY_S prints a plain line that often instead, and one
at its end; shorter work prints nothing. `set_quiet(True)` (`spa --quiet`) silences both.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar of this process."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """True when bars are drawn: not quiet, and stderr is a terminal (not a pipe, file or CI log)."""
    return not _quiet and sys.stderr.isatty()


def progress(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `iterable`, drawing a bar labelled `description` while it runs.

    `total` is the number of items when `len(iterable)` does not exist (a generator); without it
    the bar shows a spinner and a count instead of a percentage."""
    if not enabled():
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        with Meter(description, total=total, unit="item", final_if_short=False) as meter:
            for item in iterable:
                yield item
                meter.update(1)
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    # transient: the bar disappears when done, so tables printed afterwards are not interleaved
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)


#: Seconds between plain status lines when stderr is not a terminal (a log file, CI).
LOG_EVERY_S = 30.0


class Meter:
    """Progress of a long loop that has something to say besides a count (a loss, a throughput):
    a bar with a status field on a terminal, otherwise one plain line on stderr every
    LOG_EVERY_S seconds and one at the end — a log file still shows that work goes on. Silent
    under `set_quiet(True)`.

        with Meter("fine-tuning", total=steps, unit="step") as meter:
            meter.update(1, "loss 0.41, 12.0 samples/s")
    """

    def __init__(self, description: str, total: int | None = None, unit: str = "step", every_s: float | None = None,
                 final_if_short: bool = True):
        self.description, self.total, self.unit = description, total, unit
        self.final_if_short = final_if_short  # False: no closing line unless a periodic one was printed
        self._printed = False
        self.every_s = LOG_EVERY_S if every_s is None else every_s
        self.done, self.status = 0, ""
        self._bar = self._task = None
        self._start = self._last = 0.0

    def __enter__(self):
        import time

        self._start = self._last = time.monotonic()
        if enabled():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=Console(stderr=True),
                                 transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
        return self

    def update(self, advance: int = 1, status: str | None = None) -> None:
        import time

        self.done += advance
        if status is not None:
            self.status = status
        if self._bar is not None:
            self._bar.update(self._task, advance=advance, status=self.status)
        elif not _quiet and time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self._printed = True
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        """"fine-tuning: step 120/500, loss 0.41, 12.0 samples/s, 62 s elapsed"."""
        import time

        count = f"{self.unit} {self.done}" + (f"/{self.total}" if self.total else "")
        status = f", {self.status}" if self.status else ""
        return f"{self.description}: {count}{status}, {time.monotonic() - self._start:.0f} s elapsed"

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif not _quiet and exc[0] is None and self.done and (self.final_if_short or self._printed):
            print(self.line(), file=sys.stderr, flush=True)
