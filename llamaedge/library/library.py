"""The library: its members' lives (downloaded, loading, loaded, unloaded), the requests that
hold them, and the memory they share.

A request calls `acquire(name)` and gets a `Lease`; the model stays loaded while any lease
holds it. A member that is not loaded is loaded on a thread of the library's (autoload), and
every request for it meanwhile waits for that one load; requests to other members go on.
Before a load the library estimates what the model needs (memory.py) and unloads the least
recently used idle members until it fits the budget and `models_max`; a member with running
or waiting requests is never unloaded under them. When nothing can be unloaded the request
waits up to `room_wait_s` for a member to become idle, then gets NoRoom.

All state is guarded by one condition variable; loads, unloads and downloads run on threads
of their own, outside it. Unloading a member closes it on such a thread, and its memory counts
as taken until the close ends: only then is its status `unloaded`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic

from prometheus_client import CollectorRegistry

from llamaedge import catalog, settings
from llamaedge.download import ProgressEvent
from llamaedge.engine import LoadOptions, context_size
from llamaedge.errors import DownloadCancelled, LlamaEdgeError
from llamaedge.library.errors import (LibraryClosed, LoadFailed, ModelDownloading, ModelStateError, ModelTooLarge,
                                      NoRoom, UnknownModel)
from llamaedge.library.events import EventHub, LibraryEvent, Subscription
from llamaedge.library.loader import Loader, M
from llamaedge.library.memory import MemoryBudget, Probe, describe, estimate_need, probe_devices
from llamaedge.library.metrics import LibraryMetrics
from llamaedge.library.types import NO_MEMORY, LibraryConfig, MemberSource, MemoryNeed, ModelFacts, Source, Status

log = logging.getLogger("llamaedge.library")

# llama.cpp's pooling type RANK: a reranker.
_POOLING_RANK = "4"


@dataclass(frozen=True)
class MemberInfo:
    """A member as `GET /models` shows it."""

    name: str
    source: str
    status: Status
    downloaded: bool
    capabilities: list[str]
    size_bytes: int | None
    context_length: int | None
    created: int
    need: MemoryNeed | None  # the estimate; None when the file cannot be read
    fits: bool | None  # whether `need` fits the budget with nothing else loaded
    failure: str | None = None
    progress: dict[str, dict[str, int | None]] | None = None  # while downloading: {file: {done, total}}
    requests_running: int = 0
    requests_waiting: int = 0
    idle_s: float | None = None  # loaded and unused this long
    unloading: bool = False  # loaded, and an unload is under way or waits for its requests
    parallel: int | None = None  # loaded: its slots
    load_s: float | None = None


class _Member(Generic[M]):
    """One member's state; touched only under the library's condition."""

    def __init__(self, source: MemberSource) -> None:
        self.source = source
        self.status = Status.UNLOADED
        self.model: M | None = None
        self.facts: ModelFacts | None = None
        self.facts_error: str | None = None
        self.need: MemoryNeed = NO_MEMORY  # the estimate of the load under way or done
        self.running = 0  # leases held
        self.waiting = 0  # acquires waiting for it
        self.last_used = time.monotonic()
        self.failure: str | None = None
        self.load_epoch = 0  # loads started: a request that waited for load N fails with it
        self.failed_epoch = -1
        self.load_s: float | None = None
        self.closing = False  # being freed on a thread: still holds its memory
        # An unload asked for while requests hold it: requests that came before it (tickets
        # below the cutoff) are served, later ones wait for the unload and load it again.
        self.unload_reason: str | None = None
        self.tickets = 0
        self.cutoff: int | None = None
        self.early_waiting = 0
        self.progress: dict[str, dict[str, int | None]] | None = None
        self.cancel: threading.Event | None = None
        self.pinned = False  # the server was started with it: loaded for the server's life (adopt)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def holds_memory(self) -> bool:
        return self.status in (Status.LOADING, Status.LOADED)

    @property
    def idle(self) -> bool:
        return (self.status is Status.LOADED and not self.closing and not self.pinned and self.running == 0
                and self.waiting == 0)

    def usable_by(self, ticket: int) -> bool:
        return (self.status is Status.LOADED and not self.closing
                and (self.cutoff is None or ticket < self.cutoff))


class Lease(Generic[M]):
    """A request's hold on a loaded model: it is not unloaded until every lease on it is
    released. `release` is idempotent; a lease is also a context manager."""

    def __init__(self, library: Library[M], member: _Member[M], model: M) -> None:
        self._library = library
        self._member = member
        self.name = member.name
        self.model = model
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._library._release(self._member)

    def __enter__(self) -> Lease[M]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Library(Generic[M]):
    """The models a server serves on demand. `members` lists them (discovery, called again by
    `rescan`); `loader` makes and frees them; `probe` reports the devices' memory; metrics go
    into `registry` (a registry of its own when None)."""

    def __init__(self, loader: Loader[M], config: LibraryConfig | None = None, *,
                 members: Callable[[], list[MemberSource]], probe: Probe = probe_devices,
                 registry: CollectorRegistry | None = None) -> None:
        self.loader = loader
        self.config = config or LibraryConfig()
        self.budget = MemoryBudget(probe, self.config.memory_budget_bytes)
        self.events = EventHub()
        self.started_at = int(time.time())
        self._discover = members
        self._cond = threading.Condition()
        self._members: dict[str, _Member[M]] = {s.name: _Member(s) for s in members()}
        self._workers: set[threading.Thread] = set()  # threads close() waits for
        self._closed = False
        self.metrics = LibraryMetrics(self._loaded_map, registry)
        if self.config.idle_unload_s > 0:
            self._spawn(self._reap_idle, "llamaedge-idle")

    # -- reading -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._cond:
            return list(self._members)

    def members(self) -> list[MemberInfo]:
        """Every member, in discovery order."""
        self._inspect_all()
        with self._cond:
            return [self._info(m) for m in self._members.values()]

    def info(self, name: str) -> MemberInfo:
        with self._cond:
            member = self._get(name)
            self._facts(member)
            return self._info(member)

    def prompt_template(self, name: str) -> str:
        """The chat template a member is served with ("auto": its own)."""
        with self._cond:
            return self._get(name).source.prompt_template

    def loaded_models(self) -> list[tuple[str, M]]:
        """The members loaded now and their models (for the engine's gauges)."""
        with self._cond:
            return [(m.name, m.model) for m in self._members.values()
                    if m.status is Status.LOADED and m.model is not None]

    def memory(self) -> dict[str, MemoryNeed]:
        """The budget: `capacity`, what the members loaded and loading `held`, the `room` left."""
        with self._cond:
            held, loading = self._held()
            return {"capacity": self.budget.capacity, "held": held, "room": self.budget.room(held, loading)}

    def subscribe(self, loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        """The events from now on (events.py); `loop`: the asyncio loop that will read them."""
        return self.events.subscribe(loop)

    # -- requests ----------------------------------------------------------------------------

    def check(self, name: str, *, autoload: bool | None = None) -> None:
        """Raise now what `acquire` would raise at once (unknown, not downloaded, autoload off,
        too large, downloading), without waiting or loading: for the HTTP layer, before it
        gives the request a thread."""
        autoload = self.config.autoload if autoload is None else autoload
        with self._cond:
            member = self._get(name)
            if member.status is Status.LOADED or member.status is Status.LOADING:
                return
            self._check_loadable(member, autoload)
            self._estimate(member)

    def acquire(self, name: str, *, autoload: bool | None = None) -> Lease[M]:
        """The model `name`, loaded if need be, held until the lease is released. Blocks
        while it loads, or while it waits for room (up to room_wait_s). `autoload` overrides
        the config's (llama-server's `?autoload=`). UnknownModel, ModelStateError (not
        loaded with autoload off; not downloaded), ModelDownloading, ModelTooLarge, NoRoom,
        LoadFailed, LibraryClosed."""
        autoload = self.config.autoload if autoload is None else autoload
        with self._cond:
            member = self._get(name)
            ticket = member.tickets
            member.tickets += 1
            member.waiting += 1
            joined: int | None = None  # the load this request waits for
            deadline: float | None = None
            try:
                while True:
                    if self._closed:
                        raise LibraryClosed("the server is shutting down", model=name)
                    if member.usable_by(ticket):
                        assert member.model is not None
                        member.running += 1
                        member.last_used = time.monotonic()
                        return Lease(self, member, member.model)
                    if member.status is Status.LOADING or member.status is Status.LOADED:
                        # Loading; or being unloaded (asked before this request came): wait.
                        if member.status is Status.LOADING:
                            joined = member.load_epoch
                        self._cond.wait()
                        continue
                    if member.status is Status.FAILED and joined == member.failed_epoch:
                        raise LoadFailed(f"the model '{name}' failed to load: {member.failure}", model=name)
                    self._check_loadable(member, autoload)
                    victims = self._plan_load(member)
                    if victims is None:
                        now = time.monotonic()
                        deadline = deadline if deadline is not None else now + self.config.room_wait_s
                        if now >= deadline:
                            raise self._no_room(member)
                        self._cond.wait(deadline - now)
                        continue
                    joined = self._start_load(member, victims)
            finally:
                member.waiting -= 1
                if member.cutoff is not None and ticket < member.cutoff:
                    member.early_waiting -= 1
                self._maybe_unload(member)

    def _release(self, member: _Member[M]) -> None:
        with self._cond:
            member.running -= 1
            member.last_used = time.monotonic()
            self._maybe_unload(member)
            self._cond.notify_all()

    # -- asking ------------------------------------------------------------------------------

    def load(self, name: str) -> None:
        """Start loading `name` and return (POST /models/load). ModelStateError when it is
        loading or loaded already, or not downloaded; NoRoom when the members loaded are in
        use; ModelTooLarge. A load asked of a member whose unload waits for its requests
        calls the unload off."""
        with self._cond:
            member = self._get(name)
            if member.status is Status.LOADING:
                raise ModelStateError(f"the model '{name}' is loading already", code="model_loading", model=name,
                                      hint="GET /models/sse says when it is loaded")
            if member.status is Status.LOADED:
                if member.closing:
                    raise ModelStateError(f"the model '{name}' is being unloaded", code="model_unloading",
                                          model=name, hint="load it again once it is unloaded")
                if member.unload_reason is not None:
                    self._call_off_unload(member)
                    return
                raise ModelStateError(f"the model '{name}' is loaded already", code="model_already_loaded", model=name)
            self._check_loadable(member, autoload=True)
            victims = self._plan_load(member)
            if victims is None:
                raise self._no_room(member)
            self._start_load(member, victims)

    def adopt(self, name: str, model: M, load_s: float | None = None) -> None:
        """Take in a model the server loaded itself before the library existed (the models
        it was started with, loaded first for a quick start), loaded as it is and pinned:
        never evicted, never unloaded for idleness or by asking, while the library lives."""
        with self._cond:
            member = self._get(name)
            assert member.status is Status.UNLOADED, f"{name} is {member.status.value}"
            member.status, member.model, member.load_s, member.pinned = Status.LOADED, model, load_s, True
            member.last_used = time.monotonic()
            if member.facts is None:
                self._facts(member)
            if member.facts is not None:
                member.need = estimate_need(member.facts, self._options(member, member.facts),
                                            embedding=self._embeds(member))
            self.metrics.loads.labels(member.name, "ok").inc()
            self._publish_status(member, {"status": Status.LOADED.value, "info": {
                "context_length": model.n_ctx, "parallel": model.parallel}})

    def unload(self, name: str) -> None:
        """Unload `name` (POST /models/unload): now when no request holds it, else when its
        requests (those running and those already waiting) end; a download of it is cancelled.
        ModelStateError when it is not loaded, or pinned (the server was started with it)."""
        with self._cond:
            member = self._get(name)
            if member.pinned:
                raise ModelStateError(f"the model '{name}' stays loaded: the server was started with it",
                                      code="model_pinned", model=name,
                                      hint="start the server without --model to load and unload every model on demand")
            if member.status is Status.DOWNLOADING:
                assert member.cancel is not None
                member.cancel.set()
                return
            if not member.holds_memory:
                raise ModelStateError(f"the model '{name}' is not loaded", code="model_not_loaded", model=name)
            if member.closing or member.unload_reason is not None:
                return
            member.unload_reason = "asked"
            member.cutoff = member.tickets
            member.early_waiting = member.waiting
            self._maybe_unload(member)

    def pull(self, name: str) -> None:
        """Start downloading `name` and return (POST /models/pull); progress goes out as
        events; `unload` cancels it. ModelStateError when it is downloaded, being downloaded,
        or not downloadable (a local file, the embedded model)."""
        with self._cond:
            member = self._get(name)
            spec = member.source.spec
            if member.status is Status.DOWNLOADING:
                raise ModelStateError(f"the model '{name}' is being downloaded", code="model_already_downloading",
                                      model=name, hint="GET /models/sse shows its progress")
            if member.source.path is not None:
                raise ModelStateError(f"the model '{name}' is downloaded already", code="model_already_downloaded",
                                      model=name)
            if spec is None:
                raise ModelStateError(f"the model '{name}' cannot be downloaded", code="model_not_downloadable",
                                      model=name)
            self._check_open(name)
            member.status = Status.DOWNLOADING
            member.failure = None
            member.progress = {}
            member.cancel = cancel = threading.Event()
            self._publish_status(member, {"status": Status.DOWNLOADING.value})
            # Not waited for at close: a stalled connection would hold the exit up.
            self._spawn(lambda: self._download(member, spec, cancel), f"llamaedge-pull-{name}", joined=False)

    def rescan(self) -> None:
        """List the members again (GET /models?reload=1): files added since are added, those
        gone are dropped unless loaded (or downloading)."""
        found = {s.name: s for s in self._discover()}
        with self._cond:
            for name, source in found.items():
                member = self._members.get(name)
                if member is None:
                    self._members[name] = _Member(source)
                elif member.status is not Status.DOWNLOADING and member.source.path != source.path:
                    if not member.holds_memory:
                        member.source, member.facts, member.facts_error = source, None, None
            for name in [n for n, m in self._members.items() if n not in found]:
                if self._members[name].status in (Status.UNLOADED, Status.FAILED):
                    del self._members[name]
                    self.events.publish(LibraryEvent(name, "model_remove"))
            self.events.publish(LibraryEvent("*", "models_reload"))

    def close(self) -> None:
        """Stop: cancel downloads, let loads under way end, and unload every member. The
        caller stops the requests first: a model still in use is freed all the same."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for member in self._members.values():
                if member.cancel is not None:
                    member.cancel.set()
            self._cond.notify_all()
        self._join_workers()  # loads under way end (and unload what they loaded), unloads end
        with self._cond:
            to_close = [(m, m.model) for m in self._members.values()
                        if m.status is Status.LOADED and m.model is not None and not m.closing]
            for member, _ in to_close:
                member.closing = True
        for member, model in to_close:
            assert model is not None
            self._close_model(member, model, "shutdown")
        self.events.close()

    def _join_workers(self) -> None:
        while True:
            with self._cond:
                workers = list(self._workers)
            if not workers:
                return
            for thread in workers:
                thread.join()

    # -- under the condition -----------------------------------------------------------------

    def _get(self, name: str) -> _Member[M]:
        member = self._members.get(name)
        if member is None:
            raise UnknownModel(f"the model '{name}' does not exist", model=name,
                               hint="GET /models lists the models of this server")
        return member

    def _check_open(self, name: str) -> None:
        if self._closed:
            raise LibraryClosed("the server is shutting down", model=name)

    def _check_loadable(self, member: _Member[M], autoload: bool) -> None:
        name = member.name
        self._check_open(name)
        if member.status is Status.DOWNLOADING:
            raise ModelDownloading(f"the model '{name}' is being downloaded; try again once it is", model=name)
        if member.source.path is None:
            raise ModelStateError(f"the model '{name}' is not downloaded", code="model_not_downloaded", model=name,
                                  hint=f'POST /models/pull {{"model": "{name}"}} downloads it')
        if not autoload:
            raise ModelStateError(
                f"the model '{name}' is not loaded, and this server loads models only when asked to",
                code="model_not_loaded", model=name, hint=f'load it first: POST /models/load {{"model": "{name}"}}')

    def _facts(self, member: _Member[M]) -> ModelFacts | None:
        if member.facts is None and member.facts_error is None and member.source.path is not None:
            try:
                self._set_facts(member, self.loader.inspect(member.source.path), None)
            except LlamaEdgeError as err:
                self._set_facts(member, None, str(err))
        return member.facts

    def _set_facts(self, member: _Member[M], facts: ModelFacts | None, error: str | None) -> None:
        """A file whose header cannot be read fails as a load would (it is what llama.cpp
        would say), without a load."""
        member.facts, member.facts_error = facts, error
        if error is not None and member.status is Status.UNLOADED:
            member.status, member.failure = Status.FAILED, error
            self._publish_status(member, {"status": Status.FAILED.value, "failed": True, "reason": error})

    def _inspect_all(self) -> None:
        """Read the headers of members not read yet, outside the condition (a few ms each)."""
        with self._cond:
            todo = [(m, m.source.path) for m in self._members.values()
                    if m.facts is None and m.facts_error is None and m.source.path is not None]
        for member, path in todo:
            try:
                facts, error = self.loader.inspect(path), None
            except LlamaEdgeError as err:
                facts, error = None, str(err)
            with self._cond:
                if member.source.path == path and member.facts is None and member.facts_error is None:
                    self._set_facts(member, facts, error)

    def _embeds(self, member: _Member[M]) -> bool:
        """Whether the member gets an embedding context: embedding models, and rerankers
        (rank pooling runs on one of the same size)."""
        return bool({"embedding", "rerank"} & set(self._capabilities(member)))

    def _capabilities(self, member: _Member[M]) -> list[str]:
        # `vision` only while loaded with a projector (the start model, `serve --mmproj`).
        if getattr(member.model, "vision", False):
            return [*[c for c in self._catalog_capabilities(member) if c != "vision"], "vision"]
        return self._catalog_capabilities(member)

    def _catalog_capabilities(self, member: _Member[M]) -> list[str]:
        entry = member.source.entry
        if entry is not None:
            return catalog.capabilities_of(entry)
        facts = member.facts
        if facts is None:
            return []
        found = catalog.capabilities_from_metadata(facts.metadata)
        if facts.metadata.get(f"{facts.architecture}.pooling_type") == _POOLING_RANK:
            found.append("rerank")
        return found

    def _options(self, member: _Member[M], facts: ModelFacts) -> LoadOptions:
        config = self.config
        base = LoadOptions(ctx_size=config.ctx_size, threads=config.threads, parallel=config.parallel)
        base.n_gpu_layers = self.budget.gpu_layers(facts, base, config.n_gpu_layers)
        return base

    def _estimate(self, member: _Member[M]) -> tuple[LoadOptions, MemoryNeed]:
        """The options `member` loads with and what it needs; LoadFailed when its file cannot
        be read, ModelTooLarge when it could never fit."""
        facts = self._facts(member)
        if facts is None:
            raise LoadFailed(f"the model '{member.name}' cannot be loaded: {member.facts_error}", model=member.name)
        options = self._options(member, facts)
        need = estimate_need(facts, options, embedding=self._embeds(member))
        if not need.fits(self.budget.capacity):
            raise ModelTooLarge(
                f"the model '{member.name}' needs about {describe(need)}, and this server's models may take "
                f"{describe(self.budget.capacity)} in all", model=member.name,
                need_bytes=need.ram_bytes + need.vram_bytes,
                room_bytes=self.budget.capacity.ram_bytes + self.budget.capacity.vram_bytes)
        return options, need

    def _held(self) -> tuple[MemoryNeed, MemoryNeed]:
        """What the members loaded and loading take, and what the loading ones take alone."""
        held, loading = NO_MEMORY, NO_MEMORY
        for m in self._members.values():
            if m.holds_memory:
                held += m.need
                if m.status is Status.LOADING:
                    loading += m.need
        return held, loading

    def _plan_load(self, member: _Member[M]) -> list[_Member[M]] | None:
        """The idle members to unload so that `member` fits (least recently used first), or
        None when there is no room even with every idle member gone."""
        _, need = self._estimate(member)
        held, loading = self._held()
        room = self.budget.room(held, loading)
        count = sum(1 for m in self._members.values() if m.holds_memory and not m.closing)
        idle = sorted((m for m in self._members.values() if m.idle and m is not member and m.unload_reason is None),
                      key=lambda m: m.last_used)
        victims: list[_Member[M]] = []
        models_max = self.config.models_max
        while (models_max > 0 and count >= models_max) or not need.fits(room):
            if not idle:
                return None
            victim = idle.pop(0)
            victims.append(victim)
            count -= 1
            room += victim.need
        return victims

    def _no_room(self, member: _Member[M]) -> NoRoom:
        busy = [m.name for m in self._members.values() if m.holds_memory and not m.idle]
        return NoRoom(f"no room to load the model '{member.name}': the models loaded ({', '.join(busy) or 'none'}) "
                      "are in use", model=member.name, hint="try again shortly")

    def _start_load(self, member: _Member[M], victims: list[_Member[M]]) -> int:
        options, need = self._estimate(member)
        closing = []
        for victim in victims:
            victim.closing = True
            closing.append((victim, victim.model))
        member.status = Status.LOADING
        member.need = need
        member.failure = None
        member.load_epoch += 1
        epoch = member.load_epoch
        path = member.source.path
        assert path is not None
        self._publish_status(member, {"status": Status.LOADING.value})
        log.info("loading %s (%s)%s", member.name, describe(need),
                 f", unloading {', '.join(v.name for v in victims)}" if victims else "")
        self._spawn(lambda: self._load(member, epoch, path, options, closing), f"llamaedge-load-{member.name}")
        return epoch

    def _maybe_unload(self, member: _Member[M]) -> None:
        """Begin an unload that waits for its requests, once they have ended."""
        if (member.unload_reason is not None and member.status is Status.LOADED and not member.closing
                and member.running == 0 and member.early_waiting == 0):
            self._begin_close(member, member.unload_reason)

    def _call_off_unload(self, member: _Member[M]) -> None:
        member.unload_reason, member.cutoff, member.early_waiting = None, None, 0
        self._cond.notify_all()

    def _begin_close(self, member: _Member[M], reason: str) -> None:
        model = member.model
        assert model is not None
        member.closing = True
        self._spawn(lambda: self._close_model(member, model, reason), f"llamaedge-unload-{member.name}")

    def _publish_status(self, member: _Member[M], data: dict[str, Any]) -> None:
        self.events.publish(LibraryEvent(member.name, "status_change", data))

    def _loaded_map(self) -> dict[str, bool]:
        with self._cond:
            return {name: m.status is Status.LOADED and not m.closing for name, m in self._members.items()}

    def _info(self, member: _Member[M]) -> MemberInfo:
        source, facts, entry = member.source, member.facts, member.source.entry
        loaded = member.status is Status.LOADED and member.model is not None
        need: MemoryNeed | None = None
        if member.holds_memory:
            need = member.need
        elif facts is not None:
            need = estimate_need(facts, self._options(member, facts),
                                 embedding=self._embeds(member))
        elif entry is not None and source.path is None:
            need = MemoryNeed(entry.memory_bytes)  # the catalog's own figure, until there is a file to read
        if loaded:
            assert member.model is not None
            ctx: int | None = member.model.n_ctx
        elif facts is not None:
            ctx = context_size(self.config.ctx_size, facts.n_ctx_train)
        elif entry is not None:
            ctx = context_size(self.config.ctx_size, entry.context_length)
        else:
            ctx = None
        if facts is not None:
            size: int | None = facts.size_bytes
        else:
            size = entry.size_bytes if entry is not None else None
        created = self.started_at
        if source.path is not None:
            try:
                created = int(source.path.stat().st_mtime)
            except OSError:
                pass
        failure = member.failure if member.status is Status.FAILED else None
        return MemberInfo(
            name=member.name, source=source.source.value, status=member.status, downloaded=source.path is not None,
            capabilities=self._capabilities(member), size_bytes=size, context_length=ctx, created=created, need=need,
            fits=need.fits(self.budget.capacity) if need is not None else None,
            failure=failure,
            progress=dict(member.progress) if member.progress is not None else None,
            requests_running=member.running, requests_waiting=member.waiting,
            idle_s=time.monotonic() - member.last_used if member.idle else None,
            unloading=loaded and (member.closing or member.unload_reason is not None),
            parallel=member.model.parallel if loaded and member.model is not None else None,
            load_s=member.load_s if loaded else None,
        )

    # -- on threads of their own -------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str, *, joined: bool = True) -> None:
        """Run `target` on a thread; `joined`: close() waits for it."""
        def run() -> None:
            try:
                target()
            finally:
                with self._cond:
                    self._workers.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        if joined:
            with self._cond:
                self._workers.add(thread)
        thread.start()

    def _load(self, member: _Member[M], epoch: int, path: Path, options: LoadOptions,
              victims: list[tuple[_Member[M], M | None]]) -> None:
        for victim, model in victims:  # their memory first
            assert model is not None
            self._close_model(victim, model, "evicted")
        started = time.monotonic()
        model: M | None = None
        failure: str | None = None
        try:
            model = self.loader.load(path, options)
        except LlamaEdgeError as err:
            failure = str(err)
        except Exception as exc:  # the member fails; the library goes on
            log.exception("loading %s failed", member.name)
            failure = f"internal error: {exc}"
        load_s = time.monotonic() - started
        with self._cond:
            if failure is not None or model is None:
                member.status, member.failure, member.failed_epoch = Status.FAILED, failure, epoch
                member.unload_reason, member.cutoff, member.early_waiting = None, None, 0
                self.metrics.loads.labels(member.name, "failed").inc()
                log.error("cannot load %s: %s", member.name, failure)
                self._publish_status(member, {"status": Status.FAILED.value, "failed": True, "reason": failure})
            else:
                member.status, member.model, member.load_s = Status.LOADED, model, load_s
                member.last_used = time.monotonic()
                self.metrics.loads.labels(member.name, "ok").inc()
                self.metrics.load_seconds.labels(member.name).observe(load_s)
                log.info("loaded %s in %.1fs (ctx %d, %d slots)", member.name, load_s, model.n_ctx, model.parallel)
                self._publish_status(member, {"status": Status.LOADED.value, "info": {
                    "context_length": model.n_ctx, "parallel": model.parallel, "load_s": round(load_s, 3)}})
                if self._closed:
                    self._begin_close(member, "shutdown")
                else:
                    self._maybe_unload(member)
            self._cond.notify_all()

    def _close_model(self, member: _Member[M], model: M, reason: str) -> None:
        try:
            self.loader.unload(model)
        except Exception:  # its memory may stay taken; the member is unloaded all the same
            log.exception("unloading %s failed", member.name)
        with self._cond:
            member.status, member.model, member.closing = Status.UNLOADED, None, False
            member.need = NO_MEMORY
            member.unload_reason, member.cutoff, member.early_waiting = None, None, 0
            self.metrics.unloads.labels(member.name, reason).inc()
            log.info("unloaded %s (%s)", member.name, reason)
            self._publish_status(member, {"status": Status.UNLOADED.value, "reason": reason})
            self._cond.notify_all()

    def _download(self, member: _Member[M], spec: str, cancel: threading.Event) -> None:
        def on_progress(event: ProgressEvent) -> None:
            if event.status in ("downloading", "verifying"):
                progress = {event.name: {"done": event.completed, "total": event.total}}
                with self._cond:
                    member.progress = progress
                self.events.publish(LibraryEvent(member.name, "download_progress", progress))

        models_dir = self.config.models_dir or settings.models_dir()
        path: Path | None = None
        failure: str | None = None
        try:
            path = catalog.resolve_model(spec, models_dir=models_dir, pull=True, on_progress=on_progress,
                                         cancel=cancel).path
        except DownloadCancelled:
            failure = "cancelled"
        except LlamaEdgeError as err:
            failure = str(err)
        except Exception as exc:
            log.exception("downloading %s failed", member.name)
            failure = f"internal error: {exc}"
        with self._cond:
            member.progress, member.cancel = None, None
            if path is not None:
                kind = Source.MODELS_DIR if member.source.source is Source.CATALOG else member.source.source
                member.source = replace(member.source, path=path, source=kind)
                member.facts, member.facts_error = None, None
                member.status = Status.UNLOADED
                self.events.publish(LibraryEvent(member.name, "download_finished"))
                self._publish_status(member, {"status": Status.UNLOADED.value})
            elif failure == "cancelled":
                member.status = Status.UNLOADED
                self.events.publish(LibraryEvent(member.name, "download_failed", {"reason": failure}))
                self._publish_status(member, {"status": Status.UNLOADED.value, "reason": "cancelled"})
            else:
                member.status, member.failure = Status.FAILED, failure
                log.error("cannot download %s: %s", member.name, failure)
                self.events.publish(LibraryEvent(member.name, "download_failed", {"reason": failure}))
                self._publish_status(member, {"status": Status.FAILED.value, "failed": True, "reason": failure})
            self._cond.notify_all()

    def _reap_idle(self) -> None:
        """Unload members idle for idle_unload_s."""
        idle_s = self.config.idle_unload_s
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                wake = None
                for member in self._members.values():
                    if not member.idle or member.unload_reason is not None:
                        continue
                    expires = member.last_used + idle_s
                    if expires <= now:
                        self._begin_close(member, "idle")
                    else:
                        wake = expires if wake is None else min(wake, expires)
                self._cond.wait(None if wake is None else wake - now)
