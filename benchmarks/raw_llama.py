"""The baseline: a decode loop written directly against llama.cpp's C API (llama_cpp's
low-level ctypes bindings), with nothing between the sampler and the stopwatch."""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from pathlib import Path

import llama_cpp


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
