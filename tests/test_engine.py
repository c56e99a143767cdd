"""The engine's scheduler on the tiny model: slots, queueing, cancellation, lookahead."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import llama_cpp as lc
import numpy as np
import pytest

from llamaedge.engine import (EMBED_SEQ_MAX, LOOKAHEAD_TOKENS_MAX, LoadOptions, Model, PromptTooLong, SamplingOptions,
                              default_parallel, default_threads)
from llamaedge.engine.cpus import usable_cpus
from llamaedge.engine.embedding import decode_groups
from tests.engine_events import assert_asleep, wait_until
from tests.tiny_gguf import GEMMA4_MARKERS, write_tiny_gguf

PROMPT = b"<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
ENDLESS = SamplingOptions(temp=0, ignore_eos=True)


@pytest.fixture
def model(tiny_model: Path) -> Iterator[Model]:
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=1024, parallel=1))
    yield model
    model.close()


def test_a_sequence_runs_only_a_little_ahead_of_its_reader(model: Model) -> None:
    seq = model.generate(model.tokenize(PROMPT), ENDLESS)
    wait_until(lambda: seq.n_generated >= LOOKAHEAD_TOKENS_MAX, "the lookahead to fill")
    assert_asleep(model._scheduler)
    assert seq.n_generated == LOOKAHEAD_TOKENS_MAX  # nobody read: generation waits
    assert seq.next_piece() is not None
    wait_until(lambda: seq.n_generated == LOOKAHEAD_TOKENS_MAX + 1, "one more token")
    seq.cancel()


def test_a_waiting_scheduler_does_not_spin(model: Model) -> None:
    seq = model.generate(model.tokenize(PROMPT), ENDLESS)
    wait_until(lambda: seq.n_generated >= LOOKAHEAD_TOKENS_MAX, "the lookahead to fill")
    decoded = model.n_tokens_decoded
    # Its thread wakes, finds no sequence to step and waits again: no round, no decode.
    assert_asleep(model._scheduler, wakeups=10)
    assert model.n_tokens_decoded == decoded
    assert seq.n_generated == LOOKAHEAD_TOKENS_MAX
    seq.cancel()


def test_a_sequence_waiting_for_the_only_slot_gets_it_from_one_of_its_group(model: Model) -> None:
    # Nobody reads `held` while its reader waits for `queued`, of the same group (an app
    # reading several choices in turn): `held` runs on to its end rather than keep the slot.
    group = object()
    held = model.generate(model.tokenize(PROMPT), SamplingOptions(temp=0, ignore_eos=True, n_predict=40), group=group)
    queued = model.generate(model.tokenize(PROMPT), SamplingOptions(temp=0, ignore_eos=True, n_predict=3), group=group)
    assert len(list(queued)) == 3
    assert held.n_generated == 40 and len(list(held)) == 40


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


def test_sequences_with_the_same_prompt_share_its_prefill(tiny_model: Path) -> None:
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=1024, parallel=3))
    try:
        prompt = model.tokenize(PROMPT)
        greedy = SamplingOptions(temp=0, n_predict=8, ignore_eos=True)
        sequences = [model.generate(prompt, greedy) for _ in range(3)]
        texts = [b"".join(seq) for seq in sequences]
        assert texts[0] == texts[1] == texts[2] and texts[0]
        # The prompt was read once; the others decoded only its last token, for their logits.
        assert sorted(seq.n_cached for seq in sequences) == [0, len(prompt) - 1, len(prompt) - 1]
        assert model.n_tokens_decoded == len(prompt) + 2 + 3 * 7
    finally:
        model.close()


@pytest.mark.slow
def test_embeddings_of_related_sentences_are_closer(smollm2_model: Path) -> None:
    model = Model(smollm2_model, LoadOptions(threads=2, ctx_size=512, parallel=1))
    try:
        texts = [b"The cat sat on the mat.", b"A kitten was sitting on the rug.",
                 b"Quarterly revenue rose by four percent."]
        vectors = model.embed([model.tokenize(t) for t in texts])
        assert vectors.shape == (3, model.n_embd)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        similarity = vectors @ vectors.T
        assert similarity[0, 1] > similarity[0, 2]
        assert similarity[0, 1] > similarity[1, 2]
        singles = np.concatenate([model.embed([model.tokenize(t)]) for t in texts])
        assert np.allclose(vectors, singles, atol=1e-4)
        with pytest.raises(PromptTooLong):
            model.embed([[1] * (model.n_ctx_embed + 1)])
    finally:
        model.close()


def test_stats_of_the_real_engine(model: Model) -> None:
    prompt = model.tokenize(PROMPT)
    seq = model.generate(prompt, SamplingOptions(temp=0, n_predict=4, ignore_eos=True))
    assert len(list(seq)) == 4
    stats = model.stats()
    assert (stats.slots_total, stats.slots_busy, stats.sequences_running, stats.sequences_waiting) == (1, 0, 0, 0)
    assert stats.kv_cells_used == len(prompt) + 3  # the last token sampled is never decoded
    assert stats.kv_cells_total == model.n_ctx


def test_embedding_inputs_are_packed_into_decodes_in_order() -> None:
    inputs = [[1] * 300, [2] * 300, [3] * 500, [4] * 100] + [[5]] * (EMBED_SEQ_MAX + 2)
    groups = decode_groups(inputs, 1000)
    assert list(groups[0]) == [0, 1] and list(groups[1])[:2] == [2, 3]
    assert sum(len(g) for g in groups) == len(inputs)
    assert all(len(g) <= EMBED_SEQ_MAX and sum(len(inputs[i]) for i in g) <= 1000 for g in groups)
    assert [i for g in groups for i in g] == list(range(len(inputs)))


def test_without_threads_every_decode_uses_the_usable_cpus(tiny_model: Path) -> None:
    assert [default_threads(n) for n in (0, 1, 2, 8)] == [1, 1, 2, 8]
    cores = usable_cpus()
    model = Model(tiny_model, LoadOptions())
    try:  # one-token steps and batches alike, as llama-server's default -t and -tb
        assert (model.threads, model.threads_batch) == (cores, cores)
        assert (lc.llama_n_threads(model._ctx), lc.llama_n_threads_batch(model._ctx)) == (cores, cores)
    finally:
        model.close()
    given = Model(tiny_model, LoadOptions(threads=3))
    try:  # threads given: every decode uses them, as llama-server's -t without -tb
        assert (lc.llama_n_threads(given._ctx), lc.llama_n_threads_batch(given._ctx)) == (3, 3)
    finally:
        given.close()


def test_without_a_parallel_the_slots_are_sized_to_the_context(tiny_model: Path) -> None:
    assert [default_parallel(n) for n in (512, 2048, 4096, 8192, 65536)] == [4, 4, 8, 16, 16]
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=4096))
    try:
        assert model.parallel == 8 and model.stats().slots_total == 8
        # Eight unread sequences all run at once: none waits for a slot.
        sequences = [model.generate(model.tokenize(PROMPT), ENDLESS) for _ in range(8)]
        wait_until(lambda: all(seq.n_generated >= LOOKAHEAD_TOKENS_MAX for seq in sequences), "eight lookaheads to fill")
        stats = model.stats()
        assert (stats.sequences_running, stats.sequences_waiting) == (8, 0)
        for seq in sequences:
            seq.cancel()
    finally:
        model.close()


def test_importing_the_engine_leaves_llama_cpps_high_level_api_unloaded() -> None:
    code = ("import sys, llamaedge.engine, llamaedge.server\n"
            "assert 'llama_cpp.llama' not in sys.modules and 'llama_cpp.llama_chat_format' not in sys.modules\n"
            "import llama_cpp\n"
            "from llama_cpp import Llama, llama_decode\n"  # the whole package still answers, on demand
            "assert Llama.__module__ == 'llama_cpp.llama'\n"
            "assert llama_cpp.__version__ == llamaedge.engine.LLAMA_CPP_PYTHON_VERSION\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_preserved_tokens_are_the_single_tokens_and_show_in_the_text(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "markers.gguf", control_tokens=GEMMA4_MARKERS)
    model = Model(path, LoadOptions(threads=2, ctx_size=256, parallel=1))
    try:
        [marker] = model.tokenize(b"<|tool_call>")
        [quote] = model.tokenize(b'<|"|>')
        assert model.preserved_tokens(["<|tool_call>", '<|"|>', "<tool_call>", "two words", ""]) == {marker, quote}
        forced = SamplingOptions(temp=0, n_predict=2, logit_bias={marker: 100})
        prompt = model.tokenize(PROMPT)
        assert b"".join(model.generate(prompt, forced)) == b""
        for preserve, text in (["<|tool_call>"], b"<|tool_call>" * 2), (['<|"|>'], b""):
            preserved = dataclasses.replace(forced, preserved_tokens=model.preserved_tokens(preserve))
            assert b"".join(model.generate(prompt, preserved)) == text
    finally:
        model.close()
