"""Seeing what the engine's scheduler does by events rather than by time: wait for a state,
check that its thread is asleep, and hold one of its decodes while a test acts.

A test that measured CPU seconds or slept "long enough" would decide by the machine's speed;
these decide by what the scheduler did (its rounds, wakeups and decodes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from llamaedge.engine.scheduler import BatchEntry, Decoder, Scheduler
from llamaedge.engine.types import SamplingOptions, Token

# Bounds a wait for something that must happen, should it not: never a time a test waits for.
EVENT_WAIT_MAX_S = 60.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = EVENT_WAIT_MAX_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def assert_asleep(scheduler: Scheduler, wakeups: int = 3) -> None:
    """The scheduler's thread waits and runs no round: over `wakeups` wakeups (its safety-net
    timeout, which comes while sequences run) it looks for work each time, finds none and
    waits again. A thread that spun would run rounds, or never wake from a wait at all."""
    woke = scheduler.n_wakeups
    # One wakeup first: whatever round was under way when the test looked has ended.
    wait_until(lambda: scheduler.n_wakeups > woke, "the scheduler to wait")
    rounds, woke = scheduler.n_rounds, scheduler.n_wakeups
    wait_until(lambda: scheduler.n_wakeups >= woke + wakeups, f"{wakeups} wakeups of the scheduler")
    assert scheduler.n_rounds == rounds, f"the scheduler ran {scheduler.n_rounds - rounds} rounds with nothing to do"


class HeldDecoder:
    """A Decoder that passes everything on to `inner` but holds its `hold_at`-th decode
    (counting from 1) until `release()`: `reached` is set while it is held, so a test acts
    while the scheduler is known to be mid-work (a prompt half read, say)."""

    def __init__(self, inner: Decoder, hold_at: int) -> None:
        self.inner = inner
        self.n_ctx = inner.n_ctx
        self.n_batch = inner.n_batch
        self.hold_at = hold_at
        self.n_decodes = 0
        self.reached = threading.Event()
        self._released = threading.Event()

    def decode(self, batch: list[BatchEntry]) -> bool:
        self.n_decodes += 1
        if self.n_decodes == self.hold_at:
            self.reached.set()
            if not self._released.wait(EVENT_WAIT_MAX_S):
                raise RuntimeError("the held decode was never released")
        return self.inner.decode(batch)

    def release(self) -> None:
        self._released.set()

    def sample(self, sampler: Any, index: int, sampling: SamplingOptions) -> tuple[Token, bool]:
        return self.inner.sample(sampler, index, sampling)

    def free_sampler(self, sampler: Any) -> None:
        self.inner.free_sampler(sampler)

    def seq_rm(self, slot: int, p0: int, p1: int) -> None:
        self.inner.seq_rm(slot, p0, p1)

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        self.inner.seq_cp(src, dst, p0, p1)
