"""The engine's scheduler on the tiny model: slots, queueing, cancellation, lookahead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaedge.engine import LOOKAHEAD_TOKENS_MAX, LoadOptions, Model, SamplingOptions

PROMPT = b"<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
ENDLESS = SamplingOptions(temp=0, ignore_eos=True)


@pytest.fixture
def model(tiny_model: Path) -> Iterator[Model]:
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=1024, parallel=1))
    yield model
    model.close()


def wait_until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_sequence_runs_only_a_little_ahead_of_its_reader(model: Model) -> None:
    seq = model.generate(model.tokenize(PROMPT), ENDLESS)
    wait_until(lambda: seq.n_generated >= LOOKAHEAD_TOKENS_MAX)
    time.sleep(0.3)
    assert seq.n_generated == LOOKAHEAD_TOKENS_MAX  # nobody read: generation waits
    assert seq.next_piece() is not None
    wait_until(lambda: seq.n_generated == LOOKAHEAD_TOKENS_MAX + 1)
    seq.cancel()


def test_a_waiting_scheduler_does_not_spin(model: Model) -> None:
    seq = model.generate(model.tokenize(PROMPT), ENDLESS)
    queued = model.generate(model.tokenize(PROMPT), ENDLESS)  # the only slot is taken
    wait_until(lambda: seq.n_generated >= LOOKAHEAD_TOKENS_MAX)
    time.sleep(0.2)
    cpu_before_s = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu_before_s < 0.3
    assert queued.n_generated == 0
    seq.cancel()
    queued.cancel()


def test_a_queued_sequence_can_be_cancelled_while_it_waits(model: Model) -> None:
    running = model.generate(model.tokenize(PROMPT), ENDLESS)
    queued = model.generate(model.tokenize(PROMPT), ENDLESS)
    queued.cancel()
    assert list(queued) == []
    assert queued.finish_reason == "cancelled"
    assert running.finish_reason is None
    running.cancel()
    list(running)
    assert running.finish_reason == "cancelled"


def test_the_next_sequence_gets_the_slot_and_reuses_its_prefix(model: Model) -> None:
    prompt = model.tokenize(PROMPT)
    first = model.generate(prompt, SamplingOptions(temp=0, n_predict=4))
    assert len(list(first)) == 4 and first.finish_reason == "length"
    second = model.generate(prompt, SamplingOptions(temp=0, n_predict=4))
    assert len(list(second)) == 4
    assert second.n_cached == len(prompt) - 1  # all but the token that must be decoded again
