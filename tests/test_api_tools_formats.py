"""Function calling with the model families' own chat templates, end to end: `llamaedge serve` on
a real port with the shipped chat-server.wasm and real llama.cpp, running the tiny model written
with a family's real template (tests/data/templates/). The app renders a probe with the tools,
reads the call format from it, constrains a required call with a grammar, and reads the call back
into OpenAI's shape; every response and chunk is parsed strictly with the openai SDK's types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.conftest import ServerProcess, post_chat, serving, stream_chat
from tests.test_api_tools import TIME_SCHEMA, assert_valid_calls
from tests.tiny_gguf import write_tiny_gguf

TEMPLATES = Path(__file__).parent / "data" / "templates"

# Types the XML format has to get right: a string, an integer, a boolean.
FORECAST_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]},
                   "days": {"type": "integer", "enum": [1, 2, 3]},
                   "metric": {"type": "boolean"}},
    "required": ["city", "days", "metric"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_forecast", "description": "The forecast for a city.", "parameters": FORECAST_SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "description": "The time in a zone.", "parameters": TIME_SCHEMA}},
]
SCHEMAS = {"get_forecast": FORECAST_SCHEMA, "get_time": TIME_SCHEMA}
ASK = [{"role": "user", "content": "Will it rain in Paris in the next two days?"}]


def serve_with_template(tmp_path_factory: pytest.TempPathFactory, template: str) -> Iterator[ServerProcess]:
    model = write_tiny_gguf(tmp_path_factory.mktemp("models") / f"tiny-{template}.gguf",
                            chat_template=(TEMPLATES / f"{template}.jinja").read_text())
    with serving(tmp_path_factory.mktemp(f"{template}-home"), "--model", str(model), "--threads", "2",
                 "--ctx-size", "2048") as server:
        yield server


# template file -> the call format the app should read from its probe
FAMILIES = {
    "qwen3.5": "qwen_xml",  # `<tool_call>` holding `<function=..>` and `<parameter=..>`
    "gemma4": "gemma4",  # `<|tool_call>call:NAME{key:value}<tool_call|>`
    "llama-3.2": "llama3",  # bare `{"name", "parameters"}`, as Llama 3.1
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ServerProcess]]:
    """The tiny model with a family's real template, served; yields (template name, server)."""
    for server in serve_with_template(tmp_path_factory, request.param):
        yield request.param, server


REQUIRED = {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 200, "temperature": 0}


def test_the_probe_reads_calls_in_the_familys_format(family: tuple[str, ServerProcess]) -> None:
    template, server = family
    post_chat(server, REQUIRED)
    assert f"reading calls as {FAMILIES[template]}" in server.log()


def test_a_required_call_is_a_valid_openai_tool_call(family: tuple[str, ServerProcess]) -> None:
    completion = post_chat(family[1], REQUIRED)
    assert_valid_calls(completion, SCHEMAS)
    # the template opened a think block, but a call constrained from its first token is no reasoning
    assert "reasoning_content" not in completion.choices[0].message.model_dump(exclude_none=True)


def test_a_named_function_is_the_one_called(family: tuple[str, ServerProcess]) -> None:
    completion = post_chat(family[1], {**REQUIRED, "tool_choice": {"type": "function", "function": {"name": "get_forecast"}}})
    assert [name for name, _ in assert_valid_calls(completion, SCHEMAS, {"get_forecast"})] == ["get_forecast"]


def test_the_streamed_required_call_equals_the_whole_one(family: tuple[str, ServerProcess]) -> None:
    whole = assert_valid_calls(post_chat(family[1], REQUIRED), SCHEMAS)
    chunks = stream_chat(family[1], REQUIRED)
    deltas = [c.choices[0].delta for c in chunks]
    starts = [d.tool_calls[0] for d in deltas if d.tool_calls and d.tool_calls[0].id]
    assert starts and all(s.id and s.id.startswith("call_") and s.type == "function" for s in starts)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    streamed: list[tuple[str, str]] = []
    for d in deltas:
        for t in d.tool_calls or []:
            if t.id:
                assert t.function is not None and t.function.name
                streamed.append((t.function.name, t.function.arguments or ""))
            else:
                assert t.function is not None and t.function.name is None
                name, args = streamed[t.index]
                streamed[t.index] = (name, args + (t.function.arguments or ""))
    assert streamed == whole


def test_the_sdk_stream_assembles_a_valid_call(family: tuple[str, ServerProcess]) -> None:
    template, server = family
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0) as client:
        with client.chat.completions.stream(model=f"tiny-{template}", **REQUIRED) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
    ChatCompletion.model_validate(final.model_dump(exclude_unset=True, exclude={"choices": {0: {"message": {"parsed"}}}}), strict=True)
    assert final.choices[0].finish_reason == "tool_calls"
    for call in final.choices[0].message.tool_calls or []:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_history_with_calls_and_results_renders(family: tuple[str, ServerProcess]) -> None:
    """The template writes past calls in its own form from the arguments object."""
    server = family[1]
    history = [*ASK,
               {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                   "name": "get_forecast", "arguments": json.dumps({"city": "Paris", "days": 2, "metric": True})}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "rain on day 2"}]
    completion = post_chat(server, {**REQUIRED, "messages": history})
    assert_valid_calls(completion, SCHEMAS)
    shorter = post_chat(server, REQUIRED)
    assert completion.usage is not None and shorter.usage is not None
    assert completion.usage.prompt_tokens > shorter.usage.prompt_tokens
