"""Anthropic's Messages API (POST /v1/messages) end to end with the official `anthropic` SDK:
`llamaedge serve` on a real port, the shipped chat-server.wasm, real llama.cpp with the tiny
model; responses validated with the SDK's own types."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest
from anthropic.types import ErrorResponse, Message

from tests.conftest import ServerProcess, anthropic_events, serving

MODEL = "tiny-chat"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [{"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA}]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("anthropic-home"), "--model", str(tiny_model), "--threads", "2", "--ctx-size", "1024") as server:
        yield server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0) as client:
        yield client




def test_a_plain_message_has_anthropics_shape(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=12, messages=ASK, system="Be brief.")  # type: ignore[arg-type]
    Message.model_validate(message.model_dump(exclude_unset=True), strict=True)
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.id.startswith("msg_")
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 12
    assert (message.stop_reason == "max_tokens") == (message.usage.output_tokens == 12)
    assert all(block.type == "text" for block in message.content)


def test_streaming_text_and_the_final_message(client: anthropic.Anthropic) -> None:
    # This SDK release has no `temperature` argument: it goes in the body as the API takes it.
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 24, "messages": ASK, "extra_body": {"temperature": 0}}
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    Message.model_validate(final.model_dump(exclude_unset=True), strict=True)
    whole_text = "".join(b.text for b in whole.content if b.type == "text")
    assert text == whole_text
    assert "".join(b.text for b in final.content if b.type == "text") == whole_text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_the_event_sequence_is_anthropics(server: ServerProcess) -> None:
    events = anthropic_events(server, {"model": MODEL, "max_tokens": 16, "messages": ASK, "seed": 4})
    kinds = [e["type"] for e in events]
    # a ping right after message_start, as Anthropic sends one
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("ping") == 1
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    body = kinds[2:-2]
    if body:
        assert body[0] == "content_block_start" and body[-1] == "content_block_stop"
        assert set(body[1:-1]) <= {"content_block_delta"}
    delta = events[-2]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert delta["usage"]["output_tokens"] > 0


def test_a_stop_sequence_is_reported(client: anthropic.Anthropic) -> None:
    base: dict[str, Any] = {"model": MODEL, "max_tokens": 60, "messages": ASK, "extra_body": {"temperature": 0}}
    full = "".join(b.text for b in client.messages.create(**base).content if b.type == "text")
    assert len(full) > 12
    stop = full[6:9]
    message = client.messages.create(**base, stop_sequences=[stop])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop
    assert "".join(b.text for b in message.content if b.type == "text") == full[: full.index(stop)]


def test_a_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model=MODEL, max_tokens=120, messages=ASK, tools=TOOLS,  # type: ignore[arg-type]
                                   tool_choice={"type": "any"}, extra_body={"temperature": 0})
    Message.model_validate(first.model_dump(exclude_unset=True), strict=True)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id.startswith("toolu_")
    jsonschema.validate(uses[0].input, WEATHER_SCHEMA)
    # the streamed call is the same call, its input assembled from input_json_delta events
    with client.messages.stream(model=MODEL, max_tokens=120, messages=ASK, tools=TOOLS,  # type: ignore[arg-type]
                                tool_choice={"type": "any"}, extra_body={"temperature": 0}) as stream:
        streamed = stream.get_final_message()
    streamed_uses = [b for b in streamed.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in streamed_uses] == [(uses[0].name, uses[0].input)]
    assert streamed.stop_reason == "tool_use"
    # the result goes back as a tool_result block; the model answers
    follow_up = [*ASK, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 degrees, sunny"}]}]
    answer = client.messages.create(model=MODEL, max_tokens=16, messages=follow_up, tools=TOOLS,  # type: ignore[arg-type]
                                    tool_choice={"type": "none"})
    Message.model_validate(answer.model_dump(exclude_unset=True), strict=True)
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert all(b.type == "text" for b in answer.content)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": MODEL, "messages": ASK}, 400, "max_tokens"),
        ({"max_tokens": 5, "messages": ASK}, 400, "model"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, 400, "messages.0.role"),
        ({"model": MODEL, "max_tokens": 5, "messages": ASK, "tools": [{"name": "f"}]}, 400, "input_schema"),
        ({"model": MODEL, "max_tokens": 5, "messages": ASK, "tools": TOOLS, "tool_choice": {"type": "tool", "name": "nope"}}, 400, "nope"),
        ({"model": "claude-opus", "max_tokens": 5, "messages": ASK}, 404, "claude-opus"),
    ],
    ids=["no-max-tokens", "no-model", "bad-role", "tool-without-schema", "unknown-tool-choice", "unknown-model"],
)
def test_errors_have_anthropics_shape(server: ServerProcess, body: dict[str, Any], status: int, fragment: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=30)
    assert response.status_code == status
    payload = response.json()
    ErrorResponse.model_validate(payload, strict=True)
    assert payload["type"] == "error"
    assert payload["error"]["type"] == ("invalid_request_error" if status == 400 else "not_found_error")
    assert fragment in payload["error"]["message"]


def test_the_sdk_raises_its_own_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=5, messages=[])
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-opus", max_tokens=5, messages=ASK)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def smollm2(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("anthropic-smollm2-home"), "--model", str(smollm2_model), "--threads", "2", "--ctx-size", "2048") as server:
        yield server


@pytest.mark.slow
def test_smollm2_answers_and_calls_through_the_anthropic_sdk(smollm2: ServerProcess, request: pytest.FixtureRequest) -> None:
    client = anthropic.Anthropic(base_url=smollm2.base_url, api_key="unused", max_retries=0)
    request.addfinalizer(client.close)
    model = "SmolLM2-135M-Instruct.Q4_1"
    with client.messages.stream(model=model, max_tokens=48, system="You are a helpful assistant.",
                                messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
                                extra_body={"temperature": 0}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    Message.model_validate(final.model_dump(exclude_unset=True), strict=True)
    assert "Paris" in text and final.stop_reason == "end_turn"
    called = client.messages.create(model=model, max_tokens=120, messages=ASK, tools=TOOLS,  # type: ignore[arg-type]
                                    tool_choice={"type": "tool", "name": "get_weather"}, extra_body={"temperature": 0})
    Message.model_validate(called.model_dump(exclude_unset=True), strict=True)
    assert called.stop_reason == "tool_use"
    use = next(b for b in called.content if b.type == "tool_use")
    assert use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER_SCHEMA)
