"""`llamaedge rm`: delete a downloaded model (and any partial download of it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamaedge import catalog, download, settings
from llamaedge.console import console
from llamaedge.errors import ModelError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rm",
        help="delete a downloaded model",
        description="Delete a downloaded model, and any partial download of it, from the models folder.",
    )
    parser.add_argument("model", metavar="MODEL", help="catalog name or hf:OWNER/REPO/FILE / URL it was pulled as")
    parser.add_argument("--models-dir", help="where downloaded models live")
    parser.set_defaults(func=run)


def _prune_empty_parents(path: Path, root: Path) -> None:
    """Remove the owner/repo folders a download created, once they are empty."""
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def run(args: argparse.Namespace) -> int:
    spec = catalog.parse_spec(args.model)
    if spec.kind == "path":
        raise UsageError(f"{args.model} is a file of yours, not a downloaded model", hint="delete it yourself if you mean to")
    if spec.kind == "catalog" and spec.entry is not None and spec.entry.embedded:
        raise UsageError(
            f"{spec.entry.name} is built in: it ships inside the {spec.entry.package} package",
            hint=f"pip uninstall {spec.entry.package} removes it",
        )
    root = settings.models_dir(args.models_dir)
    dest = catalog.local_path(spec, root)
    size = dest.stat().st_size if dest.is_file() else 0
    partial = download.partial_bytes(dest)
    if not size and not partial and not download.partial_path(dest).exists():
        raise ModelError(f"{args.model} is not downloaded", hint="`llamaedge models` shows what is")
    dest.unlink(missing_ok=True)
    download.remove_partial(dest)
    _prune_empty_parents(dest, root)
    freed = download.human_bytes(size + partial)
    console.print(f"removed {args.model} ({freed} freed)")
    return 0
