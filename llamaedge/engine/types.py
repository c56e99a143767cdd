"""The engine's options, results and tunables."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from llamaedge.limits import DEFAULT_CTX_SIZE
# A sequence runs at most this many tokens ahead of its reader: a slow client slows its own
# generation only, and a client that left wastes at most this much work.
LOOKAHEAD_TOKENS_MAX = 16
# Slots (sequences decoded together) when LoadOptions.parallel is None: one per SLOT_CELLS cells
# of the context, PARALLEL_MIN to PARALLEL_MAX. With a unified KV cache a slot costs nothing until
# its sequence uses cells, and any sequence may use the whole context, so there are as many slots
# as typical chat turns (prompt and reply) fit at once: 8 for the default 4096 cells. Then 8
# clients start at once rather than wait behind long streams.
SLOT_CELLS = 512
# Prompt tokens read in one decode step beside running streams or other prompts (a prompt
# alone is read batch_size at a time). It bounds how long a long prompt pauses the streams
# (llama-server reads a whole batch, 2048 tokens, at once), and with prompts read shortest
# first, of several that arrive together the short ones answer first. Smaller chunks pause
# the streams for less but read the prompt slower: on 2 cores (SmolLM2-135M), beside a
# stream, a 1,915-token prompt took 1.30x llama-server's time with 128 and 1.12x with 256,
# the stream's longest pause 0.10x and 0.19x llama-server's (runs of 2026-12-02 whose servers
# both inherited OMP_WAIT_POLICY=PASSIVE, issue 15: to be measured again with bench_server's
# interference row).
PREFILL_CHUNK_TOKENS = 256
PARALLEL_MIN = 4
PARALLEL_MAX = 16
TOP_LOGPROBS_MAX = 20
# The embedding context: inputs of up to this many tokens (or the model's training context,
# if shorter), up to EMBED_SEQ_MAX of them decoded together.
EMBED_CTX_MAX = 2048
EMBED_SEQ_MAX = 16
# Speculative decoding (SpecOptions). A draft is verified in the same decode as the token
# before it, and its accepted tokens go to the reader's queue at once: a draft is at most
# LOOKAHEAD_TOKENS_MAX - 1 tokens, so that a sequence still runs at most the lookahead ahead.
DRAFT_TOKENS_MAX = LOOKAHEAD_TOKENS_MAX - 1
# --draft-max. On a CPU a verified token is not free (SmolLM2-135M Q4_1 on 2 cores, from
# llama-batched-bench in issue 15: a decode of one token 8.4 ms, of four sequences' tokens
# 23 ms), so every drafted token the model turns down costs about half a plain step: a
# sequence's drafts start at this length and follow what it accepts (speculative.DraftLength).
DRAFT_MAX_DEFAULT = 8
# Prompt lookup: the longest run of the text's last tokens (down to the shortest) that
# occurred before is looked up, and what followed it drafted. One token matches too often
# by chance to be worth a draft.
NGRAM_MAX = 4
NGRAM_MIN = 2
# A sequence whose drafts of the shortest length keep failing stops drafting for a while:
# 2 steps, then twice as many after every further failure, up to this many.
DRAFT_PAUSE_STEPS_MAX = 64


@dataclass(frozen=True)
class SpecOptions:
    """Speculative decoding: how drafts are made. Each step a generating sequence may add a
    draft to its next token, which the model verifies in the same decode; the tokens the model
    would have chosen itself are kept (for a sampled sequence, each position is sampled and
    the draft kept while it equals the sample, which is exact for drafts made without
    randomness), so the output is what it would have been without a draft."""

    ngram: bool = False  # draft by prompt lookup: what followed the text's last tokens before
    draft_model: Path | None = None  # draft with this model (the same vocabulary)
    draft_max: int = DRAFT_MAX_DEFAULT  # tokens per draft, at most DRAFT_TOKENS_MAX
    draft_min: int = 1  # shorter drafts are not verified

    @property
    def enabled(self) -> bool:
        return self.ngram or self.draft_model is not None


@dataclass
class LoadOptions:
    """Fixed for the life of a model: the context and where the layers live."""

    ctx_size: int | None = None  # None: the model's training context, at most DEFAULT_CTX_SIZE
    n_gpu_layers: int = 0  # -1: all
    threads: int | None = None  # for every decode; None: default_threads(the usable CPUs)
    batch_size: int = 512
    ubatch_size: int = 512
    prefill_chunk: int = PREFILL_CHUNK_TOKENS  # prompt tokens per decode step, at most batch_size
    parallel: int | None = None  # sequences decoded together; None: default_parallel(the context)
    use_mmap: bool = True
    main_gpu: int = 0
    speculative: SpecOptions = field(default_factory=SpecOptions)  # off unless asked for
    mmproj: Path | None = None  # the vision projector, loaded beside the model (see vision.py)


def context_size(asked: int | None, n_ctx_train: int) -> int:
    """The context a model gets: `asked`, else its training context (0: unknown), at most
    DEFAULT_CTX_SIZE."""
    return asked or min(n_ctx_train or DEFAULT_CTX_SIZE, DEFAULT_CTX_SIZE)


def default_threads(cores: int) -> int:
    """Threads for every decode, one-token steps and larger batches alike, when none are asked
    for: `cores`, the CPUs the process may use (cpus.usable_cpus), as llama-server's default
    -t and -tb. An earlier default gave one-token steps one core fewer; it was chosen on runs
    whose servers inherited the test suite's OMP_WAIT_POLICY=PASSIVE, under which every
    barrier of llama.cpp's threads sleeps and wakes, so two threads crawled and one never met
    a barrier. Without it (issue 15: a quiet 2-core machine, SmolLM2-135M) one thread fewer cost
    a quarter of a lone stream's speed (76 tokens/s against 96), and at equal threads llamaedge
    and llama-server were level. Where other work keeps the cores busy (a load average well
    above the CPUs), fewer threads can do better, as for any llama.cpp: that is --threads' job."""
    return max(1, cores)


def default_parallel(ctx_size: int) -> int:
    """The slots of a context of `ctx_size` cells when none are asked for (see SLOT_CELLS)."""
    return max(PARALLEL_MIN, min(PARALLEL_MAX, ctx_size // SLOT_CELLS))


@dataclass
class SamplingOptions:
    """Per sequence."""

    temp: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    grammar: str | None = None
    # With triggers the grammar is lazy: it constrains from the first trigger text on.
    grammar_triggers: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0  # 0..TOP_LOGPROBS_MAX alternatives per token
    n_predict: int = -1  # -1: until the model ends or the context is full
    ignore_eos: bool = False
    # Control tokens rendered with their text in the output (llama.cpp server's
    # preserved_tokens); every other control token stays out of it.
    preserved_tokens: frozenset[int] = frozenset()


class FinishReason(str, Enum):
    """Why a sequence ended. A str, so it compares equal to its value."""

    STOP = "stop"  # the model ended the sequence
    LENGTH = "length"  # n_predict reached
    CONTEXT_FULL = "context_full"  # no room left in the context
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class Token:
    """A sampled token: its id, its bytes (maybe part of a UTF-8 character) and, when the
    sequence asked for them, its log-probability record (see sampling.logprob_record)."""

    id: int
    piece: bytes
    logprobs: dict[str, Any] | None = None


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the scheduler, for metrics."""

    slots_total: int
    slots_busy: int
    sequences_running: int
    sequences_waiting: int
    kv_cells_used: int  # tokens held by the slots (a shared prefix counts once per slot)
    kv_cells_total: int
    draft_tokens: int = 0  # drafted tokens verified so far (speculative decoding)
    draft_tokens_accepted: int = 0  # of those, the tokens the model took
    # Running sequences not decoded now: LOOKAHEAD_TOKENS_MAX tokens ahead of their reader,
    # they wait for it to read (a client that stopped reading stops here).
    sequences_paused: int = 0
