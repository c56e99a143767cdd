"""Thinking and token counting on Anthropic's Messages API, end to end with the official
`anthropic` SDK: `llamaedge serve` on a real port, the shipped chat-server.wasm, real llama.cpp
with the tiny model written with a thinking template (its generation prompt opens a `<think>`
block unless `enable_thinking` is false). What the Messages API shows is checked against what
the chat completions route splits out of the same greedy generation; every response and event
is validated strictly with the SDK's own types."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import ErrorResponse, Message, MessageTokensCount

from tests.conftest import ServerProcess, anthropic_events, post_chat, serving
from tests.test_api_reasoning import THINKING_TEMPLATE
from tests.tiny_gguf import write_tiny_gguf

MODEL = "tiny-thinker"
ASK = [{"role": "user", "content": "What is two plus two?"}]
GREEDY: dict[str, Any] = {"model": MODEL, "max_tokens": 24, "messages": ASK, "extra_body": {"temperature": 0}}
ADAPTIVE = {"type": "adaptive"}
TOOLS = [{"name": "get_weather", "description": "The weather in a city.",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = write_tiny_gguf(tmp_path_factory.mktemp("models") / f"{MODEL}.gguf", chat_template=THINKING_TEMPLATE)
    # a context above 1024 tokens: budget_tokens is at least 1024 and max_tokens above it
    with serving(tmp_path_factory.mktemp("anthropic-think-home"), "--model", str(model), "--threads", "2",
                 "--ctx-size", "2048") as server:
        yield server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0) as client:
        yield client


def strict(message: Message) -> Message:
    return Message.model_validate(message.model_dump(exclude_unset=True), strict=True)


def chat_split(server: ServerProcess, enable_thinking: bool, max_tokens: int = 24) -> tuple[str, str, int]:
    """(reasoning_content, content, prompt_tokens) of the same greedy generation on /v1/chat/completions."""
    completion = post_chat(server, {"model": MODEL, "messages": ASK, "max_tokens": max_tokens, "temperature": 0,
                                    "chat_template_kwargs": {"enable_thinking": enable_thinking}})
    assert completion.usage is not None
    message = completion.choices[0].message
    return (message.model_extra or {}).get("reasoning_content") or "", message.content or "", completion.usage.prompt_tokens


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()




# -- thinking in the response ----------------------------------------------------------------------


def test_thinking_comes_as_a_thinking_block_before_the_text(client: anthropic.Anthropic, server: ServerProcess) -> None:
    message = strict(client.messages.create(**GREEDY, thinking=ADAPTIVE))
    reasoning, answer, prompt_tokens = chat_split(server, enable_thinking=True)
    assert reasoning, "the tiny model did not think"
    first, *rest = message.content
    assert first.type == "thinking"
    assert first.thinking == reasoning
    # the signature is the thinking's SHA-256 (documented: there is no key to sign with)
    assert first.signature == sha256(reasoning)
    assert [b.type for b in rest] == (["text"] if answer else [])
    assert "".join(b.text for b in rest if b.type == "text") == answer
    assert message.usage.input_tokens == prompt_tokens
    assert message.usage.output_tokens <= 24


def test_the_stream_helper_assembles_the_thinking_block_and_the_text(client: anthropic.Anthropic) -> None:
    whole = strict(client.messages.create(**GREEDY, thinking=ADAPTIVE))
    with client.messages.stream(**GREEDY, thinking=ADAPTIVE) as stream:
        thinking_events = [e.thinking for e in stream if e.type == "thinking"]
        final = stream.get_final_message()
    strict(final)
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in whole.content]
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens
    # the thinking came in several deltas, as it was generated
    assert len(thinking_events) > 1 and "".join(thinking_events) == whole.content[0].thinking  # type: ignore[union-attr]


def test_the_events_of_a_thinking_block_are_anthropics(server: ServerProcess) -> None:
    events = anthropic_events(server, {"model": MODEL, "max_tokens": 24, "messages": ASK, "temperature": 0, "thinking": ADAPTIVE})
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert events[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    stop = kinds.index("content_block_stop")
    deltas = [e["delta"] for e in events[3:stop]]
    assert all(e["index"] == 0 for e in events[2:stop + 1])
    assert {d["type"] for d in deltas[:-1]} == {"thinking_delta"}
    # the signature closes the block, once, after all its thinking
    assert deltas[-1] == {"type": "signature_delta", "signature": sha256("".join(d["thinking"] for d in deltas[:-1]))}
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in kinds[3:]


def test_enabled_thinking_with_a_budget_shows_the_thinking(client: anthropic.Anthropic, server: ServerProcess) -> None:
    message = strict(client.messages.create(**{**GREEDY, "max_tokens": 1100},
                                            thinking={"type": "enabled", "budget_tokens": 1024}))
    reasoning, answer, _ = chat_split(server, enable_thinking=True, max_tokens=1100)
    assert message.content[0].type == "thinking" and message.content[0].thinking == reasoning
    assert "".join(b.text for b in message.content if b.type == "text") == answer
    assert message.usage.output_tokens <= 1100


def test_display_omitted_keeps_the_block_and_its_signature_without_the_text(client: anthropic.Anthropic, server: ServerProcess) -> None:
    message = strict(client.messages.create(**GREEDY, thinking={"type": "adaptive", "display": "omitted"}))
    reasoning, _, _ = chat_split(server, enable_thinking=True)
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == "" and message.content[0].signature == sha256(reasoning)


@pytest.mark.parametrize("thinking", [None, {"type": "disabled"}], ids=["not-asked", "disabled"])
def test_without_thinking_the_template_is_told_and_no_thinking_block_comes(
        client: anthropic.Anthropic, server: ServerProcess, thinking: dict | None) -> None:
    extra = {"thinking": thinking} if thinking else {}
    message = strict(client.messages.create(**GREEDY, **extra))
    reasoning, answer, prompt_tokens = chat_split(server, enable_thinking=False)
    assert reasoning == ""
    assert all(b.type == "text" for b in message.content)
    assert "".join(b.text for b in message.content if b.type == "text") == answer
    # the template rendered its closed, empty block (enable_thinking false)
    assert message.usage.input_tokens == prompt_tokens
    with_thinking = client.messages.create(**GREEDY, thinking=ADAPTIVE)
    assert message.usage.input_tokens > with_thinking.usage.input_tokens


# -- earlier turns ---------------------------------------------------------------------------------


def follow_up(*blocks: dict[str, Any]) -> list[dict[str, Any]]:
    return [*ASK, {"role": "assistant", "content": [*blocks, {"type": "text", "text": "It is four."}]},
            {"role": "user", "content": "And three plus three?"}]


def test_thinking_blocks_sent_back_are_accepted_and_reach_the_template(client: anthropic.Anthropic) -> None:
    first = strict(client.messages.create(**GREEDY, thinking=ADAPTIVE))
    thought = first.content[0].model_dump()
    assert thought["type"] == "thinking"
    base = {**GREEDY, "max_tokens": 4, "thinking": ADAPTIVE}
    kept = strict(client.messages.create(**{**base, "messages": follow_up(thought)}))
    bare = strict(client.messages.create(**{**base, "messages": follow_up()}))
    # the thinking template renders an earlier turn's reasoning_content
    assert kept.usage.input_tokens > bare.usage.input_tokens
    redacted = strict(client.messages.create(**{**base, "messages": follow_up({"type": "redacted_thinking", "data": "opaque"})}))
    assert redacted.usage.input_tokens == bare.usage.input_tokens


# -- count_tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{}, {"thinking": ADAPTIVE}, {"system": "Be brief.", "tools": TOOLS},
     {"messages": follow_up({"type": "thinking", "thinking": "Two and two make four.", "signature": "s"})}],
    ids=["plain", "thinking", "system-and-tools", "earlier-thinking"],
)
def test_count_tokens_is_the_input_tokens_of_the_same_request(client: anthropic.Anthropic, extra: dict[str, Any]) -> None:
    request = {"model": MODEL, "messages": ASK, **extra}
    counted = client.messages.count_tokens(**request)
    MessageTokensCount.model_validate(counted.model_dump(exclude_unset=True), strict=True)
    message = client.messages.create(**request, max_tokens=4)
    assert counted.input_tokens == message.usage.input_tokens > 0


def test_count_tokens_answers_only_the_count(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/messages/count_tokens", json={"model": MODEL, "messages": ASK}, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"input_tokens"}


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/messages", {"thinking": {"type": "enabled", "budget_tokens": 1000}, "max_tokens": 2000}, 400,
         "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
        ("/v1/messages", {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 1024}, 400,
         "`max_tokens` must be greater than `thinking.budget_tokens`"),
        ("/v1/messages", {"thinking": {"type": "enabled"}}, 400, "thinking.enabled.budget_tokens: Field required"),
        ("/v1/messages", {"thinking": {"type": "deep"}}, 400, "Input tag 'deep'"),
        ("/v1/messages", {"thinking": {"type": "adaptive"}, "tools": TOOLS, "tool_choice": {"type": "any"}}, 400,
         "tool_choice forces tool use"),
        ("/v1/messages", {"messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]}]}, 400,
         "thinking blocks belong in assistant messages"),
        ("/v1/messages/count_tokens", {"thinking": {"type": "enabled", "budget_tokens": 10}}, 400, "greater than or equal to 1024"),
        ("/v1/messages/count_tokens", {"model": None}, 400, "model: Field required"),
        ("/v1/messages/count_tokens", {"messages": []}, 400, "messages"),
        ("/v1/messages/count_tokens", {"model": "claude-opus"}, 404, "claude-opus"),
    ],
    ids=["budget-too-small", "budget-not-below-max", "budget-missing", "unknown-type", "forced-tool",
         "thinking-in-user-turn", "count-budget", "count-no-model", "count-no-messages", "count-unknown-model"],
)
def test_errors_have_anthropics_shape(server: ServerProcess, path: str, body: dict[str, Any], status: int, fragment: str) -> None:
    request = {k: v for k, v in {"model": MODEL, "max_tokens": 24, "messages": ASK, **body}.items() if v is not None}
    response = httpx.post(f"{server.base_url}{path}", json=request, timeout=30)
    assert response.status_code == status, response.text
    payload = response.json()
    ErrorResponse.model_validate(payload, strict=True)
    assert payload["error"]["type"] == ("invalid_request_error" if status == 400 else "not_found_error")
    assert fragment in payload["error"]["message"]


def test_the_sdk_raises_its_own_errors_for_bad_thinking(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        client.messages.create(**{**GREEDY, "max_tokens": 2000}, thinking={"type": "enabled", "budget_tokens": 512})
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        client.messages.count_tokens(model=MODEL, messages=ASK, thinking={"type": "enabled", "budget_tokens": 512})  # type: ignore[arg-type]


def test_count_tokens_takes_post_only(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/v1/messages/count_tokens", timeout=30)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    ErrorResponse.model_validate(response.json(), strict=True)


# -- a model that thinks, then answers ---------------------------------------------------------------

# SmolLM2's own template opens no think block; shown one earlier turn in the format, the model
# opens the block itself, closes it and answers (greedy, so the same each time).
FEW_SHOT = [{"role": "user", "content": "What is 1+1?"},
            {"role": "assistant", "content": "<think>\n1 plus 1 is 2.\n</think>\n\nThe answer is 2."},
            {"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def smollm2(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("anthropic-think-smollm2-home"), "--model", str(smollm2_model), "--threads", "2",
                 "--ctx-size", "2048") as server:
        yield server


@pytest.mark.slow
def test_smollm2_thinks_in_a_thinking_block_then_answers_in_a_text_block(smollm2: ServerProcess, smollm2_model: Path) -> None:
    client = anthropic.Anthropic(base_url=smollm2.base_url, api_key="unused", max_retries=0)
    try:
        request: dict[str, Any] = {"model": smollm2_model.stem, "max_tokens": 1100, "messages": FEW_SHOT,
                                   "thinking": {"type": "enabled", "budget_tokens": 1024}, "extra_body": {"temperature": 0}}
        whole = strict(client.messages.create(**request))
        assert [b.type for b in whole.content] == ["thinking", "text"] and whole.stop_reason == "end_turn"
        thought, answer = whole.content
        assert thought.type == "thinking" and answer.type == "text"
        assert "4" in thought.thinking and "4" in answer.text
        assert "think>" not in thought.thinking + answer.text
        assert thought.signature == sha256(thought.thinking)

        with client.messages.stream(**request) as stream:
            final = stream.get_final_message()
        assert [b.model_dump() for b in strict(final).content] == [b.model_dump() for b in whole.content]

        body = {k: v for k, v in request.items() if k != "extra_body"} | {"temperature": 0}
        events = anthropic_events(smollm2, body)
        starts = [(e["index"], e["content_block"]["type"]) for e in events if e["type"] == "content_block_start"]
        assert starts == [(0, "thinking"), (1, "text")]
        at = [(e["type"], e.get("index"), e.get("delta", {}).get("type")) for e in events]
        # the signature closes the thinking block before the text block starts
        assert at.index(("content_block_delta", 0, "signature_delta")) + 1 == at.index(("content_block_stop", 0, None))
        assert at.index(("content_block_stop", 0, None)) < at.index(("content_block_start", 1, None))

        # thinking not asked for: the same generation, its thought left out
        plain = strict(client.messages.create(**{**request, "thinking": {"type": "disabled"}}))
        assert [b.model_dump() for b in plain.content] == [answer.model_dump()]
        assert plain.usage.output_tokens == whole.usage.output_tokens
    finally:
        client.close()
