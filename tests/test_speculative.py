"""Speculative decoding: prompt lookup and draft lengths alone; the scheduler verifying drafts
against a scripted decoder (kept tokens, forgotten cells, the lookahead, n_predict, a full
context); and on the real engine, the tiny GGUF and SmolLM2, output with drafts that equals
the output without them, alone and beside other streams, greedy and sampled."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llamaedge.engine import LoadOptions, Model, SamplingOptions, SpecOptions, Token
from llamaedge.engine.prefix import common_prefix
from llamaedge.engine.scheduler import Scheduler
from llamaedge.engine.sequence import Sequence
from llamaedge.engine.speculative import DraftLength, DraftWant, ngram_draft
from llamaedge.engine.types import DRAFT_PAUSE_STEPS_MAX, LOOKAHEAD_TOKENS_MAX, FinishReason
from llamaedge.engine.errors import LoadError
from tests.test_batching import concurrent_tokens
from tests.test_scheduler import END, FakeDecoder, drain, run, run_until, sequence
from tests.tiny_gguf import write_tiny_gguf

# -- prompt lookup ---------------------------------------------------------------------------------


def test_prompt_lookup_drafts_what_followed_the_latest_longest_match() -> None:
    tokens = array("i", [5, 6, 7, 1, 2, 3, 9, 9, 4, 5, 6, 7, 8, 8, 6, 7])
    # [6, 7] last occurred at 10 (then 8, 8, 6, 7); [5, 6, 7] ... the longest run that occurred
    # before is [6, 7] (the run [8, 6, 7] did not), and its latest occurrence wins.
    assert ngram_draft(tokens, 3) == [8, 8, 6]
    assert ngram_draft(tokens, 10) == [8, 8, 6, 7]  # up to the end of the text
    assert ngram_draft(array("i", [1, 2, 3, 4, 1, 2, 3]), 2) == [4, 1]  # [1, 2, 3] beats [2, 3]
    assert ngram_draft(array("i", [1, 2, 3, 4, 5]), 4) == []  # nothing repeats
    assert ngram_draft(array("i", [1, 2, 3, 1]), 4) == []  # one token is not a match
    assert ngram_draft(tokens, 0) == []


def test_prompt_lookup_matches_whole_tokens_only() -> None:
    # 65536's bytes (00 00 01 00) also occur across the bytes of 1 and 256 (01 00 00 00 00 01 00 00).
    assert ngram_draft(array("i", [7, 1, 256, 3, 65536]), 4, ngram_min=1) == []
    assert ngram_draft(array("i", [65536, 5, 1, 256, 7, 65536]), 2, ngram_min=1) == [5, 1]


def test_common_prefix_of_token_texts() -> None:
    a = array("i", range(1000))
    assert common_prefix(a, a) == 1000
    assert common_prefix(a, a[:10]) == 10
    b = array("i", a)
    b[637] = -1
    assert common_prefix(a, b) == 637
    assert common_prefix(array("i"), a) == 0
    assert common_prefix(array("i", [2]), array("i", [3])) == 0


# -- draft lengths ---------------------------------------------------------------------------------


def test_a_draft_taken_whole_doubles_the_length_and_one_cut_short_sets_it() -> None:
    length = DraftLength(draft_max=8)
    assert length.wanted() == 8  # the first draft is optimistic
    length.verified(8, 3)
    assert length.wanted() == 4  # what was taken, and one more
    length.verified(4, 4)
    assert length.wanted() == 8
    length.verified(2, 2)  # a short draft (the lookup found no more) taken whole: no shorter
    assert length.wanted() == 8
    length.verified(8, 0)
    assert length.wanted() == 1


def test_drafts_of_the_shortest_length_turned_down_pause_drafting_longer_each_time() -> None:
    length = DraftLength(draft_max=8, length=1)
    pauses = []
    for _ in range(7):
        length.verified(1, 0)
        paused = 0
        while length.wanted() == 0:
            paused += 1
        pauses.append(paused)
    assert pauses == [2, 4, 8, 16, 32, 64, 64] and DRAFT_PAUSE_STEPS_MAX == 64
    length.verified(1, 1)  # taken: drafting goes on, and the next failure pauses briefly again
    length.verified(2, 0)
    length.verified(1, 0)
    assert [length.wanted() for _ in range(3)] == [0, 0, 1]


def test_draft_min_is_the_shortest_length() -> None:
    length = DraftLength(draft_max=8, draft_min=3)
    length.verified(8, 0)
    assert length.wanted() == 3
    length.verified(3, 1)
    assert length.wanted() == 3


# -- the scheduler against a scripted decoder ------------------------------------------------------


@dataclass
class FakeDrafter:
    """Drafts `guess(tokens)` (truncated to n_max) and records what it was asked."""

    guess: Callable[[array[int]], list[int]]
    wants: list[DraftWant] = field(default_factory=list)

    def draft(self, wants: list[DraftWant]) -> list[list[int]]:
        self.wants += [want._replace(tokens=array("i", want.tokens)) for want in wants]
        return [self.guess(want.tokens)[:want.n_max] for want in wants]


def scripted(prompt: list[int], script: list[int], n_predict: int = -1) -> Sequence:
    seq = sequence(prompt, script, n_predict=n_predict)
    seq.sampling.ignore_eos = False
    return seq


def continuation(prompt: list[int], script: list[int], wrong_after: int = 1 << 30) -> Callable[[array[int]], list[int]]:
    """A guess of what follows a text: the script from where the text is, right for the
    first `wrong_after` tokens of each draft and wrong after."""
    def guess(tokens: array[int]) -> list[int]:
        done = len(tokens) - len(prompt)  # the tokens generated so far (the last one pending)
        right = script[done:done + wrong_after]
        return right + [999] * 20
    return guess


def speculating(decoder: FakeDecoder, drafter: FakeDrafter, n_slots: int = 1, **spec: object) -> Scheduler:
    options = SpecOptions(draft_model=Path("draft.gguf"), **spec)  # type: ignore[arg-type]
    return Scheduler(decoder, n_slots, thread=False, speculative=options, drafter=drafter)


def test_drafted_tokens_are_kept_while_the_model_agrees_and_the_cells_of_the_rest_forgotten() -> None:
    decoder = FakeDecoder(n_ctx=256, n_batch=32)
    prompt, script = [1, 2, 3], [100 + i for i in range(30)] + [END]
    drafter = FakeDrafter(continuation(prompt, script, wrong_after=2))
    scheduler = speculating(decoder, drafter)
    seq = scripted(prompt, script)
    scheduler.submit(seq)
    tokens: list[int] = []
    run_until(scheduler, lambda: (tokens.extend(drain(seq)), seq.done)[1])
    tokens += drain(seq)
    assert tokens == script[:-1] and seq.finish_reason == FinishReason.STOP
    # Each draft was right for 2 tokens: a step gave 3 tokens where it drafted.
    assert 0 < seq.n_accepted < seq.n_drafted
    assert scheduler.stats().draft_tokens == seq.n_drafted
    assert scheduler.stats().draft_tokens_accepted == seq.n_accepted
    assert len(decoder.batches) < len(script) - 5
    # The slot's cells are its text, position by position: no drafted token left over.
    assert decoder.positions(0) == list(range(len(prompt) + len(script) - 1))
    # The drafter was shown the text so far, the pending token last.
    want = drafter.wants[0]
    assert want.slot == 0 and list(want.tokens) == prompt + script[:1]
    # Every drafted entry asked for logits: each position is sampled.
    assert all(entry.logits for batch in decoder.batches[1:] for entry in batch)


def test_a_sequence_with_drafts_still_runs_at_most_the_lookahead_ahead_of_its_reader() -> None:
    decoder = FakeDecoder(n_ctx=512, n_batch=64)
    prompt, script = [1, 2], [100 + i for i in range(200)]
    scheduler = speculating(decoder, FakeDrafter(continuation(prompt, script)), draft_max=15)
    seq = scripted(prompt, script)
    scheduler.submit(seq)
    for _ in range(30):
        run(scheduler)
        assert seq._pieces.qsize() <= LOOKAHEAD_TOKENS_MAX
    assert seq._pieces.qsize() == LOOKAHEAD_TOKENS_MAX
    assert drain(seq) == script[:LOOKAHEAD_TOKENS_MAX]
    assert len(decoder.batches) <= 3  # the prompt, then drafts taken whole


def test_drafts_stop_at_n_predict() -> None:
    decoder = FakeDecoder(n_ctx=128, n_batch=32)
    prompt, script = [1, 2], [100 + i for i in range(40)]
    scheduler = speculating(decoder, FakeDrafter(continuation(prompt, script)))
    seq = scripted(prompt, script, n_predict=6)
    scheduler.submit(seq)
    run_until(scheduler, lambda: seq.done)
    assert drain(seq) == script[:6] and seq.finish_reason == FinishReason.LENGTH
    assert all(entry.pos < len(prompt) + 5 for batch in decoder.batches for entry in batch)


def test_when_drafts_do_not_fit_the_context_the_tokens_go_on_without_them() -> None:
    decoder = FakeDecoder(n_ctx=24, n_batch=32)
    script = [100 + i for i in range(10)]
    drafter = FakeDrafter(lambda tokens: script)
    scheduler = speculating(decoder, drafter, n_slots=2)
    first, second = scripted(list(range(1, 11)), script), scripted(list(range(11, 21)), script)
    for seq in (first, second):
        seq.sampling.n_predict = 4
        scheduler.submit(seq)
    run(scheduler)  # both prompts: 20 of the 24 cells
    run(scheduler)  # two tokens and their drafts do not fit; the two tokens do
    assert not first.done and not second.done
    assert len(decoder.batches[-1]) == 2 and first.n_generated == second.n_generated == 2
    assert first.n_drafted == second.n_drafted == 0


def test_prompt_lookup_in_the_scheduler_drafts_from_the_prompt() -> None:
    decoder = FakeDecoder(n_ctx=128, n_batch=32)
    passage = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
    prompt = [1, *passage, 2, 10, 11]  # "repeat the passage": the reply copies it
    script = passage[2:] + [END]
    scheduler = Scheduler(decoder, 1, thread=False, speculative=SpecOptions(ngram=True))
    seq = scripted(prompt, script)
    scheduler.submit(seq)
    run_until(scheduler, lambda: seq.done)
    assert drain(seq) == passage[2:]
    # The whole rest of the passage in one step; the draft after it (the prompt's next words)
    # was turned down by the end.
    assert seq.n_accepted == len(passage) - 4 == 8
    assert len(decoder.batches) == 3


def test_without_speculative_options_nothing_is_drafted() -> None:
    decoder = FakeDecoder(n_ctx=128, n_batch=32)
    scheduler = Scheduler(decoder, 1, thread=False)
    prompt = [1, 2, 3, 1, 2]
    seq = scripted(prompt, [3, 1, 2, 3, END])
    scheduler.submit(seq)
    run_until(scheduler, lambda: seq.done)
    assert all(len(batch) == 1 for batch in decoder.batches[1:]) and seq.n_drafted == 0


# -- the real engine -------------------------------------------------------------------------------


def chatml(user: str) -> bytes:
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n".encode()


PASSAGE = ("It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin "
           "nuzzled into his breast in an effort to escape the vile wind, slipped quickly through the glass doors "
           "of Victory Mansions, though not quickly enough to prevent a swirl of gritty dust from entering along "
           "with him.")
CODE = '''def total(prices, tax):
    subtotal = 0
    for price in prices:
        subtotal += price
    return subtotal * (1 + tax)


def average(prices):
    return total(prices, 0) / len(prices)
'''
PROMPTS = [
    chatml(f"Repeat this passage word for word, but write May instead of April:\n\n{PASSAGE}"),
    chatml(f"Rename the function total to sum_with_tax and show the whole code:\n\n{CODE}"),
    chatml("Say the word 'yes' twenty times, separated by commas."),
    chatml("What is the capital of France?"),
]
# Notes before the passage: with the reply, over 256 cells, so that llama.cpp's attention for
# a lone token reads the cache in parts (see assert_same_or_split_at_a_near_tie).
LONG_PROMPT = chatml(" ".join(f"Note {i}: the river {i} follows the old tower." for i in range(30))
                     + f"\n\nRepeat this passage word for word, but write May instead of April:\n\n{PASSAGE}")
N_PREDICT = 96
GREEDY = SamplingOptions(temp=0, n_predict=N_PREDICT)
# With the likeliest two tokens' log-probabilities, to tell a near tie.
GREEDY_TOP2 = SamplingOptions(temp=0, n_predict=N_PREDICT, logprobs=True, top_logprobs=2)
# llama.cpp's CPU attention picks its kernel by the tokens in the batch and the cells in the
# cache, which moved SmolLM2's two likeliest tokens by up to 0.1 nats (four streams at once,
# with drafts or without): a split within this gap is a tie that rounding decides.
NEAR_TIE_NATS = 0.25


def outputs(path: Path, spec: SpecOptions, prompts: list[bytes], sampling: SamplingOptions,
            together: bool = False) -> tuple[list[list[Token]], int, int]:
    """Each prompt's tokens (generated one after another, or all at once), and the drafted and
    accepted tokens."""
    model = Model(path, LoadOptions(threads=2, ctx_size=2048, parallel=4, speculative=spec))
    try:
        tokens = (concurrent_tokens(model, prompts, sampling) if together
                  else [list(iter(model.generate(model.tokenize(p), sampling).next_token, None)) for p in prompts])
        stats = model.stats()
        return tokens, stats.draft_tokens, stats.draft_tokens_accepted
    finally:
        model.close()


def ids(outputs: list[list[Token]]) -> list[list[int]]:
    return [[token.id for token in tokens] for tokens in outputs]


def assert_same_or_split_at_a_near_tie(plain: list[Token], other: list[Token]) -> None:
    """`other` says what `plain` said, or parts from it where `plain`'s two likeliest tokens
    were within NEAR_TIE_NATS, taking the other of the two. Where the same token is decoded in
    batches of other shapes (drafts, other streams), llama.cpp's CPU kernels round its logits
    differently (its attention reads a cache of 512 cells or more in parts, across threads,
    for a batch of one token, and whole for more): a tie may fall either way, as continuous
    batching makes it do without drafts (test_smollm2_streams_at_once_differ_from_alone_at_near_ties_only)."""
    a, b = [t.id for t in plain], [t.id for t in other]
    if a == b:
        return
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert i < min(len(a), len(b)), "one ended early where the other went on"
    top = plain[i].logprobs["top_logprobs"]  # type: ignore[index]
    assert b[i] == top[1]["id"] and top[0]["logprob"] - top[1]["logprob"] < NEAR_TIE_NATS, (i, top, b[i])


@pytest.fixture(scope="module")
def other_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's vocabulary with other weights: a draft model that is mostly wrong."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-other.gguf", seed=7)


@pytest.mark.parametrize("together", [False, True], ids=["alone", "four-streams"])
def test_greedy_output_of_the_tiny_model_is_the_same_with_drafts(tiny_model: Path, other_tiny: Path,
                                                                 together: bool) -> None:
    # The tiny model's logits do not depend on the batch (test_batching): equal, token for token.
    plain, _, _ = outputs(tiny_model, SpecOptions(), PROMPTS, GREEDY)
    assert all(plain)
    for spec in (SpecOptions(ngram=True), SpecOptions(draft_model=other_tiny),
                 SpecOptions(ngram=True, draft_model=tiny_model, draft_max=15)):
        tokens, drafted, accepted = outputs(tiny_model, spec, PROMPTS, GREEDY, together)
        assert ids(tokens) == ids(plain), spec
        assert drafted > 0, spec
    # Drafting with the model itself, every draft is right; with other weights, few are.
    _, drafted, accepted = outputs(tiny_model, SpecOptions(draft_model=tiny_model), PROMPTS, GREEDY, together)
    assert accepted == drafted > 0
    _, drafted, accepted = outputs(tiny_model, SpecOptions(draft_model=other_tiny), PROMPTS, GREEDY, together)
    assert accepted < drafted


def test_seeded_sampled_output_is_the_same_with_drafts(tiny_model: Path) -> None:
    # Each position is sampled in turn, one random draw per token kept, as without drafts: a
    # seeded sampled reply is the same text (the rejection rule for a single-guess draft).
    sampled = SamplingOptions(temp=0.7, seed=42, n_predict=N_PREDICT, ignore_eos=True)
    plain, _, _ = outputs(tiny_model, SpecOptions(), PROMPTS[:2], sampled)
    tokens, drafted, accepted = outputs(tiny_model, SpecOptions(draft_model=tiny_model), PROMPTS[:2], sampled)
    assert ids(tokens) == ids(plain) and 0 < accepted < drafted


def test_a_draft_model_of_another_vocabulary_is_refused(tiny_model: Path, smollm2_model: Path) -> None:
    with pytest.raises(LoadError, match="vocabulary"):
        Model(tiny_model, LoadOptions(threads=2, ctx_size=512, speculative=SpecOptions(draft_model=smollm2_model)))


def test_the_sequence_counts_its_drafts(tiny_model: Path) -> None:
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=1024, parallel=2,
                                          speculative=SpecOptions(draft_model=tiny_model)))
    try:
        seq = model.generate(model.tokenize(PROMPTS[0]), GREEDY)
        assert b"".join(seq) and seq.n_accepted == seq.n_drafted > 0
        assert seq.n_generated <= N_PREDICT
    finally:
        model.close()


def test_a_draft_model_drafts_the_same_for_texts_that_start_alike_together_or_alone(tiny_model: Path) -> None:
    # A slot's text may start from cells another slot holds: from cells already read, not
    # from text that slot reads in the same batch.
    texts = [array("i", tokens) for tokens in ([1, 2, 3, 40, 41, 42, 43], [1, 2, 3, 50, 51, 52], [1, 2, 3, 40, 41, 60])]

    def drafts(model: Model, slots_texts: list[tuple[int, array[int]]]) -> list[list[int]]:
        assert model.drafter is not None
        drafter = model.drafter
        return model._scheduler.run_job(lambda: drafter.draft([DraftWant(slot, text, 6) for slot, text in slots_texts]))

    spec = SpecOptions(draft_model=tiny_model)
    together = Model(tiny_model, LoadOptions(threads=2, ctx_size=512, parallel=3, speculative=spec))
    alone = Model(tiny_model, LoadOptions(threads=2, ctx_size=512, parallel=3, speculative=spec))
    try:
        assert drafts(together, list(enumerate(texts))) == [drafts(alone, [(0, text)])[0] for text in texts]
        # Again, one token on: each slot reads its new token only, the same drafts as afresh.
        longer = [array("i", [*text, 7]) for text in texts]
        assert drafts(together, list(enumerate(longer))) == [drafts(alone, [(0, text)])[0] for text in longer]
    finally:
        together.close()
        alone.close()


@pytest.mark.slow
def test_greedy_output_of_smollm2_is_the_same_with_drafts(smollm2_model: Path) -> None:
    plain, _, _ = outputs(smollm2_model, SpecOptions(), [*PROMPTS, LONG_PROMPT], GREEDY_TOP2)
    for spec in (SpecOptions(ngram=True), SpecOptions(ngram=True, draft_model=smollm2_model)):
        alone, drafted, accepted = outputs(smollm2_model, spec, [*PROMPTS, LONG_PROMPT], GREEDY_TOP2)
        # Within 256 cells a token's logits are the same alone and in a batch: the same text.
        assert ids(alone[:-1]) == ids(plain[:-1]), spec
        assert_same_or_split_at_a_near_tie(plain[-1], alone[-1])
        # The replies repeat the prompts' text: most drafts are right.
        assert accepted > drafted / 2 > 0, spec
        together, _, _ = outputs(smollm2_model, spec, PROMPTS, GREEDY_TOP2, together=True)
        for p, t in zip(plain, together):
            assert_same_or_split_at_a_near_tie(p, t)


@pytest.mark.slow
def test_smollm2_streams_at_once_differ_from_alone_at_near_ties_only(smollm2_model: Path) -> None:
    # What the test above allows for drafts, batching does without them.
    plain, _, _ = outputs(smollm2_model, SpecOptions(), PROMPTS, GREEDY_TOP2)
    together, _, _ = outputs(smollm2_model, SpecOptions(), PROMPTS, GREEDY_TOP2, together=True)
    for p, t in zip(plain, together):
        assert_same_or_split_at_a_near_tie(p, t)


# -- the host: WASI-NN metadata, /metrics ------------------------------------------------------------


def test_the_generation_metadata_counts_drafted_and_accepted_tokens(tiny_model: Path) -> None:
    from llamaedge.runtime import GraphRegistry, Preload
    from tests.nn_harness import harness, harness_app, new_runtime

    options = LoadOptions(threads=2, ctx_size=512, speculative=SpecOptions(draft_model=tiny_model))
    registry = GraphRegistry(options, [Preload("default", "GGML", "AUTO", tiny_model)], loader=Model)
    runtime = new_runtime(registry)
    try:
        with harness(runtime, harness_app(runtime)) as nn:
            _, graph = nn.load_by_name("default")
            _, ctx = nn.init_context(graph)
            assert nn.set_input(ctx, 1, {"temp": 0, "n-predict": 40}) == 0
            assert nn.set_input(ctx, 0, PROMPTS[0]) == 0
            assert nn.metadata(ctx)["draft_n"] == 0
            text, _end = nn.stream(ctx)
            meta = nn.metadata(ctx)
    finally:
        runtime.close()
        registry.close()
    assert text and meta["output_tokens"] == 40
    # Drafting with the model itself, every drafted token is taken.
    assert meta["draft_n"] == meta["draft_n_accepted"] > 0
    # And the times, as llama-server's timings name them (the chat app's `timings`).
    assert meta["prompt_ms"] > 0 and meta["predicted_ms"] > 0


def test_metrics_count_drafted_and_accepted_tokens(tiny_model: Path) -> None:
    from openai import OpenAI

    from llamaedge.server import ServerState, default_app_path
    from tests.test_metrics import scrape, value
    from tests.test_server_http import config_for, running

    config = config_for(tiny_model, default_app_path(), speculative=SpecOptions(ngram=True, draft_model=tiny_model))
    with running(ServerState(config)) as url:
        assert value(scrape(url), "llamaedge_draft_tokens_total", model="tiny-chat") == 0
        with OpenAI(base_url=f"{url}/v1", api_key="unused") as client:
            client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=48, temperature=0)
        samples = scrape(url)
    drafted = value(samples, "llamaedge_draft_tokens_total", model="tiny-chat")
    assert 0 < value(samples, "llamaedge_draft_tokens_accepted_total", model="tiny-chat") <= drafted


@pytest.mark.slow
def test_a_chat_response_carries_llama_servers_timings_with_the_draft_counts(smollm2_model: Path) -> None:
    import json

    import httpx

    from llamaedge.server import ServerState, default_app_path
    from tests.test_server_http import config_for, running

    # A prompt that repeats itself: prompt lookup (--spec-ngram) drafts its continuation.
    text = "one two three four five six seven eight nine ten. " * 6
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": f"Repeat this text: {text}"}],
            "max_tokens": 64, "temperature": 0}
    config = config_for(smollm2_model, default_app_path(), speculative=SpecOptions(ngram=True))
    with running(ServerState(config)) as url:
        whole = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=120) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
    for timings, completion_tokens in ((whole["timings"], whole["usage"]["completion_tokens"]),
                                       (events[-1]["timings"], None)):
        assert timings["prompt_n"] > 0 and timings["prompt_ms"] > 0 and timings["prompt_per_second"] > 0
        assert timings["predicted_n"] > 0 and timings["predicted_ms"] >= 0
        if completion_tokens is not None:
            assert timings["predicted_n"] == completion_tokens
        assert 0 < timings["draft_n_accepted"] <= timings["draft_n"]
    # Only the stream's last chunk carries them (here its finish chunk: no usage chunk was asked for).
    assert events[-1]["choices"][0]["finish_reason"] is not None
    assert not any("timings" in e for e in events[:-1])
