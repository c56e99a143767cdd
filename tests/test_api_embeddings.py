"""POST /v1/embeddings end to end: `llamaedge serve` on a real port, the shipped
chat-server.wasm, real llama.cpp embedding with the tiny model (shapes, encodings, batches,
limits) and with SmolLM2 (meaning); responses parsed strictly with the `openai` SDK's types
and requests made with its client."""

from __future__ import annotations

import base64
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import llama_cpp
import numpy as np
import openai
import pytest
from openai.types import CreateEmbeddingResponse, Model

from tests.conftest import ServerProcess, serving

# Longer than the tiny model's embedding context (its training context, 2048 tokens).
TOO_LONG = "word " * 3000
SENTENCES = ["The cat sleeps on the warm mat.", "Stock markets fell sharply today.", "A kitten naps in the sun."]


def embed(server: ServerProcess, body: dict, *, timeout_s: float = 60) -> CreateEmbeddingResponse:
    response = httpx.post(f"{server.base_url}/v1/embeddings", json=body, timeout=timeout_s)
    assert response.status_code == 200, response.text
    return CreateEmbeddingResponse.model_validate(response.json(), strict=True)


def raw_base64(server: ServerProcess, body: dict) -> list[np.ndarray]:
    """The base64 answer decoded as the SDK does: little-endian float32."""
    response = httpx.post(f"{server.base_url}/v1/embeddings", json={**body, "encoding_format": "base64"}, timeout=60)
    assert response.status_code == 200, response.text
    return [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in response.json()["data"]]


def vector(response: CreateEmbeddingResponse, index: int = 0) -> np.ndarray:
    return np.array(response.data[index].embedding, dtype=np.float64)


# -- shapes ---------------------------------------------------------------------------------------


def test_an_embedding_has_the_openai_shape_and_norm_1(server: ServerProcess) -> None:
    response = embed(server, {"model": "tiny-chat", "input": "hello world", "user": "someone"})
    assert response.object == "list" and response.model == "tiny-chat"
    [item] = response.data
    assert item.object == "embedding" and item.index == 0
    assert len(item.embedding) == 64  # the tiny model's embedding size
    assert math.sqrt(sum(x * x for x in item.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_float_json_reads_back_as_exactly_the_base64_float32s(server: ServerProcess) -> None:
    body = {"input": SENTENCES}
    floats = embed(server, body)
    for item, packed in zip(floats.data, raw_base64(server, body)):
        assert np.array_equal(np.array(item.embedding, dtype=np.float32), packed)


def test_the_openai_client_asks_for_base64_and_gets_the_float_answer(client: openai.OpenAI, server: ServerProcess) -> None:
    sdk = client.embeddings.create(model="tiny-chat", input=SENTENCES)  # the SDK asks for base64
    explicit = embed(server, {"input": SENTENCES, "encoding_format": "float"})
    for decoded, parsed in zip(sdk.data, explicit.data):
        assert np.array_equal(np.array(decoded.embedding, dtype=np.float32), np.array(parsed.embedding, dtype=np.float32))
    CreateEmbeddingResponse.model_validate(sdk.model_dump(exclude_unset=True), strict=True)


def test_a_batch_equals_the_inputs_one_by_one(server: ServerProcess) -> None:
    batch = embed(server, {"input": SENTENCES})
    assert [d.index for d in batch.data] == [0, 1, 2]
    singles = [embed(server, {"input": s}) for s in SENTENCES]
    for i, single in enumerate(singles):
        np.testing.assert_allclose(vector(batch, i), vector(single), atol=1e-5)
    assert batch.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)


def test_the_largest_batch_is_answered_in_full(server: ServerProcess) -> None:
    texts = [f"sentence number {i}" for i in range(2048)]
    response = embed(server, {"input": texts}, timeout_s=600)  # 2048 inputs take a while on 2 busy cores
    assert [d.index for d in response.data] == list(range(2048))
    # 16 sequences per decode take other kernel paths than one: float32 rounding differs a little
    np.testing.assert_allclose(vector(response, 1000), vector(embed(server, {"input": texts[1000]})), atol=1e-4)


def test_token_inputs_embed_as_their_text(server: ServerProcess, tiny_model: Path) -> None:
    vocab = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False)
    try:
        tokens = [vocab.tokenize(s.encode(), add_bos=False, special=True) for s in SENTENCES[:2]]
    finally:
        vocab.close()
    by_text = embed(server, {"input": SENTENCES[:2]})
    np.testing.assert_allclose(vector(embed(server, {"input": tokens[0]})), vector(by_text, 0), atol=1e-5)
    by_tokens = embed(server, {"input": tokens})
    for i in range(2):
        np.testing.assert_allclose(vector(by_tokens, i), vector(by_text, i), atol=1e-5)


def test_dimensions_truncates_and_normalizes_again(server: ServerProcess) -> None:
    full = vector(embed(server, {"input": SENTENCES[0]}))
    short = vector(embed(server, {"input": SENTENCES[0], "dimensions": 16}))
    assert len(short) == 16
    assert np.linalg.norm(short) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(short, full[:16] / np.linalg.norm(full[:16]), atol=1e-6)


def test_embedding_leaves_chat_working(server: ServerProcess) -> None:
    embed(server, {"input": "first embed"})
    response = httpx.post(f"{server.base_url}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}, timeout=60)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"input": ""}, 400, "input", None),
        ({"input": []}, 400, "input", None),
        ({"input": ["ok", ""]}, 400, "input[1]", None),
        ({"input": [[1, 2], []]}, 400, "input[1]", None),
        ({"input": ["ok", [1, 2]]}, 400, "input[1]", None),
        ({"input": ["x"] * 2049}, 400, "input", None),
        ({"input": 7}, 400, "input", None),
        ({}, 400, "input", None),
        ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format", None),
        ({"input": "x", "dimensions": 65}, 400, "dimensions", None),
        ({"input": "x", "dimensions": 0}, 400, "dimensions", None),
        ({"input": [1, 99999999]}, 400, "input", None),
        ({"input": TOO_LONG}, 400, "input", "context_length_exceeded"),
        ({"input": ["short", TOO_LONG]}, 400, "input", "context_length_exceeded"),
        ({"input": "x", "model": "text-embedding-3-small"}, 404, "model", "model_not_found"),
    ],
    ids=["empty", "empty-list", "empty-item", "empty-tokens", "mixed", "too-many", "type", "missing", "encoding",
         "dimensions-over", "dimensions-zero", "unknown-token", "too-long", "one-too-long", "unknown-model"],
)
def test_bad_embedding_requests_are_openai_errors(server: ServerProcess, body: dict, status: int, param: str,
                                                  code: str | None) -> None:
    response = httpx.post(f"{server.base_url}/v1/embeddings", json=body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    assert error["code"] == code


def test_an_unknown_model_names_the_served_one(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert "'tiny-chat'" in str(raised.value)


def test_too_long_is_a_bad_request_for_the_openai_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="tiny-chat", input=TOO_LONG)
    assert raised.value.code == "context_length_exceeded"


# -- meaning, with a real model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_server(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("embeddings-smollm2-home"), "--model", str(smollm2_model), "--threads", "2",
                 "--ctx-size", "2048") as server:
        yield server


@pytest.mark.slow
def test_related_sentences_are_closer_than_unrelated_ones(smollm2_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{smollm2_server.base_url}/v1", api_key="unused", max_retries=0)
    response = client.embeddings.create(model="SmolLM2-135M-Instruct.Q4_1", input=SENTENCES)
    cat, markets, kitten = (np.array(d.embedding) for d in response.data)
    for v in (cat, markets, kitten):
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    # unit vectors: the dot product is the cosine similarity
    assert cat @ kitten > cat @ markets
    assert cat @ kitten > kitten @ markets


# -- a separate embedding model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`serve --embedding-model`: the tiny model again, under another name, as the embedding model."""
    home = tmp_path_factory.mktemp("two-models-home")
    embedding = home / "tiny-embed.gguf"
    shutil.copyfile(tiny_model, embedding)
    with serving(home, "--model", str(tiny_model), "--embedding-model", str(embedding), "--threads", "2",
                 "--ctx-size", "512") as server:
        yield server


def test_serve_with_an_embedding_model_lists_both(two_models: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{two_models.base_url}/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-chat", "tiny-embed"]
    for m in models.data:
        Model.model_validate(m.model_dump(), strict=True)
        assert client.models.retrieve(m.id).id == m.id
    listed = {m["id"]: m for m in httpx.get(f"{two_models.base_url}/v1/models").json()["data"]}
    assert listed["tiny-chat"]["context_length"] == 512  # --ctx-size is the chat model's
    assert listed["tiny-embed"]["context_length"] == 2048  # the embedding model keeps its own
    assert listed["tiny-embed"]["capabilities"] == listed["tiny-chat"]["capabilities"] == ["chat"]


def test_model_picks_the_embedding_model_by_default_and_the_chat_model_by_name(two_models: ServerProcess) -> None:
    assert embed(two_models, {"input": "hi"}).model == "tiny-embed"
    assert embed(two_models, {"input": "hi", "model": "tiny-embed"}).model == "tiny-embed"
    assert embed(two_models, {"input": "hi", "model": "tiny-chat"}).model == "tiny-chat"
    response = httpx.post(f"{two_models.base_url}/v1/embeddings", json={"input": "hi", "model": "nomic"}, timeout=60)
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "'tiny-chat'" in message and "'tiny-embed'" in message


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"prompt": "hi"}),
])
def test_the_embedding_model_does_not_generate_text(two_models: ServerProcess, path: str, body: dict) -> None:
    response = httpx.post(f"{two_models.base_url}{path}", json={**body, "model": "tiny-embed"}, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model"
    assert "embedding model" in error["message"] and "'tiny-chat'" in error["message"]
    # the chat model still does
    assert httpx.post(f"{two_models.base_url}{path}", json={**body, "model": "tiny-chat", "max_tokens": 2},
                      timeout=60).status_code == 200
