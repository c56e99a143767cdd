"""`llamaedge` command line: one module per subcommand under llamaedge/commands/, each with
`register(subparsers)` that adds its parser and sets `func`. Errors are mapped to one-line
messages here, once."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from llamaedge import __version__
from llamaedge.errors import LlamaEdgeError

COMMANDS = ["run", "serve", "ps", "stop", "models", "pull", "rm", "info", "run_wasm", "chat"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamaedge",
        description="Local LLM chat and an OpenAI-compatible API on a WASI-NN runtime.",
    )
    parser.add_argument("--version", action="version", version=f"llamaedge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"llamaedge.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the command `args` were parsed for (`args.func`), its errors as one-line messages."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except LlamaEdgeError as err:
        from llamaedge.console import print_error

        print_error(err)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
