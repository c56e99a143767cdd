"""Per-sequence sampling: llama.cpp sampler chains (logit bias, grammar, penalties, top-k/p,
min-p, temperature, seed) and the log-probabilities of sampled tokens."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import Any

import llama_cpp as lc
import numpy as np

from llamaedge.engine.errors import BadInput, GrammarError
from llamaedge.engine.grammar import trigger_pattern
from llamaedge.engine.types import TOP_LOGPROBS_MAX, SamplingOptions

# OpenAI writes -9999.0 for a token with no chance; JSON has no -inf.
_LOGPROB_FLOOR = -9999.0


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


def make_sampler(vocab: ctypes.c_void_p, n_vocab: int, s: SamplingOptions) -> ctypes.c_void_p:
    """A sampler chain for `s`; free it with `free_sampler`. BadInput, GrammarError."""
    check_options(s, n_vocab)
    grammar = _grammar(vocab, s) if s.grammar else None
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


def free_sampler(sampler: ctypes.c_void_p) -> None:
    lc.llama_sampler_free(sampler)


def logprob_record(logits: np.ndarray, s: SamplingOptions, token: int,
                   piece_of: Callable[[int], bytes]) -> dict[str, Any]:
    """The sampled token's log-probability and the `top_logprobs` likeliest tokens: the
    log-softmax of the logits after logit bias (before temperature, top-k/p and grammar), so
    that the greedy choice is the top entry."""
    values = logits.astype(np.float64)
    for biased, bias in s.logit_bias.items():
        values[biased] += bias
    shifted = values - values.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    top = np.argsort(-logprobs, kind="stable")[: s.top_logprobs]

    def entry(tok: int) -> dict[str, Any]:
        piece = piece_of(tok)
        return {"id": tok, "token": piece.decode("utf-8", errors="replace"), "bytes": list(piece),
                "logprob": max(float(logprobs[tok]), _LOGPROB_FLOOR)}

    record = entry(token)
    record["top_logprobs"] = [entry(int(t)) for t in top]
    return record
