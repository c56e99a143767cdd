"""`llamaedge serve` with engine settings that have no command-line flag, to measure them.

    python -m benchmarks.serve_tuned batch_size=2048 threads_batch=1 -- serve --model M ...

Keys: the fields of llamaedge.engine.LoadOptions (batch_size, ubatch_size, ...) and the llama
context parameters threads_batch (n_threads_batch) and flash_attn (-1 auto, 0 off, 1 on).
For experiments only (bench_server.py --ours-tune): it reaches into the engine, so it follows
the engine's current layout, and says so loudly when that layout has changed.
"""

from __future__ import annotations

import dataclasses
import sys

import llama_cpp

CPARAMS = {"threads_batch": "n_threads_batch", "flash_attn": "flash_attn_type"}


def _apply(settings: dict[str, int]) -> None:
    from llamaedge import engine

    load_fields = {f.name for f in dataclasses.fields(engine.LoadOptions)}
    unknown = set(settings) - load_fields - set(CPARAMS)
    if unknown:
        raise SystemExit(f"serve_tuned: unknown settings {sorted(unknown)}; known: {sorted(load_fields | set(CPARAMS))}")
    options = {k: v for k, v in settings.items() if k in load_fields}
    cparams = {CPARAMS[k]: v for k, v in settings.items() if k in CPARAMS}

    original_init = engine.Model.__init__

    def init(self: engine.Model, *args: object, **kwargs: object) -> None:
        # The options may come positionally or by keyword: replace whichever is LoadOptions.
        args = tuple(dataclasses.replace(a, **options) if isinstance(a, engine.LoadOptions) else a for a in args)
        kwargs = {k: dataclasses.replace(v, **options) if isinstance(v, engine.LoadOptions) else v for k, v in kwargs.items()}
        original_init(self, *args, **kwargs)

    engine.Model.__init__ = init  # type: ignore[method-assign]

    # The engine calls llama_cpp.llama_init_from_model through the module, so this reaches it
    # (and the embedding context, if one is made).
    original_context = llama_cpp.llama_init_from_model

    def init_context(model: object, params: llama_cpp.llama_context_params) -> object:
        for name, value in cparams.items():
            setattr(params, name, value)
        return original_context(model, params)

    llama_cpp.llama_init_from_model = init_context


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit("usage: python -m benchmarks.serve_tuned KEY=VALUE... -- serve ARGS...")
    split = argv.index("--")
    settings = {}
    for item in argv[:split]:
        key, _, value = item.partition("=")
        settings[key] = int(value)
    _apply(settings)
    from llamaedge.cli import main as cli_main

    return cli_main(argv[split + 1 :])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
