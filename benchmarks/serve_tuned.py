"""`llamaedge serve` with engine settings that have no command-line flag, to measure them.

    python -m benchmarks.serve_tuned batch_size=2048 threads_batch=1 -- serve --model M ...

Keys: the fields of llamaedge.engine.LoadOptions (batch_size, ubatch_size, ...) and the llama
context parameters threads_batch (n_threads_batch) and flash_attn (-1 auto, 0 off, 1 on).
For experiments only (bench_server.py --ours-tune). The LoadOptions fields reach the models
through `serve`'s loader seam (commands.serve.run's `loader`); the context parameters have no
seam, so they are set by wrapping llama_cpp's llama_init_from_model, which follows
llama-cpp-python's current layout.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp

from llamaedge import engine

CPARAMS = {"threads_batch": "n_threads_batch", "flash_attn": "flash_attn_type"}


def _apply(settings: dict[str, int]) -> Callable[[Path, engine.LoadOptions], engine.Model]:
    """Set the context parameters; return the loader that gives every model the LoadOptions."""
    load_fields = {f.name for f in dataclasses.fields(engine.LoadOptions)}
    unknown = set(settings) - load_fields - set(CPARAMS)
    if unknown:
        raise SystemExit(f"serve_tuned: unknown settings {sorted(unknown)}; known: {sorted(load_fields | set(CPARAMS))}")
    options: dict[str, Any] = {k: v for k, v in settings.items() if k in load_fields}
    cparams = {CPARAMS[k]: v for k, v in settings.items() if k in CPARAMS}

    def loader(path: Path, load_options: engine.LoadOptions) -> engine.Model:
        return engine.Model(path, dataclasses.replace(load_options, **options))

    # The engine calls llama_cpp.llama_init_from_model through the module, so this reaches it
    # (and the embedding context, if one is made).
    original_context = llama_cpp.llama_init_from_model

    def init_context(model: object, params: llama_cpp.llama_context_params) -> object:
        for name, value in cparams.items():
            setattr(params, name, value)
        return original_context(model, params)

    llama_cpp.llama_init_from_model = init_context
    return loader


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit("usage: python -m benchmarks.serve_tuned KEY=VALUE... -- serve ARGS...")
    split = argv.index("--")
    settings = {}
    for item in argv[:split]:
        key, _, value = item.partition("=")
        settings[key] = int(value)
    loader = _apply(settings)
    from llamaedge import cli
    from llamaedge.commands import serve

    args = cli.build_parser().parse_args(argv[split + 1 :])
    if args.command != "serve":
        raise SystemExit("serve_tuned: runs `serve` only: ... -- serve --model M ...")
    args.func = lambda parsed: serve.run(parsed, loader=loader)
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
