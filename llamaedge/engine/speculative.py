"""Speculative decoding: drafts, and how long each sequence's drafts are.

A generating sequence's next step may carry a draft: tokens guessed to follow its text. The
scheduler decodes the draft in the same batch as the sequence's next token, samples every
position in turn, and keeps the drafted tokens while they equal what was sampled (then the
first sample that differs, or the one after the whole draft, is the next token). For greedy
sampling that is exactly the output without a draft; for a sampled sequence it is the
standard rejection rule for a draft that is a single guess (not a distribution): a drafted
token is kept with the probability the model gives it.

Drafts come from prompt lookup (`ngram_draft`: what followed the text's last few tokens
where they occurred before, in the prompt or in what was generated) or from a draft model
(a `Drafter`: a small model of the same vocabulary, `llama_decoder.LlamaDrafter`).

Drafted tokens the model turns down cost decode work for nothing, so each sequence's draft
length follows what it accepts (`DraftLength`)."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from llamaedge.engine.types import DRAFT_PAUSE_STEPS_MAX, NGRAM_MAX, NGRAM_MIN, SpecOptions

_TOKEN_BYTES = array("i").itemsize


class DraftWant(NamedTuple):
    slot: int  # the sequence's slot (the drafter may keep a cache per slot)
    tokens: array[int]  # the sequence's text: prompt and generated tokens, the next one last
    n_max: int  # tokens wanted at most


class Drafter(Protocol):
    """A draft model, as the scheduler uses it."""

    def draft(self, wants: list[DraftWant]) -> list[list[int]]:
        """For each want, up to `n_max` tokens likely to follow its `tokens` (maybe none)."""


def ngram_draft(tokens: array[int], n_max: int, ngram_max: int = NGRAM_MAX, ngram_min: int = NGRAM_MIN) -> list[int]:
    """Prompt lookup: the tokens that followed the latest earlier occurrence of the longest
    run of `tokens`' last tokens (`ngram_max` down to `ngram_min` of them), at most `n_max`."""
    if n_max <= 0:
        return []
    data = tokens.tobytes()  # searched by bytes.rfind, which runs in C: ~µs for 4096 tokens
    n_tokens = len(tokens)
    for n in range(min(ngram_max, n_tokens - 1), ngram_min - 1, -1):
        pattern = data[(n_tokens - n) * _TOKEN_BYTES:]
        # An earlier occurrence with at least one token after it: it ends before the last token.
        end = (n_tokens - 1) * _TOKEN_BYTES
        while (found := data.rfind(pattern, 0, end)) >= 0:
            if found % _TOKEN_BYTES == 0:  # at a token's start, not across two tokens' bytes
                start = found // _TOKEN_BYTES + n
                return tokens[start:start + n_max].tolist()
            end = found + len(pattern) - 1
    return []


@dataclass
class DraftLength:
    """How many tokens a sequence drafts next, from how its drafts fared: a draft taken
    whole doubles the length (up to `draft_max`); one cut short sets it to what was taken
    plus one (at least `draft_min`); and when drafts of the shortest length are turned down
    outright, the sequence stops drafting for 2 steps, then for twice as long after each
    further failure (up to DRAFT_PAUSE_STEPS_MAX), until a draft is taken again. So text the
    drafts do not foresee (a sampled reply at a high temperature, a new passage) costs little:
    a one-token draft now and then."""

    draft_max: int
    draft_min: int = 1
    length: int = 0  # 0: draft_max
    pause_steps: int = 0  # steps left without drafting
    _pause_next: int = 2

    def __post_init__(self) -> None:
        self.length = self.length or self.draft_max

    def wanted(self) -> int:
        """The draft length for this step; 0 while paused (the pause counts down)."""
        if self.pause_steps > 0:
            self.pause_steps -= 1
            return 0
        return self.length

    def verified(self, drafted: int, accepted: int) -> None:
        if accepted == drafted:
            self.length = min(self.draft_max, max(self.length, 2 * drafted))
            self._pause_next = 2
        elif accepted > 0 or self.length > self.draft_min:
            self.length = max(self.draft_min, accepted + 1)
            if accepted > 0:
                self._pause_next = 2
        else:
            self.pause_steps = self._pause_next
            self._pause_next = min(DRAFT_PAUSE_STEPS_MAX, 2 * self._pause_next)


@dataclass
class SpecState:
    """One sequence's speculation: its text (for lookups and the draft model) and its draft
    length."""

    tokens: array[int]
    length: DraftLength

    @classmethod
    def start(cls, tokens: list[int], options: SpecOptions) -> SpecState:
        return cls(array("i", tokens), DraftLength(options.draft_max, options.draft_min))

