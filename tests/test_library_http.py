"""The library's HTTP API on a real port, read by real clients (openai's SDK, httpx): the
model list and its shapes, load/unload/pull and their errors in OpenAI's shape, and the
events as server-sent events. The library loads through the scripted loader."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Model

from llamaedge.library import MemberSource, Source
from tests.library_fakes import GiB, WAIT_S, FakeLoader, Served, serve, small_facts, sources  # noqa: F401, F811 - the fixture


class EventStream:
    """GET /models/sse, read on a thread: its events as parsed JSON, in order."""

    def __init__(self, url: str) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.comments: list[str] = []
        self.open = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()
        assert self.open.wait(WAIT_S)

    def _read(self, url: str) -> None:
        with httpx.stream("GET", url + "/models/sse", timeout=httpx.Timeout(WAIT_S, read=None)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            self.open.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.events.put(json.loads(line[6:]))
                elif line:
                    self.comments.append(line)

    def next(self, model: str, event: str = "status_change", status: str | None = None) -> dict[str, Any]:
        while True:
            got = self.events.get(timeout=WAIT_S)
            if got["model"] == model and got["event"] == event and (
                    status is None or got.get("data", {}).get("status") == status):
                return got


def assert_error(response: httpx.Response, status: int, code: str, message_part: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and message_part in error["message"], error
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return error


def test_the_model_list_in_openai_and_llama_server_shapes(serve: Callable[..., Served]) -> None:
    served = serve()
    with openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["a", "b", "c"]
        assert client.models.retrieve("b").id == "b"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("nope")
    listing = httpx.get(served.url + "/models").json()
    assert listing == httpx.get(served.url + "/v1/models").json()
    assert listing["object"] == "list"
    a = listing["data"][0]
    Model.model_validate(a, strict=False)
    assert {k: a[k] for k in ("id", "object", "owned_by", "capabilities", "context_length", "status", "downloaded",
                              "size", "fits")} == {
        "id": "a", "object": "model", "owned_by": "llamaedge", "capabilities": [], "context_length": 512,
        "status": {"value": "unloaded"}, "downloaded": True, "size": small_facts().size_bytes, "fits": True}
    assert isinstance(a["created"], int) and a["memory"]["ram_bytes"] > a["size"]
    assert a["architecture"] == {"input_modalities": ["text"], "output_modalities": ["text"]}


def test_load_and_unload_answer_success_and_the_events_follow(serve: Callable[..., Served]) -> None:
    served = serve()
    events = EventStream(served.url)
    assert served.post("/models/load", {"model": "a"}).json() == {"success": True}
    assert events.next("a")["data"] == {"status": "loading"}
    loaded = events.next("a")
    assert loaded["data"]["status"] == "loaded" and loaded["data"]["info"]["context_length"] == 512
    a = httpx.get(served.url + "/v1/models/a").json()
    assert a["status"] == {"value": "loaded"} and a["runtime"]["parallel"] == 4
    assert_error(served.post("/models/load", {"model": "a"}), 400, "model_already_loaded", "is loaded already")
    assert served.post("/models/unload", {"model": "a"}).json() == {"success": True}
    assert events.next("a") == {"model": "a", "event": "status_change", "data": {"status": "unloaded", "reason": "asked"}}
    assert_error(served.post("/models/unload", {"model": "a"}), 400, "model_not_loaded", "is not loaded")


def test_a_model_in_use_is_unloaded_when_its_request_ends(serve: Callable[..., Served]) -> None:
    served = serve()
    events = EventStream(served.url)
    lease = served.library.acquire("a")
    assert served.post("/models/unload", {"model": "a"}).json() == {"success": True}
    a = httpx.get(served.url + "/v1/models/a").json()
    assert a["status"] == {"value": "loaded", "unloading": True} and a["runtime"]["requests_running"] == 1
    lease.release()
    assert events.next("a", status="unloaded")["data"]["reason"] == "asked"


def test_load_while_loading_is_a_400(serve: Callable[..., Served]) -> None:
    loader = FakeLoader(gates={"b": threading.Event()})
    served = serve(loader=loader)
    assert served.post("/models/load", {"model": "b"}).json() == {"success": True}
    assert loader.started.wait(WAIT_S)
    assert httpx.get(served.url + "/v1/models/b").json()["status"] == {"value": "loading"}
    assert_error(served.post("/models/load", {"model": "b"}), 400, "model_loading", "is loading already")
    loader.gates["b"].set()


@pytest.mark.parametrize("path", ["/models/load", "/models/unload", "/models/pull", "/models"])
def test_bad_bodies_and_unknown_models(serve: Callable[..., Served], path: str) -> None:
    served = serve()
    error = assert_error(served.post(path, {"model": "nope"}), 404, "model_not_found", "The model 'nope' does not exist")
    assert error["param"] == "model"
    assert_error(served.post(path, content=b"{not json"), 400, "invalid_json", "not valid JSON")
    for body in ({}, {"model": ""}, {"model": 3}, ["a"], "a"):
        error = assert_error(served.post(path, body), 400, "invalid_request", '"model"')
        assert error["param"] == "model"
    assert_error(served.post(path, content=b" " * (64 * 1024 + 1)), 400, "body_too_large", "larger than")


def test_no_room_is_a_503_with_retry_after(serve: Callable[..., Served]) -> None:
    served = serve(models_max=1)
    with served.library.acquire("a"):
        response = served.post("/models/load", {"model": "b"})
        assert_error(response, 503, "model_no_room", "the models loaded (a) are in use")
        assert int(response.headers["retry-after"]) > 0


def test_a_model_too_large_says_how_much_it_needs_and_how_much_there_is(serve: Callable[..., Served]) -> None:
    served = serve("big", loader=FakeLoader(facts={"big": small_facts(3 * GiB)}), memory_budget_bytes=GiB)
    assert httpx.get(served.url + "/v1/models/big").json()["fits"] is False
    assert_error(served.post("/models/load", {"model": "big"}), 400, "model_too_large",
                 "needs about 3.01 GiB of RAM, and this server's models may take 1.00 GiB of RAM in all")


def test_a_failed_load_shows_its_reason(serve: Callable[..., Served]) -> None:
    served = serve(loader=FakeLoader(failing={"c": "llama.cpp could not load c.gguf"}))
    events = EventStream(served.url)
    assert served.post("/models/load", {"model": "c"}).json() == {"success": True}
    failed = events.next("c", status="failed")
    assert failed["data"] == {"status": "failed", "failed": True, "reason": "llama.cpp could not load c.gguf"}
    c = httpx.get(served.url + "/v1/models/c").json()
    assert c["status"] == {"value": "failed", "failed": True, "reason": "llama.cpp could not load c.gguf"}


def test_pull_of_what_cannot_be_downloaded(serve: Callable[..., Served]) -> None:
    members = [*sources("a"), MemberSource("elsewhere", Source.CATALOG, None)]
    served = serve(members=members)
    assert_error(served.post("/models/pull", {"model": "a"}), 400, "model_already_downloaded", "downloaded already")
    assert_error(served.post("/models/pull", {"model": "elsewhere"}), 400, "model_not_downloadable", "cannot be")
    assert_error(served.post("/models/load", {"model": "elsewhere"}), 400, "model_not_downloaded",
                 'POST /models/pull {"model": "elsewhere"}')


def test_every_event_reader_gets_the_events(serve: Callable[..., Served]) -> None:
    served = serve()
    readers = [EventStream(served.url) for _ in range(3)]
    served.post("/models/load", {"model": "b"})
    for reader in readers:
        assert reader.next("b")["data"] == {"status": "loading"}
        assert reader.next("b")["data"]["status"] == "loaded"


def test_reload_lists_the_folder_again(serve: Callable[..., Served]) -> None:
    members = sources("a")
    served = serve(members=members)
    members.append(MemberSource("new", Source.MODELS_DIR, Path("/models/new.gguf")))
    assert [m["id"] for m in httpx.get(served.url + "/models").json()["data"]] == ["a"]
    assert [m["id"] for m in httpx.get(served.url + "/models?reload=1").json()["data"]] == ["a", "new"]
