"""Progress bars for work that can take more than a few seconds (export, statistics, compensation,
benchmarking).

Use one function:

    from spa.core.progress import progress
    for feed in progress(feeds, "collecting statistics", total=samples):
        ...

The bar goes to stderr (stdout stays clean for `--json`), and is silent — the iterable is returned
untouched — when stderr is not a terminal or when `set_quiet(True)` was called (`spa --quiet`).
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
        yield from iterable
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
