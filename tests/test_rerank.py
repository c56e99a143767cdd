"""POST /v1/rerank and /rerank end to end: `llamaedge serve` over a models folder holding the
tiny chat model and two tiny rerankers (tests/tiny_gguf.py: qwen3 with a classification head,
pooling type RANK; one with a `rerank` template, one without), the shipped chat-server.wasm
scoring through WASI-NN's embedding mode with rank pooling, and each score checked against
llama.cpp's own, computed here with llama-cpp-python's low-level API as llama-server does."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import httpx
import llama_cpp as lc
import pytest

from tests.conftest import ServerProcess, serving
from tests.tiny_gguf import write_tiny_gguf, write_tiny_reranker

QUERY = "Where does the cat sleep?"
DOCUMENTS = [
    "The cat sleeps on the warm mat.",
    "Stock markets fell sharply today.",
    "A kitten naps in the sun near the fire.",
    "Walk to the end of the street and turn left at the bakery.",
    "Numbers like 1, 2, 3, 10, 42 and 2024 appear in text too.",
]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rerank-models")
    write_tiny_gguf(folder / "tiny-chat.gguf")
    write_tiny_reranker(folder / "tiny-reranker.gguf")
    write_tiny_reranker(folder / "tiny-reranker-plain.gguf", rerank_template=None, seed=2)
    return folder


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("home"), "--models-dir", str(models_dir), "--threads", "2",
                 "--ctx-size", "512") as server:
        yield server


def reference(path: Path, query: str, documents: list[str]) -> tuple[list[float], list[int]]:
    """llama.cpp's scores and token counts for the pairs, as llama-server's /rerank computes
    them: format_prompt_rerank, then the rank-pooled output's first value. The pairs are
    decoded together in one batch, one sequence each, as the server batches them (a
    different batch sums in a different order, and the float32s differ in their last bits)."""
    lc.llama_backend_init()
    model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
    vocab = lc.llama_model_get_vocab(model)
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 2048
    params.n_seq_max = len(documents)
    params.kv_unified = True
    params.embeddings = True
    params.pooling_type = lc.LLAMA_POOLING_TYPE_RANK
    ctx = lc.llama_init_from_model(model, params)

    def tokens(text: str, parse_special: bool) -> list[int]:
        buf = (lc.llama_token * 4096)()
        n = lc.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 4096, False, parse_special)
        return list(buf[:n])

    template = lc.llama_model_chat_template(model, b"rerank")
    pairs = []
    for document in documents:
        if template:
            pairs.append(tokens(template.decode().replace("{query}", query).replace("{document}", document), True))
        else:  # the tiny vocabulary adds no BOS, EOS or SEP: the texts alone
            assert not (lc.llama_vocab_get_add_bos(vocab) or lc.llama_vocab_get_add_eos(vocab)
                        or lc.llama_vocab_get_add_sep(vocab))
            pairs.append(tokens(query, False) + tokens(document, False))
    batch = lc.llama_batch_init(sum(map(len, pairs)), 0, 1)
    try:
        for seq, pair in enumerate(pairs):
            for pos, token in enumerate(pair):
                n = batch.n_tokens
                batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = token, pos, 1, 1
                batch.seq_id[n][0] = seq
                batch.n_tokens += 1
        assert lc.llama_decode(ctx, batch) == 0
        scores = [ctypes.cast(lc.llama_get_embeddings_seq(ctx, seq), ctypes.POINTER(ctypes.c_float))[0]
                  for seq in range(len(pairs))]
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)
    return scores, [len(pair) for pair in pairs]


def rerank(server: ServerProcess, body: dict, *, route: str = "/v1/rerank") -> dict:
    response = httpx.post(f"{server.base_url}{route}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def refused(server: ServerProcess, body: dict) -> dict:
    response = httpx.post(f"{server.base_url}/v1/rerank", json=body, timeout=120)
    assert response.status_code == 400, response.text
    return response.json()["error"]


@pytest.mark.parametrize(("name", "route"), [("tiny-reranker", "/v1/rerank"), ("tiny-reranker-plain", "/rerank")])
def test_scores_and_order_equal_llama_cpp(server: ServerProcess, models_dir: Path, name: str, route: str) -> None:
    scores, counts = reference(models_dir / f"{name}.gguf", QUERY, DOCUMENTS)
    assert len(set(scores)) == len(scores)  # distinct, so that the order is one
    answer = rerank(server, {"model": name, "query": QUERY, "documents": DOCUMENTS}, route=route)
    assert answer["model"] == name and answer["object"] == "list" and answer["id"].startswith("rerank-")
    results = answer["results"]
    assert [r["index"] for r in results] == sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])
    for r in results:
        assert set(r) == {"index", "relevance_score"}
        # The very float32 llama.cpp gave: the app writes it so that it reads back exactly.
        assert ctypes.c_float(r["relevance_score"]).value == scores[r["index"]]
    assert answer["usage"] == {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}


def test_top_n_and_return_documents_in_jina_and_cohere_shape(server: ServerProcess, models_dir: Path) -> None:
    scores, _ = reference(models_dir / "tiny-reranker.gguf", QUERY, DOCUMENTS)
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])[:2]
    documents = [{"text": text} for text in DOCUMENTS]
    answer = rerank(server, {"model": "tiny-reranker", "query": QUERY, "documents": documents,
                             "top_n": 2, "return_documents": True})
    assert [r["index"] for r in answer["results"]] == best
    assert [r["document"] for r in answer["results"]] == [{"text": DOCUMENTS[i]} for i in best]
    # top_n over the number of documents gives them all.
    answer = rerank(server, {"model": "tiny-reranker", "query": QUERY, "documents": DOCUMENTS[:2], "top_n": 10})
    assert sorted(r["index"] for r in answer["results"]) == [0, 1]


def test_the_library_says_which_models_rerank(server: ServerProcess) -> None:
    data = {m["id"]: m for m in httpx.get(f"{server.base_url}/v1/models", timeout=30).json()["data"]}
    assert "rerank" in data["tiny-reranker"]["capabilities"]
    assert "rerank" not in data["tiny-chat"]["capabilities"]


def test_a_model_that_cannot_rerank_is_a_400_that_says_so(server: ServerProcess) -> None:
    error = refused(server, {"model": "tiny-chat", "query": QUERY, "documents": DOCUMENTS})
    assert error["code"] == "model_cannot_rerank" and error["param"] == "model"
    assert "'tiny-chat' cannot rerank" in error["message"]


@pytest.mark.parametrize(("body", "param", "part"), [
    ({"documents": ["a"]}, "query", "Missing required parameter: 'query'"),
    ({"query": "", "documents": ["a"]}, "query", "empty string"),
    ({"query": "q"}, "documents", "Missing required parameter: 'documents'"),
    ({"query": "q", "documents": []}, "documents", "empty array"),
    ({"query": "q", "documents": ["a", 3]}, "documents[1]", "expected a string or"),
    ({"query": "q", "documents": [{"title": "a"}]}, "documents[0]", "needs a 'text' string"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n", "at least 1"),
    ({"query": "q", "documents": ["a"], "return_documents": "yes"}, "return_documents", "a boolean"),
    ({"query": "q", "documents": ["word " * 3000]}, "documents", "longer than the reranker's context"),
])
def test_bad_requests_are_400s_naming_the_field(server: ServerProcess, body: dict, param: str, part: str) -> None:
    error = refused(server, {"model": "tiny-reranker", **body})
    assert error["param"] == param and part in error["message"], error


def test_a_body_that_is_not_json_is_a_400_on_both_routes(server: ServerProcess) -> None:
    # It names no model: with one model loaded the app runs and says the body is not JSON;
    # with several, the host asks for a model.
    for route in ("/rerank", "/v1/rerank"):
        response = httpx.post(f"{server.base_url}{route}", content=b"{nope", timeout=30,
                              headers={"content-type": "application/json"})
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert "could not parse the JSON body" in message or "name one in `model`" in message


def test_the_api_key_guards_both_routes(models_dir: Path, tmp_path: Path) -> None:
    with serving(tmp_path, "--models-dir", str(models_dir), "--api-key", "s3cret", "--ctx-size", "512") as server:
        body = {"model": "tiny-reranker", "query": QUERY, "documents": DOCUMENTS[:2]}
        for route in ("/rerank", "/v1/rerank"):
            assert httpx.post(f"{server.base_url}{route}", json=body, timeout=60).status_code == 401, route
            ok = httpx.post(f"{server.base_url}{route}", json=body, timeout=120, headers={"x-api-key": "s3cret"})
            assert ok.status_code == 200 and len(ok.json()["results"]) == 2, ok.text


def test_a_mounted_app_with_a_policy_reranks_as_the_api_does(models_dir: Path, tmp_path: Path) -> None:
    """A mounted chat-server under a policy sees the model through the policy's wrapper, which
    must pass rerank through as it passes embeddings."""
    app = Path(__file__).resolve().parent.parent / "llamaedge" / "apps" / "chat-server.wasm"
    with serving(tmp_path, "--model", str(models_dir / "tiny-reranker.gguf"), "--ctx-size", "512",
                 "--app", f"/mine={app}", "--app-policy", "/mine:max-tokens=100") as server:
        body = {"query": QUERY, "documents": DOCUMENTS}
        direct = rerank(server, {"model": "tiny-reranker", **body})
        mounted = rerank(server, body, route="/mine/v1/rerank")
        assert mounted["results"] == direct["results"] and mounted["usage"] == direct["usage"]
