"""From command-line options to a running server: the offload decision, the banner, and
`server.serve`. Shared by `llamaedge serve` and `llamaedge run`."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llamaedge import engine, gpu
from llamaedge.console import console
from llamaedge.errors import UsageError
from llamaedge.gpu import OffloadPlan
from llamaedge.model_load import ModelLoad, load_options
from llamaedge.types import ResolvedModel

if TYPE_CHECKING:  # imported in launch(), once the models are loading
    from llamaedge.server import ServeConfig, ServerState


def check_can_listen(host: str, port: int) -> None:
    """Fail before loading the model when the address is taken or not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                             hint="is the port in use? pick another with --port") from exc


def offload_plan(model: ResolvedModel, ctx_size: int | None, n_gpu_layers: int | None) -> OffloadPlan:
    """The user's --n-gpu-layers, or what fits the GPUs found."""
    if n_gpu_layers is not None:
        mode = "cpu" if n_gpu_layers == 0 else ("full" if n_gpu_layers == -1 else "partial")
        return OffloadPlan(n_gpu_layers, mode, f"--n-gpu-layers {n_gpu_layers}")
    devices, supports_offload = engine.list_devices(), engine.supports_gpu_offload()
    if not supports_offload or not any(d.kind in gpu.GPU_KINDS for d in devices):
        # Nothing to fit on a GPU: the model's shape does not matter, and reading it (a
        # vocab-only load) would hold up the start.
        return gpu.plan_offload(model.path.stat().st_size, 1, 0, devices, supports_offload)
    shape = engine.inspect_model(model.path)
    ctx = engine.context_size(ctx_size, shape.n_ctx_train)
    kv_bytes = gpu.kv_cache_bytes(shape.n_layers, shape.n_kv_heads, shape.head_dim, ctx)
    return gpu.plan_offload(model.path.stat().st_size, max(1, shape.n_layers), kv_bytes, devices, supports_offload)


def server_config(model: ResolvedModel | None, args: argparse.Namespace, plan: OffloadPlan | None,
                  embedding_model: ResolvedModel | None = None) -> ServeConfig:
    from llamaedge.server import ServeConfig

    if model is not None and args.prompt_template and args.prompt_template != "auto":
        model = dataclasses.replace(model, prompt_template=args.prompt_template)
    library = {name: getattr(args, name) for name in ("models_max", "idle_unload_s") if getattr(args, name, None) is not None}
    return ServeConfig(
        model=model,
        host=args.host,
        port=args.port,
        ctx_size=args.ctx_size,
        n_gpu_layers=plan.n_gpu_layers if plan is not None else args.n_gpu_layers,
        threads=args.threads,
        parallel=args.parallel,
        api_key=args.api_key,
        cors_origins=args.cors_origin,
        allowed_hosts=args.allowed_host,
        embedding_model=embedding_model,
        queue_max=args.queue_max,
        drain_s=args.drain_s,
        metrics_auth=args.metrics_auth,
        allow_image_urls=args.allow_image_urls,
        reasoning_format=args.reasoning_format,
        mounts=getattr(args, "mounts", []),
        tools=getattr(args, "tools", []),
        library_models=getattr(args, "library_models", []),
        library_all=getattr(args, "library_all", False),
        models_dir=args.models_dir,
        models_autoload=getattr(args, "models_autoload", True),
        library_n_gpu_layers=args.n_gpu_layers,
        **library,
        speculative=speculative_options(args),
    )


def speculative_options(args: argparse.Namespace) -> engine.SpecOptions:
    """`serve`'s drafts (commands.serve makes them of its options); none for `run`."""
    return getattr(args, "speculative", None) or engine.SpecOptions()


def drafts_text(spec: engine.SpecOptions, model: engine.Model) -> str:
    sources = ["prompt lookup"] if spec.ngram else []
    if spec.draft_model is not None and model.drafter is not None:
        sources.append(f"{spec.draft_model.name} ({model.drafter.size_bytes / 2**20:.0f} MiB)")
    lengths = f"{spec.draft_min} to {spec.draft_max}" if spec.draft_min > 1 else f"up to {spec.draft_max}"
    return f"{' and '.join(sources)}, {lengths} tokens a step"


def print_banner(state: ServerState, url: str, plan: OffloadPlan | None) -> None:
    config, model = state.config, state.model
    if config.model is None:
        print_library_banner(state, url)
        return
    if model is None:
        return
    # launch() plans the offload of the model it serves; only the library (above) has no plan.
    assert plan is not None
    devices = ", ".join(f"{d.name} ({d.kind})" for d in engine.list_devices()) or "none"
    console.print(f"[bold green]llamaedge[/] serving [bold]{config.model.model_id}[/]")
    console.print(f"  chat      {url}/")
    console.print(f"  API       {url}/v1  (OpenAI-compatible{', API key required' if config.api_key else ''})")
    console.print(f"  model     {config.model.path.name}  ({model.description}, {model.size_bytes / 2**20:.0f} MiB)")
    console.print(f"  context   {model.n_ctx} tokens, {model.parallel} parallel, {model.threads} threads")
    if model.projector is not None:
        console.print(f"  vision    {model.projector.path.name}  (images in the chat and the API)")
    if config.speculative.enabled:
        console.print(f"  drafts    {drafts_text(config.speculative, model)}")
    console.print(f"  queue     {state.queue_limit} waiting at most, then 503; {config.drain_s:g}s to drain on SIGTERM")
    console.print(f"  metrics   {url}/metrics  (Prometheus{', API key required' if config.metrics_auth else ''})")
    if state.embedding is not None and config.embedding_model is not None:
        embedding = state.embedding
        console.print(f"  embedding {config.embedding_model.model_id}  ({config.embedding_model.path.name}, "
                      f"{embedding.size_bytes / 2**20:.0f} MiB, context {embedding.n_ctx} tokens)")
    print_mounts(state, url)
    console.print(f"  devices   {devices}")
    console.print(f"  offload   {plan.reason}")
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        console.print(f"  [yellow]listening on {config.host} without --api-key: anyone who can reach this "
                      "machine can use the model[/]")
    console.print("  [dim]Ctrl-C to stop[/]")


def print_mounts(state: ServerState, url: str) -> None:
    """The lines both banners show: the mounted apps and tools, and image URLs if fetched."""
    if state.config.allow_image_urls:
        console.print("  [yellow]image URLs are fetched (--allow-image-urls): any client can make this server "
                      "fetch any address it reaches[/]")
    for mount in state.config.mounts:
        console.print(f"  app       {url}{mount.route}  ({mount.name}: {mount.policy.describe()})")
    for tool in state.config.tools:
        console.print(f"  tool      {tool.name}  ({tool.path.name}: {tool.describe()}; MCP at {url}/mcp)")


def print_library_banner(state: ServerState, url: str) -> None:
    """The banner of a server that serves its library alone (no --model, or several)."""
    config = state.config
    members = state.library.members()
    downloaded = [m.name for m in members if m.downloaded]
    console.print(f"[bold green]llamaedge[/] serving a library of {len(downloaded)} model(s), loaded on demand")
    console.print(f"  chat      {url}/")
    console.print(f"  API       {url}/v1  (OpenAI-compatible{', API key required' if config.api_key else ''})")
    console.print(f"  models    {', '.join(downloaded) or 'none yet: POST /models/pull or llamaedge pull'}")
    keep = f"unloaded after {config.idle_unload_s:g}s idle" if config.idle_unload_s > 0 else "kept until evicted"
    console.print(f"  loading   {config.models_max or 'as many as memory holds'} at once, {keep}"
                  f"{'' if config.models_autoload else '; autoload off: POST /models/load'}")
    console.print(f"  queue     {state.queue_limit} waiting at most, then 503; {config.drain_s:g}s to drain on SIGTERM")
    console.print(f"  metrics   {url}/metrics  (Prometheus{', API key required' if config.metrics_auth else ''})")
    print_mounts(state, url)
    console.print("  [dim]Ctrl-C to stop[/]")


def launch_library(args: argparse.Namespace, *, first: str | None = None,
                   on_ready: Callable[[str], None] | None = None) -> int:
    """Serve the library alone: every model in the models folder (or the --model set), none
    loaded before a request asks for it, except `first` (the first of several --model), which
    starts loading as the server starts."""
    check_can_listen(args.host, args.port)
    from llamaedge.server import serve

    config = server_config(None, args, None)
    url = f"http://{'127.0.0.1' if config.host in ('0.0.0.0', '::') else config.host}:{config.port}"

    def on_loaded(state: ServerState) -> None:
        gc.freeze()
        gc.enable()
        print_banner(state, url, None)
        if first is not None and not state.error:
            state.library.load(first)

    return serve(config, on_ready=on_ready, on_loaded=on_loaded)


def launch(model: ResolvedModel, args: argparse.Namespace, *, embedding_model: ResolvedModel | None = None,
           on_ready: Callable[[str], None] | None = None,
           loader: Callable[[Path, engine.LoadOptions], engine.Model] = engine.Model) -> int:
    """Serve `model` as `args` say. `loader`: what makes the models (see model_load.ModelLoad)."""
    check_can_listen(args.host, args.port)
    plan = offload_plan(model, args.ctx_size, args.n_gpu_layers)
    console.print(f"[dim]loading {model.path.name} ...[/]")
    # The weights load while the server's modules import and the apps compile.
    models = ModelLoad(model, load_options(args.ctx_size, plan.n_gpu_layers, args.threads, args.parallel,
                                           speculative_options(args), model.mmproj), embedding_model, loader=loader)
    from llamaedge.server import serve

    config = server_config(model, args, plan, embedding_model)
    url = f"http://{'127.0.0.1' if config.host in ('0.0.0.0', '::') else config.host}:{config.port}"

    def on_loaded(state: ServerState) -> None:
        # What startup made lives as long as the process: out of the collector's sight
        # (see commands.serve.pause_gc_for_startup), then collect as usual.
        gc.freeze()
        gc.enable()
        print_banner(state, url, plan)

    return serve(config, on_ready=on_ready, on_loaded=on_loaded, models=models)
