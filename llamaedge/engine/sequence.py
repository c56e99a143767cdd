"""A generation: the request's side of the scheduler (see scheduler.py).

A caller makes a `Sequence` (its prompt, its sampling options, the images of its prompt) and
submits it to the scheduler; then it reads the sequence's tokens from the sequence's queue
(`next_token`, `next_piece`, or by iterating) and may `cancel` it. The scheduler alone puts
tokens on the queue, then None at the end, with `finish_reason` set.

The queue is also how a sequence keeps at most LOOKAHEAD_TOKENS_MAX tokens ahead of its
reader: the scheduler does not step a sequence whose queue holds that many (but for the
cases `Scheduler._runnable` names), and a read that makes room wakes it. The fields under
"Scheduler state" are the scheduler's own record of the sequence: its slot, the tokens it
feeds to the next decode, its position, its speculation.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llamaedge.engine.speculative import SpecState
from llamaedge.engine.types import LOOKAHEAD_TOKENS_MAX, FinishReason, SamplingOptions, Token


@dataclass(eq=False)
class Sequence:
    """One generation. The scheduler puts tokens on `_pieces`, then None."""

    prompt: list[int]
    sampling: SamplingOptions
    # Sequences one reader reads in turn (an app's choices for n > 1); None: on its own.
    group: object = None
    # The images of the prompt: placeholder id -> its image (see vision.py); empty for text.
    images: dict[int, Any] = field(default_factory=dict)
    _sampler: Any = None
    _wake: Callable[[], None] = lambda: None
    _pieces: queue.SimpleQueue[Token | None] = field(default_factory=queue.SimpleQueue)
    finish_reason: FinishReason | None = None
    n_generated: int = 0
    n_cached: int = 0  # prompt tokens found in the KV cache
    n_drafted: int = 0  # drafted tokens verified (speculative decoding)
    n_accepted: int = 0  # of those, the tokens the model took
    error: str | None = None
    _cancelled: bool = False
    _drained: bool = False
    # Scheduler state
    _slot: int = -1
    _pending: list[int] = field(default_factory=list)  # tokens to feed to the next decode
    _n_past: int = 0
    _spec: SpecState | None = None  # from its first generated token, when drafts are made

    def next_token(self, timeout_s: float | None = None) -> Token | None:
        """The next token, or None at the end (then `finish_reason` says why), and None
        again on every later call. Raises queue.Empty after `timeout_s`."""
        if self._drained:
            return None
        token = self._pieces.get(timeout=timeout_s)
        self._drained = token is None
        if self._pieces.qsize() == LOOKAHEAD_TOKENS_MAX - 1:
            self._wake()  # the scheduler may be waiting for room in this queue
        return token

    def next_piece(self, timeout_s: float | None = None) -> bytes | None:
        """The bytes of the next token (maybe part of a UTF-8 character); see `next_token`."""
        token = self.next_token(timeout_s)
        return None if token is None else token.piece

    def __iter__(self) -> Iterator[bytes]:
        while (piece := self.next_piece()) is not None:
            yield piece

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def prefilling(self) -> bool:
        """Still reading its prompt (more than the one token every step feeds)."""
        return self.n_generated == 0 and len(self._pending) > 1

    def cancel(self) -> None:
        """Stop generating; the slot is freed at the scheduler's next step."""
        if not self.done:
            self._cancelled = True
            self._wake()
