"""A scripted loader and other helpers for the library's tests: no llama.cpp, loads that a
test holds open with a gate, and the library's routes served on a real port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from llamaedge.engine import LoadOptions
from llamaedge.errors import ModelError
from llamaedge.library import (Library, LibraryConfig, LibraryEvent, MemberSource, ModelFacts, Source, Subscription,
                               library_routes)
from llamaedge.types import Device
from tests.conftest import free_port

MiB = 2**20
GiB = 2**30
WAIT_S = 30.0  # a bound for what must happen, never a measure of how fast


def small_facts(size_bytes: int = 100 * MiB, **changes: object) -> ModelFacts:
    """A model whose estimate is its size plus a few MiB (one layer, one head, one of all)."""
    values: dict[str, object] = dict(size_bytes=size_bytes, architecture="llama", n_layers=1, n_heads=1, n_kv_heads=1,
                                     head_dim=1, n_embd=1, n_ff=1, n_vocab=1, n_ctx_train=512)
    values.update(changes)
    return ModelFacts(**values)  # type: ignore[arg-type]


@dataclass
class FakeModel:
    name: str
    n_ctx: int = 512
    parallel: int = 4
    closed: bool = False


@dataclass
class FakeLoader:
    """Loads instantly, unless a gate holds a name's load until it is opened."""

    facts: dict[str, ModelFacts] = field(default_factory=dict)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)  # name -> why its load fails
    unreadable: set[str] = field(default_factory=set)
    loads: list[str] = field(default_factory=list)
    options: list[LoadOptions] = field(default_factory=list)
    unloads: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def inspect(self, path: Path) -> ModelFacts:
        if path.stem in self.unreadable:
            raise ModelError(f"cannot read the GGUF header of {path.name}: not a GGUF file")
        return self.facts.get(path.stem) or small_facts()

    def load(self, path: Path, options: LoadOptions) -> FakeModel:
        self.loads.append(path.stem)
        self.options.append(options)
        self.started.set()
        gate = self.gates.get(path.stem)
        if gate is not None:
            assert gate.wait(WAIT_S), f"the test never opened {path.stem}'s gate"
        if path.stem in self.failing:
            raise ModelError(self.failing[path.stem])
        return FakeModel(path.stem)

    def unload(self, model: FakeModel) -> None:
        model.closed = True
        self.unloads.append(model.name)


def cpu_probe(free_bytes: int = 64 * GiB) -> Callable[[], tuple[list[Device], bool]]:
    return lambda: ([Device("CPU", "cpu", "cpu", free_bytes, free_bytes)], False)


def sources(*names: str) -> list[MemberSource]:
    return [MemberSource(name, Source.EXPLICIT, Path(f"/models/{name}.gguf")) for name in names]


def next_event(subscription: Subscription, model: str, event: str = "status_change",
               status: str | None = None) -> LibraryEvent:
    """The next event of that kind, skipping the others."""
    while True:
        got = subscription.get(WAIT_S)
        assert got is not None, f"no {event} {status or ''} for {model}"
        if got.model == model and got.event == event and (status is None or (got.data or {}).get("status") == status):
            return got


def bytes_arrived(subscription: Subscription, model: str) -> dict[str, object]:
    """The first download_progress event of `model` that counts some bytes (the download's
    first event, sent before any, counts none)."""
    while True:
        data = next_event(subscription, model, "download_progress").data or {}
        if any((progress or {}).get("done") for progress in data.values()):  # type: ignore[union-attr]
            return data


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run `target` on a thread; its result (or exception) lands in the list."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(target())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


class Listening:
    """An ASGI app served by uvicorn on a thread, on a free port of this machine."""

    def __init__(self, app: ASGIApp) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + WAIT_S
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)

    def post(self, path: str, body: object = None, *, content: bytes | None = None) -> httpx.Response:
        if content is None:
            content = json.dumps(body).encode()
        return httpx.post(self.url + path, content=content, headers={"content-type": "application/json"},
                          timeout=WAIT_S)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(WAIT_S)


class Served(Listening):
    """The library's routes served on a port; with `api_key`, guarded by the server's API key
    check, as `serve` guards them."""

    def __init__(self, library: Library[FakeModel], api_key: str | None = None) -> None:
        app: ASGIApp = Starlette(routes=library_routes(library))
        if api_key:
            from llamaedge.server.auth import APIKeyMiddleware  # the server's own check (here: only when asked for)

            app = APIKeyMiddleware(app, api_key, routes=("/models",))
        super().__init__(app)
        self.library = library

    def stop(self) -> None:
        self.library.close()  # ends the event streams
        super().stop()


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*names: str, loader: FakeLoader | None = None, members: list[MemberSource] | None = None,
              api_key: str | None = None, **config: object) -> Served:
        found = members if members is not None else sources(*(names or ("a", "b", "c")))
        library = Library(loader or FakeLoader(), LibraryConfig(**{"idle_unload_s": 0.0, **config}),  # type: ignore[arg-type]
                          members=lambda: list(found), probe=cpu_probe())
        served = Served(library, api_key)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
