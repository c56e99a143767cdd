"""From command-line options to a running server: the offload decision, the banner, and
`server.serve`. Shared by `llamaedge serve` and `llamaedge run`."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from llamaedge import engine
from llamaedge.console import console
from llamaedge.server import ServeConfig, ServerState, serve
from llamaedge.types import ResolvedModel


def server_config(model: ResolvedModel, args: argparse.Namespace) -> ServeConfig:
    if args.prompt_template and args.prompt_template != "auto":
        model = dataclasses.replace(model, prompt_template=args.prompt_template)
    return ServeConfig(
        model=model,
        host=args.host,
        port=args.port,
        ctx_size=args.ctx_size,
        n_gpu_layers=args.n_gpu_layers if args.n_gpu_layers is not None else (-1 if engine.supports_gpu_offload() else 0),
        threads=args.threads,
        parallel=args.parallel,
        api_key=args.api_key,
        cors_origins=args.cors_origin,
    )


def print_banner(state: ServerState, url: str) -> None:
    config, model = state.config, state.model
    if model is None:
        return
    devices = ", ".join(f"{d.name} ({d.kind})" for d in engine.list_devices()) or "none"
    layers = "all" if config.n_gpu_layers == -1 else str(config.n_gpu_layers)
    offload = f"{layers} of {model.n_layers} layers on the GPU" if config.n_gpu_layers else "CPU only"
    console.print(f"[bold green]llamaedge[/] serving [bold]{config.model.model_id}[/]")
    console.print(f"  chat      {url}/")
    console.print(f"  API       {url}/v1  (OpenAI-compatible{', API key required' if config.api_key else ''})")
    console.print(f"  model     {config.model.path.name}  ({model.description}, {model.size_bytes / 2**20:.0f} MiB)")
    console.print(f"  context   {model.n_ctx} tokens, {model.parallel} parallel, {model.threads} threads")
    console.print(f"  backend   {offload}; devices: {devices}")
    console.print("  [dim]Ctrl-C to stop[/]")


def launch(model: ResolvedModel, args: argparse.Namespace, *, on_ready: Callable[[str], None] | None = None) -> int:
    config = server_config(model, args)
    url = f"http://{'127.0.0.1' if config.host in ('0.0.0.0', '::') else config.host}:{config.port}"
    console.print(f"[dim]loading {model.path.name} ...[/]")
    return serve(config, on_ready=on_ready, on_loaded=lambda state: print_banner(state, url))
