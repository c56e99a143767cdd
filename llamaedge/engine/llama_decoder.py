"""The scheduler's Decoder on a llama context (batches, sampling, KV cells), and its Drafter
on a draft model's context."""

from __future__ import annotations

import ctypes
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import llama_cpp as lc

from llamaedge.engine.prefix import common_prefix
from llamaedge.engine.sampling import Sampler, logprob_record
from llamaedge.engine.scheduler import BatchEntry
from llamaedge.engine.speculative import DraftWant
from llamaedge.engine.types import SamplingOptions, Token
from llamaedge.engine.errors import LoadError

if TYPE_CHECKING:
    from llamaedge.engine.vision import ImageChunk, Projector


class LlamaDecoder:
    def __init__(self, ctx: ctypes.c_void_p, vocab: ctypes.c_void_p, n_vocab: int, n_batch: int,
                 piece_of: Callable[..., bytes], projector: Projector | None = None) -> None:
        self._ctx = ctx
        self._projector = projector
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

    def decode_image(self, slot: int, pos: int, image: ImageChunk) -> bool:
        if self._projector is None:  # only a model with a projector makes prompts with images
            raise RuntimeError("this model has no projector to read images with")
        rc = self._projector.decode(self._ctx, image, pos, slot, self.n_batch)
        if rc == 0:
            return True
        self.seq_rm(slot, pos, -1)  # the part of the image that was decoded, if any
        if rc == 1:
            return False
        raise RuntimeError(f"the image could not be read (mtmd returned {rc})")

    def close(self) -> None:
        lc.llama_batch_free(self._batch)


class LlamaDrafter:
    """A draft model (speculative.Drafter): its own context on the same slots as the target's.
    Each slot's cells hold the text the slot last drafted from; a draft first reads what is new
    in the sequence's text (the tokens the target accepted since, or a new prompt: from the
    slot, or from another slot holding a longer prefix), then drafts greedily, one decode per
    drafted token for all the sequences that draft at once. A long new text is read
    `read_max` tokens a step (no draft meanwhile), so that it never holds up the step long."""

    def __init__(self, path: Path, mparams: lc.llama_model_params, cparams: lc.llama_context_params,
                 target_vocab: ctypes.c_void_p, *, read_max: int) -> None:
        """The draft model at `path`, loaded and given a context as the target's were (the same
        positions, slots, batch and threads)."""
        self._model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise LoadError(f"llama.cpp could not load the draft model {path.name}",
                             hint="is it a GGUF file of an architecture this llama.cpp supports? (run with -v for details)")
        self._vocab = lc.llama_model_get_vocab(self._model)
        if not same_vocabulary(self._vocab, target_vocab):
            lc.llama_model_free(self._model)
            raise LoadError(f"the draft model {path.name} does not have the model's vocabulary",
                             hint="draft with a smaller model of the same family (the same tokenizer)")
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lc.llama_model_free(self._model)
            raise LoadError(f"llama.cpp could not create a context of {cparams.n_ctx} tokens for the draft model "
                             f"{path.name}", hint="try a smaller --ctx-size")
        # Drafts are read and drafted in batches of n_ubatch at most: a batch of more would be
        # split, and a failed split would leave part of it in the cache.
        self.n_batch = min(cparams.n_batch, cparams.n_ubatch)
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self._greedy = lc.llama_sampler_init_greedy()
        self.read_max = max(1, min(read_max, self.n_batch))
        self.size_bytes = lc.llama_model_size(self._model)
        self._held: list[array[int]] = [array("i") for _ in range(cparams.n_seq_max)]  # what each slot's cells hold

    def draft(self, wants: list[DraftWant]) -> list[list[int]]:
        drafts: list[list[int]] = [[] for _ in wants]
        entries: list[tuple[int, int, int, bool]] = []  # slot, pos, token, logits
        outputs: list[tuple[int, int]] = []  # (want, batch index) of the logits to draft from
        # What each slot keeps, before any slot's new text is added (not decoded yet, it could
        # not be shared). At least the last token is read: its logits give the first draft.
        starts = [self._reuse(want.slot, want.tokens, len(want.tokens) - 1) for want in wants]
        for i, (want, start) in enumerate(zip(wants, starts)):
            new = want.tokens[start:start + self.read_max]
            if len(entries) + len(new) > self.n_batch:
                continue
            whole = start + len(new) == len(want.tokens)
            entries += [(want.slot, start + j, token, whole and j == len(new) - 1) for j, token in enumerate(new)]
            self._held[want.slot].extend(new)
            if whole:
                outputs.append((i, len(entries) - 1))
        if not entries or not self._decode(entries, keep=[want.slot for want in wants]):
            for want in wants:  # what was read is unknown: read it again next time
                self._forget(want.slot)
            return drafts
        while outputs:
            entries, going = [], []
            for i, index in outputs:
                token = lc.llama_sampler_sample(self._greedy, self._ctx, index)
                drafts[i].append(token)
                if len(drafts[i]) < wants[i].n_max and not lc.llama_vocab_is_eog(self._vocab, token):
                    going.append((i, len(entries)))
                    entries.append((wants[i].slot, len(wants[i].tokens) + len(drafts[i]) - 1, token, True))
            if not entries or not self._decode(entries, keep=[wants[i].slot for i, _ in going]):
                break
            for i, _ in going:
                self._held[wants[i].slot].append(drafts[i][-1])
            outputs = going
        return drafts

    def _reuse(self, slot: int, tokens: array[int], limit: int) -> int:
        """Keep the cells of the longest prefix of `tokens` (at most `limit` long) that this
        slot or another one holds (given to this slot, shared), and forget the rest of this
        slot's. The prefix's length."""
        own = min(limit, common_prefix(self._held[slot], tokens))
        source, best = slot, own
        for other, held in enumerate(self._held):
            if other != slot and len(held) > best and (common := min(limit, common_prefix(held, tokens))) > best:
                source, best = other, common
        if source != slot:
            lc.llama_memory_seq_rm(self._mem, slot, -1, -1)
            lc.llama_memory_seq_cp(self._mem, source, slot, 0, best)
            self._held[slot] = self._held[source][:best]
        else:
            lc.llama_memory_seq_rm(self._mem, slot, best, -1)
            del self._held[slot][best:]
        return best

    def _decode(self, entries: Sequence[tuple[int, int, int, bool]], keep: list[int]) -> bool:
        """Decode `entries`; when the cache is full, forget the slots not in `keep` and try
        again. False when it still does not fit."""
        b = self._batch
        for n, (slot, pos, token, logits) in enumerate(entries):
            b.token[n] = token
            b.pos[n] = pos
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = slot
            b.logits[n] = 1 if logits else 0
        b.n_tokens = len(entries)
        rc = lc.llama_decode(self._ctx, b)
        if rc == 1 and any(self._held[slot] for slot in range(len(self._held)) if slot not in keep):
            for slot in range(len(self._held)):
                if slot not in keep:
                    self._forget(slot)
            rc = lc.llama_decode(self._ctx, b)
        if rc not in (0, 1):
            raise RuntimeError(f"llama_decode failed with {rc} on the draft model")
        return rc == 0

    def _forget(self, slot: int) -> None:
        lc.llama_memory_seq_rm(self._mem, slot, -1, -1)
        del self._held[slot][:]

    def close(self) -> None:
        lc.llama_sampler_free(self._greedy)
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)
        lc.llama_model_free(self._model)


def same_vocabulary(a: ctypes.c_void_p, b: ctypes.c_void_p) -> bool:
    """Whether two vocabularies make the same tokens of any text: the same kind, size,
    special tokens and token texts (a draft's tokens are fed to the target as they are)."""
    if (lc.llama_vocab_type(a) != lc.llama_vocab_type(b) or lc.llama_vocab_n_tokens(a) != lc.llama_vocab_n_tokens(b)
            or lc.llama_vocab_bos(a) != lc.llama_vocab_bos(b) or lc.llama_vocab_eos(a) != lc.llama_vocab_eos(b)):
        return False
    return all(lc.llama_vocab_get_text(a, t) == lc.llama_vocab_get_text(b, t) for t in range(lc.llama_vocab_n_tokens(a)))
