"""The library with real models on llama.cpp (EngineLoader): SmolLM2-135M, a second, different
model made from it by llama.cpp's quantize (Q4_1 -> Q8_0), and the generated tiny model.
Switching and LRU eviction at models_max 1, one load for concurrent requests, a stream that
runs on while another model loads, a corrupt file that fails only its own requests, and the
memory an unload gives back (RSS, measured in a subprocess)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

import llamaedge.engine  # noqa: F401 - installs llama_cpp's bindings before the import below
import llama_cpp as lc
from llamaedge.engine import LoadOptions, Model, SamplingOptions
from llamaedge.engine.backend import init_backend
from llamaedge.library import (EngineLoader, Library, LibraryConfig, LoadFailed, MemberSource, Source, Status,
                               Subscription)
from tests.conftest import REPO_ROOT
from tests.library_fakes import WAIT_S, next_event

pytestmark = pytest.mark.slow

CTX = 512  # small contexts: three models' worth of memory and loading time stay small


@pytest.fixture
def members(smollm2_model: Path, smollm2_q8: Path, tiny_model: Path) -> list[MemberSource]:
    return [MemberSource("smollm2", Source.EXPLICIT, smollm2_model), MemberSource("smollm2-q8", Source.EXPLICIT, smollm2_q8),
            MemberSource("tiny", Source.EXPLICIT, tiny_model)]


@pytest.fixture
def make_library(members: list[MemberSource]) -> Iterator[Callable[..., Library[Model]]]:
    """Libraries of the three models, with the real loader; closed after the test."""
    made: list[Library[Model]] = []

    def make(loader: EngineLoader | None = None, **config: object) -> Library[Model]:
        settings = LibraryConfig(**{"ctx_size": CTX, "threads": 2, "idle_unload_s": 0.0, **config})  # type: ignore[arg-type]
        made.append(Library(loader or EngineLoader(), settings, members=lambda: list(members)))
        return made[-1]

    yield make
    for library in made:
        library.close()


def generate(model: Model, n_tokens: int = 4) -> bytes:
    sequence = model.generate(model.tokenize(b"Hello"), SamplingOptions(temp=0.0, n_predict=n_tokens))
    return b"".join(iter(sequence))


def metric(library: Library[Model], line_start: str) -> float:
    for line in generate_latest(library.metrics.registry).decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def test_switching_models_unloads_the_one_before(make_library: Callable[..., Library[Model]]) -> None:
    library = make_library(models_max=1)
    events = library.subscribe()
    texts, descriptions = {}, {}
    for name in ("smollm2", "smollm2-q8", "tiny", "smollm2"):
        with library.acquire(name) as lease:
            texts[name] = generate(lease.model)
            descriptions[name] = lease.model.description
            assert [n for n, _ in library.loaded_models()] == [name]
    assert all(texts.values())
    assert "Q4_1" in descriptions["smollm2"] and "Q8_0" in descriptions["smollm2-q8"]
    for evicted in ("smollm2", "smollm2-q8", "tiny"):
        assert next_event(events, evicted, status="unloaded").data == {"status": "unloaded", "reason": "evicted"}
    assert metric(library, 'llamaedge_model_loads_total{model="smollm2",result="ok"}') == 2
    assert metric(library, 'llamaedge_model_unloads_total{model="tiny",reason="evicted"}') == 1


def test_concurrent_requests_start_one_real_load(make_library: Callable[..., Library[Model]]) -> None:
    library = make_library()
    leases: list[object] = []
    threads = [threading.Thread(target=lambda: leases.append(library.acquire("smollm2-q8"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 4)
    assert len(leases) == 4 and len({id(lease.model) for lease in leases}) == 1  # type: ignore[attr-defined]
    assert metric(library, 'llamaedge_model_loads_total{model="smollm2-q8",result="ok"}') == 1
    for lease in leases:
        lease.release()  # type: ignore[attr-defined]


class HeldLoader(EngineLoader):
    """The real loader, whose load of `held` is held open after llama.cpp has read it, until
    the test lets it go."""

    def __init__(self, held: str) -> None:
        self.held = held
        self.loading = threading.Event()
        self.release = threading.Event()

    def load(self, path: Path, options: LoadOptions) -> Model:
        if path.stem != self.held:
            return super().load(path, options)
        self.loading.set()
        model = super().load(path, options)
        assert self.release.wait(WAIT_S * 4), "the test never let the load end"
        return model


def test_a_stream_runs_on_while_another_model_loads(make_library: Callable[..., Library[Model]], smollm2_q8: Path) -> None:
    loader = HeldLoader(smollm2_q8.stem)
    library = make_library(loader)
    try:
        stream_lease = library.acquire("smollm2")
        sequence = stream_lease.model.generate(stream_lease.model.tokenize(b"Once upon a time"),
                                               SamplingOptions(temp=0.0, n_predict=400, ignore_eos=True))
        loading = threading.Thread(target=lambda: library.acquire("smollm2-q8").release())
        loading.start()
        assert loader.loading.wait(WAIT_S)
        # The other model is loading (and held so): the stream goes on, and a new request for
        # the loaded model is served at once.
        for _ in range(16):
            assert sequence.next_token(WAIT_S) is not None
        with library.acquire("smollm2") as again:
            assert again.model is stream_lease.model
        assert library.info("smollm2-q8").status is Status.LOADING
        loader.release.set()
        loading.join(WAIT_S * 4)
        assert library.info("smollm2-q8").status is Status.LOADED
        sequence.cancel()
        stream_lease.release()
    finally:
        loader.release.set()


def test_a_corrupt_file_fails_only_its_own_requests(smollm2_model: Path, tmp_path: Path) -> None:
    # The header is whole; the weights stop half way.
    corrupt = tmp_path / "corrupt.gguf"
    data = smollm2_model.read_bytes()
    corrupt.write_bytes(data[:len(data) // 2])
    members = [MemberSource("smollm2", Source.EXPLICIT, smollm2_model), MemberSource("corrupt", Source.EXPLICIT, corrupt)]
    library = Library(EngineLoader(), LibraryConfig(ctx_size=CTX, threads=2, idle_unload_s=0),
                      members=lambda: list(members))
    try:
        events: Subscription = library.subscribe()
        with pytest.raises(LoadFailed, match="'corrupt' failed to load: llama.cpp could not load corrupt.gguf"):
            library.acquire("corrupt")
        failed = next_event(events, "corrupt", status="failed").data
        assert failed is not None and failed["failed"] is True and "could not load corrupt.gguf" in failed["reason"]
        with library.acquire("smollm2") as lease:
            assert generate(lease.model)
        assert library.info("corrupt").status is Status.FAILED
        assert library.info("smollm2").status is Status.LOADED
    finally:
        library.close()


# The subprocess: load SmolLM2 through the library three times, generating each time, and
# print the RSS before, when loaded, and after each unload, with the library's estimate.
_RSS_SCRIPT = """
import json, sys
from pathlib import Path
import psutil
from llamaedge.library import EngineLoader, Library, LibraryConfig, MemberSource, Source, Status
from llamaedge.engine import SamplingOptions

process = psutil.Process()
members = [MemberSource("smollm2", Source.EXPLICIT, Path(sys.argv[1]))]
library = Library(EngineLoader(), LibraryConfig(ctx_size=4096, threads=2, idle_unload_s=0), members=lambda: members)
events = library.subscribe()
out = {"before": process.memory_info().rss, "estimate": library.info("smollm2").need.ram_bytes, "loaded": [], "after": []}
for _ in range(3):
    with library.acquire("smollm2") as lease:
        sequence = lease.model.generate(lease.model.tokenize(b"Hello"), SamplingOptions(temp=0.0, n_predict=16))
        assert b"".join(iter(sequence))
        out["loaded"].append(process.memory_info().rss)
    library.unload("smollm2")
    while True:
        event = events.get(60)
        assert event is not None, "no unloaded event"
        if (event.data or {}).get("status") == "unloaded":
            break
    assert library.info("smollm2").status is Status.UNLOADED
    out["after"].append(process.memory_info().rss)
library.close()
print(json.dumps(out))
"""


def test_an_unload_gives_the_memory_back(smollm2_model: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(smollm2_model)], capture_output=True, text=True,
                            env=env, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rss = json.loads(result.stdout.strip().splitlines()[-1])
    before, estimate = rss["before"], rss["estimate"]
    for loaded, after in zip(rss["loaded"], rss["after"], strict=True):
        taken = loaded - before
        # SmolLM2 with 4096 cells takes some 190 MiB; the estimate covers it, within reason.
        assert 0.5 * estimate < taken < 1.15 * estimate, (taken, estimate)
        # Near the level before the load: less than a fifth of what the load took is left.
        assert after - before < taken / 5, (after - before, taken)
