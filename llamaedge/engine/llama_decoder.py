"""The scheduler's Decoder on a llama context: batches, sampling, KV cells."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import llama_cpp as lc

from llamaedge.engine.sampling import Sampler, logprob_record
from llamaedge.engine.scheduler import BatchEntry
from llamaedge.engine.types import SamplingOptions, Token


class LlamaDecoder:
    def __init__(self, ctx: ctypes.c_void_p, vocab: ctypes.c_void_p, n_vocab: int, n_batch: int,
                 piece_of: Callable[..., bytes]) -> None:
        self._ctx = ctx
        self._vocab = vocab
        self._mem = lc.llama_get_memory(ctx)
        self._batch = lc.llama_batch_init(n_batch, 0, 1)
        self._piece_of = piece_of
        self.n_vocab = n_vocab
        self.n_ctx = lc.llama_n_ctx(ctx)
        self.n_batch = n_batch

    def decode(self, batch: list[BatchEntry]) -> bool:
        b = self._batch
        for n, entry in enumerate(batch):
            b.token[n] = entry.token
            b.pos[n] = entry.pos
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = entry.slot
            b.logits[n] = 1 if entry.logits else 0
        b.n_tokens = len(batch)
        rc = lc.llama_decode(self._ctx, b)
        if rc == 1:
            return False
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with {rc}")
        return True

    def sample(self, sampler: Sampler, index: int, sampling: SamplingOptions) -> tuple[Token, bool]:
        token = sampler.sample(self._ctx, index)
        preserved = sampling.preserved_tokens

        def piece_of(tok: int) -> bytes:
            return self._piece_of(tok, special=tok in preserved)

        logprobs = None
        if sampling.logprobs:
            import numpy as np  # not at import: it is not needed to load a model and start (40 ms)

            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,))
            logprobs = logprob_record(logits, sampling, token, piece_of)
        return Token(token, piece_of(token), logprobs), bool(lc.llama_vocab_is_eog(self._vocab, token))

    def free_sampler(self, sampler: Sampler) -> None:
        sampler.free()

    def seq_rm(self, slot: int, p0: int, p1: int) -> None:
        lc.llama_memory_seq_rm(self._mem, slot, p0, p1)

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        lc.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def close(self) -> None:
        lc.llama_batch_free(self._batch)
