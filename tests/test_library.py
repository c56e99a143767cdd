"""The model library's core against a scripted loader (no llama.cpp): one load for concurrent
requests, loads beside requests, LRU eviction by count and by memory, models in use kept,
waiting and refusing, unload when requests end, idle unload, failures, events, metrics, the
estimate and the budget. Real models: test_library_models.py; HTTP: test_library_http.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import generate_latest

from llamaedge.engine import LoadOptions
from llamaedge.library import (Lease, Library, LibraryConfig, LibraryEvent, LoadFailed, ModelFacts, ModelStateError,
                               ModelTooLarge, NoRoom, Status, UnknownModel)
from llamaedge.library.events import EVENTS_PENDING_MAX, EventHub
from llamaedge.library.memory import COMPUTE_OVERHEAD_BYTES, MemoryBudget, estimate_need
from llamaedge.library.types import MemoryNeed
from llamaedge.types import Device
from tests.library_fakes import (GiB, MiB, WAIT_S, FakeLoader, FakeModel, cpu_probe, in_thread, next_event, small_facts,
                                 sources)


@pytest.fixture
def make_library() -> Iterator[Callable[..., Library[FakeModel]]]:
    made: list[Library[FakeModel]] = []

    def make(*names: str, loader: FakeLoader | None = None, probe: Callable[[], tuple[list[Device], bool]] | None = None,
             **config: object) -> Library[FakeModel]:
        settings = {"idle_unload_s": 0.0, **config}
        library = Library(loader or FakeLoader(), LibraryConfig(**settings),  # type: ignore[arg-type]
                          members=lambda: sources(*(names or ("a", "b", "c"))), probe=probe or cpu_probe())
        made.append(library)
        return library

    yield make
    for library in made:
        library.close()


def wait_until(library: Library[FakeModel], name: str, check: Callable[[object], bool]) -> None:
    """Until the member's info satisfies `check` (state changes are announced by events; this
    waits on them)."""
    with library.subscribe() as subscription:
        while not check(library.info(name)):
            subscription.get(0.05)


# -- loading ---------------------------------------------------------------------------------


def test_concurrent_requests_for_one_model_start_one_load(make_library: Callable[..., Library[FakeModel]]) -> None:
    loader = FakeLoader(gates={"a": threading.Event()})
    library = make_library(loader=loader)
    runs = [in_thread(lambda: library.acquire("a")) for _ in range(6)]
    assert loader.started.wait(WAIT_S)
    wait_until(library, "a", lambda info: info.requests_waiting == 6)  # type: ignore[attr-defined]
    loader.gates["a"].set()
    leases = []
    for thread, out in runs:
        thread.join(WAIT_S)
        assert isinstance(out[0], Lease)
        leases.append(out[0])
    assert loader.loads == ["a"]
    assert len({id(lease.model) for lease in leases}) == 1
    assert library.info("a").requests_running == 6
    for lease in leases:
        lease.release()
    assert library.info("a").requests_running == 0


def test_a_load_does_not_hold_up_requests_to_loaded_models(make_library: Callable[..., Library[FakeModel]]) -> None:
    loader = FakeLoader(gates={"b": threading.Event()})
    library = make_library(loader=loader)
    with library.acquire("a"):
        pass
    thread, out = in_thread(lambda: library.acquire("b"))
    wait_until(library, "b", lambda info: info.status is Status.LOADING)  # type: ignore[attr-defined]
    # b's load is held open; a answers meanwhile, again and again.
    for _ in range(3):
        with library.acquire("a") as lease:
            assert lease.model.name == "a"
    assert library.info("b").status is Status.LOADING
    loader.gates["b"].set()
    thread.join(WAIT_S)
    assert isinstance(out[0], Lease)
    out[0].release()


def test_load_options_carry_the_config_to_every_member(make_library: Callable[..., Library[FakeModel]]) -> None:
    loader = FakeLoader()
    library = make_library(loader=loader, ctx_size=1024, threads=3, parallel=2)
    with library.acquire("a"):
        pass
    (options,) = loader.options
    assert (options.ctx_size, options.threads, options.parallel, options.n_gpu_layers) == (1024, 3, 2, 0)


def test_unknown_model(make_library: Callable[..., Library[FakeModel]]) -> None:
    library = make_library()
    for act in (library.acquire, library.load, library.unload, library.pull, library.info, library.check):
        with pytest.raises(UnknownModel, match="'nope' does not exist"):
            act("nope")


# -- eviction --------------------------------------------------------------------------------


def test_at_models_max_the_least_recently_used_idle_model_is_unloaded(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    loader = FakeLoader()
    library = make_library(loader=loader, models_max=2)
    events = library.subscribe()
    for name in ("a", "b", "a"):  # b is now the least recently used
        with library.acquire(name):
            pass
    with library.acquire("c"):
        pass
    assert next_event(events, "b", status="unloaded").data == {"status": "unloaded", "reason": "evicted"}
    assert {m.name: m.status for m in library.members()} == {"a": Status.LOADED, "b": Status.UNLOADED,
                                                           "c": Status.LOADED}
    assert loader.unloads == ["b"]


def test_a_model_in_use_is_not_unloaded_and_the_request_waits_for_it(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    loader = FakeLoader()
    library = make_library(loader=loader, models_max=1)
    held = library.acquire("a")
    thread, out = in_thread(lambda: library.acquire("b"))
    wait_until(library, "b", lambda info: info.requests_waiting == 1)  # type: ignore[attr-defined]
    assert library.info("a").status is Status.LOADED and loader.loads == ["a"]
    assert not held.model.closed
    held.release()
    thread.join(WAIT_S)
    assert isinstance(out[0], Lease) and out[0].model.name == "b"
    assert loader.unloads == ["a"]
    out[0].release()


def test_with_no_room_a_request_waits_its_time_then_gets_no_room(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    library = make_library(models_max=1, room_wait_s=0.01)
    with library.acquire("a"):
        with pytest.raises(NoRoom, match=r"no room to load the model 'b': the models loaded \(a\) are in use") as err:
            library.acquire("b")
        assert err.value.retry_after_s is not None
        with pytest.raises(NoRoom):
            library.load("b")  # an asked load does not wait
        assert library.info("a").status is Status.LOADED


def test_the_memory_budget_unloads_idle_models_until_the_new_one_fits(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    loader = FakeLoader()
    # Two 100 MiB models fit in 250 MiB, three do not.
    library = make_library(loader=loader, models_max=0, memory_budget_bytes=250 * MiB)
    for name in ("a", "b"):
        with library.acquire(name):
            pass
    assert loader.unloads == []
    with library.acquire("c"):
        pass
    assert loader.unloads == ["a"]
    held = library.memory()["held"]
    assert held.ram_bytes <= 250 * MiB


def test_a_model_that_could_never_fit_says_how_much_it_needs_and_how_much_there_is(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    loader = FakeLoader(facts={"big": small_facts(3 * GiB)})
    library = make_library("big", "a", loader=loader, memory_budget_bytes=GiB)
    for act in (library.acquire, library.check, library.load):
        with pytest.raises(ModelTooLarge, match=r"'big' needs about 3\.01 GiB of RAM.* may take 1\.00 GiB of RAM in all"):
            act("big")
    assert loader.loads == []
    big = library.info("big")
    assert big.fits is False and big.need is not None and big.need.ram_bytes > 3 * GiB


def test_room_is_also_what_is_free_now() -> None:
    free = [8 * GiB]
    budget = MemoryBudget(lambda: ([Device("CPU", "cpu", "cpu", free[0], 16 * GiB)], False))
    assert budget.reserve.ram_bytes == int(8 * GiB * 0.2)  # catalog.MEMORY_SHARE of it is the models'
    assert budget.capacity.ram_bytes == 8 * GiB - budget.reserve.ram_bytes
    assert budget.room(MemoryNeed(GiB)).ram_bytes == budget.capacity.ram_bytes - GiB
    free[0] = 4 * GiB  # another program took 4 GiB since the start
    assert budget.room(MemoryNeed(GiB)).ram_bytes == 4 * GiB - budget.reserve.ram_bytes
    # A given budget is taken as it is.
    given = MemoryBudget(lambda: ([Device("CPU", "cpu", "cpu", free[0], 16 * GiB)], False), ram_budget_bytes=10 * GiB)
    assert given.room(MemoryNeed(GiB)).ram_bytes == 9 * GiB


# -- unloading -------------------------------------------------------------------------------


def test_unload_of_a_model_in_use_happens_when_its_requests_end(make_library: Callable[..., Library[FakeModel]]) -> None:
    loader = FakeLoader()
    library = make_library(loader=loader)
    events = library.subscribe()
    held = library.acquire("a")
    library.unload("a")
    info = library.info("a")
    assert info.status is Status.LOADED and info.unloading and loader.unloads == []
    # A request that comes after the unload waits for it, then loads the model again.
    thread, out = in_thread(lambda: library.acquire("a"))
    wait_until(library, "a", lambda i: i.requests_waiting == 1)  # type: ignore[attr-defined]
    held.release()
    assert next_event(events, "a", status="unloaded").data == {"status": "unloaded", "reason": "asked"}
    thread.join(WAIT_S)
    assert isinstance(out[0], Lease) and not out[0].model.closed
    assert loader.loads == ["a", "a"] and held.model.closed
    out[0].release()


def test_requests_waiting_for_a_load_are_served_before_an_unload_asked_meanwhile(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    loader = FakeLoader(gates={"a": threading.Event()})
    library = make_library(loader=loader)
    events = library.subscribe()
    thread, out = in_thread(lambda: library.acquire("a"))
    assert loader.started.wait(WAIT_S)
    library.unload("a")
    loader.gates["a"].set()
    thread.join(WAIT_S)
    assert isinstance(out[0], Lease)
    assert library.info("a").unloading
    out[0].release()
    assert next_event(events, "a", status="unloaded").data == {"status": "unloaded", "reason": "asked"}


def test_unload_and_load_errors_name_the_state(make_library: Callable[..., Library[FakeModel]]) -> None:
    loader = FakeLoader(gates={"b": threading.Event()})
    library = make_library(loader=loader)
    with pytest.raises(ModelStateError, match="'a' is not loaded") as err:
        library.unload("a")
    assert err.value.code == "model_not_loaded"
    library.load("a")
    wait_until(library, "a", lambda i: i.status is Status.LOADED)  # type: ignore[attr-defined]
    with pytest.raises(ModelStateError) as err:
        library.load("a")
    assert err.value.code == "model_already_loaded"
    library.load("b")
    with pytest.raises(ModelStateError, match="'b' is loading already") as err:
        library.load("b")
    assert err.value.code == "model_loading"
    loader.gates["b"].set()


def test_an_idle_model_is_unloaded_and_one_in_use_is_not(make_library: Callable[..., Library[FakeModel]]) -> None:
    library = make_library(idle_unload_s=0.05)
    events = library.subscribe()
    held = library.acquire("b")
    with library.acquire("a"):
        pass
    assert next_event(events, "a", status="unloaded").data == {"status": "unloaded", "reason": "idle"}
    # b has been held longer than the idle time by now.
    assert library.info("b").status is Status.LOADED
    held.release()
    assert next_event(events, "b", status="unloaded").data == {"status": "unloaded", "reason": "idle"}


def test_autoload_off_refuses_a_model_not_loaded_and_names_models_load(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    library = make_library(autoload=False)
    for act in (library.acquire, library.check):
        with pytest.raises(ModelStateError, match="loads models only when asked") as err:
            act("a")
        assert err.value.code == "model_not_loaded" and "POST /models/load" in (err.value.hint or "")
    with library.acquire("a", autoload=True):  # as llama-server's ?autoload=true
        pass
    with library.acquire("a"):  # loaded now
        pass


# -- failures --------------------------------------------------------------------------------


def test_a_model_that_fails_to_load_fails_its_own_requests_only(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    loader = FakeLoader(failing={"b": "llama.cpp could not load b.gguf"})
    library = make_library(loader=loader)
    events = library.subscribe()
    with pytest.raises(LoadFailed, match="'b' failed to load: llama.cpp could not load b.gguf"):
        library.acquire("b")
    assert next_event(events, "b", status="failed").data == {
        "status": "failed", "failed": True, "reason": "llama.cpp could not load b.gguf"}
    info = library.info("b")
    assert info.status is Status.FAILED and info.failure == "llama.cpp could not load b.gguf"
    with library.acquire("a") as lease:
        assert lease.model.name == "a"
    # The next request tries again (the file may have been fixed).
    del loader.failing["b"]
    with library.acquire("b"):
        pass
    assert loader.loads == ["b", "a", "b"]


def test_a_file_whose_header_cannot_be_read_fails_without_a_load(
    make_library: Callable[..., Library[FakeModel]],
) -> None:
    loader = FakeLoader(unreadable={"b"})
    library = make_library(loader=loader)
    info = {m.name: m for m in library.members()}["b"]
    assert info.status is Status.FAILED and "not a GGUF file" in (info.failure or "")
    with pytest.raises(LoadFailed, match="'b' cannot be loaded: cannot read the GGUF header"):
        library.acquire("b")
    assert loader.loads == []


# -- events and metrics ----------------------------------------------------------------------


def test_every_reader_gets_every_event_in_order(make_library: Callable[..., Library[FakeModel]]) -> None:
    library = make_library()
    readers = [library.subscribe() for _ in range(3)]
    with library.acquire("a"):
        pass
    library.unload("a")
    for reader in readers:
        got = [reader.get(WAIT_S) for _ in range(3)]
        assert [e.to_json() if e else None for e in got] == [
            {"model": "a", "event": "status_change", "data": {"status": "loading"}},
            {"model": "a", "event": "status_change", "data": {
                "status": "loaded", "info": {"context_length": 512, "parallel": 4, "load_s": got[1].data["info"]["load_s"]}}},  # type: ignore[index,union-attr]
            {"model": "a", "event": "status_change", "data": {"status": "unloaded", "reason": "asked"}},
        ]
        reader.close()


def test_a_reader_that_falls_behind_is_cut_off() -> None:
    hub = EventHub()
    slow, keeping_up = hub.subscribe(), hub.subscribe()
    for i in range(EVENTS_PENDING_MAX + 1):
        hub.publish(LibraryEvent("a", "status_change", {"n": i}))
        assert keeping_up.get(0) == LibraryEvent("a", "status_change", {"n": i})
    assert slow.closed and not keeping_up.closed
    # What it had is still read, then it ends.
    assert [slow.get(0) for _ in range(EVENTS_PENDING_MAX)][-1] == LibraryEvent(
        "a", "status_change", {"n": EVENTS_PENDING_MAX - 1})
    assert slow.get(0) is None
    keeping_up.close()
    hub.publish(LibraryEvent("a", "status_change"))
    assert keeping_up.get(0) is None
    hub.close()
    assert hub.subscribe().closed  # nothing more comes


def test_metrics_per_model(make_library: Callable[..., Library[FakeModel]]) -> None:
    loader = FakeLoader(failing={"c": "broken"})
    library = make_library(loader=loader, models_max=1)
    with library.acquire("a"):
        pass
    with library.acquire("b"):  # a is evicted
        pass
    library.unload("b")
    wait_until(library, "b", lambda i: i.status is Status.UNLOADED)  # type: ignore[attr-defined]
    with pytest.raises(LoadFailed):
        library.acquire("c")
    text = generate_latest(library.metrics.registry).decode()
    for line in ('llamaedge_model_loads_total{model="a",result="ok"} 1.0',
                 'llamaedge_model_loads_total{model="c",result="failed"} 1.0',
                 'llamaedge_model_unloads_total{model="a",reason="evicted"} 1.0',
                 'llamaedge_model_unloads_total{model="b",reason="asked"} 1.0',
                 'llamaedge_model_load_duration_seconds_count{model="b"} 1.0',
                 'llamaedge_model_loaded{model="a"} 0.0',
                 'llamaedge_model_loaded{model="b"} 0.0'):
        assert line in text, line
    with library.acquire("a"):
        assert 'llamaedge_model_loaded{model="a"} 1.0' in generate_latest(library.metrics.registry).decode()


# -- the estimate ----------------------------------------------------------------------------


SMOLLM2 = ModelFacts(size_bytes=98_362_432, architecture="llama", n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
                     n_embd=576, n_ff=1536, n_vocab=49152, n_ctx_train=8192)


@pytest.mark.parametrize(("ctx", "parallel", "mib"), [(4096, None, 201), (512, None, 121), (4096, 1, 199)])
def test_the_estimate_is_weights_kv_cache_and_compute(ctx: int, parallel: int | None, mib: int) -> None:
    # Measured RSS after load and a warm-up token: 193 MiB (4096 cells), 113 MiB (512): see memory.py.
    need = estimate_need(SMOLLM2, LoadOptions(ctx_size=ctx, parallel=parallel))
    assert need.vram_bytes == 0
    assert round(need.ram_bytes / MiB) == mib


def test_the_estimate_puts_offloaded_layers_on_the_gpu() -> None:
    cpu = estimate_need(SMOLLM2, LoadOptions(ctx_size=4096, n_gpu_layers=0))
    full = estimate_need(SMOLLM2, LoadOptions(ctx_size=4096, n_gpu_layers=-1))
    half = estimate_need(SMOLLM2, LoadOptions(ctx_size=4096, n_gpu_layers=15))
    assert full.ram_bytes < cpu.ram_bytes / 5 and full.vram_bytes > cpu.ram_bytes - full.ram_bytes
    assert full.ram_bytes < half.ram_bytes < cpu.ram_bytes
    assert 0 < half.vram_bytes < full.vram_bytes
    embedding = estimate_need(SMOLLM2, LoadOptions(ctx_size=4096), embedding=True)
    assert embedding.ram_bytes > cpu.ram_bytes + COMPUTE_OVERHEAD_BYTES // 8
    # A projector goes where the layers go: to the GPU when any layer does.
    projector = 300 * MiB
    assert estimate_need(SMOLLM2, LoadOptions(ctx_size=4096, n_gpu_layers=0), projector_bytes=projector) - cpu == (
        MemoryNeed(projector, 0))
    assert estimate_need(SMOLLM2, LoadOptions(ctx_size=4096, n_gpu_layers=15), projector_bytes=projector) - half == (
        MemoryNeed(0, projector))


def test_gpu_layers_are_planned_per_model_as_if_it_had_the_gpus_alone() -> None:
    gpu_device = Device("CUDA0", "a GPU", "gpu", 150 * MiB + 512 * MiB, 8 * GiB)
    budget = MemoryBudget(lambda: ([gpu_device, Device("CPU", "cpu", "cpu", 8 * GiB, 16 * GiB)], True))
    options = LoadOptions(ctx_size=4096)
    layers = budget.gpu_layers(SMOLLM2, options, None)
    assert 0 < layers < 30  # weights and cache (~180 MiB) exceed the 150 MiB usable
    assert budget.gpu_layers(SMOLLM2, options, 7) == 7  # --n-gpu-layers wins
    assert MemoryBudget(cpu_probe()).gpu_layers(SMOLLM2, options, None) == 0
