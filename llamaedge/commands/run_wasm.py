"""`llamaedge run-wasm`: run any WASI-NN command module, the counterpart of
`wasmedge --dir .:. --nn-preload default:GGML:AUTO:model.gguf app.wasm ARGS...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llamaedge.errors import UsageError

# A command-line app is the user's own program: no time limit between host calls, and the
# whole 32-bit address space.
CLI_SLICE_MAX_S = 1e9
CLI_MEMORY_MAX_BYTES = 4 * 1024**3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run-wasm", help="run a WASI-NN WebAssembly app (as wasmedge would)",
        description="Run a wasm32-wasi command module with WASI preview 1 and WASI-NN (GGML).",
    )
    parser.add_argument("--nn-preload", action="append", default=[], metavar="NAME:GGML:AUTO:PATH",
                        help="offer a model to the app under NAME (repeatable)")
    parser.add_argument("--dir", action="append", default=[], metavar="HOST:GUEST",
                        help="give the app a directory (repeatable; HOST alone maps to the same path)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="set an environment variable for the app (repeatable)")
    parser.add_argument("app", metavar="APP.wasm", help="the app")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the app's arguments")
    parser.set_defaults(func=run)


def _dirs(specs: list[str]) -> list[tuple[Path, str]]:
    dirs = []
    for spec in specs:
        host, sep, guest = spec.partition(":")
        guest = guest if sep else host
        if not host or not guest:
            raise UsageError(f"bad --dir {spec!r}", hint="use HOST:GUEST, e.g. --dir .:.")
        if not Path(host).is_dir():
            raise UsageError(f"--dir {spec!r}: {host} is not a directory")
        dirs.append((Path(host), guest))
    return dirs


def _env(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise UsageError(f"bad --env {spec!r}", hint="use KEY=VALUE")
        pairs.append((key, value))
    return pairs


def run(args: argparse.Namespace) -> int:
    from llamaedge import engine
    from llamaedge.engine import LoadOptions, Model
    from llamaedge.runtime import GraphRegistry, NNSession, RunLimits, Runtime, parse_preload

    preloads = [parse_preload(spec) for spec in args.nn_preload]
    dirs, env = _dirs(args.dir), _env(args.env)
    options = LoadOptions(n_gpu_layers=-1 if engine.supports_gpu_offload() else 0)
    registry = GraphRegistry(options, preloads, loader=Model)
    runtime = Runtime(registry, limits=RunLimits(memory_max_bytes=CLI_MEMORY_MAX_BYTES, wasm_slice_max_s=CLI_SLICE_MAX_S))
    try:
        app = runtime.load_app(Path(args.app))
        sys.stdout.flush()
        session = NNSession(registry, host_stdout=sys.stdout.buffer)
        return runtime.run_attached(app, args.args, session, env=env,
                                    dirs=[(str(host), guest) for host, guest in dirs])
    finally:
        runtime.close()
        registry.close()
