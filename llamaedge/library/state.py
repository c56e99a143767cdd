"""The members' state: one member's, which only the library touches and only under its
condition, what it can do, and what `GET /models` shows of it (`MemberInfo`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic

from llamaedge import catalog
from llamaedge.engine import context_size
from llamaedge.library.loader import M
from llamaedge.library.types import NO_MEMORY, MemberSource, MemoryNeed, ModelFacts, Status

# llama.cpp's pooling type RANK: a reranker.
_POOLING_RANK = "4"
# What a member that gets an embedding context can do (and it reads no images).
_EMBEDS = frozenset({"embedding", "rerank"})


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


class Member(Generic[M]):
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


def capabilities(member: Member[M]) -> list[str]:
    """Its catalog entry's capabilities, or for another file those its header shows; and
    `vision` when it loads with a projector (one found on disk, members.py, or `serve
    --mmproj`), or a catalog vision model is not downloaded yet (pull fetches its projector)."""
    found = catalog_capabilities(member)
    entry = member.source.entry
    pull_brings_projector = member.source.path is None and entry is not None and entry.mmproj is not None
    if _projector(member, found) is not None or pull_brings_projector or getattr(member.model, "vision", False):
        return [*found, "vision"]
    return found


def projector_of(member: Member[M]) -> Path | None:
    """The projector `member` loads with (`MemberSource.mmproj`), unless it embeds or ranks:
    a text encoder beside a projector (one folder holding both) reads no images."""
    return _projector(member, catalog_capabilities(member))


def _projector(member: Member[M], found: list[str]) -> Path | None:
    return None if _EMBEDS.intersection(found) else member.source.mmproj


def catalog_capabilities(member: Member[M]) -> list[str]:
    """Its catalog entry's capabilities, or for another file those its header shows."""
    entry = member.source.entry
    if entry is not None:
        return catalog.capabilities_of(entry)
    facts = member.facts
    if facts is None:
        return []
    found = catalog.capabilities_from_metadata(facts.metadata)
    if facts.metadata.get(f"{facts.architecture}.pooling_type") == _POOLING_RANK and "rerank" not in found:
        found.append("rerank")
    return found


def embeds(member: Member[M]) -> bool:
    """Whether the member gets an embedding context: embedding models, and rerankers
    (rank pooling runs on one of the same size)."""
    return bool(_EMBEDS.intersection(capabilities(member)))


def info_of(member: Member[M], *, estimate: Callable[[ModelFacts], MemoryNeed], ctx_size: int | None,
            capacity: MemoryNeed, started_at: int) -> MemberInfo:
    """What `GET /models` shows of `member`: `estimate` gives what its file would need loaded,
    `ctx_size` is the library's context option, `capacity` its budget, and `started_at` the
    creation time of a member without a file."""
    source, facts, entry = member.source, member.facts, member.source.entry
    loaded = member.status is Status.LOADED and member.model is not None
    need: MemoryNeed | None = None
    if member.holds_memory:
        need = member.need
    elif facts is not None:
        need = estimate(facts)
    elif entry is not None and source.path is None:
        need = MemoryNeed(entry.memory_bytes)  # the catalog's own figure, until there is a file to read
    if loaded:
        assert member.model is not None
        ctx: int | None = member.model.n_ctx
    elif facts is not None:
        ctx = context_size(ctx_size, facts.n_ctx_train)
    elif entry is not None:
        ctx = context_size(ctx_size, entry.context_length)
    else:
        ctx = None
    if facts is not None:
        size: int | None = facts.size_bytes
    else:
        size = entry.size_bytes if entry is not None else None
    created = started_at
    if source.path is not None:
        try:
            created = int(source.path.stat().st_mtime)
        except OSError:
            pass
    failure = member.failure if member.status is Status.FAILED else None
    return MemberInfo(
        name=member.name, source=source.source.value, status=member.status, downloaded=source.path is not None,
        capabilities=capabilities(member), size_bytes=size, context_length=ctx, created=created, need=need,
        fits=need.fits(capacity) if need is not None else None,
        failure=failure,
        progress=dict(member.progress) if member.progress is not None else None,
        requests_running=member.running, requests_waiting=member.waiting,
        idle_s=time.monotonic() - member.last_used if member.idle else None,
        unloading=loaded and (member.closing or member.unload_reason is not None),
        parallel=member.model.parallel if loaded and member.model is not None else None,
        load_s=member.load_s if loaded else None,
    )
