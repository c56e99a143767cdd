"""The real thing: `llamaedge serve --model <SmolLM2-135M-Instruct>` streams a chat reply to
the official `openai` client and to curl over real HTTP."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.conftest import ServerProcess, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("smollm2-home"), "--model", str(smollm2_model), "--threads", "2", "--ctx-size", "2048") as server:
        yield server


def test_openai_client_streams_a_coherent_reply(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    assert model == "SmolLM2-135M-Instruct.Q4_1"
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        stream=True, stream_options={"include_usage": True}, temperature=0, max_tokens=48,
    )
    chunks = [ChatCompletionChunk.model_validate(c.model_dump(exclude_unset=True), strict=True) for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    words = text.split()
    assert len(words) >= 3, text
    assert all(ch.isprintable() or ch.isspace() for ch in text), text
    assert "Paris" in text  # greedy SmolLM2 knows this one
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(
        [c for c in chunks if c.choices and c.choices[0].delta.content])


def test_openai_client_non_streaming(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1", messages=[{"role": "user", "content": "Say hello."}],
        temperature=0, max_tokens=24)
    ChatCompletion.model_validate(completion.model_dump(exclude_unset=True), strict=True)
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.prompt_tokens > 5


def test_curl_streams_server_sent_events(server: ServerProcess) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "Name a colour."}], "stream": True, "max_tokens": 16})
    out = subprocess.run(
        ["curl", "-sSN", f"{server.base_url}/v1/chat/completions", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True, text=True, timeout=60, check=True).stdout
    events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"])
