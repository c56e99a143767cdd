"""Per-sequence sampling: llama.cpp sampler chains (logit bias, grammar, penalties, top-k/p,
min-p, temperature, seed), lazy grammars kept safe, and the log-probabilities of sampled
tokens."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import llama_cpp as lc

from llamaedge.engine.errors import BadInput, GrammarError
from llamaedge.engine.grammar import trigger_pattern
from llamaedge.engine.types import TOP_LOGPROBS_MAX, SamplingOptions
from llamaedge.engine.vocab import token_piece, tokenize

if TYPE_CHECKING:
    import numpy as np

# OpenAI writes -9999.0 for a token with no chance; JSON has no -inf.
_LOGPROB_FLOOR = -9999.0
# A lazy grammar's trigger: how many tokens that would break the grammar are passed over
# before the generation fails instead.
_TRIGGER_DRAWS_MAX = 32


def check_options(s: SamplingOptions, n_vocab: int) -> None:
    """BadInput for options no sampler can be made of (the grammar is checked by building)."""
    for token, bias in s.logit_bias.items():
        if not 0 <= token < n_vocab:
            raise BadInput(f"logit-bias: token {token} is not in the vocabulary of {n_vocab}")
        if not math.isfinite(bias):
            raise BadInput(f"logit-bias of token {token} must be a finite number")
    if not 0 <= s.top_logprobs <= TOP_LOGPROBS_MAX:
        raise BadInput(f"top-logprobs must be between 0 and {TOP_LOGPROBS_MAX}")


def _grammar(vocab: ctypes.c_void_p, s: SamplingOptions) -> ctypes.c_void_p:
    assert s.grammar
    if s.grammar_triggers:
        patterns = (ctypes.c_char_p * len(s.grammar_triggers))(*[trigger_pattern(t) for t in s.grammar_triggers])
        sampler = lc.llama_sampler_init_grammar_lazy_patterns(
            vocab, s.grammar.encode(), b"root", patterns, len(s.grammar_triggers), None, 0)
    else:
        sampler = lc.llama_sampler_init_grammar(vocab, s.grammar.encode(), b"root")
    if not sampler:
        raise GrammarError("the grammar could not be parsed")
    return sampler


def _candidates(logits: np.ndarray, banned: list[int]) -> tuple[np.ndarray, lc.llama_token_data_array]:
    """A llama_token_data_array over all tokens (its storage is the returned numpy array)."""
    import numpy as np  # not at import: it is not needed to load a model and start (40 ms)
    data = np.zeros(len(logits), dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data
    data["id"] = np.arange(len(logits), dtype=np.int32)
    data["logit"] = logits
    data["logit"][banned] = -np.inf
    array = lc.llama_token_data_array(data.ctypes.data_as(lc.llama_token_data_p), len(logits), -1, False)
    return data, array


def grammar_accepts(vocab: ctypes.c_void_p, grammar: str, text: bytes) -> bool:
    """Whether `grammar` admits `text` as the start of its language: each token of the text
    is offered to a fresh (eager) grammar sampler, which only ever accepts what it allowed."""
    import numpy as np  # not at import: it is not needed to load a model and start (40 ms)
    probe = lc.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not probe:
        raise GrammarError("the grammar could not be parsed")
    try:
        for token in tokenize(vocab, text, add_special=False, parse_special=False):
            data, array = _candidates(np.zeros(1, dtype=np.float32), [])
            data["id"][0] = token
            lc.llama_sampler_apply(probe, ctypes.byref(array))
            if not np.isfinite(data["logit"][0]):
                return False
            lc.llama_sampler_accept(probe, token)
        return True
    finally:
        lc.llama_sampler_free(probe)


class Sampler:
    """One sequence's sampler chain. With a lazy grammar it also watches for the triggers
    itself: llama.cpp aborts the process when the text from a trigger on does not fit the
    grammar, so a token that would complete a trigger is taken only when it fits (else the
    next likeliest is drawn)."""

    def __init__(self, vocab: ctypes.c_void_p, n_vocab: int, s: SamplingOptions) -> None:
        check_options(s, n_vocab)
        self._vocab = vocab
        self._n_vocab = n_vocab
        self._grammar_text = s.grammar or ""
        self._triggers = [t.encode() for t in s.grammar_triggers] if s.grammar else []
        for trigger in self._triggers:
            if not grammar_accepts(vocab, self._grammar_text, trigger):
                raise GrammarError(f"the grammar does not start with its trigger {trigger.decode()!r}")
        self._awaiting = bool(self._triggers)
        self._seen = b""  # the text so far, while a lazy grammar waits for its trigger
        grammar = _grammar(vocab, s) if s.grammar else None
        self.chain = _chain(n_vocab, s, grammar)

    def sample(self, ctx: ctypes.c_void_p, index: int) -> int:
        """Sample and accept the token at output `index` of the last decode on `ctx`."""
        if not self._awaiting:
            return lc.llama_sampler_sample(self.chain, ctx, index)
        import numpy as np  # not at import: it is not needed to load a model and start (40 ms)
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, index), shape=(self._n_vocab,))
        banned: list[int] = []
        # Earlier text holds no trigger (the grammar would be on): look only where one can end.
        search_from = max(0, len(self._seen) - max(len(t) for t in self._triggers) + 1)
        for _ in range(_TRIGGER_DRAWS_MAX):
            data, array = _candidates(logits, banned)
            lc.llama_sampler_apply(self.chain, ctypes.byref(array))
            token = int(array.data[array.selected].id)
            seen = self._seen + token_piece(self._vocab, token, special=True)
            starts = [i for i in (seen.find(t, search_from) for t in self._triggers) if i >= 0]
            if starts and not grammar_accepts(self._vocab, self._grammar_text, seen[starts[0]:]):
                banned.append(token)
                continue
            self._awaiting = not starts
            self._seen = seen
            lc.llama_sampler_accept(self.chain, token)
            return token
        raise RuntimeError("no likely token continues the grammar's trigger as the grammar requires")

    def free(self) -> None:
        lc.llama_sampler_free(self.chain)


def _chain(n_vocab: int, s: SamplingOptions, grammar: ctypes.c_void_p | None) -> ctypes.c_void_p:
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if s.logit_bias:
        biases = (lc.llama_logit_bias * len(s.logit_bias))(
            *[lc.llama_logit_bias(token, bias) for token, bias in s.logit_bias.items()])
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
    if grammar is not None:
        lc.llama_sampler_chain_add(chain, grammar)
    if s.repeat_penalty != 1.0 or s.presence_penalty or s.frequency_penalty:
        lc.llama_sampler_chain_add(
            chain,
            lc.llama_sampler_init_penalties(
                n_vocab, s.penalty_last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
            ),
        )
    if s.temp <= 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
    else:
        if s.top_k > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(s.top_k))
        if 0 < s.top_p < 1:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
        if 0 < s.min_p < 1:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(s.min_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(s.temp))
        seed = lc.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


def logprob_record(logits: np.ndarray, s: SamplingOptions, token: int,
                   piece_of: Callable[[int], bytes]) -> dict[str, Any]:
    """The sampled token's log-probability and the `top_logprobs` likeliest tokens: the
    log-softmax of the logits after logit bias (before temperature, top-k/p and grammar), so
    that the greedy choice is the top entry."""
    import numpy as np  # not at import: it is not needed to load a model and start (40 ms)
    values = logits.astype(np.float64)
    for biased, bias in s.logit_bias.items():
        values[biased] += bias
    shifted = values - values.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    k = s.top_logprobs
    top = np.argpartition(-logprobs, k - 1)[:k] if 0 < k < len(logprobs) else np.arange(min(k, len(logprobs)))
    top = top[np.argsort(-logprobs[top], kind="stable")]

    def entry(tok: int) -> dict[str, Any]:
        piece = piece_of(tok)
        return {"id": tok, "token": piece.decode("utf-8", errors="replace"), "bytes": list(piece),
                "logprob": max(float(logprobs[tok]), _LOGPROB_FLOOR)}

    record = entry(token)
    record["top_logprobs"] = [entry(int(t)) for t in top]
    return record
