"""The scheduler against a scripted Decoder (no model): admission, slots, eviction,
cancellation, context full, fairness, backpressure and shared prefixes."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from llamaedge.engine.errors import ModelClosed
from llamaedge.engine.scheduler import BatchEntry, Scheduler
from llamaedge.engine.sequence import Sequence
from llamaedge.engine.types import LOOKAHEAD_TOKENS_MAX, FinishReason, SamplingOptions, Token
from tests.engine_events import assert_asleep, wait_until

END = 0  # the scripted end-of-generation token


@dataclass(frozen=True)
class FakeImage:
    """An image chunk (vision.ImageChunk's shape): its positions and embeddings."""

    n_pos: int
    n_tokens: int


@dataclass
class FakeDecoder:
    """A KV cache of `n_ctx` cells, each at a position and shared by a set of slots, as
    llama.cpp's unified cache; samplers are iterators of scripted tokens."""

    n_ctx: int = 64
    n_batch: int = 8
    cells: list[tuple[int, set[int]]] = field(default_factory=list)
    batches: list[list[BatchEntry]] = field(default_factory=list)
    copies: list[tuple[int, int, int, int]] = field(default_factory=list)
    freed: list[object] = field(default_factory=list)
    fail_with: Exception | None = None
    images: list[tuple[int, int, FakeImage]] = field(default_factory=list)  # (slot, pos, image) read

    def decode(self, batch: list[BatchEntry]) -> bool:
        if self.fail_with is not None:
            raise self.fail_with
        if len(self.cells) + len(batch) > self.n_ctx:
            return False
        for entry in batch:
            assert entry.pos not in self.positions(entry.slot), "a position decoded twice in one slot"
            self.cells.append((entry.pos, {entry.slot}))
        self.batches.append(list(batch))
        return True

    def sample(self, sampler: Iterator[int], index: int, sampling: SamplingOptions) -> tuple[Token, bool]:
        entry = self.batches[-1][index]
        assert entry.logits, "sampled where no logits were asked for"
        token = next(sampler)
        return Token(token, f"<{token}>".encode()), token == END

    def free_sampler(self, sampler: object) -> None:
        self.freed.append(sampler)

    def seq_rm(self, slot: int, p0: int, p1: int) -> None:
        hi = p1 if p1 >= 0 else 1 << 30
        for pos, slots in self.cells:
            if max(p0, 0) <= pos < hi:
                slots.discard(slot)
        self.cells = [cell for cell in self.cells if cell[1]]

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        self.copies.append((src, dst, p0, p1))
        for pos, slots in self.cells:
            if src in slots and max(p0, 0) <= pos < (p1 if p1 >= 0 else 1 << 30):
                slots.add(dst)

    def decode_image(self, slot: int, pos: int, image: FakeImage) -> bool:
        if len(self.cells) + image.n_pos > self.n_ctx:
            return False
        for p in range(pos, pos + image.n_pos):
            assert p not in self.positions(slot), "a position decoded twice in one slot"
            self.cells.append((p, {slot}))
        self.images.append((slot, pos, image))
        return True

    def positions(self, slot: int) -> list[int]:
        return sorted(pos for pos, slots in self.cells if slot in slots)

    def fed(self, slot: int) -> int:
        return sum(1 for batch in self.batches for entry in batch if entry.slot == slot)


def sequence(prompt: list[int], script: Iterator[int] | list[int] | None = None, n_predict: int = -1) -> Sequence:
    seq = Sequence(prompt=list(prompt), sampling=SamplingOptions(n_predict=n_predict))
    seq._sampler = iter(script) if script is not None else itertools.count(100)
    return seq


def run(scheduler: Scheduler, steps: int = 1) -> None:
    for _ in range(steps):
        scheduler.run_once()


def run_until(scheduler: Scheduler, condition: object, steps_max: int = 200) -> None:
    for _ in range(steps_max):
        if condition():  # type: ignore[operator]
            return
        scheduler.run_once()
    raise AssertionError("condition not reached")


def drain(seq: Sequence) -> list[int]:
    tokens = []
    while not seq._pieces.empty():
        token = seq.next_token(timeout_s=0)
        if token is None:
            break
        tokens.append(token.id)
    return tokens


@pytest.fixture
def decoder() -> FakeDecoder:
    return FakeDecoder()


def test_sequences_are_admitted_in_the_order_they_came(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 1, thread=False)
    first, second, third = (sequence([1, 2, 3 + i], n_predict=2) for i in range(3))
    for seq in (first, second, third):
        scheduler.submit(seq)
    run(scheduler)
    assert scheduler.stats().sequences_waiting == 2
    run_until(scheduler, lambda: third.done)
    for seq in (first, second, third):
        assert seq.finish_reason == FinishReason.LENGTH
    # Each ran in turn in the only slot: the batch reading its prompt comes after the last one's.
    starts = [min(i for i, batch in enumerate(decoder.batches) if any(e.token == 3 + k and e.pos == 2 for e in batch))
              for k in range(3)]
    assert starts == sorted(starts) and len(set(starts)) == 3


def test_a_sequence_takes_the_slot_with_the_longest_prefix(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 3, thread=False)
    a = sequence([1, 2, 3, 4, 5], n_predict=1)
    scheduler.submit(a)
    run_until(scheduler, lambda: a.done)
    b = sequence([7, 8, 9], n_predict=1)
    scheduler.submit(b)
    run_until(scheduler, lambda: b.done)
    assert b._slot != a._slot  # an empty slot rather than a's cache
    c = sequence([1, 2, 3, 6], n_predict=1)
    scheduler.submit(c)
    run_until(scheduler, lambda: c.done)
    assert c._slot == a._slot
    assert c.n_cached == 3
    assert decoder.positions(a._slot) == [0, 1, 2, 3]  # positions 3, 4 of a's prompt were dropped
    assert decoder.positions(b._slot) == [0, 1, 2]


def test_a_full_context_drops_idle_slots_first(decoder: FakeDecoder) -> None:
    decoder.n_ctx = 16
    scheduler = Scheduler(decoder, 2, thread=False)
    idle = sequence(list(range(1, 11)), n_predict=1)
    scheduler.submit(idle)
    run_until(scheduler, lambda: idle.done)
    assert len(decoder.positions(idle._slot)) == 10
    assert scheduler.stats().kv_cells_used == 10
    newcomer = sequence(list(range(20, 28)), n_predict=3)
    scheduler.submit(newcomer)
    run_until(scheduler, lambda: newcomer.done)
    assert newcomer.finish_reason == FinishReason.LENGTH
    assert decoder.positions(idle._slot) == []
    assert scheduler.stats().kv_cells_used == 10  # the newcomer's 8 prompt tokens and 2 of its own


def test_a_queued_sequence_cancelled_never_runs(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 1, thread=False)
    running, queued = sequence([1, 2]), sequence([3, 4])
    scheduler.submit(running)
    scheduler.submit(queued)
    run(scheduler)
    queued.cancel()
    run(scheduler)
    assert queued.finish_reason == FinishReason.CANCELLED
    assert queued._sampler is None and len(decoder.freed) == 1
    assert all(entry.token not in (3, 4) for batch in decoder.batches for entry in batch)
    assert scheduler.stats().sequences_waiting == 0


def test_a_running_sequence_cancelled_frees_its_slot_at_the_next_step(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 1, thread=False)
    running, queued = sequence([1, 2]), sequence([3, 4], n_predict=1)
    scheduler.submit(running)
    scheduler.submit(queued)
    run(scheduler, 3)
    running.cancel()
    n_batches = len(decoder.batches)
    run(scheduler)
    assert running.finish_reason == FinishReason.CANCELLED
    assert running._sampler is None
    assert queued._slot == running._slot  # admitted in the freed slot in the same round
    assert [(e.pos, e.token) for e in decoder.batches[n_batches]] == [(0, 3), (1, 4)]
    run_until(scheduler, lambda: queued.done)
    assert scheduler.stats().slots_busy == 0


def test_a_sequence_cancelled_while_reading_its_prompt_stops_reading(decoder: FakeDecoder) -> None:
    decoder.n_batch = 4
    scheduler = Scheduler(decoder, 1, thread=False)
    seq = sequence(list(range(1, 13)))
    scheduler.submit(seq)
    run(scheduler)
    assert decoder.fed(0) == 4
    seq.cancel()
    run(scheduler, 3)
    assert seq.finish_reason == FinishReason.CANCELLED
    assert decoder.fed(0) == 4
    assert scheduler.stats().slots_busy == 0
    assert seq.n_generated == 0 and drain(seq) == []


def test_a_full_context_ends_the_longest_sequence(decoder: FakeDecoder) -> None:
    decoder.n_ctx = 20
    scheduler = Scheduler(decoder, 2, thread=False)
    long, short = sequence([1, 2, 3, 4, 5, 6]), sequence([7, 8, 9])
    scheduler.submit(long)
    scheduler.submit(short)
    run_until(scheduler, lambda: long.done, steps_max=40)
    assert long.finish_reason == FinishReason.CONTEXT_FULL
    assert not short.done
    generated = short.n_generated
    drain(short)
    run(scheduler)  # the ended sequence's cells are dropped; the other goes on
    assert short.n_generated == generated + 1
    assert decoder.positions(long._slot) == []


def test_running_sequences_get_a_token_every_step_while_a_long_prompt_is_read(decoder: FakeDecoder) -> None:
    decoder.n_batch = 4
    scheduler = Scheduler(decoder, 2, thread=False)
    chatting = sequence([1, 2])
    scheduler.submit(chatting)
    run(scheduler, 2)
    reading = sequence(list(range(10, 40)))
    scheduler.submit(reading)
    steps = 0
    while reading.n_generated == 0:
        before = chatting.n_generated
        drain(chatting)
        run(scheduler)
        steps += 1
        batch = decoder.batches[-1]
        assert [e.slot for e in batch].count(chatting._slot) == 1
        assert chatting.n_generated == before + 1
    assert steps == 10  # 30 prompt tokens, 3 a step: the prompt is read in chunks


def test_a_sequence_whose_reader_is_behind_is_not_decoded_further(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 1, thread=False)
    seq = sequence([1, 2])
    scheduler.submit(seq)
    run(scheduler, LOOKAHEAD_TOKENS_MAX + 10)
    assert seq.n_generated == LOOKAHEAD_TOKENS_MAX
    assert scheduler.stats().sequences_paused == 1  # the seam that says so (/metrics)
    n_batches = len(decoder.batches)
    assert seq.next_token(timeout_s=0) is not None
    assert scheduler.stats().sequences_paused == 0
    run(scheduler, 5)
    assert seq.n_generated == LOOKAHEAD_TOKENS_MAX + 1
    assert len(decoder.batches) == n_batches + 1


def test_a_group_waiting_for_a_slot_runs_its_unread_sequences_on(decoder: FakeDecoder) -> None:
    # One slot, held by a sequence its reader does not read while it waits for the second
    # of its group (n > 1): the held one must not pause at the lookahead bound, or the
    # second would never get the slot. A sequence of another reader does pause.
    scheduler = Scheduler(decoder, 1, thread=False)
    group = object()
    held = sequence([1, 2], n_predict=LOOKAHEAD_TOKENS_MAX * 2)
    held.group = group
    sibling = sequence([3, 4], n_predict=2)
    sibling.group = group
    scheduler.submit(held)
    run(scheduler, 3)
    scheduler.submit(sibling)
    run(scheduler, LOOKAHEAD_TOKENS_MAX * 2 + 10)
    assert held.done and held.n_generated == LOOKAHEAD_TOKENS_MAX * 2
    assert sibling.done and sibling.n_generated == 2

    alone = sequence([5, 6], n_predict=LOOKAHEAD_TOKENS_MAX * 2)
    other = sequence([7, 8], n_predict=2)
    scheduler.submit(alone)
    scheduler.submit(other)
    run(scheduler, LOOKAHEAD_TOKENS_MAX * 2 + 10)
    assert alone.n_generated == LOOKAHEAD_TOKENS_MAX and not alone.done
    assert other.n_generated == 0


def test_a_scheduler_whose_sequences_all_wait_for_readers_sleeps() -> None:
    decoder = FakeDecoder(n_ctx=1024)
    scheduler = Scheduler(decoder, 2, thread=True)
    try:
        seqs = [sequence([1, 2]), sequence([3, 4])]
        for seq in seqs:
            scheduler.submit(seq)
        wait_until(lambda: all(s.n_generated == LOOKAHEAD_TOKENS_MAX for s in seqs), "both lookaheads to fill")
        n_batches = len(decoder.batches)
        assert_asleep(scheduler)
        assert len(decoder.batches) == n_batches
        assert all(s.n_generated == LOOKAHEAD_TOKENS_MAX for s in seqs)
        seqs[0].next_token()  # the reader wakes the scheduler
        wait_until(lambda: seqs[0].n_generated > LOOKAHEAD_TOKENS_MAX, "the read sequence to go on")
    finally:
        scheduler.close()
    assert all(s.finish_reason == FinishReason.CANCELLED for s in seqs)


def test_sequences_with_one_prompt_read_it_once_and_share_its_cells(decoder: FakeDecoder) -> None:
    decoder.n_batch = 4
    scheduler = Scheduler(decoder, 4, thread=False)
    prompt = list(range(1, 11))
    seqs = [sequence(prompt, [101, 102, 103], n_predict=3) for _ in range(3)]
    other = sequence([50, 51, 52], n_predict=1)
    for seq in (*seqs, other):
        scheduler.submit(seq)
    run(scheduler)
    # The first reads the prompt; the two others wait for it; an unrelated prompt does not.
    assert scheduler.stats().sequences_waiting == 2
    assert other._slot >= 0
    run_until(scheduler, lambda: all(s.done for s in seqs))
    texts = [drain(s) for s in seqs]
    assert texts[0] == texts[1] == texts[2] == [101, 102, 103]
    reader = seqs[0]
    assert decoder.fed(reader._slot) == len(prompt) + 2
    for seq in seqs[1:]:
        assert seq.n_cached == len(prompt) - 1
        assert decoder.fed(seq._slot) == 1 + 2  # the prompt's last token, then two of its own
        assert (reader._slot, seq._slot, 0, len(prompt) - 1) in decoder.copies
        assert decoder.positions(seq._slot) == list(range(len(prompt) + 2))
    shared = [pos for pos, slots in decoder.cells if slots == {s._slot for s in seqs}]
    assert sorted(shared) == list(range(len(prompt) - 1))


def test_a_failing_decode_fails_the_running_sequences_only(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 1, thread=False)
    running, queued = sequence([1, 2]), sequence([3, 4], n_predict=1)
    scheduler.submit(running)
    scheduler.submit(queued)
    decoder.fail_with = RuntimeError("llama_decode failed with -3")
    run(scheduler)
    assert running.finish_reason == FinishReason.ERROR
    assert running.error == "llama_decode failed with -3"
    decoder.fail_with = None
    run_until(scheduler, lambda: queued.done)
    assert queued.finish_reason == FinishReason.LENGTH


def test_stats_count_slots_sequences_and_cells(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 2, thread=False)
    for prompt in ([1, 2, 3], [4, 5], [6]):
        scheduler.submit(sequence(prompt))
    run(scheduler)
    stats = scheduler.stats()
    assert (stats.slots_total, stats.slots_busy, stats.sequences_running, stats.sequences_waiting) == (2, 2, 2, 1)
    assert stats.kv_cells_used == 5 and stats.kv_cells_total == decoder.n_ctx


def test_a_failing_sampler_fails_its_own_sequence_only(decoder: FakeDecoder) -> None:
    def broken() -> Iterator[int]:
        yield 100
        raise RuntimeError("no token fits the grammar")

    scheduler = Scheduler(decoder, 2, thread=False)
    failing, healthy = sequence([1, 2], broken()), sequence([3, 4], n_predict=3)
    scheduler.submit(failing)
    scheduler.submit(healthy)
    run_until(scheduler, lambda: healthy.done)
    assert failing.finish_reason == FinishReason.ERROR
    assert failing.error == "no token fits the grammar"
    assert healthy.finish_reason == FinishReason.LENGTH


def test_jobs_run_on_the_scheduler_thread_while_sequences_run() -> None:
    decoder = FakeDecoder(n_ctx=1 << 20)
    scheduler = Scheduler(decoder, 1, thread=True)
    try:
        seq = sequence([1, 2])
        scheduler.submit(seq)
        threads = set()
        for _ in range(3):
            threads.add(scheduler.run_job(lambda: threading.current_thread().name))
            drain(seq)
        assert threads == {"llamaedge-engine"}
        assert scheduler.run_job(lambda: 42) == 42
        with pytest.raises(ZeroDivisionError):
            scheduler.run_job(lambda: 1 / 0)  # the caller gets the job's error; the thread goes on
        assert scheduler.run_job(lambda: "alive") == "alive"
        assert seq.n_generated > 0 and not seq.done
    finally:
        scheduler.close()
    assert seq.finish_reason == FinishReason.CANCELLED
    with pytest.raises(ModelClosed):
        scheduler.run_job(lambda: 0)


def test_a_step_reads_at_most_a_prefill_chunk_of_prompts(decoder: FakeDecoder) -> None:
    decoder.n_batch = 16
    scheduler = Scheduler(decoder, 3, thread=False, prefill_chunk=5)
    chatting = sequence([1, 2])
    scheduler.submit(chatting)
    run(scheduler)
    first, second = sequence(list(range(10, 22))), sequence(list(range(30, 37)))
    scheduler.submit(first)
    scheduler.submit(second)
    while not (first.n_generated and second.n_generated):
        drain(chatting)
        run(scheduler)
        batch = decoder.batches[-1]
        prompt_entries = [e for e in batch for seq in (first, second)
                          if e.slot == seq._slot and e.pos < len(seq.prompt)]
        assert len(prompt_entries) <= 5
        assert [e.slot for e in batch].count(chatting._slot) == 1
    # 19 prompt tokens at 5 a step, and the stream got a token in each of those steps.
    assert chatting.n_generated == 1 + 4


def test_of_prompts_that_wait_together_the_shortest_is_read_first(decoder: FakeDecoder) -> None:
    decoder.n_batch = 16
    scheduler = Scheduler(decoder, 2, thread=False, prefill_chunk=6)
    long, short = sequence(list(range(10, 22))), sequence([30, 31, 32])
    scheduler.submit(long)
    scheduler.submit(short)
    run(scheduler)
    # The short prompt, whole, then what room is left for the long one.
    assert [(e.slot, e.token) for e in decoder.batches[0]][:3] == [(short._slot, 30), (short._slot, 31), (short._slot, 32)]
    assert short.n_generated == 1 and long.n_generated == 0
    assert len(decoder.batches[0]) == 6


def test_a_prompt_alone_is_read_a_whole_batch_at_a_time(decoder: FakeDecoder) -> None:
    decoder.n_batch = 16
    scheduler = Scheduler(decoder, 2, thread=False, prefill_chunk=4)
    seq = sequence(list(range(10, 30)))
    scheduler.submit(seq)
    run(scheduler)
    assert len(decoder.batches[0]) == 16


# -- images (see vision.py: an image is a run of one negative placeholder id) -------------------

def image_sequence(prompt: list[int], images: dict[int, FakeImage], n_predict: int = 2) -> Sequence:
    seq = sequence(prompt, n_predict=n_predict)
    seq.images = images
    return seq


def test_an_image_is_read_alone_and_text_never_holds_a_placeholder(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 2, thread=False)
    image = FakeImage(n_pos=3, n_tokens=3)
    prompt = [1, 2, -7, -7, -7, 3, 4]
    seq = image_sequence(prompt, {-7: image})
    scheduler.submit(seq)
    run_until(scheduler, lambda: seq.done)
    assert decoder.images == [(seq._slot, 2, image)]
    assert all(entry.token >= 0 for batch in decoder.batches for entry in batch)
    assert decoder.positions(seq._slot)[:len(prompt)] == list(range(len(prompt)))
    assert scheduler.n_tokens_decoded >= len(prompt)


def test_the_same_image_again_is_reused_and_another_is_read(decoder: FakeDecoder) -> None:
    scheduler = Scheduler(decoder, 1, thread=False)
    image = FakeImage(n_pos=3, n_tokens=3)
    first = image_sequence([1, 2, -7, -7, -7, 3, 4], {-7: image})
    scheduler.submit(first)
    run_until(scheduler, lambda: first.done)
    again = image_sequence([1, 2, -7, -7, -7, 3, 4], {-7: image})
    scheduler.submit(again)
    run_until(scheduler, lambda: again.done)
    assert again.n_cached == 6 and len(decoder.images) == 1
    other = image_sequence([1, 2, -9, -9, -9, 3, 4], {-9: image})
    scheduler.submit(other)
    run_until(scheduler, lambda: other.done)
    assert other.n_cached == 2 and decoder.images[-1][1:] == (2, image)


def test_a_prefix_is_never_reused_from_inside_an_image() -> None:
    from llamaedge.engine.scheduler import _image_start

    prompt = [1, -5, -5, -5, 2]
    assert [_image_start(prompt, n) for n in range(6)] == [0, 1, 1, 1, 4, 5]
    assert _image_start([1, 2, 3], 2) == 2


def test_an_image_that_does_not_fit_ends_its_sequence_alone(decoder: FakeDecoder) -> None:
    decoder.n_ctx = 8
    scheduler = Scheduler(decoder, 2, thread=False)
    text = sequence([1, 2], n_predict=3)
    big = image_sequence([3, -5, -5, -5, -5, -5, -5, -5, 4], {-5: FakeImage(n_pos=7, n_tokens=7)})
    scheduler.submit(text)
    scheduler.submit(big)
    run_until(scheduler, lambda: big.done and text.done)
    assert big.finish_reason == FinishReason.CONTEXT_FULL
    assert text.finish_reason == FinishReason.LENGTH
