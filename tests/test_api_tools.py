"""Function calling, logprobs, logit_bias and n in /v1/chat/completions, end to end: `llamaedge
serve` on a real port with the shipped chat-server.wasm and real llama.cpp (the tiny model, and
SmolLM2-135M for the tests marked slow); the official `openai` client; every response and chunk
parsed strictly with the SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion

from tests import tiny_gguf
from tests.conftest import ServerProcess, post_chat, serving, stream_chat

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_SCHEMA = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "description": "The time in a zone.", "parameters": TIME_SCHEMA}},
]
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("tools-home"), "--model", str(tiny_model), "--threads", "2", "--ctx-size", "1024") as server:
        yield server


def assert_valid_calls(completion: ChatCompletion, schemas: dict[str, Any], names: set[str] | None = None) -> list[tuple[str, str]]:
    """Each call: a distinct `call_` id, a declared function (one of `names`, where given),
    arguments a JSON string valid under its schema in `schemas`. Returns the calls as (name, arguments)."""
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert calls
    assert len({c.id for c in calls}) == len(calls)
    for call in calls:
        assert call.type == "function"
        assert call.id.startswith("call_") and len(call.id) == 29 and call.id[5:].isalnum()
        assert call.function.name in (names or schemas)
        assert isinstance(call.function.arguments, str)
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    assert choice.message.content is None or "tool_call" not in choice.message.content
    return [(c.function.name, c.function.arguments) for c in calls]


# -- calls -------------------------------------------------------------------------------------------


def test_a_required_call_has_the_openai_shape_and_valid_arguments(server: ServerProcess) -> None:
    completion = post_chat(server, {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 120, "seed": 3})
    assert_valid_calls(completion, SCHEMAS)


def test_a_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="tiny-chat", messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    ChatCompletion.model_validate(completion.model_dump(exclude_unset=True), strict=True)
    assert_valid_calls(completion, SCHEMAS)
    assert [c.function.name for c in completion.choices[0].message.tool_calls or []] == ["get_time"]


def test_streamed_call_chunks_follow_openais_order(server: ServerProcess) -> None:
    chunks = stream_chat(server, {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 120, "temperature": 0})
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant" and deltas[0].content is None
    call_deltas = [(i, d.tool_calls[0]) for i, d in enumerate(deltas) if d.tool_calls]
    assert call_deltas
    first_at, first = call_deltas[0]
    assert first.index == 0 and first.id and first.id.startswith("call_") and first.type == "function"
    assert first.function is not None and first.function.name in SCHEMAS and first.function.arguments == ""
    # later deltas of the call carry only the index and argument fragments, as generated
    later = [d for _, d in call_deltas[1:] if d.index == 0]
    assert len(later) >= 2
    assert all(d.id is None and d.type is None and d.function is not None and d.function.name is None for d in later)
    assert all(not d.content for d in deltas[first_at:])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices[0].delta.tool_calls is None and not chunks[-1].choices[0].delta.content
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    arguments = "".join(d.function.arguments or "" for d in later if d.function)
    jsonschema.validate(json.loads(arguments), SCHEMAS[first.function.name])


def test_the_streamed_call_equals_the_non_streamed_call(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {"model": "tiny-chat", "messages": ASK, "tools": TOOLS, "tool_choice": "required",
                               "max_tokens": 120, "temperature": 0}
    whole = client.chat.completions.create(**request)
    with client.chat.completions.stream(**request) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion()
    assert_valid_calls(whole, SCHEMAS)
    assert streamed.choices[0].finish_reason == "tool_calls"
    def calls(c: Any) -> list[tuple[str, str]]:
        return [(t.function.name, t.function.arguments) for t in c.choices[0].message.tool_calls or []]
    assert calls(streamed) == calls(whole)
    assert streamed.choices[0].message.content == whole.choices[0].message.content


def test_auto_lets_the_model_answer_in_text(server: ServerProcess) -> None:
    """With `auto` the grammar waits for the call marker: the tiny model, which never writes
    one, answers in free text (a grammar applied from the first token would force JSON)."""
    for seed in (1, 2, 3):
        completion = post_chat(server, {"messages": ASK, "tools": TOOLS, "max_tokens": 12, "seed": seed})
        choice = completion.choices[0]
        assert choice.message.tool_calls is None
        assert choice.finish_reason in ("stop", "length")
        assert not (choice.message.content or "").lstrip().startswith("{")


def test_tool_choice_none_answers_in_text(server: ServerProcess) -> None:
    completion = post_chat(server, {"messages": ASK, "tools": TOOLS, "tool_choice": "none", "max_tokens": 16, "seed": 1})
    choice = completion.choices[0]
    assert choice.message.tool_calls is None
    assert choice.finish_reason in ("stop", "length")


def test_a_conversation_with_calls_and_results_is_accepted(server: ServerProcess) -> None:
    history = [*ASK,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
               {"role": "tool", "tool_call_id": "call_abc", "content": "18 degrees, sunny"}]
    completion = post_chat(server, {"messages": history, "tools": TOOLS, "tool_choice": "none", "max_tokens": 8})
    assert completion.choices[0].finish_reason in ("stop", "length")


# -- bad requests ------------------------------------------------------------------------------------

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": ASK, "tools": {"get_weather": {}}}, "tools"),
        ({"messages": ASK, "tools": [{"type": "function"}]}, "tools[0].function"),
        ({"messages": ASK, "tools": [{"type": "code_interpreter", "function": {"name": "x"}}]}, "tools[0].type"),
        ({"messages": ASK, "tools": [TOOLS[0], {"type": "function", "function": {"name": "has space"}}]}, "tools[1].function.name"),
        ({"messages": ASK, "tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "tools[0].function.name"),
        ({"messages": ASK, "tools": [TOOLS[0], TOOLS[0]]}, "tools[1].function.name"),
        ({"messages": ASK, "tools": [{"type": "function", "function": {"name": "f", "parameters": "object"}}]}, "tools[0].function.parameters"),
        ({"messages": ASK, "tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
        ({"messages": ASK, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_news"}}}, "tool_choice"),
        ({"messages": ASK, "tool_choice": "required"}, "tool_choice"),
        ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}]},
         "messages[1].tool_calls[0].function.arguments"),
        ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
         "messages[1].tool_calls[0].id"),
        ({"messages": [*ASK, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "r"}]}, "messages[2].tool_call_id"),
        ({"messages": [*ASK, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "call_2", "content": "r"}]},
         "messages[2].tool_call_id"),
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_1"}]}, "messages[1].content"),
        ({"messages": ASK, "n": 9}, "n"),
        ({"messages": ASK, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"messages": ASK, "logit_bias": {"12": 150}}, "logit_bias"),
        ({"messages": ASK, "logit_bias": {"token": 1}}, "logit_bias"),
        ({"messages": ASK, "logit_bias": {"999999": 5}}, "logit_bias"),
    ],
    ids=["tools-type", "no-function", "tool-type", "name-chars", "name-long", "name-twice", "parameters-type",
         "choice-value", "choice-unknown-function", "choice-without-tools", "arguments-object", "call-without-id",
         "tool-without-id", "tool-unknown-id", "tool-without-content", "n-too-many", "top-logprobs-range",
         "bias-range", "bias-key", "bias-unknown-token"],
)
def test_malformed_requests_are_400_naming_the_field(server: ServerProcess, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error" and error["message"]


def test_the_sdk_raises_bad_request_for_an_unknown_tool_choice(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-chat", messages=ASK, tools=TOOLS,  # type: ignore[arg-type]
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert "nope" in str(caught.value)


# -- n, logprobs, logit_bias -------------------------------------------------------------------------


def test_n_gives_indexed_choices_and_counts_their_tokens(server: ServerProcess) -> None:
    completion = post_chat(server, {"messages": ASK, "n": 3, "max_tokens": 6, "seed": 11, "temperature": 1.0})
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.usage is not None and completion.usage.completion_tokens <= 18
    chunks = stream_chat(server, {"messages": ASK, "n": 3, "max_tokens": 6, "seed": 11, "temperature": 1.0,
                                    "stream_options": {"include_usage": True}})
    finished = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(finished) == [0, 1, 2]
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i) for i in range(3)}
    # the same seeds give the same choices, streamed or not
    assert [texts[i] for i in range(3)] == [c.message.content for c in completion.choices]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_logprobs_put_the_greedy_token_on_top(server: ServerProcess) -> None:
    completion = post_chat(server, {"messages": ASK, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 3})
    content = completion.choices[0].logprobs.content if completion.choices[0].logprobs else None
    assert content and len(content) == completion.usage.completion_tokens  # type: ignore[union-attr]
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert entry.logprob <= 0 and bytes(entry.bytes or []).decode() == entry.token
    chunks = stream_chat(server, {"messages": ASK, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 3})
    streamed = [e.token for c in chunks for e in ((c.choices[0].logprobs.content or []) if c.choices[0].logprobs else [])]
    assert streamed == [e.token for e in content]


def token_id(text: str) -> int:
    """The tiny model's id for a token, from the vocabulary tests/tiny_gguf.py builds."""
    byte_map = tiny_gguf._byte_to_unicode()
    ids = tiny_gguf._vocabulary()[3]
    return ids["".join(byte_map[b] for b in text.encode())]


def test_logit_bias_minus_100_bans_the_greedy_first_token(server: ServerProcess) -> None:
    body = {"messages": ASK, "max_tokens": 4, "temperature": 0, "logprobs": True}
    first = post_chat(server, body)
    greedy = first.choices[0].logprobs.content[0].token  # type: ignore[union-attr,index]
    banned = post_chat(server, {**body, "logit_bias": {str(token_id(greedy)): -100}})
    assert banned.choices[0].logprobs.content[0].token != greedy  # type: ignore[union-attr,index]
    assert banned.choices[0].message.content != first.choices[0].message.content


# -- SmolLM2 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("tools-smollm2-home"), "--model", str(smollm2_model), "--threads", "2", "--ctx-size", "2048") as server:
        yield server


@pytest.mark.slow
def test_smollm2_required_call_validates_against_the_schema(smollm2: ServerProcess) -> None:
    with openai.OpenAI(base_url=f"{smollm2.base_url}/v1", api_key="unused", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1", messages=ASK, tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
            temperature=0, max_tokens=120)
    ChatCompletion.model_validate(completion.model_dump(exclude_unset=True), strict=True)
    assert_valid_calls(completion, SCHEMAS)


@pytest.mark.slow
def test_smollm2_agent_loop_call_result_answer(smollm2: ServerProcess, request: pytest.FixtureRequest) -> None:
    """The loop an agent runs with the SDK: the model calls, the caller runs the function and
    sends the result back, the model answers in text (the last turn asks for no more calls)."""
    client = openai.OpenAI(base_url=f"{smollm2.base_url}/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)
    model = "SmolLM2-135M-Instruct.Q4_1"
    messages: list[Any] = [{"role": "system", "content": "You are a helpful assistant."}, *ASK]
    first = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
                                           temperature=0, max_tokens=120)
    assert_valid_calls(first, SCHEMAS)
    message = first.choices[0].message
    messages.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls or []:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})})
    final = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, tool_choice="none",  # type: ignore[arg-type]
                                           temperature=0, max_tokens=80)
    ChatCompletion.model_validate(final.model_dump(exclude_unset=True), strict=True)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content and final.choices[0].message.content.strip()
    assert final.choices[0].message.tool_calls is None
