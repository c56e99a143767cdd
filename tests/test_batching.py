"""Continuous batching on the real engine: batching never changes what a sequence says, a warm
cache never changes it either, and a cancelled prefill gives its slot back at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaedge.engine import LOOKAHEAD_TOKENS_MAX, LoadOptions, Model, SamplingOptions, Token
from tests.engine_events import EVENT_WAIT_MAX_S, HeldDecoder, wait_until

GREEDY = SamplingOptions(temp=0, n_predict=LOOKAHEAD_TOKENS_MAX + 8, ignore_eos=True)


def chatml(*turns: tuple[str, str], open_turn: bool = True) -> bytes:
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return (text + ("<|im_start|>assistant\n" if open_turn else "")).encode()


PROMPTS = [
    chatml(("user", "What is the capital of France?")),
    chatml(("system", "You answer briefly."), ("user", "Name three colours.")),
    chatml(("user", "Count from one to ten, please.")),
    chatml(("user", "Tell me about the quick brown fox and the lazy dog.")),
]


def generate_text(model: Model, prompt: bytes, sampling: SamplingOptions = GREEDY) -> bytes:
    return b"".join(model.generate(model.tokenize(prompt), sampling))


def concurrent_tokens(model: Model, prompts: list[bytes], sampling: SamplingOptions = GREEDY) -> list[list[Token]]:
    """Generate all `prompts` at once, each read on its own thread, so that they share decodes
    (`sampling` must ask for more tokens than the lookahead)."""
    sequences = [model.generate(model.tokenize(p), sampling) for p in prompts]
    # Nobody reads yet, and more than the lookahead is asked for: all stay running together.
    wait_until(lambda: model.stats().sequences_running == len(prompts), "the sequences to run together")
    tokens: list[list[Token]] = [[] for _ in prompts]

    def read(i: int) -> None:
        tokens[i] = list(iter(sequences[i].next_token, None))

    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(prompts))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=600)
    return tokens


def concurrent_texts(model: Model, prompts: list[bytes]) -> list[bytes]:
    return [b"".join(token.piece for token in tokens) for tokens in concurrent_tokens(model, prompts)]


@pytest.fixture
def tiny(tiny_model: Path) -> Iterator[Model]:
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=2048, parallel=4))
    yield model
    model.close()


def test_greedy_output_alone_equals_output_next_to_three_other_streams(tiny: Model) -> None:
    alone = [generate_text(tiny, p) for p in PROMPTS]
    assert concurrent_texts(tiny, PROMPTS) == alone and all(alone)


def test_a_warm_second_turn_equals_the_same_request_on_a_cold_model(tiny_model: Path) -> None:
    first_turn = [("user", "What is the capital of France?")]
    warm = Model(tiny_model, LoadOptions(threads=2, ctx_size=2048, parallel=4))
    try:
        reply = generate_text(warm, chatml(*first_turn)).decode()
        second = chatml(*first_turn, ("assistant", reply), ("user", "And of Italy?"))
        seq = warm.generate(warm.tokenize(second), GREEDY)
        warm_text = b"".join(seq)
        assert seq.n_cached >= len(warm.tokenize(chatml(*first_turn))) - 1  # the first turn was reused
    finally:
        warm.close()
    cold = Model(tiny_model, LoadOptions(threads=2, ctx_size=2048, parallel=4))
    try:
        seq = cold.generate(cold.tokenize(second), GREEDY)
        cold_text = b"".join(seq)
        assert seq.n_cached == 0
    finally:
        cold.close()
    assert warm_text == cold_text and warm_text


def test_cancelling_a_long_prefill_frees_its_slot_at_the_next_step(tiny_model: Path) -> None:
    n_batch = 16  # a prompt of ~1800 tokens takes >100 steps to read
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=2048, parallel=2,
                                          batch_size=n_batch, ubatch_size=n_batch))
    # The fifth decode waits for the test: the prefill is surely part way when cancelled.
    held = HeldDecoder(model._scheduler.decoder, hold_at=5)
    model._scheduler.decoder = held
    try:
        long_prompt = model.tokenize(chatml(("user", "the quick brown fox " * 300)))[:1800]
        seq = model.generate(long_prompt, GREEDY)
        assert held.reached.wait(EVENT_WAIT_MAX_S), "the prefill never started"
        # A decode's tokens count once it is done: four, the fifth is held.
        assert seq.prefilling and model.n_tokens_decoded == 4 * n_batch
        assert model.stats().slots_busy == 1
        seq.cancel()
        decoded_at_cancel = model.n_tokens_decoded
        held.release()
        assert list(seq) == [] and seq.finish_reason == "cancelled"
        stats = model.stats()
        assert (stats.slots_busy, stats.sequences_running) == (0, 0)
        # The step under way when cancel() came was the last: none followed it.
        assert model.n_tokens_decoded == decoded_at_cancel + n_batch and held.n_decodes == 5
        # The freed slot serves the next sequence.
        assert generate_text(model, PROMPTS[0], SamplingOptions(temp=0, n_predict=4))
    finally:
        held.release()
        model.close()
