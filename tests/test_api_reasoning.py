"""Thinking kept apart from the answer, end to end: `llamaedge serve` on a real port, the shipped
chat-server.wasm, real llama.cpp with the tiny model written with a thinking template (the
prompt ends inside an opened `<think>` block, as DeepSeek-R1 distills' and Qwen3 thinking
models' templates do). The same model served with `--reasoning-format none` gives the raw text,
which the split must partition exactly. Every response and chunk parsed strictly with the
`openai` SDK's own types."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.conftest import ServerProcess, post_chat, serving, stream_chat
from tests.tiny_gguf import write_tiny_gguf

# ChatML with a thinking model's habits: the generation prompt opens a think block unless
# enable_thinking is false (then it is an empty, closed one, as Qwen3's template does); past
# assistant turns show their reasoning_content; reasoning_effort, when given, is a level in a
# system line (as gpt-oss-style templates have).
THINKING_TEMPLATE = (
    "{% if reasoning_effort is defined %}{{ '<|im_start|>system\\nReasoning: ' + reasoning_effort + '<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' and message.reasoning_content is defined and message.reasoning_content %}"
    "{{ '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}{% endif %}"
    "{{ message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)

USER = [{"role": "user", "content": "What is two plus two?"}]
GREEDY = {"messages": USER, "max_tokens": 24, "temperature": 0}


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-thinker.gguf", chat_template=THINKING_TEMPLATE)


@pytest.fixture(scope="module")
def server(thinking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("think-home"), "--model", str(thinking_model), "--threads", "2",
                 "--ctx-size", "512") as server:
        yield server


@pytest.fixture(scope="module")
def raw_server(thinking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("raw-home"), "--model", str(thinking_model), "--threads", "2",
                 "--ctx-size", "512", "--reasoning-format", "none") as server:
        yield server


@pytest.fixture(scope="module")
def chatml_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("chatml-home"), "--model", str(tiny_model), "--threads", "2",
                 "--ctx-size", "512") as server:
        yield server




def stream(server: ServerProcess, body: dict) -> list[ChatCompletionChunk]:
    return stream_chat(server, {**body, "stream_options": {"include_usage": True}})


def reasoning_of(completion: ChatCompletion) -> str | None:
    extra = completion.choices[0].message.model_extra or {}
    return extra.get("reasoning_content")


def split_raw(raw: str) -> tuple[str, str]:
    """What llama.cpp's `--reasoning-format auto` makes of a generation that starts inside the
    think block: reasoning up to the first `</think>` (trimmed), the answer after it (its
    leading whitespace trimmed); no `</think>` at all: everything is reasoning."""
    if "</think>" in raw:
        thought, answer = raw.split("</think>", 1)
        return thought.strip(), answer.lstrip()
    return raw.strip(), ""


# -- the split ----------------------------------------------------------------------------------


def test_a_template_opened_think_block_makes_the_output_reasoning(server: ServerProcess, raw_server: ServerProcess) -> None:
    raw = post_chat(raw_server, GREEDY)
    raw_text = raw.choices[0].message.content or ""
    assert raw_text.strip(), "the tiny model said nothing"
    assert reasoning_of(raw) is None  # --reasoning-format none: all inline

    split = post_chat(server, GREEDY)
    reasoning, answer = split_raw(raw_text)
    assert reasoning_of(split) == (reasoning or None)
    assert split.choices[0].message.content == answer
    assert split.choices[0].finish_reason == raw.choices[0].finish_reason


def test_a_block_never_closed_is_all_reasoning_with_finish_reason_length(server: ServerProcess) -> None:
    completion = post_chat(server, {**GREEDY, "max_tokens": 6})
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content == ""
    assert reasoning_of(completion)


def test_usage_counts_the_reasoning_tokens(server: ServerProcess, raw_server: ServerProcess) -> None:
    body = {**GREEDY, "max_tokens": 6}
    split, raw = post_chat(server, body), post_chat(raw_server, body)
    assert split.usage is not None and raw.usage is not None
    assert split.usage.completion_tokens == raw.usage.completion_tokens == 6
    assert split.usage.total_tokens == split.usage.prompt_tokens + 6


def test_streamed_reasoning_comes_in_reasoning_content_deltas(server: ServerProcess) -> None:
    whole = post_chat(server, GREEDY)
    chunks = stream(server, GREEDY)
    *choice_chunks, usage_chunk = chunks
    assert choice_chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta for c in choice_chunks[1:]]
    thought = "".join((d.model_extra or {}).get("reasoning_content", "") for d in deltas)
    answer = "".join(d.content or "" for d in deltas)
    assert thought == reasoning_of(whole)
    assert answer == whole.choices[0].message.content
    # the reasoning came token by token, not in one piece at the end
    assert sum(1 for d in deltas if (d.model_extra or {}).get("reasoning_content")) > 1
    assert choice_chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert usage_chunk.usage is not None and whole.usage is not None
    assert usage_chunk.usage.completion_tokens == whole.usage.completion_tokens


def test_stop_strings_apply_to_the_answer_not_to_the_thinking(server: ServerProcess, raw_server: ServerProcess) -> None:
    free = post_chat(server, GREEDY)
    thought = reasoning_of(free)
    assert thought and len(thought) > 10
    stop = thought[4:7]
    assert stop not in (free.choices[0].message.content or "")
    with_stop = post_chat(server, {**GREEDY, "stop": [stop]})
    assert reasoning_of(with_stop) == thought
    assert with_stop.choices[0].message.content == free.choices[0].message.content
    assert with_stop.choices[0].finish_reason == free.choices[0].finish_reason
    # inline (none), the same stop string cuts the raw text
    raw = post_chat(raw_server, {**GREEDY, "stop": [stop]})
    assert raw.choices[0].finish_reason == "stop"
    assert stop not in (raw.choices[0].message.content or "")
    streamed = stream(server, {**GREEDY, "stop": [stop]})
    assert "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
                   for c in streamed if c.choices) == thought


# -- per-request options --------------------------------------------------------------------------


def test_enable_thinking_false_in_chat_template_kwargs_gives_a_plain_answer(server: ServerProcess, raw_server: ServerProcess) -> None:
    body = {**GREEDY, "chat_template_kwargs": {"enable_thinking": False}}
    plain = post_chat(server, body)
    raw = post_chat(raw_server, body)
    assert reasoning_of(plain) is None
    assert plain.choices[0].message.content == raw.choices[0].message.content
    assert plain.choices[0].message.content
    thinking = post_chat(server, GREEDY)
    assert plain.usage is not None and thinking.usage is not None
    # the closed, empty block "\n\n</think>\n\n" is in the prompt
    assert plain.usage.prompt_tokens > thinking.usage.prompt_tokens


def test_the_sdk_sends_chat_template_kwargs_and_reasoning_effort(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    plain = client.chat.completions.create(model="tiny-thinker", messages=USER, max_tokens=8,  # type: ignore[arg-type]
                                           extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert (plain.choices[0].message.model_extra or {}).get("reasoning_content") is None
    low = client.chat.completions.create(model="tiny-thinker", messages=USER, max_tokens=8,  # type: ignore[arg-type]
                                         reasoning_effort="low")
    none_given = client.chat.completions.create(model="tiny-thinker", messages=USER, max_tokens=8)  # type: ignore[arg-type]
    assert low.usage is not None and none_given.usage is not None
    # the template's level line ("Reasoning: low") is in the prompt
    assert low.usage.prompt_tokens > none_given.usage.prompt_tokens


def test_reasoning_effort_is_accepted_where_the_template_has_no_levels(chatml_server: ServerProcess) -> None:
    with_effort = post_chat(chatml_server, {**GREEDY, "reasoning_effort": "high"})
    without = post_chat(chatml_server, GREEDY)
    assert with_effort.usage is not None and without.usage is not None
    assert with_effort.usage.prompt_tokens == without.usage.prompt_tokens
    assert reasoning_of(with_effort) is None


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"reasoning_effort": 3}, "reasoning_effort"),
        ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
        ({"chat_template_kwargs": "enable_thinking=false"}, "chat_template_kwargs"),
    ],
    ids=["effort-value", "effort-type", "kwargs-array", "kwargs-string"],
)
def test_bad_reasoning_options_are_400_naming_the_field(server: ServerProcess, extra: dict, param: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json={**GREEDY, **extra}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


# -- earlier turns ---------------------------------------------------------------------------------


def history(reasoning: str | None) -> list[dict]:
    turn: dict = {"role": "assistant", "content": "It is four."}
    if reasoning is not None:
        turn["reasoning_content"] = reasoning
    return [*USER, turn, {"role": "user", "content": "And three plus three?"}]


def test_earlier_reasoning_reaches_a_template_that_asks_for_it(server: ServerProcess) -> None:
    kept = post_chat(server, {**GREEDY, "messages": history("two and two make four " * 4), "max_tokens": 4})
    bare = post_chat(server, {**GREEDY, "messages": history(None), "max_tokens": 4})
    assert kept.usage is not None and bare.usage is not None
    assert kept.usage.prompt_tokens > bare.usage.prompt_tokens + 16


def test_earlier_reasoning_is_left_out_of_a_template_without_it(chatml_server: ServerProcess) -> None:
    kept = post_chat(chatml_server, {**GREEDY, "messages": history("two and two make four " * 4), "max_tokens": 4})
    bare = post_chat(chatml_server, {**GREEDY, "messages": history(None), "max_tokens": 4})
    assert kept.usage is not None and bare.usage is not None
    assert kept.usage.prompt_tokens == bare.usage.prompt_tokens


def test_a_model_without_a_thinking_template_answers_in_content(chatml_server: ServerProcess) -> None:
    completion = post_chat(chatml_server, GREEDY)
    assert reasoning_of(completion) is None
    assert completion.choices[0].message.content


# -- with the other options ------------------------------------------------------------------------


def test_logprobs_cover_the_reasoning_tokens(server: ServerProcess) -> None:
    body = {**GREEDY, "max_tokens": 8, "logprobs": True, "top_logprobs": 2}
    whole = post_chat(server, body)
    assert whole.usage is not None and whole.choices[0].logprobs is not None
    entries = whole.choices[0].logprobs.content or []
    assert len(entries) == whole.usage.completion_tokens == 8
    assert "".join(e.token for e in entries).strip() == reasoning_of(whole)
    chunks = stream(server, body)
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
    assert [e.token for e in streamed] == [e.token for e in entries]


def test_each_choice_is_split_on_its_own(server: ServerProcess) -> None:
    completion = post_chat(server, {**GREEDY, "n": 2, "max_tokens": 8, "seed": 5, "temperature": 1.0})
    assert len(completion.choices) == 2
    for choice in completion.choices:
        assert (choice.message.model_extra or {}).get("reasoning_content")
        assert choice.message.content == ""
    chunks = stream(server, {**GREEDY, "n": 2, "max_tokens": 8, "seed": 5, "temperature": 1.0})
    for index, choice in enumerate(completion.choices):
        thought = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
                          for c in chunks if c.choices and c.choices[0].index == index)
        assert thought == choice.message.model_extra["reasoning_content"]  # type: ignore[index]
