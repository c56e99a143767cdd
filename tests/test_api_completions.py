"""POST /v1/completions end to end: `llamaedge serve` with the tiny model on a real port, the
shipped chat-server.wasm, real llama.cpp; responses parsed strictly with the `openai` SDK's
own types and requests made with its client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import List, Literal, Optional

import httpx
import llama_cpp
import openai
import pytest
from openai.types import Completion, CompletionChoice

from tests.conftest import ServerProcess, serving

PROMPT = "Once upon a time"


class StreamedChoice(CompletionChoice):
    """The SDK's choice with `finish_reason` nullable: OpenAI streams `null` until the end (the
    SDK shares one type between chunks and whole completions)."""

    finish_reason: Optional[Literal["stop", "length", "content_filter"]] = None  # type: ignore[assignment]


class CompletionChunk(Completion):
    choices: List[StreamedChoice]  # type: ignore[assignment]


@pytest.fixture(scope="module")
def vocab(tiny_model: Path) -> Iterator[llama_cpp.Llama]:
    """The tiny model's tokenizer, to make token prompts and logit_bias keys."""
    llama = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False)
    yield llama
    llama.close()


def complete(server: ServerProcess, body: dict) -> Completion:
    response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return Completion.model_validate(response.json(), strict=True)


def stream(server: ServerProcess, body: dict) -> list[CompletionChunk]:
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [CompletionChunk.model_validate(json.loads(e), strict=True) for e in events[:-1]]


def streamed_text(chunks: list[CompletionChunk], index: int = 0) -> str:
    return "".join(c.text for chunk in chunks for c in chunk.choices if c.index == index)


def greedy(server: ServerProcess, prompt: object, **fields: object) -> Completion:
    return complete(server, {"prompt": prompt, "max_tokens": 12, "temperature": 0, **fields})


# -- shapes ---------------------------------------------------------------------------------------


def test_a_completion_has_the_openai_text_completion_shape(server: ServerProcess) -> None:
    completion = complete(server, {"model": "tiny-chat", "prompt": PROMPT, "max_tokens": 10, "seed": 1})
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == "tiny-chat"
    [choice] = completion.choices
    assert choice.index == 0 and choice.logprobs is None
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert (choice.finish_reason == "length") == (usage.completion_tokens == 10)


def test_max_tokens_defaults_to_16(server: ServerProcess) -> None:
    # Greedy on the tiny model never picks the end token: the default limit ends it.
    completion = complete(server, {"prompt": PROMPT, "temperature": 0})
    assert completion.usage is not None and completion.usage.completion_tokens == 16
    assert completion.choices[0].finish_reason == "length"


def test_the_stream_equals_the_whole_completion(server: ServerProcess) -> None:
    body = {"prompt": PROMPT, "max_tokens": 20, "temperature": 0}
    whole = complete(server, body)
    chunks = stream(server, {**body, "stream_options": {"include_usage": True}})
    *choice_chunks, usage_chunk = chunks
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("cmpl-")
    assert all(c.object == "text_completion" for c in chunks)
    assert streamed_text(choice_chunks) == whole.choices[0].text
    assert all(c.choices[0].finish_reason is None for c in choice_chunks[:-1])
    assert choice_chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert usage_chunk.choices == [] and usage_chunk.usage == whole.usage


def test_no_usage_chunk_unless_asked(server: ServerProcess) -> None:
    chunks = stream(server, {"prompt": PROMPT, "max_tokens": 4})
    assert all(c.usage is None and c.choices for c in chunks)


def test_the_openai_client_completes_and_streams(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="tiny-chat", prompt=PROMPT, max_tokens=8, temperature=0)
    Completion.model_validate(completion.model_dump(exclude_unset=True), strict=True)
    chunks = list(client.completions.create(model="tiny-chat", prompt=PROMPT, max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text


# -- prompts --------------------------------------------------------------------------------------


def test_echo_puts_the_prompt_before_the_completion(server: ServerProcess) -> None:
    plain = greedy(server, PROMPT).choices[0].text
    echoed = greedy(server, PROMPT, echo=True).choices[0].text
    assert echoed == PROMPT + plain
    chunks = stream(server, {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "echo": True})
    assert streamed_text(chunks) == PROMPT + plain


def test_a_list_of_prompts_gives_one_choice_per_prompt_in_order(server: ServerProcess) -> None:
    prompts = [PROMPT, "The cat", "Hello there"]
    batch = greedy(server, prompts)
    assert [c.index for c in batch.choices] == [0, 1, 2]
    assert [c.text for c in batch.choices] == [greedy(server, p).choices[0].text for p in prompts]
    assert batch.usage is not None
    assert batch.usage.prompt_tokens == sum(greedy(server, p).usage.prompt_tokens for p in prompts)  # type: ignore[union-attr]


def test_a_token_prompt_completes_as_its_text(server: ServerProcess, vocab: llama_cpp.Llama) -> None:
    tokens = vocab.tokenize(PROMPT.encode(), add_bos=False, special=True)
    from_tokens = greedy(server, tokens, echo=True)
    assert from_tokens.choices[0].text == greedy(server, PROMPT, echo=True).choices[0].text
    assert from_tokens.usage is not None and from_tokens.usage.prompt_tokens == len(tokens)
    lists = greedy(server, [tokens, tokens[:2]])
    assert [c.index for c in lists.choices] == [0, 1]
    assert lists.choices[0].text == greedy(server, PROMPT).choices[0].text


def test_n_gives_independent_indexed_choices_per_prompt(server: ServerProcess) -> None:
    completion = complete(server, {"prompt": PROMPT, "n": 3, "max_tokens": 12, "seed": 5, "temperature": 1.5})
    assert [c.index for c in completion.choices] == [0, 1, 2]
    texts = [c.text for c in completion.choices]
    assert len(set(texts)) > 1, texts  # seeds 5, 6, 7: different samples
    usage = completion.usage
    assert usage is not None and 3 <= usage.completion_tokens <= 36
    assert (usage.completion_tokens == 36) == all(c.finish_reason == "length" for c in completion.choices)
    # choice i of a prompt is what seed+i gives alone
    alone = complete(server, {"prompt": PROMPT, "max_tokens": 12, "seed": 6, "temperature": 1.5})
    assert texts[1] == alone.choices[0].text
    # with several prompts, choice index = prompt_index * n + i
    both = complete(server, {"prompt": [PROMPT, "The cat"], "n": 2, "max_tokens": 6, "temperature": 0})
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    texts = [c.text for c in both.choices]
    assert texts[0] == texts[1] == greedy(server, PROMPT, max_tokens=6).choices[0].text
    assert texts[2] == texts[3] == greedy(server, "The cat", max_tokens=6).choices[0].text


def test_more_choices_than_decoding_slots_all_complete(server: ServerProcess) -> None:
    # 6 choices, 4 slots (serve's default --parallel): two waves, longer than the lookahead.
    completion = complete(server, {"prompt": PROMPT, "n": 6, "max_tokens": 40, "temperature": 0})
    assert [c.index for c in completion.choices] == list(range(6))
    assert len({c.text for c in completion.choices}) == 1
    assert all(c.finish_reason == "length" for c in completion.choices)


def test_n_streams_every_choice_to_its_end(server: ServerProcess) -> None:
    chunks = stream(server, {"prompt": PROMPT, "n": 2, "max_tokens": 8, "temperature": 0})
    finished = [c.index for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert sorted(finished) == [0, 1]
    assert streamed_text(chunks, 0) == streamed_text(chunks, 1) == greedy(server, PROMPT, max_tokens=8).choices[0].text


def test_stop_ends_the_text_before_the_stop_string(server: ServerProcess) -> None:
    full = greedy(server, PROMPT, max_tokens=30).choices[0].text
    stop = full[8:11]
    expected = full[: full.index(stop)]
    completion = greedy(server, PROMPT, max_tokens=30, stop=[stop])
    assert completion.choices[0].text == expected
    assert completion.choices[0].finish_reason == "stop"
    assert streamed_text(stream(server, {"prompt": PROMPT, "max_tokens": 30, "temperature": 0, "stop": stop})) == expected


# -- logprobs and logit_bias ----------------------------------------------------------------------


def test_logprobs_have_the_greedy_token_on_top(server: ServerProcess) -> None:
    completion = greedy(server, PROMPT, logprobs=3)
    choice = completion.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 12
    assert "".join(lp.tokens) == choice.text
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert 3 <= len(top) <= 4
        assert max(top, key=top.__getitem__) == token
        assert top[token] == pytest.approx(logprob)
        assert logprob <= 0
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    # streamed, the same logprobs arrive spread over the chunks
    chunks = stream(server, {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 3})
    assert [t for c in chunks for t in (c.choices[0].logprobs.tokens or [])] == lp.tokens  # type: ignore[union-attr]


def test_logit_bias_banning_the_greedy_token_changes_the_output(server: ServerProcess, vocab: llama_cpp.Llama) -> None:
    first = greedy(server, PROMPT, max_tokens=4, logprobs=1)
    token = first.choices[0].logprobs.tokens[0]  # type: ignore[union-attr,index]
    [token_id] = vocab.tokenize(token.encode(), add_bos=False, special=True)
    banned = greedy(server, PROMPT, max_tokens=4, logprobs=1, logit_bias={str(token_id): -100})
    assert banned.choices[0].logprobs.tokens[0] != token  # type: ignore[union-attr,index]
    assert banned.choices[0].text != first.choices[0].text


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "message_part"),
    [
        ({"prompt": PROMPT, "suffix": " the end."}, "suffix", "fill-in-the-middle"),
        ({"prompt": PROMPT, "best_of": 3}, "best_of", "does not generate extra candidates"),
        ({"prompt": PROMPT, "n": 2, "best_of": 1}, "best_of", "at least 'n'"),
        ({"prompt": PROMPT, "n": 17}, "n", "from 1 to 16"),
        ({"prompt": PROMPT, "logprobs": 6}, "logprobs", "between 0 and 5"),
        ({"prompt": PROMPT, "logprobs": 2, "echo": True}, "echo", "not of the prompt's"),
        ({"prompt": PROMPT, "logit_bias": {"word": 5}}, "logit_bias", "token ids"),
        ({"prompt": PROMPT, "logit_bias": {"1": -200}}, "logit_bias", "from -100 to 100"),
        ({"prompt": PROMPT, "logit_bias": {"99999999": -100}}, "logit_bias", "not a token id"),
        ({"prompt": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"prompt": PROMPT, "max_tokens": "ten"}, "max_tokens", "expected an integer"),
        ({"prompt": ""}, "prompt", "empty string"),
        ({"prompt": []}, "prompt", "empty array"),
        ({"prompt": [PROMPT, 5]}, "prompt[1]", "expected a string"),
        ({"prompt": [[1, 2], []]}, "prompt[1]", "empty array"),
        ({"prompt": [1, 99999999]}, "prompt", "token id"),
        ({}, "prompt", "Missing required parameter"),
        ({"prompt": "word " * 1000}, "prompt", "maximum context length is 512"),
    ],
    ids=["suffix", "best_of", "best_of-below-n", "n", "logprobs", "echo-logprobs", "bias-key", "bias-value",
         "bias-unknown-id", "stop", "max_tokens", "empty", "empty-list", "mixed", "empty-tokens", "unknown-token",
         "no-prompt", "too-long"],
)
def test_refused_requests_are_400_naming_the_field(server: ServerProcess, body: dict, param: str,
                                                   message_part: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message_part in error["message"]


def test_the_openai_client_raises_bad_request_with_the_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny-chat", prompt=PROMPT, suffix="!")
    assert raised.value.param == "suffix"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT)


def test_a_prompt_over_the_context_is_context_length_exceeded(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": [PROMPT, "word " * 1000], "stream": True},
                          timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings"])
def test_only_post_is_allowed(server: ServerProcess, path: str) -> None:
    response = httpx.get(f"{server.base_url}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_an_unknown_route_names_every_route(server: ServerProcess) -> None:
    message = httpx.post(f"{server.base_url}/v1/edits", json={}).json()["error"]["message"]
    for route in ("GET /v1/models", "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings"):
        assert route in message


# -- a real model ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_continues_a_raw_prompt(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with serving(tmp_path_factory.mktemp("completions-smollm2-home"), "--model", str(smollm2_model), "--threads", "2",
                 "--ctx-size", "2048") as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        completion = client.completions.create(model="SmolLM2-135M-Instruct.Q4_1", prompt="The capital of France is",
                                               max_tokens=8, temperature=0)
        Completion.model_validate(completion.model_dump(exclude_unset=True), strict=True)
        assert "Paris" in completion.choices[0].text  # no chat template: the text goes on
        chunks = client.completions.create(model="SmolLM2-135M-Instruct.Q4_1", prompt="The capital of France is",
                                           max_tokens=8, temperature=0, stream=True)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text
