"""`llamaedge pull`: download a model (catalog name, hf:OWNER/REPO/FILE or an https URL)."""

from __future__ import annotations

import argparse

from llamaedge import catalog, download, settings
from llamaedge.console import console
from llamaedge.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pull",
        help="download a model: catalog NAME, hf:OWNER/REPO/FILE or an https URL",
        description="Download a model into the models folder, resuming an interrupted download and verifying it.",
    )
    parser.add_argument("model", metavar="MODEL", help="catalog name, hf:OWNER/REPO/FILE[@REVISION] or https URL of a .gguf")
    parser.add_argument("--models-dir", help="where downloaded models live")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = catalog.parse_spec(args.model)
    if spec.kind == "path":
        raise UsageError(f"{args.model} is a local file: there is nothing to pull", hint="serve it directly with --model PATH")
    if spec.kind == "catalog" and spec.entry is not None and spec.entry.embedded:
        model = catalog.resolve_model(args.model)
        console.print(f"{spec.entry.name} is built in (from the {spec.entry.package} package): {model.path}")
        return 0
    dest = catalog.local_path(spec, settings.models_dir(args.models_dir))
    if dest.is_file():
        console.print(f"{args.model} is already downloaded: {dest}")
        return 0
    model = catalog.resolve_model(args.model, models_dir=args.models_dir, pull=True)
    console.print(f"[green]pulled[/] {args.model} ({download.human_bytes(model.path.stat().st_size)}): {model.path}")
    return 0
