"""Where the cascade reports what it is doing: log lines by default, rich progress bars on a terminal.

Its own module so that the command line, the demo and plugins' commands draw the same bars
without importing one another.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

log = logging.getLogger("lsun_crowd")


class Progress:
    """Where the cascade reports what it is doing; the CLI draws rich progress bars from it."""

    def message(self, text: str) -> None:
        log.info(text)

    def start(self, task: str, total: int) -> None:
        pass

    def advance(self, task: str, amount: int = 1) -> None:
        pass

    def finish(self, task: str) -> None:
        pass


class RichCascadeProgress(Progress):
    """Cascade events as rich progress bars and log lines."""

    def __init__(self, progress: RichProgress) -> None:
        self.bars = progress
        self.tasks: dict[str, TaskID] = {}

    def message(self, text: str) -> None:
        self.bars.console.print(text, highlight=False)

    def start(self, task: str, total: int) -> None:
        self.tasks[task] = self.bars.add_task(task, total=total)

    def advance(self, task: str, amount: int = 1) -> None:
        if task in self.tasks and amount:
            self.bars.advance(self.tasks[task], amount)

    def finish(self, task: str) -> None:
        if task in self.tasks:
            self.bars.remove_task(self.tasks.pop(task))


def progress_bars(output: Console | None = None) -> RichProgress:
    """Transient bars on ``output`` (a fresh stdout console by default), silent when it is quiet."""
    output = output or Console(soft_wrap=True)
    return RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=output,
        transient=True,
        disable=output.quiet,
    )
