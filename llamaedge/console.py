"""The terminal: the one module that imports rich. Everything the CLI shows goes through here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from llamaedge.errors import LlamaEdgeError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_error(err: LlamaEdgeError) -> None:
    """One line: what went wrong, then how to fix it."""
    message = f"[bold red]error:[/] {err}"
    if err.hint:
        message += f" [dim]({err.hint})[/]"
    err_console.print(message, soft_wrap=True)


@contextmanager
def download_progress() -> Iterator[Callable[[Any], None]]:
    """A sink for download progress events (`download.ProgressEvent`: name, status,
    completed, total) that draws one bar per file: bytes, speed and time left."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        tasks: dict[str, TaskID] = {}

        def draw(event: Any) -> None:
            task = tasks.get(event.name)
            if task is None:
                task = tasks[event.name] = progress.add_task(event.name, total=event.total, visible=False)
            progress.update(
                task,
                completed=event.completed,
                total=event.total,
                description=f"{event.status} {event.name}",
                # Asking the hub about the file takes a moment; a bar appears once bytes flow.
                visible=event.status != "resolving",
            )

        try:
            yield draw
        except BaseException:
            # A failed download leaves its one-line error, not a half-drawn bar above it.
            for task in tasks.values():
                progress.remove_task(task)
            raise


def print_table(title: str | None, columns: list[str], rows: list[list[str]], *, caption: str | None = None) -> None:
    """A plain table on stdout; cells may use rich markup."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for index, column in enumerate(columns):
        # The first column names the row: never break it, so it stays greppable and copyable.
        table.add_column(column, overflow="fold", no_wrap=index == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, no markup or wrapping."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
