"""`llamaedge serve` serving a library (docs/library.md), end to end: a real server process on
a port, two different generated models in a models folder (and, marked slow, SmolLM2 and a
second real model llama.cpp's quantize makes of it), driven by the openai and anthropic SDKs
and by llama-server's router routes. Switching, LRU eviction at --models-max 1, one load for
concurrent requests, autoload off, the pinned start model, the API key, and every bad input
answered with a 4xx in the client's error shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ServerProcess, serving
from tests.tiny_gguf import write_tiny_gguf
from tests.test_serve_apps import loads_model
from tests.wat_apps import write_app

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny models of different weights: tiny-a and tiny-b."""
    folder = tmp_path_factory.mktemp("library")
    write_tiny_gguf(folder / "tiny-a.gguf", seed=1)
    write_tiny_gguf(folder / "tiny-b.gguf", seed=2)
    return folder


@pytest.fixture(scope="module")
def library(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`serve` without --model: the folder's models, one loaded at a time."""
    with serving(tmp_path_factory.mktemp("home"), "--models-dir", str(models_dir), "--models-max", "1",
                 "--ctx-size", "512") as server:
        yield server


def statuses(server: ServerProcess) -> dict[str, str]:
    data = httpx.get(f"{server.base_url}/v1/models", timeout=30).json()["data"]
    return {m["id"]: m["status"]["value"] for m in data}


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def chat(client: openai.OpenAI, model: str) -> str:
    answer = client.chat.completions.create(model=model, messages=HI, max_tokens=4)  # type: ignore[arg-type]
    assert answer.model == model
    return answer.choices[0].message.content or ""


def test_the_library_lists_every_model_and_loads_the_one_a_request_names(library: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{library.base_url}/v1", api_key="unused", max_retries=0)
    listed = {m.id: m for m in client.models.list()}
    assert {"tiny-a", "tiny-b"} <= set(listed)
    # The catalog's other models are listed as downloadable, not as on this machine.
    extra = listed["qwen3.5-2b"].model_extra or {}
    assert extra["downloaded"] is False and extra["status"] == {"value": "unloaded"}
    assert (listed["tiny-a"].model_extra or {})["capabilities"] == ["chat"]

    evicted = metric(library, "llamaedge_model_unloads_total", model="tiny-a", reason="evicted")
    chat(client, "tiny-a")
    assert statuses(library)["tiny-a"] == "loaded"
    chat(client, "tiny-b")  # --models-max 1: tiny-a, idle, makes room
    now = statuses(library)
    assert now["tiny-a"] == "unloaded" and now["tiny-b"] == "loaded"
    assert metric(library, "llamaedge_model_unloads_total", model="tiny-a", reason="evicted") == evicted + 1
    # The engine's gauges are labelled by model.
    assert metric(library, "llamaedge_model_loaded", model="tiny-b") == 1
    assert metric(library, "llamaedge_model_loaded", model="tiny-a") == 0


def test_concurrent_requests_for_a_model_start_one_load(library: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{library.base_url}/v1", api_key="unused", max_retries=0)
    chat(client, "tiny-b")  # tiny-a is not loaded now
    loads = metric(library, "llamaedge_model_loads_total", model="tiny-a", result="ok")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: chat(client, "tiny-a"), range(4)))
    assert len(answers) == 4
    assert metric(library, "llamaedge_model_loads_total", model="tiny-a", result="ok") == loads + 1


def test_streams_run_on_the_model_they_name(library: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{library.base_url}/v1", api_key="unused", max_retries=0)
    for model in ("tiny-a", "tiny-b"):
        chunks = list(client.chat.completions.create(model=model, messages=HI, max_tokens=4, stream=True))  # type: ignore[arg-type]
        assert chunks and {c.model for c in chunks} == {model}


def test_bad_requests_get_a_clear_4xx(library: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{library.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=HI)  # type: ignore[arg-type]
    assert unknown.value.code == "model_not_found" and "GET /v1/models" in unknown.value.message
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    claude = anthropic.Anthropic(base_url=library.base_url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as not_found:
        claude.messages.create(model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert not_found.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    url = library.base_url
    for path in ("/models/load", "/models/unload", "/models/pull"):
        assert httpx.post(f"{url}{path}", json={"model": "no-such-model"}).status_code == 404
        bad = httpx.post(f"{url}{path}", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["message"]
        assert httpx.post(f"{url}{path}", json={"model": 7}).status_code == 400
    # A model on disk is not pulled again; a model loaded cannot be loaded again.
    assert httpx.post(f"{url}/models/pull", json={"model": "tiny-a"}).json()["error"]["code"] == "model_already_downloaded"
    chat(client, "tiny-a")
    again = httpx.post(f"{url}/models/load", json={"model": "tiny-a"})
    assert again.status_code == 400 and again.json()["error"]["code"] == "model_already_loaded"


def test_unload_and_load_by_the_router_routes(library: ServerProcess) -> None:
    url = library.base_url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    chat(client, "tiny-b")
    assert httpx.post(f"{url}/models/unload", json={"model": "tiny-b"}).json() == {"success": True}
    assert statuses(library)["tiny-b"] == "unloaded"
    twice = httpx.post(f"{url}/models/unload", json={"model": "tiny-b"})
    assert twice.status_code == 400 and twice.json()["error"]["code"] == "model_not_loaded"
    # No model loaded and none named: which one is meant cannot be guessed.
    none = httpx.post(f"{url}/v1/chat/completions", json={"messages": HI, "max_tokens": 2})
    assert none.status_code == 400 and none.json()["error"]["code"] == "model_required"
    with httpx.Client(timeout=60) as http, http.stream("GET", f"{url}/models/sse") as events:
        assert httpx.post(f"{url}/models/load", json={"model": "tiny-b"}).json() == {"success": True}
        seen = []
        for line in events.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[len("data: "):])
                if event["model"] == "tiny-b" and event["event"] == "status_change":
                    seen.append(event["data"]["status"])
                    if event["data"]["status"] == "loaded":
                        break
        assert seen == ["loading", "loaded"]
    chat(client, "tiny-b")
    assert statuses(library)["tiny-b"] == "loaded"


def test_a_corrupt_file_fails_only_its_own_requests(models_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("tiny-a.gguf", "tiny-b.gguf"):
        (folder / name).write_bytes((models_dir / name).read_bytes())
    whole = (models_dir / "tiny-a.gguf").read_bytes()
    (folder / "broken.gguf").write_bytes(whole[: len(whole) // 2])
    with serving(tmp_path, "--models-dir", str(folder), "--ctx-size", "512") as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as failed:
            chat(client, "broken")
        assert failed.value.status_code == 500 and failed.value.code == "model_load_failed"
        broken = next(m for m in httpx.get(f"{server.base_url}/v1/models").json()["data"] if m["id"] == "broken")
        assert broken["status"]["value"] == "failed" and broken["status"]["reason"]
        assert chat(client, "tiny-a") is not None and statuses(server)["tiny-a"] == "loaded"


def test_autoload_off_asks_for_a_load_first(models_dir: Path, tmp_path: Path) -> None:
    with serving(tmp_path, "--models-dir", str(models_dir), "--no-models-autoload", "--ctx-size", "512") as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            chat(client, "tiny-a")
        assert refused.value.code == "model_not_loaded" and "/models/load" in refused.value.message
        assert httpx.post(f"{server.base_url}/models/load", json={"model": "tiny-a"}).json() == {"success": True}
        # The load runs on a thread; a request meanwhile waits for it rather than failing.
        chat(client, "tiny-a")


def test_the_api_key_guards_the_library_routes(models_dir: Path, tmp_path: Path) -> None:
    with serving(tmp_path, "--models-dir", str(models_dir), "--api-key", "s3cret", "--ctx-size", "512") as server:
        url = server.base_url
        for method, path in (("GET", "/v1/models"), ("GET", "/models"), ("POST", "/models/load"),
                             ("POST", "/models/unload"), ("POST", "/models/pull"), ("GET", "/models/sse")):
            refused = httpx.request(method, f"{url}{path}", json={"model": "tiny-a"})
            assert refused.status_code == 401, path
        ok = httpx.post(f"{url}/models/load", json={"model": "tiny-a"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.json() == {"success": True}


def test_a_single_model_server_keeps_its_model(tiny_model: Path, tmp_path: Path) -> None:
    with serving(tmp_path, "--model", str(tiny_model), "--ctx-size", "512") as server:
        url = server.base_url
        data = httpx.get(f"{url}/v1/models").json()["data"]
        assert [m["id"] for m in data] == ["tiny-chat"] and data[0]["status"] == {"value": "loaded"}
        pinned = httpx.post(f"{url}/models/unload", json={"model": "tiny-chat"})
        assert pinned.status_code == 400 and pinned.json()["error"]["code"] == "model_pinned"
        # The app answers a name it does not serve as it always has.
        unknown = httpx.post(f"{url}/v1/chat/completions", json={"model": "other", "messages": HI})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_wasi_nn_apps_load_library_models_by_name_within_their_policy(models_dir: Path, tmp_path: Path) -> None:
    """A WasmEdge-style app mounted beside the chat server loads a library member by its name
    (load_by_name), which the host loads on demand; its policy's `models` applies to those
    names as to any graph."""
    apps = tmp_path / "apps"
    apps.mkdir()
    write_app(apps, "b.wasm", loads_model("tiny-b"))
    write_app(apps, "a.wasm", loads_model("tiny-a"))
    with serving(tmp_path, "--models-dir", str(models_dir), "--ctx-size", "512",
                 "--app", f"/gen-b={apps / 'b.wasm'}", "--app-policy", "/gen-b:models=tiny-b",
                 "--app", f"/gen-a={apps / 'a.wasm'}", "--app-policy", "/gen-a:models=tiny-b") as server:
        assert statuses(server)["tiny-b"] == "unloaded"
        made = httpx.get(f"{server.base_url}/gen-b", timeout=60)
        assert made.status_code == 200 and made.text == "loaded"
        assert statuses(server)["tiny-b"] == "loaded"
        denied = httpx.get(f"{server.base_url}/gen-a", timeout=60)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
        assert statuses(server)["tiny-a"] == "unloaded"


@pytest.mark.slow
def test_two_real_models_switch_at_models_max_1(smollm2_model: Path, smollm2_q8: Path, tmp_path: Path) -> None:
    with serving(tmp_path, "--model", str(smollm2_model), "--model", str(smollm2_q8), "--models-max", "1",
                 "--ctx-size", "1024") as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        names = [smollm2_model.stem, smollm2_q8.stem]
        assert [m.id for m in client.models.list()] == names  # the --model set, in its order
        for name in (*names, names[0]):
            answer = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "The capital of France is"}], max_tokens=8,
                temperature=0)
            assert answer.model == name and answer.choices[0].message.content
            now = statuses(server)
            assert now[name] == "loaded" and [n for n, s in now.items() if s == "loaded"] == [name]
