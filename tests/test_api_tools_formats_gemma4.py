"""Gemma 4's calls and thinking, end to end, with its markers as the control tokens they are in
its vocabulary: `llamaedge serve` on a real port with the shipped chat-server.wasm and real
llama.cpp, running the tiny model written with Gemma 4's real template, Gemma 4's markers as
control tokens, and a script in its weights (tests/tiny_gguf.py) that makes it say, under
`tool_choice: auto`, what a Gemma 4 model says: a thought channel when the template asks for
thinking, then `<|tool_call>call:get_forecast{days:3}<tool_call|>`. Control tokens reach the
app only because it names them in `preserved-tokens`; without that the markers would vanish
and the call come back as content. Every response and chunk parsed strictly with the openai
SDK's types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.conftest import ServerProcess, post_chat, serving, stream_chat
from tests.tiny_gguf import GEMMA4_MARKERS, IM_END, write_tiny_gguf

TEMPLATES = Path(__file__).parent / "data" / "templates"
THOUGHT = "The user wants a forecast."
CALL = "<|tool_call>call:get_forecast{days:3}<tool_call|>"
# After the prompt's last token: `\n` ends `<|turn>model\n` (thinking on: the model opens the
# channel), `<channel|>` ends the empty channel the template writes when thinking is off.
SCRIPT = ["\n", "<|channel>", f"thought\n{THOUGHT}", "<channel|>", "<|tool_call>", "call:get_forecast{days:3}",
          "<tool_call|>", IM_END]
TOOLS = [{"type": "function", "function": {
    "name": "get_forecast", "description": "The forecast for the next days.",
    "parameters": {"type": "object", "properties": {"days": {"type": "integer"}}, "required": ["days"]}}}]
ASK = {"messages": [{"role": "user", "content": "Will it rain in the next three days?"}], "tools": TOOLS,
       "temperature": 0, "max_tokens": 40}
THINKING = {"chat_template_kwargs": {"enable_thinking": True}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-gemma4.gguf",
                            chat_template=(TEMPLATES / "gemma4.jinja").read_text(),
                            control_tokens=GEMMA4_MARKERS, script=SCRIPT)
    with serving(tmp_path_factory.mktemp("gemma4-home"), "--model", str(model), "--threads", "2",
                 "--ctx-size", "1024") as server:
        yield server






def reasoning_of(message: Any) -> str | None:
    return (message.model_extra or {}).get("reasoning_content")


def assert_the_forecast_call(completion: ChatCompletion) -> None:
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 29
    assert call.function.name == "get_forecast"
    assert json.loads(call.function.arguments) == {"days": 3}


def test_the_markers_reach_the_app_as_text(server: ServerProcess) -> None:
    # tool_choice none: no tools in the prompt, nothing read as a call: the raw text comes back
    completion = post_chat(server, {**ASK, "tool_choice": "none", "logprobs": True})
    assert completion.choices[0].message.content == CALL
    assert completion.choices[0].finish_reason == "stop"
    tokens = [t.token for t in completion.choices[0].logprobs.content]
    assert tokens == ["<|tool_call>", "call:get_forecast{days:3}", "<tool_call|>"]


def test_a_gemma4_call_under_auto_is_an_openai_tool_call(server: ServerProcess) -> None:
    completion = post_chat(server, ASK)
    assert_the_forecast_call(completion)
    assert reasoning_of(completion.choices[0].message) is None  # the template closed the channel
    assert "reading calls as gemma4" in server.log()


def test_the_streamed_gemma4_call_equals_the_whole_one(server: ServerProcess) -> None:
    chunks = stream_chat(server, ASK)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not any(d.content for d in deltas)
    [start] = [t for d in deltas for t in d.tool_calls or [] if t.id]
    assert start.type == "function" and start.function is not None and start.function.name == "get_forecast"
    arguments = "".join(t.function.arguments or "" for d in deltas for t in d.tool_calls or [] if t.function)
    assert json.loads(arguments) == {"days": 3}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the SDK assembles the same call from the stream
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none")
    with client.chat.completions.stream(model="tiny-gemma4", **ASK) as s:
        assert_the_forecast_call(s.get_final_completion())


def test_gemma4_thinking_goes_to_reasoning_content_and_the_call_after_it_is_read(server: ServerProcess) -> None:
    completion = post_chat(server, {**ASK, **THINKING})
    assert_the_forecast_call(completion)
    assert reasoning_of(completion.choices[0].message) == THOUGHT


def test_streamed_gemma4_thinking_comes_in_reasoning_content_deltas(server: ServerProcess) -> None:
    chunks = stream_chat(server, {**ASK, **THINKING})
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(reasoning_of(d) or "" for d in deltas) == THOUGHT
    first_call = next(i for i, d in enumerate(deltas) if d.tool_calls)
    assert all(reasoning_of(d) is None for d in deltas[first_call:])  # the thought comes first
    assert not any(d.content for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_gemma4_thought_cut_off_by_max_tokens_is_all_reasoning(server: ServerProcess) -> None:
    completion = post_chat(server, {**ASK, **THINKING, "max_tokens": 2})
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert reasoning_of(choice.message) == THOUGHT
    assert not choice.message.content and not choice.message.tool_calls
    chunks = stream_chat(server, {**ASK, **THINKING, "max_tokens": 2})
    assert "".join(reasoning_of(c.choices[0].delta) or "" for c in chunks if c.choices) == THOUGHT
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_required_call_is_held_to_the_grammar_between_the_control_token_markers(server: ServerProcess) -> None:
    # the grammar's literal `<|tool_call>` is matched by the control token's text
    completion = post_chat(server, {**ASK, "tool_choice": "required", "max_tokens": 200, "logprobs": True})
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_forecast"
    assert isinstance(json.loads(call.function.arguments)["days"], int)
    # the script's control token opens the call; the grammar's suffix may come spelled out
    tokens = [t.token for t in choice.logprobs.content]
    assert tokens[0] == "<|tool_call>" and "".join(tokens).endswith("<tool_call|>")
