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

This module holds the requests and the asking (load, unload, pull, rescan, close) and the
decisions taken under the condition; the members' state is state.py's, the plan of a load
eviction.py's, the loads and unloads on threads loading.py's, the downloads pulls.py's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic

from prometheus_client import CollectorRegistry

from llamaedge import settings
from llamaedge.download import ProgressEvent
from llamaedge.engine import LoadOptions
from llamaedge.errors import LlamaEdgeError
from llamaedge.library import pulls
from llamaedge.library.errors import LibraryClosed, LoadFailed, ModelDownloading, ModelStateError, UnknownModel
from llamaedge.library.events import EventHub, LibraryEvent, Subscription, status_change
from llamaedge.library.eviction import estimate, held, need_of, no_room, plan_load
from llamaedge.library.loader import Loader, M
from llamaedge.library.loading import Workers, run_load, run_unload, settle_load, settle_unload
from llamaedge.library.memory import MemoryBudget, Probe, describe, probe_devices
from llamaedge.library.metrics import LibraryMetrics
from llamaedge.library.state import Member, MemberInfo, info_of
from llamaedge.library.types import LibraryConfig, MemberSource, MemoryNeed, ModelFacts, Status

log = logging.getLogger("llamaedge.library")


class Lease(Generic[M]):
    """A request's hold on a loaded model: it is not unloaded until every lease on it is
    released. `release` is idempotent; a lease is also a context manager."""

    def __init__(self, library: Library[M], member: Member[M], model: M) -> None:
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
        self._members: dict[str, Member[M]] = {s.name: Member(s) for s in members()}
        self._workers = Workers()
        self._closed = False
        self.metrics = LibraryMetrics(self._loaded_map, registry)
        if self.config.idle_unload_s > 0:
            self._workers.spawn(self._reap_idle, "llamaedge-idle")

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
            taken, loading = held(self._members.values())
            return {"capacity": self.budget.capacity, "held": taken, "room": self.budget.room(taken, loading)}

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
                            raise no_room(member, self._members.values())
                        self._cond.wait(deadline - now)
                        continue
                    joined = self._start_load(member, victims)
            finally:
                member.waiting -= 1
                if member.cutoff is not None and ticket < member.cutoff:
                    member.early_waiting -= 1
                self._maybe_unload(member)

    def _release(self, member: Member[M]) -> None:
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
                raise no_room(member, self._members.values())
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
                member.need = need_of(member, member.facts, self.config, self.budget)
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
            spec = pulls.spec_to_pull(member)
            self._check_open(name)
            member.status = Status.DOWNLOADING
            member.failure = None
            member.progress = {}
            member.cancel = cancel = threading.Event()
            self._publish_status(member, {"status": Status.DOWNLOADING.value})
            # Not waited for at close: a stalled connection would hold the exit up.
            self._workers.spawn(lambda: self._download(member, spec, cancel), f"llamaedge-pull-{name}", joined=False)

    def rescan(self) -> None:
        """List the members again (GET /models?reload=1): files added since are added, those
        gone are dropped unless loaded (or downloading); a member not loaded takes a projector
        added or removed beside it since."""
        found = {s.name: s for s in self._discover()}
        with self._cond:
            for name, source in found.items():
                member = self._members.get(name)
                if member is None:
                    self._members[name] = Member(source)
                elif member.status is not Status.DOWNLOADING and (member.source.path, member.source.mmproj) != (
                        source.path, source.mmproj):
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
        self._workers.join()  # loads under way end (and unload what they loaded), unloads end
        with self._cond:
            to_close = [(m, m.model) for m in self._members.values()
                        if m.status is Status.LOADED and m.model is not None and not m.closing]
            for member, _ in to_close:
                member.closing = True
        for member, model in to_close:
            assert model is not None
            self._close_model(member, model, "shutdown")
        self.events.close()

    # -- under the condition -----------------------------------------------------------------

    def _get(self, name: str) -> Member[M]:
        member = self._members.get(name)
        if member is None:
            raise UnknownModel(f"the model '{name}' does not exist", model=name,
                               hint="GET /models lists the models of this server")
        return member

    def _check_open(self, name: str) -> None:
        if self._closed:
            raise LibraryClosed("the server is shutting down", model=name)

    def _check_loadable(self, member: Member[M], autoload: bool) -> None:
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

    def _facts(self, member: Member[M]) -> ModelFacts | None:
        if member.facts is None and member.facts_error is None and member.source.path is not None:
            try:
                self._set_facts(member, self.loader.inspect(member.source.path), None)
            except LlamaEdgeError as err:
                self._set_facts(member, None, str(err))
        return member.facts

    def _set_facts(self, member: Member[M], facts: ModelFacts | None, error: str | None) -> None:
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

    def _estimate(self, member: Member[M]) -> tuple[LoadOptions, MemoryNeed]:
        """The options `member` loads with and what it needs (eviction.estimate), its header
        read first."""
        self._facts(member)
        return estimate(member, self.config, self.budget)

    def _plan_load(self, member: Member[M]) -> list[Member[M]] | None:
        """The idle members to unload so that `member` fits (eviction.plan_load)."""
        _, need = self._estimate(member)
        return plan_load(member, need, list(self._members.values()), self.budget, self.config.models_max)

    def _start_load(self, member: Member[M], victims: list[Member[M]]) -> int:
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
        self._workers.spawn(lambda: self._load(member, epoch, path, options, closing), f"llamaedge-load-{member.name}")
        return epoch

    def _maybe_unload(self, member: Member[M]) -> None:
        """Begin an unload that waits for its requests, once they have ended."""
        if (member.unload_reason is not None and member.status is Status.LOADED and not member.closing
                and member.running == 0 and member.early_waiting == 0):
            self._begin_close(member, member.unload_reason)

    def _call_off_unload(self, member: Member[M]) -> None:
        member.unload_reason, member.cutoff, member.early_waiting = None, None, 0
        self._cond.notify_all()

    def _begin_close(self, member: Member[M], reason: str) -> None:
        model = member.model
        assert model is not None
        member.closing = True
        self._workers.spawn(lambda: self._close_model(member, model, reason), f"llamaedge-unload-{member.name}")

    def _publish_status(self, member: Member[M], data: dict[str, Any]) -> None:
        self.events.publish(status_change(member.name, data))

    def _loaded_map(self) -> dict[str, bool]:
        with self._cond:
            return {name: m.status is Status.LOADED and not m.closing for name, m in self._members.items()}

    def _info(self, member: Member[M]) -> MemberInfo:
        return info_of(member, estimate=lambda facts: need_of(member, facts, self.config, self.budget),
                       ctx_size=self.config.ctx_size, capacity=self.budget.capacity, started_at=self.started_at)

    # -- on threads of their own -------------------------------------------------------------

    def _load(self, member: Member[M], epoch: int, path: Path, options: LoadOptions,
              victims: list[tuple[Member[M], M | None]]) -> None:
        for victim, old in victims:  # their memory first
            assert old is not None
            self._close_model(victim, old, "evicted")
        model, failure, load_s = run_load(self.loader, member.name, path, options)
        with self._cond:
            if settle_load(member, epoch, model, failure, load_s, self.metrics, self.events):
                if self._closed:
                    self._begin_close(member, "shutdown")
                else:
                    self._maybe_unload(member)
            self._cond.notify_all()

    def _close_model(self, member: Member[M], model: M, reason: str) -> None:
        run_unload(self.loader, member.name, model)
        with self._cond:
            settle_unload(member, reason, self.metrics, self.events)
            self._cond.notify_all()

    def _download(self, member: Member[M], spec: str, cancel: threading.Event) -> None:
        def on_progress(event: ProgressEvent) -> None:
            progress = pulls.progress_of(event)
            if progress is not None:
                with self._cond:
                    member.progress = progress
                self.events.publish(LibraryEvent(member.name, "download_progress", progress))

        resolved, failure = pulls.fetch(member.name, spec, self.config.models_dir or settings.models_dir(), cancel,
                                        on_progress)
        with self._cond:
            pulls.settle(member, resolved, failure, self.events)
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
