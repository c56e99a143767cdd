"""`llamaedge serve`: the OpenAI-compatible API and the web chat for one model."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llamaedge.errors import UsageError
from llamaedge.hostguard import parse_allowed_host
from llamaedge.limits import DEFAULT_CTX_SIZE, DRAIN_S, IDLE_UNLOAD_S, MODELS_MAX, QUEUE_MAX_PER_SLOT
from llamaedge.types import ResolvedModel

if TYPE_CHECKING:  # the engine loads with the model, not with the command line
    from llamaedge.engine import LoadOptions, Model

# The engine's speculative-decoding defaults and bound (llamaedge.engine.types
# DRAFT_MAX_DEFAULT, DRAFT_TOKENS_MAX), for the help and the checks: importing the engine to
# read them would hold up the start of every command. tests/test_cli_serve.py holds them equal.
DRAFT_MAX_DEFAULT = 8
DRAFT_TOKENS_MAX = 15


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `serve` and `run` share."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--ctx-size", type=int, help=f"context size in tokens (default: the model's, at most {DEFAULT_CTX_SIZE})")
    parser.add_argument("--n-gpu-layers", type=int, help="layers to offload to the GPU (default: decided from the devices found; 0: CPU only)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the physical cores this process may use, within its CPU affinity and cgroup limit)")
    parser.add_argument("--parallel", type=int,
                        help="requests decoded together (default: one per 512 context tokens, 4 to 16)")
    parser.add_argument("--prompt-template", default="auto", help="chat template name, or auto (the model's own; default)")
    parser.add_argument("--reasoning-format", choices=("auto", "none"), default="auto",
                        help="auto: a thinking model's reasoning goes to reasoning_content (default); none: it stays in content")
    parser.add_argument("--api-key", default=os.environ.get("LLAMAEDGE_API_KEY"), help="require this key on /v1, as a bearer token or x-api-key (default: $LLAMAEDGE_API_KEY)")
    parser.add_argument("--queue-max", type=int, metavar="N",
                        help=f"requests that may wait beyond --parallel; more get 503 at once (default {QUEUE_MAX_PER_SLOT} per slot)")
    parser.add_argument("--drain-s", type=float, default=DRAIN_S, metavar="SECONDS",
                        help=f"on SIGTERM or Ctrl-C, how long requests in flight may take to finish (default {DRAIN_S:g})")
    parser.add_argument("--metrics-auth", action="store_true", help="/metrics needs the API key too (default: public, as /health)")
    parser.add_argument("--allow-image-urls", action="store_true",
                        help="fetch http(s) image URLs of requests (default: refused; with it any client can make the "
                             "server fetch any address it reaches; size and time limited, redirects to the same host "
                             "only: docs/images.md)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="let pages from ORIGIN call the API: read answers (CORS) and send POST/PUT/PATCH/DELETE, which other sites may not (repeatable; * for any)")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host is NAME, any port (repeatable; .example.com: it and "
                             "the names under it; * : any Host). Default: localhost, 127.0.0.1, [::1], the --host "
                             "address, and any IP address when bound beyond loopback")
    parser.add_argument("--models-dir", help="where downloaded models live")
    parser.add_argument("--models-max", type=int, metavar="N",
                        help=f"models loaded at once; the least recently used idle one is unloaded to load another "
                             f"(default {MODELS_MAX}; 0: as many as memory holds)")
    parser.add_argument("--no-models-autoload", dest="models_autoload", action="store_false",
                        help="answer a request for a model not loaded with 400 instead of loading it (POST /models/load does)")
    parser.add_argument("--idle-unload-s", type=float, metavar="SECONDS",
                        help=f"unload a model unused this long (default {IDLE_UNLOAD_S:g}; 0: never); "
                             "the model given alone with --model stays loaded")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model over the OpenAI API and the web chat",
                                   description="Serve a GGUF model: the OpenAI-compatible API under /v1 and the web chat at /.")
    parser.add_argument("--model", "-m", action="append", default=[],
                        help="catalog name, path to a .gguf, hf:REPO/FILE or an https URL; once: serve it, loaded "
                             "at start; several times: serve that set, loaded on demand; none: every model in "
                             "--models-dir, loaded on demand (docs/library.md)")
    parser.add_argument("--mmproj", metavar="FILE",
                        help="the vision projector (mmproj GGUF) of the --model given by path: images in the chat and "
                             "the API (a catalog vision model brings its own)")
    parser.add_argument("--embedding-model", metavar="MODEL",
                        help="also load this model for /v1/embeddings (named as --model is; default: embed with the chat model)")
    parser.add_argument("--app", action="append", default=[], metavar="/ROUTE=PATH.wasm",
                        help="also serve this WAGI app at ROUTE, on the same model (repeatable; docs/apps.md)")
    parser.add_argument("--app-policy", action="append", default=[], metavar="/ROUTE:KEY=VALUE",
                        help="set a mounted app's policy: memory, wall-time, max-tokens, models, env, dirs, hosts, authorization")
    parser.add_argument("--tool", action="append", default=[], metavar="NAME[=PATH.wasm]",
                        help="serve a sandboxed tool: PATH.wasm with its manifest PATH.json beside it, or NAME alone "
                             "for a shipped example (calc, files, http_get); at /mcp and to the tool loop "
                             "(repeatable; docs/tools.md)")
    parser.add_argument("--tool-policy", action="append", default=[], metavar="NAME=FILE|NAME:KEY=VALUE",
                        help="a tool's policy: FILE (JSON or TOML) replaces its manifest's; KEY=VALUE sets memory, "
                             "wall-time, env, dirs or hosts (env, dirs and hosts add)")
    add_server_arguments(parser)
    add_speculative_arguments(parser)
    parser.set_defaults(func=run)


def add_speculative_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "speculative decoding", "Draft tokens that the model checks in the same step as its next one: the output is "
        "what it would be without drafts; several tokens a step where the drafts are right (docs/speculative.md).")
    group.add_argument("--spec-ngram", action="store_true",
                       help="draft by prompt lookup: what followed the text's last tokens where they occurred before, "
                            "in the prompt or the reply (for replies that repeat text: edits, code with a change)")
    group.add_argument("--draft-model", metavar="MODEL",
                       help="draft with this smaller model of the same vocabulary (named as --model is)")
    group.add_argument("--draft-max", type=int, default=DRAFT_MAX_DEFAULT, metavar="N",
                       help=f"tokens per draft at most (default {DRAFT_MAX_DEFAULT}, at most {DRAFT_TOKENS_MAX})")
    group.add_argument("--draft-min", type=int, default=1, metavar="N",
                       help="shorter drafts are not checked (default 1)")


def check_server_arguments(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a port", hint="use 1-65535")
    for name in ("ctx_size", "threads", "parallel"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.n_gpu_layers is not None and args.n_gpu_layers < -1:
        raise UsageError("--n-gpu-layers must be -1 (all), 0 (none) or a count")
    if args.queue_max is not None and args.queue_max < 0:
        raise UsageError("--queue-max must be 0 or more", hint="0: refuse whatever --parallel cannot take at once")
    if args.drain_s < 0:
        raise UsageError("--drain-s must be 0 or more")
    if args.models_max is not None and args.models_max < 0:
        raise UsageError("--models-max must be 0 (no limit) or more")
    if args.idle_unload_s is not None and args.idle_unload_s < 0:
        raise UsageError("--idle-unload-s must be 0 (never) or more")
    args.allowed_host = [parse_allowed_host(value) for value in args.allowed_host]
    if args.metrics_auth and not args.api_key:
        raise UsageError("--metrics-auth needs an API key", hint="add --api-key KEY (or set LLAMAEDGE_API_KEY)")


def check_speculative_arguments(args: argparse.Namespace) -> None:
    if not 1 <= args.draft_max <= DRAFT_TOKENS_MAX:
        raise UsageError(f"--draft-max must be 1 to {DRAFT_TOKENS_MAX}",
                         hint="a draft stays within the tokens a reply may run ahead of its reader")
    if not 1 <= args.draft_min <= args.draft_max:
        raise UsageError("--draft-min must be 1 to --draft-max")
    if (args.draft_max != DRAFT_MAX_DEFAULT or args.draft_min != 1) and not (args.spec_ngram or args.draft_model):
        raise UsageError("--draft-max and --draft-min shape drafts, and none are made",
                         hint="add --spec-ngram or --draft-model MODEL")


def with_projector(model: ResolvedModel, mmproj: Path) -> ResolvedModel:
    """`model` with the projector `serve --mmproj` names, checked to be a file."""
    if not mmproj.is_file():
        raise UsageError(f"--mmproj {mmproj}: no such file", hint="give the path of the model's mmproj GGUF")
    return dataclasses.replace(model, mmproj=mmproj)


def pause_gc_for_startup() -> None:
    """Starting a server makes some hundred thousand lasting objects (modules, classes) and
    little garbage: the collector would walk them over and over, a tenth of the start.
    `launch` freezes what startup made and turns it back on once the models are loaded. Called
    after any download."""
    gc.disable()


def run(args: argparse.Namespace, *, loader: Callable[[Path, LoadOptions], Model] | None = None) -> int:
    """`loader`: what makes the models, if not the engine's Model (benchmarks/serve_tuned.py)."""
    from llamaedge.catalog import check_chat_model, resolve_model

    check_server_arguments(args)
    check_speculative_arguments(args)
    args.mounts = []
    if args.app or args.app_policy:  # (the modules that read them would hold up a plain start)
        from llamaedge.mount import load_mounts, reserved_paths
        from llamaedge.server import webui_routes_or_none

        args.mounts = load_mounts(args.app, args.app_policy, reserved=reserved_paths(webui_routes_or_none()))
    args.tools = []
    if args.tool or args.tool_policy:
        from llamaedge.tools import load_tools

        args.tools = load_tools(args.tool, args.tool_policy)
    if len(args.model) != 1:  # none or several: the library, loaded on demand
        if args.mmproj:
            raise UsageError("--mmproj goes with one --model", hint="give the vision model with --model PATH.gguf")
        if args.embedding_model:
            raise UsageError("--embedding-model goes with one --model",
                             hint="without --model (or with several), every model is served by name, embedding models too")
        if args.prompt_template != "auto":
            raise UsageError("--prompt-template goes with one --model", hint="each library model uses its own template")
        args.library_models = args.model
        pause_gc_for_startup()
        from llamaedge.launch import launch_library

        return launch_library(args, first=None)
    check_chat_model(args.model[0])
    model = resolve_model(args.model[0], models_dir=args.models_dir, pull=True)
    if args.mmproj:
        model = with_projector(model, Path(args.mmproj))
    embedding = None
    if args.embedding_model:
        embedding = resolve_model(args.embedding_model, models_dir=args.models_dir, pull=True)
    draft = None
    if args.draft_model:
        check_chat_model(args.draft_model)
        draft = resolve_model(args.draft_model, models_dir=args.models_dir, pull=True)
    from llamaedge.engine import SpecOptions

    args.speculative = SpecOptions(ngram=args.spec_ngram, draft_model=draft.path if draft else None,
                                   draft_max=args.draft_max, draft_min=args.draft_min)
    pause_gc_for_startup()
    from llamaedge.engine import Model
    from llamaedge.launch import launch

    return launch(model, args, embedding_model=embedding, loader=loader or Model)
