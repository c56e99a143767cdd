"""The OpenAI chat API end to end: `llamaedge serve` in a subprocess on a real port (in this
process where a test holds the engine), the shipped chat-server.wasm, real llama.cpp with the
tiny model; every response and chunk parsed strictly with the `openai` SDK's own types."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llamaedge.server import ServerState, default_app_path
from tests.conftest import TINY_CTX_SIZE, ServerProcess
from tests.engine_events import HeldDecoder, wait_until
from tests.test_server_http import config_for, running
from tests.tiny_gguf import ENDOFTEXT, IM_END

USER = [{"role": "user", "content": "Say hi"}]


def sse_events(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def stream_chunks(server: ServerProcess, body: dict) -> tuple[list[ChatCompletionChunk], list[str]]:
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    return [ChatCompletionChunk.model_validate(json.loads(e), strict=True) for e in events[:-1]], events


# -- shapes ---------------------------------------------------------------------------------------


def test_models_lists_the_served_model_by_a_clean_id(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-chat"]
    Model.model_validate(models.data[0].model_dump(), strict=True)
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"


def test_models_say_what_the_model_can_do_and_its_context(server: ServerProcess) -> None:
    # The tiny model is no catalog entry: its GGUF's ChatML template shows it chats.
    listed = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]
    assert listed["capabilities"] == ["chat"]
    assert listed["context_length"] == TINY_CTX_SIZE
    assert httpx.get(f"{server.base_url}/v1/models/tiny-chat").json() == listed


def test_non_streaming_completion_has_the_openai_shape(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions",
                          json={"model": "tiny-chat", "messages": USER, "max_tokens": 16, "seed": 1}, timeout=60)
    assert response.status_code == 200
    completion = ChatCompletion.model_validate(response.json(), strict=True)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "tiny-chat"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 < usage.completion_tokens <= 16
    assert (choice.finish_reason == "length") == (usage.completion_tokens == 16)


def test_streaming_chunks_follow_the_openai_order(server: ServerProcess) -> None:
    chunks, _ = stream_chunks(server, {"messages": USER, "max_tokens": 24, "seed": 2,
                                       "stream_options": {"include_usage": True}})
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    *choice_chunks, usage_chunk = chunks
    assert choice_chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in choice_chunks[1:])
    last = choice_chunks[-1].choices[0]
    assert last.finish_reason in ("stop", "length")
    assert last.delta.content in (None, "")
    assert all(c.choices[0].finish_reason is None for c in choice_chunks[:-1])
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in choice_chunks)
    assert text and usage_chunk.usage.completion_tokens <= 24


def test_no_usage_chunk_unless_asked(server: ServerProcess) -> None:
    chunks, _ = stream_chunks(server, {"messages": USER, "max_tokens": 8})
    assert all(c.usage is None and c.choices for c in chunks)


def test_the_streamed_text_equals_the_non_streamed_text(server: ServerProcess) -> None:
    body = {"messages": USER, "max_tokens": 40, "temperature": 0}
    whole = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60).json()
    chunks, _ = stream_chunks(server, body)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole["choices"][0]["message"]["content"]


def test_content_as_text_parts(server: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": " hi"}]}],
            "max_tokens": 4}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text


# -- stop strings and limits ------------------------------------------------------------------------


def test_stop_string_ends_the_reply_and_is_never_emitted(server: ServerProcess) -> None:
    body = {"messages": USER, "max_tokens": 60, "temperature": 0}
    full = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]["content"]
    assert len(full) > 12
    stop = full[6:9]
    expected = full[: full.index(stop)]
    for stops in (stop, ["zzzz-never", stop]):
        reply = httpx.post(f"{server.base_url}/v1/chat/completions", json={**body, "stop": stops}, timeout=60).json()
        assert reply["choices"][0]["message"]["content"] == expected
        assert reply["choices"][0]["finish_reason"] == "stop"
        chunks, _ = stream_chunks(server, {**body, "stop": stops})
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == expected
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_completion_tokens_is_honoured(server: ServerProcess) -> None:
    body = {"messages": USER, "max_completion_tokens": 3, "temperature": 0}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60).json()
    assert reply["usage"]["completion_tokens"] <= 3


def test_seed_makes_sampling_repeatable(server: ServerProcess) -> None:
    body = {"messages": USER, "max_tokens": 20, "temperature": 1.0, "seed": 42}
    first, second = (httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60).json() for _ in range(2))
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, None),
        ({"model": "tiny-chat"}, 400, "messages", None),
        ({"messages": []}, 400, "messages", None),
        ({"messages": "hello"}, 400, "messages", None),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, None, None),
        ({"messages": USER, "max_tokens": "ten"}, 400, "max_tokens", None),
        ({"messages": USER, "temperature": "hot"}, 400, "temperature", None),
        ({"messages": USER, "n": 9}, 400, "n", None),
        ({"messages": USER, "model": "gpt-4o"}, 404, "model", "model_not_found"),
    ],
    ids=["malformed", "no-messages", "empty-messages", "messages-type", "bad-role", "max-tokens-type",
         "temperature-type", "n", "unknown-model"],
)
def test_bad_requests_get_openai_errors(server: ServerProcess, body: object, status: int,
                                        param: str | None, code: str | None) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=content,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param
    if code:
        assert error["code"] == code


def test_the_sdk_raises_its_own_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-chat", messages=[])


def test_unknown_route_is_404(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["message"]


def test_body_too_large_is_413(server: ServerProcess) -> None:
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]})
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=big,
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_message_larger_than_the_context_is_context_length_exceeded(server: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "word " * 2000}]}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_old_turns_are_dropped_to_fit_and_the_system_message_kept(server: ServerProcess) -> None:
    turns = []
    for i in range(30):
        turns += [{"role": "user", "content": f"question {i} " + "lorem ipsum " * 8},
                  {"role": "assistant", "content": f"answer {i} " + "dolor sit " * 8}]
    body = {"messages": [{"role": "system", "content": "Be brief."}, *turns, {"role": "user", "content": "last"}],
            "max_tokens": 8}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] <= 512
    assert "dropped" in server.log()


# -- cancellation and concurrency ---------------------------------------------------------------


def test_a_client_that_disconnects_mid_stream_stops_generation(tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    # In this process, to hold the engine: its 20th decode waits until the client has left
    # after the first token, so the generation is surely mid-way then (unheld, a slow client
    # could let all of it reach the socket buffers first; leaving after the role chunk alone,
    # it could leave before the generation began). With the end tokens banned, only a cancel
    # ends it before max_tokens.
    state = ServerState(config_for(tiny_model, default_app_path()))
    with running(state) as url, caplog.at_level(logging.INFO, logger="llamaedge.engine"):
        assert state.model is not None
        scheduler = state.model._scheduler
        held = HeldDecoder(scheduler.decoder, hold_at=20)
        scheduler.decoder = held
        no_end = {str(t): -100 for text in (IM_END, ENDOFTEXT) for t in state.model.tokenize(text.encode())}
        body = {"messages": USER, "max_tokens": 400, "stream": True, "logit_bias": no_end}
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = ChatCompletionChunk.model_validate_json(line.removeprefix("data: "), strict=True)
                    if chunk.choices and chunk.choices[0].delta.content:
                        break  # the first token arrived: leave
        finally:
            held.release()
        wait_until(lambda: "sequence cancelled" in caplog.text, "the generation to be cancelled")
        assert held.n_decodes < 400
        # The server carries on.
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": USER, "max_tokens": 4},
                          timeout=30).status_code == 200


def test_concurrent_requests_are_all_answered(server: ServerProcess) -> None:
    import concurrent.futures

    def ask(seed: int) -> int:
        body = {"messages": USER, "max_tokens": 32, "seed": seed}
        return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, range(6))) == [200] * 6


def test_the_next_turn_reuses_the_cached_prompt(server: ServerProcess) -> None:
    first = [{"role": "system", "content": "You answer in one short line. " * 6},
             {"role": "user", "content": "Name three rivers."}]
    url = f"{server.base_url}/v1/chat/completions"
    r1 = ChatCompletion.model_validate(httpx.post(url, json={"messages": first, "max_tokens": 8, "temperature": 0},
                                                  timeout=60).json(), strict=True)
    follow_up = [*first, {"role": "assistant", "content": r1.choices[0].message.content or ""},
                 {"role": "user", "content": "And three mountains?"}]
    r2 = ChatCompletion.model_validate(httpx.post(url, json={"messages": follow_up, "max_tokens": 8, "temperature": 0},
                                                  timeout=60).json(), strict=True)
    assert r1.usage is not None and r2.usage is not None
    assert r2.usage.prompt_tokens_details is not None
    # Everything the first turn's prompt held was already in the KV cache.
    assert r2.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens
    assert r2.usage.prompt_tokens_details.cached_tokens < r2.usage.prompt_tokens
