"""The baselines: a decode loop and an embedding loop written directly against llama.cpp's C
API (llama_cpp's low-level ctypes bindings), with nothing between llama.cpp and the stopwatch.

They run in a process of their own, with an environment the benchmark builds (see
harness.measured_env), asked one JSON line at a time:

    python -m benchmarks.raw_llama stream --model M --ctx N --threads T
        {"messages": [...], "max_tokens": N}  ->  a StreamRun's fields
    python -m benchmarks.raw_llama embed --model M --ctx N --threads T --seq-max S
        {"groups": [[text, ...], ...]}        ->  {"seconds": S, "vectors": base64 float32, "shape": [n, d]}
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import llama_cpp
import numpy as np

from benchmarks.harness import serve_requests


@dataclass(frozen=True)
class StreamRun:
    """One streamed generation. Times are seconds from the moment the request was made."""

    ttft_s: float
    token_times_s: list[float]
    completion_tokens: int
    text: str
    prompt_tokens: int | None = None  # as the server counted them, where it says

    @property
    def tokens_per_s(self) -> float:
        """Streaming rate: intervals between the first and the last token, per second. The
        first token is excluded because its time is the prompt's (that is what TTFT measures)."""
        if self.completion_tokens < 2 or len(self.token_times_s) < 2:
            return 0.0
        span_s = self.token_times_s[-1] - self.token_times_s[0]
        return (self.completion_tokens - 1) / span_s if span_s > 0 else 0.0


def load_model(model_path: Path) -> llama_cpp.llama_model_p:
    """The model on the CPU, llama.cpp's backend initialized first."""
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {model_path}")
    return model


def tokenize(vocab: llama_cpp.llama_vocab_p, text: str, *, add_special: bool) -> list[int]:
    """`text` as token ids; control tokens in it (such as <|im_start|>) are parsed as such."""
    data = text.encode()
    buf = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), add_special, True)
    if n < 0:
        raise RuntimeError(f"the text needs {-n} tokens, more than the buffer holds")
    return list(buf[:n])


class RawLlama:
    """A model and one context, reused across runs (the memory is cleared between them), as a
    long-running server would hold them."""

    def __init__(self, model_path: Path, *, n_ctx: int, n_threads: int) -> None:
        self._model = load_model(model_path)
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = n_ctx
        ctx_params.n_threads = n_threads
        ctx_params.n_threads_batch = n_threads
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_ctx = n_ctx

    def chat_template(self) -> str:
        template = llama_cpp.llama_model_chat_template(self._model, None)
        if not template:
            raise RuntimeError("the model carries no chat template")
        return template.decode()

    def token_text(self, token_id: int) -> str:
        return self._piece(token_id, special=True).decode(errors="replace")

    def _piece(self, token_id: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, special)
        return buf.raw[:n]

    def generate(self, prompt: str, *, max_tokens: int) -> StreamRun:
        """Tokenize, decode the prompt in one batch, then sample and decode one token at a time
        until an end-of-generation token or `max_tokens`. Greedy, so that a server asked for
        temperature 0 produces the same tokens. A token counts as streamed when its bytes are
        known, as a server would send it."""
        start = time.perf_counter()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        tokens = tokenize(self._vocab, prompt, add_special=False)  # the template wrote any BOS
        if len(tokens) + max_tokens > self.n_ctx:
            raise RuntimeError(f"prompt ({len(tokens)}) + max_tokens ({max_tokens}) exceed n_ctx {self.n_ctx}")

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())

        batch = llama_cpp.llama_batch_init(max(len(tokens), 1), 0, 1)
        token_times_s: list[float] = []
        pieces: list[bytes] = []
        try:
            self._fill_batch(batch, tokens, first_pos=0)
            pos = len(tokens)
            for _ in range(max_tokens):
                if llama_cpp.llama_decode(self._ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
                token = llama_cpp.llama_sampler_sample(chain, self._ctx, -1)
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    break
                pieces.append(self._piece(token))
                token_times_s.append(time.perf_counter() - start)
                self._fill_batch(batch, [token], first_pos=pos)
                pos += 1
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_sampler_free(chain)

        return StreamRun(
            ttft_s=token_times_s[0] if token_times_s else float("nan"),
            token_times_s=token_times_s,
            completion_tokens=len(token_times_s),
            text=b"".join(pieces).decode(errors="replace"),
        )

    @staticmethod
    def _fill_batch(batch: llama_cpp.llama_batch, tokens: list[int], *, first_pos: int) -> None:
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = first_pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 0
        batch.logits[len(tokens) - 1] = 1  # only the last position's logits are sampled
        batch.n_tokens = len(tokens)

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None


class RawEmbedder:
    """A bare embedding loop: one embedding context (mean pooling, as the engine uses for a
    model that names none), up to `seq_max` sequences per llama_batch,
    llama_get_embeddings_seq, then L2 normalization."""

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


def encode_vectors(vectors: np.ndarray) -> dict[str, Any]:
    """float32 rows as JSON, exactly: base64 of their bytes, and the shape."""
    return {"vectors": base64.b64encode(vectors.astype("<f4").tobytes()).decode(), "shape": list(vectors.shape)}


def decode_vectors(answer: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(answer["vectors"]), dtype="<f4").reshape(answer["shape"])


def _serve_stream(args: argparse.Namespace) -> None:
    raw = RawLlama(args.model, n_ctx=args.ctx, n_threads=args.threads)
    template = jinja2.Environment().from_string(raw.chat_template())

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        # The model's own chat template, as the server renders it; outside the timed call.
        prompt = template.render(messages=request["messages"], add_generation_prompt=True)
        return dataclasses.asdict(raw.generate(prompt, max_tokens=request["max_tokens"]))

    try:
        serve_requests(handle)
    finally:
        raw.close()


def _serve_embed(args: argparse.Namespace) -> None:
    raw = RawEmbedder(args.model, n_ctx=args.ctx, n_threads=args.threads, seq_max=args.seq_max)

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        vectors = np.concatenate([raw.embed(group) for group in request["groups"]])
        return {"seconds": time.perf_counter() - start, **encode_vectors(vectors)}

    try:
        serve_requests(handle)
    finally:
        raw.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A bare llama.cpp loop answering JSON lines on stdin")
    parser.add_argument("kind", choices=("stream", "embed"))
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--ctx", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seq-max", type=int, default=16, help="embed: sequences per decode")
    args = parser.parse_args(argv)
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load chatter
    (_serve_stream if args.kind == "stream" else _serve_embed)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
