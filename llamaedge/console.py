"""The terminal: the one module that imports rich. Everything the CLI shows goes through here.

On a terminal, tables and progress bars fit its width: a table wraps long cells between words,
then leaves out its least important columns, a bar shortens the file name. Piped or redirected,
output is plain text: tables become space-aligned columns with no box drawing or colour
(title and caption go to stderr, so stdout is the rows alone), and downloads report a few
lines instead of redrawing a bar.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, JustifyMethod
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column as RichColumn
from rich.table import Table
from rich.text import Text

from llamaedge.errors import LlamaEdgeError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
# Piped into a log or another program, a line stays one line: rich would otherwise break it
# at 80 columns (or COLUMNS), which splits what grep and log readers look for.
for _stream in (console, err_console):
    _stream.soft_wrap = not _stream.is_terminal


def print_error(err: LlamaEdgeError) -> None:
    """One line: what went wrong, then how to fix it."""
    message = f"[bold red]error:[/] {err}"
    if err.hint:
        message += f" [dim]({err.hint})[/]"
    err_console.print(message, soft_wrap=True)


# Piped progress: one line per this many percent, so a log shows the download moving.
PLAIN_PROGRESS_STEP_PERCENT = 25
# Below this width the transfer speed is left out of a download bar (the time left says enough).
PROGRESS_SPEED_MIN_WIDTH = 100


@contextmanager
def download_progress() -> Iterator[Callable[[Any], None]]:
    """A sink for download progress events (`download.ProgressEvent`: name, status,
    completed, total): one bar per file on a terminal, a few plain lines otherwise."""
    if not err_console.is_terminal:
        yield _plain_progress_sink()
        return
    columns = [
        # The file name gives way first on a narrow terminal: it shortens with an ellipsis.
        TextColumn("{task.description}", table_column=RichColumn(no_wrap=True, overflow="ellipsis", ratio=2)),
        BarColumn(bar_width=None, table_column=RichColumn(ratio=1)),
        DownloadColumn(),
        TimeRemainingColumn(),
    ]
    if err_console.width >= PROGRESS_SPEED_MIN_WIDTH:
        columns.insert(3, TransferSpeedColumn())
    with Progress(*columns, console=err_console, expand=True) as progress:
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


def _plain_progress_sink() -> Callable[[Any], None]:
    """Progress for a log or a pipe: a line when a file starts, every
    PLAIN_PROGRESS_STEP_PERCENT and when it is done; nothing that redraws."""
    from llamaedge.download import human_bytes

    reported: dict[str, int] = {}  # file -> the last percentage step written

    def step_of(event: Any) -> int:
        if not event.total:
            return 0
        return event.completed * 100 // event.total // PLAIN_PROGRESS_STEP_PERCENT * PLAIN_PROGRESS_STEP_PERCENT

    def write(event: Any) -> None:
        if event.status == "downloading":
            if event.name not in reported:
                size = f" ({human_bytes(event.total)})" if event.total else ""
                resumed = f", resuming at {human_bytes(event.completed)}" if event.completed else ""
                err_console.print(f"downloading {event.name}{size}{resumed}", soft_wrap=True, markup=False)
                reported[event.name] = step_of(event)
            elif reported[event.name] < step_of(event) < 100:
                reported[event.name] = step_of(event)
                err_console.print(f"downloading {event.name}: {reported[event.name]}%", soft_wrap=True, markup=False)
        elif event.status == "verifying":
            err_console.print(f"verifying {event.name}", soft_wrap=True, markup=False)
        elif event.status == "done":
            err_console.print(f"downloaded {event.name}", soft_wrap=True, markup=False)

    return write


# Wide enough to measure any table at its natural width (rich caps a measure at its limit).
TABLE_WIDTH_UNBOUNDED = 10_000


@dataclass(frozen=True)
class Column:
    """A table column. On a terminal too narrow for the whole table, a column with `wrap_width`
    first wraps its cells at spaces down to that width; then the columns with the lowest
    `priority` are left out, one at a time, until the rest fits. The first column names the
    row and is never wrapped or left out. Piped output has every column, unwrapped."""

    header: str
    priority: int = 0
    justify: JustifyMethod = "left"
    wrap_width: int | None = None  # None: never wrapped


def print_table(title: str | None, columns: Sequence[Column | str], rows: list[list[str]], *,
                caption: str | None = None) -> None:
    """A table on stdout; cells may use rich markup (dropped when piped)."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    if console.is_terminal:
        _print_rich_table(title, cols, rows, caption)
    else:
        _print_plain_table(title, cols, rows, caption)


def _rich_table(columns: list[Column], rows: list[list[str]], keep: list[int], *, narrowest: bool = False,
                title: str | None = None, caption: str | None = None) -> Table:
    """The table of the `keep` columns; `narrowest` sets each wrapping column to its wrap_width,
    to measure the least room the table needs."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for index in keep:
        column = columns[index]
        wraps = index > 0 and column.wrap_width is not None
        table.add_column(column.header, justify=column.justify, no_wrap=not wraps, overflow="fold",
                         max_width=column.wrap_width if wraps and narrowest else None)
    for row in rows:
        table.add_row(*(row[index] for index in keep))
    return table


def _print_rich_table(title: str | None, columns: list[Column], rows: list[list[str]], caption: str | None) -> None:
    keep = list(range(len(columns)))
    # Least important first (the later column of two alike); the first column stays.
    droppable = sorted(range(1, len(columns)), key=lambda i: (columns[i].priority, -i))
    unbounded = console.options.update_width(TABLE_WIDTH_UNBOUNDED)

    def fits() -> bool:
        return console.measure(_rich_table(columns, rows, keep, narrowest=True), options=unbounded).maximum <= console.width

    while droppable and not fits():
        keep.remove(droppable.pop(0))
    left_out = [column.header for index, column in enumerate(columns) if index not in keep]
    if left_out:
        note = f"Left out to fit {console.width} columns: {', '.join(left_out)} (a wider terminal or --json shows them)."
        caption = f"{caption} {note}" if caption else note
    console.print(_rich_table(columns, rows, keep, title=title, caption=caption))


def _print_plain_table(title: str | None, columns: list[Column], rows: list[list[str]], caption: str | None) -> None:
    if title:
        err_console.print(title, soft_wrap=True, markup=False)
    cells = [[column.header for column in columns]]
    cells += [[Text.from_markup(cell).plain for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        parts = [
            cell.rjust(widths[i]) if columns[i].justify == "right" else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        console.out("  ".join(parts).rstrip(), highlight=False)
    if caption:
        err_console.print(Text.from_markup(caption).plain, soft_wrap=True, markup=False)


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, no markup or wrapping."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
