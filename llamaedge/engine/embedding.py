"""Embedding mode: a second llama context on a model's weights, with embeddings and pooling
on, decoding many inputs per batch. A reranker gets one more such context with llama.cpp's
rank pooling, whose rows are its classification head's outputs (see `rank_prompt`)."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import llama_cpp as lc

from llamaedge.engine.errors import BadInput, PromptTooLong
from llamaedge.engine.types import EMBED_SEQ_MAX
from llamaedge.engine.errors import LoadError
from llamaedge.engine.vocab import tokenize

if TYPE_CHECKING:
    import numpy as np


class Embedder:
    """Pooled rows of `n_out` values (an embedding, or with LLAMA_POOLING_TYPE_RANK the
    classifier's outputs) of token inputs of up to `n_ctx` tokens each. Not thread-safe: the
    model runs it on its scheduler's thread, where the weights' compute is serialized."""

    def __init__(self, model: ctypes.c_void_p, *, n_ctx: int, n_out: int, threads: int, pooling: int) -> None:
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = n_ctx  # a pooled sequence must fit one micro-batch
        cparams.n_seq_max = EMBED_SEQ_MAX
        cparams.kv_unified = True
        cparams.embeddings = True
        cparams.pooling_type = pooling
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        self._ctx = lc.llama_init_from_model(model, cparams)
        if not self._ctx:
            raise LoadError("llama.cpp could not create an embedding context")
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(n_ctx, 0, 1)
        self.n_ctx = n_ctx
        self.n_out = n_out
        self.n_tokens_decoded = 0

    def embed(self, inputs: list[list[int]]) -> np.ndarray:
        """One raw pooled row per input, as float32: all the inputs in one decode, so they
        must fit it (see `decode_groups`)."""
        import numpy as np  # not at import: it is not needed to load a model and start (40 ms)

        check_inputs(inputs, self.n_ctx)
        if len(inputs) > EMBED_SEQ_MAX or sum(len(tokens) for tokens in inputs) > self.n_ctx:
            raise BadInput(f"at most {EMBED_SEQ_MAX} inputs of {self.n_ctx} tokens in all are embedded together")
        batch = self._batch
        n = 0
        for seq, tokens in enumerate(inputs):
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = 1  # pooling reads every token's output
                n += 1
        batch.n_tokens = n
        lc.llama_memory_clear(self._mem, True)
        try:
            rc = lc.llama_decode(self._ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with {rc} in embedding mode")
            self.n_tokens_decoded += n
            out = np.zeros((len(inputs), self.n_out), dtype=np.float32)
            for seq in range(len(inputs)):
                pooled = lc.llama_get_embeddings_seq(self._ctx, seq)
                if not pooled:
                    raise RuntimeError("llama.cpp returned no pooled embedding")
                out[seq] = np.ctypeslib.as_array(pooled, shape=(self.n_out,))
            return out
        finally:
            lc.llama_memory_clear(self._mem, True)

    def close(self) -> None:
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)


def rank_prompt(vocab: ctypes.c_void_p, template: str | None, query: bytes, document: bytes) -> list[int]:
    """The tokens of one (query, document) pair for rank pooling, as llama-server's
    format_prompt_rerank makes them: the model's `rerank` template with {query} and {document}
    filled in (special tokens parsed, nothing added), else [BOS] query [EOS] [SEP] document
    [EOS], each special token where the vocabulary says to add it, the texts' own special
    tokens not parsed."""
    if template is not None:
        text = template.encode().replace(b"{query}", query).replace(b"{document}", document)
        return tokenize(vocab, text, add_special=False, parse_special=True)
    eos = lc.llama_vocab_eos(vocab)
    if eos == lc.LLAMA_TOKEN_NULL:
        eos = lc.llama_vocab_sep(vocab)
    tokens: list[int] = []
    if lc.llama_vocab_get_add_bos(vocab):
        tokens.append(lc.llama_vocab_bos(vocab))
    tokens += tokenize(vocab, query, add_special=False, parse_special=False)
    if lc.llama_vocab_get_add_eos(vocab):
        tokens.append(eos)
    if lc.llama_vocab_get_add_sep(vocab):
        tokens.append(lc.llama_vocab_sep(vocab))
    tokens += tokenize(vocab, document, add_special=False, parse_special=False)
    if lc.llama_vocab_get_add_eos(vocab):
        tokens.append(eos)
    return tokens


def decode_groups(inputs: list[list[int]], n_ctx: int) -> list[range]:
    """Consecutive inputs packed into decodes: at most EMBED_SEQ_MAX sequences and `n_ctx`
    tokens each."""
    groups: list[range] = []
    start = 0
    while start < len(inputs):
        end, n = start, 0
        while end < len(inputs) and end - start < EMBED_SEQ_MAX and n + len(inputs[end]) <= n_ctx:
            n += len(inputs[end])
            end += 1
        groups.append(range(start, end))
        start = end
    return groups


def check_inputs(inputs: list[list[int]], n_ctx: int) -> None:
    if not inputs:
        raise BadInput("nothing to embed")
    for tokens in inputs:
        if not tokens:
            raise BadInput("an input to embed is empty")
        if len(tokens) > n_ctx:
            raise PromptTooLong(f"input of {len(tokens)} tokens does not fit the embedding context of {n_ctx}")


def normalize(vectors: np.ndarray, norm: int) -> np.ndarray:
    """llama.cpp's common_embd_normalize, row by row: -1 none, 0 max-abs scaled to int16,
    1 taxicab, 2 euclidean, >2 p-norm."""
    import numpy as np  # not at import: it is not needed to load a model and start (40 ms)
    if norm < 0:
        return vectors
    wide = vectors.astype(np.float64)
    if norm == 0:
        scale = np.abs(wide).max(axis=1, keepdims=True) / 32760.0
    elif norm == 2:
        scale = np.sqrt((wide**2).sum(axis=1, keepdims=True))
    else:
        scale = (np.abs(wide) ** norm).sum(axis=1, keepdims=True) ** (1.0 / norm)
    return (wide / np.where(scale > 0, scale, 1.0)).astype(np.float32)
