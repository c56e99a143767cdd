"""`llamaedge chat [--model NAME|PATH]`: chat with a model in this terminal. The chat itself is
the WebAssembly app llamaedge/apps/llama-chat.wasm (sources in wasm-apps/llama-chat), run as
`llamaedge run-wasm --nn-preload default:GGML:AUTO:MODEL llama-chat.wasm` runs it; the model is
loaded first, so that a bad file fails with a clear message and the app learns the real
context size."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from llamaedge.commands.run import choose_model
from llamaedge.commands.run_wasm import CLI_MEMORY_MAX_BYTES, CLI_SLICE_MAX_S
from llamaedge.console import err_console
from llamaedge.errors import UsageError
from llamaedge.limits import DEFAULT_CTX_SIZE
from llamaedge.types import ResolvedModel

MODEL_GRAPH = "default"

# The app's own options, passed on as they are: (flags, argparse keywords).
APP_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-p", "--prompt-template"), {"metavar": "NAME", "help": "auto (the model's own template; default) or a template name"}),
    (("-s", "--system-prompt"), {"metavar": "TEXT", "help": "the system prompt, kept when old turns are dropped"}),
    (("-n", "--n-predict"), {"type": int, "metavar": "N", "help": "the most tokens per answer (default 1024)"}),
    (("-r", "--reverse-prompt"), {"action": "append", "metavar": "TEXT", "help": "end an answer where the model writes TEXT (repeatable)"}),
    (("--temp",), {"type": float, "metavar": "X", "help": "sampling temperature (0: greedy)"}),
    (("--top-p",), {"type": float, "metavar": "X", "help": "nucleus sampling, 0 < X <= 1"}),
    (("--repeat-penalty",), {"type": float, "metavar": "X", "help": "penalize repeated tokens (1: off)"}),
    (("--presence-penalty",), {"type": float, "metavar": "X", "help": "penalize tokens already present (0: off)"}),
    (("--frequency-penalty",), {"type": float, "metavar": "X", "help": "penalize tokens by their frequency (0: off)"}),
    (("--seed",), {"type": int, "metavar": "N", "help": "sampling seed"}),
    (("--log-prompts",), {"action": "store_true", "help": "print each prompt as rendered (on stderr)"}),
    (("--log-stat",), {"action": "store_true", "help": "print token counts after each answer (on stderr)"}),
]


def default_app_path() -> Path:
    return Path(str(resources.files("llamaedge") / "apps" / "llama-chat.wasm"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat with a model in the terminal",
        description="Chat with a model in the terminal: /reset forgets the conversation, /help lists the "
        "commands, /exit or Ctrl-D quits. With no --model, the model is picked as `llamaedge run` picks it.",
    )
    parser.add_argument("--model", "-m", help="catalog name, path to a .gguf, hf:OWNER/REPO/FILE or https URL")
    parser.add_argument("--ctx-size", "-c", type=int, help=f"context size in tokens (default: the model's, at most {DEFAULT_CTX_SIZE})")
    parser.add_argument("--n-gpu-layers", type=int, help="layers to offload to the GPU (default: decided from the devices found; 0: CPU only)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the physical cores this process may use, within its CPU affinity and cgroup limit)")
    parser.add_argument("--models-dir", help="where downloaded models live")
    for flags, options in APP_OPTIONS:
        parser.add_argument(*flags, **options)
    parser.set_defaults(func=run)


def app_arguments(args: argparse.Namespace, model: ResolvedModel, n_ctx: int | None) -> list[str]:
    """The app's command line: the real context size (once known), the model's catalog
    template unless one was asked for, and the app options that were given."""
    out = [] if n_ctx is None else [f"--ctx-size={n_ctx}"]
    if args.prompt_template is None and model.prompt_template != "auto":
        out.append(f"--prompt-template={model.prompt_template}")
    for flags, options in APP_OPTIONS:
        name = flags[-1]
        value = getattr(args, name[2:].replace("-", "_"))
        if value is None or value is False:
            continue
        if value is True:
            out.append(name)
        else:
            for item in value if isinstance(value, list) else [value]:
                out.append(f"{name}={item}")
    return out


def check_arguments(args: argparse.Namespace) -> None:
    for name in ("ctx_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.n_gpu_layers is not None and args.n_gpu_layers < -1:
        raise UsageError("--n-gpu-layers must be -1 (all), 0 (none) or a count")


def run(args: argparse.Namespace) -> int:
    from llamaedge.engine import LoadOptions, Model
    from llamaedge.launch import offload_plan
    from llamaedge.runtime import GraphRegistry, NNSession, RunLimits, Runtime

    check_arguments(args)
    model = choose_model(args.model, args.models_dir)
    plan = offload_plan(model, args.ctx_size, args.n_gpu_layers)
    if not args.verbose:
        # The terminal is the conversation's: the host's and engine's notes only with -v.
        for name in ("llamaedge.runtime", "llamaedge.engine"):
            logging.getLogger(name).setLevel(logging.WARNING)
    registry = GraphRegistry(loader=Model)
    runtime = Runtime(registry, limits=RunLimits(memory_max_bytes=CLI_MEMORY_MAX_BYTES, wasm_slice_max_s=CLI_SLICE_MAX_S))
    try:
        app = runtime.load_app(default_app_path())
        # The app judges its own options: ask it before the model takes its time to load.
        code = runtime.run_attached(app, ["--check", *app_arguments(args, model, None)], NNSession(registry))
        if code != 0:
            return code
        err_console.print(f"[dim]loading {model.path.name} ...[/]")
        # One conversation: one sequence, which may use the whole context.
        options = LoadOptions(ctx_size=args.ctx_size, n_gpu_layers=plan.n_gpu_layers, threads=args.threads, parallel=1)
        loaded = Model(model.path, options)
        try:
            registry.register(MODEL_GRAPH, loaded)
            sys.stdout.flush()
            return runtime.run_attached(app, app_arguments(args, model, loaded.n_ctx), NNSession(registry))
        finally:
            loaded.close()
    finally:
        runtime.close()
        registry.close()
