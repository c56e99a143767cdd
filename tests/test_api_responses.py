"""OpenAI's Responses API (POST /v1/responses) end to end with the official `openai` SDK's
`client.responses`: `llamaedge serve` on a real port, the shipped chat-server.wasm, real
llama.cpp with the tiny model; responses and events validated strictly with the SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.conftest import ServerProcess, serving

MODEL = "tiny-chat"
ASK = "What is the weather in Paris?"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [{"type": "function", "name": "get_weather", "description": "The weather in a city.",
                     "parameters": WEATHER_SCHEMA, "strict": True}]
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("responses-home"), "--model", str(tiny_model), "--threads", "2", "--ctx-size", "1024") as server:
        yield server


def strict(response: Response) -> Response:
    """The response, checked against the SDK's type strictly."""
    return Response.model_validate(response.model_dump(exclude_unset=True, by_alias=True), strict=True)


def raw_events(server: ServerProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The SSE events of a streamed POST /v1/responses: `event:`, `data:`, a blank line each,
    the data validated strictly against the SDK's event union."""
    with httpx.stream("POST", f"{server.base_url}/v1/responses", json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    events = []
    for kind, data, blank in zip(lines[0::3], lines[1::3], lines[2::3], strict=True):
        assert kind.startswith("event: ") and data.startswith("data: ") and blank == ""
        payload = json.loads(data[6:])
        assert payload["type"] == kind[7:]
        EVENTS.validate_python(payload, strict=True)
        events.append(payload)
    return events


def test_a_plain_response_has_openais_shape(client: openai.OpenAI) -> None:
    response = strict(client.responses.create(model=MODEL, input=ASK, instructions="Be brief.", max_output_tokens=12,
                                              metadata={"topic": "weather"}))
    assert response.object == "response" and response.id.startswith("resp_") and response.model == MODEL
    assert response.status in ("completed", "incomplete")
    assert response.instructions == "Be brief." and response.metadata == {"topic": "weather"}
    assert [item.type for item in response.output] == ["message"]
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert [part.type for part in message.content] == ["output_text"]
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and 0 < usage.output_tokens <= 12
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    # cut at the limit: incomplete, with the reason
    if usage.output_tokens == 12:
        assert response.status == "incomplete" and response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"


def test_items_input_and_a_stream_the_sdk_assembles_into_the_same_response(client: openai.OpenAI, server: ServerProcess) -> None:
    request: dict[str, Any] = {
        "model": MODEL, "max_output_tokens": 24, "temperature": 0,
        "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ASK}]}],
    }
    whole = strict(client.responses.create(**request))
    # The tiny model rarely ends before the limit: the stream then ends with response.incomplete,
    # which the SDK's helper yields with the assembled response (get_final_response wants completed).
    with client.responses.stream(**request) as stream:
        streamed = list(stream)
    deltas = [e.delta for e in streamed if e.type == "response.output_text.delta"]
    last = streamed[-1]
    assert last.type in ("response.completed", "response.incomplete")
    final = strict(last.response)
    assert "".join(deltas) == whole.output_text == final.output_text
    assert final.status == whole.status
    assert final.usage is not None and whole.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens
    # the raw sequence is OpenAI's, numbered from 0 without gaps
    events = raw_events(server, request)
    kinds = [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed" if whole.status == "completed" else "response.incomplete"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


def test_a_json_schema_format_gives_an_answer_that_fits(client: openai.OpenAI) -> None:
    response = strict(client.responses.create(
        model=MODEL, input="Give the weather as JSON.", max_output_tokens=80, temperature=0,
        text={"format": {"type": "json_schema", "name": "weather", "schema": WEATHER_SCHEMA, "strict": True}}))
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), WEATHER_SCHEMA)
    assert response.text is not None and response.text.format is not None and response.text.format.type == "json_schema"


def test_a_required_function_call_then_its_output_then_the_answer(client: openai.OpenAI) -> None:
    first = strict(client.responses.create(model=MODEL, input=ASK, tools=TOOLS, tool_choice="required",
                                           max_output_tokens=120, temperature=0))
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER_SCHEMA)
    assert first.tools[0].type == "function" and first.tool_choice == "required"
    # streamed, the arguments arrive in deltas and the SDK assembles the same call
    with client.responses.stream(model=MODEL, input=ASK, tools=TOOLS, tool_choice="required",
                                 max_output_tokens=120, temperature=0) as stream:
        argument_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        streamed = strict(stream.get_final_response())
    streamed_calls = [item for item in streamed.output if item.type == "function_call"]
    assert [(c.name, c.arguments) for c in streamed_calls] == [(calls[0].name, calls[0].arguments)]
    assert "".join(argument_deltas) == calls[0].arguments
    # the output goes back as a function_call_output item; the model answers in text
    history: list[Any] = [{"role": "user", "content": ASK}, *[item.model_dump(exclude_none=True) for item in first.output],
                          {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees, sunny"}]
    answer = strict(client.responses.create(model=MODEL, input=history, tools=TOOLS, tool_choice="none", max_output_tokens=16))
    assert [item.type for item in answer.output] == ["message"]


def test_hosted_tools_are_left_out_and_named_in_a_header(server: ServerProcess) -> None:
    body = {"model": MODEL, "input": ASK, "max_output_tokens": 4,
            "tools": [*TOOLS, {"type": "web_search"}, {"type": "image_generation"}, {"type": "web_search"}]}
    response = httpx.post(f"{server.base_url}/v1/responses", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["llamaedge-ignored-tools"] == "web_search,image_generation"
    echoed = Response.model_validate(response.json(), strict=True)
    assert [t.type for t in echoed.tools] == ["function"]
    # without hosted tools there is no such header
    plain = httpx.post(f"{server.base_url}/v1/responses", json={**body, "tools": TOOLS}, timeout=120)
    assert "llamaedge-ignored-tools" not in plain.headers


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL}, "input"),
    ({"input": 7}, "input"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[1].call_id"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_call_output", "call_id": "nope", "output": "x"}]}, "input[1].call_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}]}]}, "input[0].content[0].image_url"),
    ({"input": [{"role": "narrator", "content": "hi"}]}, "input[0].role"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "hi", "tools": TOOLS, "tool_choice": {"type": "function", "name": "get_news"}}, "tool_choice.name"),
    ({"input": "hi", "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "metadata": {"n": 1}}, "metadata.n"),
    ({"input": "hi", "previous_response_id": "resp_unknown"}, "previous_response_id"),
    ({"input": "hi", "store": "yes"}, "store"),
], ids=["no-input", "input-type", "call-without-id", "output-without-call", "image", "role", "item-type", "tool-name",
        "choice-unknown", "choice-hosted", "schema-missing", "effort", "max-tokens", "metadata", "previous", "store"])
def test_bad_input_is_a_400_naming_its_path(server: ServerProcess, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/responses", json={"model": MODEL, **body}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_a_prompt_over_the_context_is_a_400_naming_input(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/responses", json={"model": MODEL, "input": "word " * 3000}, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "input" and response.json()["error"]["code"] == "context_length_exceeded"


def test_the_sdk_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=[{"type": "function_call_output", "call_id": "x", "output": "y"}])
    assert "input[0].call_id" in str(caught.value)


def test_a_function_call_continued_through_previous_response_id(client: openai.OpenAI) -> None:
    first = strict(client.responses.create(model=MODEL, input=ASK, tools=TOOLS, tool_choice="required",
                                           max_output_tokens=120, temperature=0))
    call = next(item for item in first.output if item.type == "function_call")
    # only the function's output is sent: the question and the call come from the stored response
    answer = strict(client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=TOOLS, tool_choice="none", max_output_tokens=8,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees, sunny"}]))
    assert answer.previous_response_id == first.id
    assert [item.type for item in answer.output] == ["message"]
    # the model saw the whole conversation: the same prompt as when the client sends it all
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees, sunny"}
    sent = strict(client.responses.create(
        model=MODEL, tools=TOOLS, tool_choice="none", max_output_tokens=8,
        input=[{"role": "user", "content": ASK}, *[i.model_dump(exclude_none=True) for i in first.output], output]))
    assert answer.usage is not None and sent.usage is not None
    assert answer.usage.input_tokens == sent.usage.input_tokens
    # input_items lists the whole conversation the answer was generated from, each item with an id
    items = client.responses.input_items.list(answer.id)
    dumped = [item.model_dump() for item in items.data]
    assert [d["type"] for d in dumped] == ["message", "function_call", "function_call_output"]
    assert all(d["id"] for d in dumped)
    assert dumped[0]["content"][0]["text"] == ASK and dumped[2]["output"] == "18 degrees, sunny"


def test_retrieve_delete_and_store_false(client: openai.OpenAI) -> None:
    created = strict(client.responses.create(model=MODEL, input="Hello", max_output_tokens=4))
    retrieved = strict(client.responses.retrieve(created.id))
    assert retrieved.model_dump() == created.model_dump()
    deleted = client.responses.delete(created.id)
    assert deleted is None  # the SDK returns nothing for a 200
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)
    unstored = strict(client.responses.create(model=MODEL, input="Hello", max_output_tokens=4, store=False))
    assert unstored.store is False if hasattr(unstored, "store") else True
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError, match="not found"):
        client.responses.create(model=MODEL, input="again", previous_response_id=unstored.id)


def test_a_streamed_response_is_stored_too(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Hello", max_output_tokens=4) as stream:
        events = list(stream)
    final = events[-1]
    assert final.type in ("response.completed", "response.incomplete")
    assert strict(client.responses.retrieve(final.response.id)).output_text == final.response.output_text


def test_stored_responses_survive_a_restart(tiny_model: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with serving(home, "--model", str(tiny_model), "--threads", "2", "--ctx-size", "512") as server, \
            openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0) as client:
        created = strict(client.responses.create(model=MODEL, input="Hello", max_output_tokens=4))
    with serving(home, "--model", str(tiny_model), "--threads", "2", "--ctx-size", "512") as server, \
            openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0) as client:
        assert strict(client.responses.retrieve(created.id)).model_dump() == created.model_dump()
        follow = strict(client.responses.create(model=MODEL, input="And again?", previous_response_id=created.id,
                                                max_output_tokens=4))
        assert [i.type for i in client.responses.input_items.list(follow.id).data] == ["message", "message", "message"]
