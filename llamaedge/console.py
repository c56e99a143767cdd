"""The terminal: the one module that imports rich. Everything the CLI shows goes through here."""

from __future__ import annotations

import sys

from rich.console import Console

from llamaedge.errors import LlamaEdgeError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_error(err: LlamaEdgeError) -> None:
    """One line: what went wrong, then how to fix it."""
    message = f"[bold red]error:[/] {err}"
    if err.hint:
        message += f" [dim]({err.hint})[/]"
    err_console.print(message, soft_wrap=True)


def is_interactive() -> bool:
    return sys.stdout.isatty()
