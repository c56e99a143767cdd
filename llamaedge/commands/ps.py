"""`llamaedge ps`: the models a running server has in memory, as `ollama ps` lists them: the
memory each takes, its context, its slots busy, how long it has been idle (GET /v1/models)."""

from __future__ import annotations

import argparse
from typing import Any

from llamaedge.client import ServerClient, add_client_arguments, in_memory, model_runtime, model_status
from llamaedge.console import err_console, print_json, print_table
from llamaedge.download import human_bytes

COLUMNS = ["name", "status", "memory", "context", "slots busy", "idle"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ps", help="list the models a running server has loaded",
        description="List the models a running `llamaedge serve` has loaded: memory, context, slots busy, idle time. "
        "It asks the server where `serve` listens by default, or the one --url or --host/--port names.",
    )
    add_client_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the server's model objects as JSON")
    parser.set_defaults(func=run)


def duration(seconds: float) -> str:
    """12s, 4m 05s, 2h 03m."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole // 60 % 60:02d}m"


def memory_cell(model: dict[str, Any]) -> str:
    """The library's estimate of what the model takes: RAM, and GPU memory when it has layers there."""
    memory = model.get("memory")
    if not isinstance(memory, dict):
        return "-"
    ram, vram = memory.get("ram_bytes") or 0, memory.get("vram_bytes") or 0
    return human_bytes(ram) if not vram else f"{human_bytes(ram)} + {human_bytes(vram)} GPU"


def row(model: dict[str, Any]) -> list[str]:
    status = model_status(model)
    runtime = model_runtime(model)
    state = "unloading" if status.get("unloading") else str(status.get("value"))
    slots, idle = "-", "-"
    if runtime.get("parallel"):
        slots = f"{runtime.get('requests_running', 0)}/{runtime['parallel']}"
        if runtime.get("requests_waiting"):
            slots += f" +{runtime['requests_waiting']} waiting"
    if runtime.get("idle_s") is not None:
        idle = duration(runtime["idle_s"])
    context = model.get("context_length")
    return [f"[bold]{model['id']}[/]", state, memory_cell(model), str(context) if context else "-", slots, idle]


def run(args: argparse.Namespace) -> int:
    client = ServerClient.from_args(args)
    models = client.models()
    shown = in_memory(models)
    if args.json:
        print_json({"url": client.url, "models": shown})
        return 0
    if not shown:
        err_console.print(f"No model is loaded on {client.url}: a request that names one loads it "
                          f"({len(models)} in its library).", soft_wrap=True, markup=False)
        return 0
    print_table(None, COLUMNS, [row(m) for m in shown],
                caption=f"In memory: {len(shown)} of the {len(models)} models on {client.url}.")
    return 0
