"""Loads and unloads on the library's threads: the loader's call, outside the library's
condition, and the member's state once it ends, under it (each load and unload is counted,
metrics.py, and goes out as a status event); and the threads themselves (`Workers`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from llamaedge.engine import LoadOptions
from llamaedge.errors import LlamaEdgeError
from llamaedge.library.events import EventHub, status_change
from llamaedge.library.loader import Loader, M
from llamaedge.library.metrics import LibraryMetrics
from llamaedge.library.state import Member
from llamaedge.library.types import NO_MEMORY, Status

log = logging.getLogger("llamaedge.library")


def run_load(loader: Loader[M], name: str, path: Path, options: LoadOptions) -> tuple[M | None, str | None, float]:
    """The model, or None and why it failed, and the seconds the load took."""
    started = time.monotonic()
    model: M | None = None
    failure: str | None = None
    try:
        model = loader.load(path, options)
    except LlamaEdgeError as err:
        failure = str(err)
    except Exception as exc:  # the member fails; the library goes on
        log.exception("loading %s failed", name)
        failure = f"internal error: {exc}"
    return model, failure, time.monotonic() - started


def settle_load(member: Member[M], epoch: int, model: M | None, failure: str | None, load_s: float,
                metrics: LibraryMetrics, events: EventHub) -> bool:
    """The member's state once load `epoch` ended; whether it is loaded."""
    if failure is not None or model is None:
        member.status, member.failure, member.failed_epoch = Status.FAILED, failure, epoch
        member.unload_reason, member.cutoff, member.early_waiting = None, None, 0
        metrics.loads.labels(member.name, "failed").inc()
        log.error("cannot load %s: %s", member.name, failure)
        events.publish(status_change(member.name, {"status": Status.FAILED.value, "failed": True, "reason": failure}))
        return False
    member.status, member.model, member.load_s = Status.LOADED, model, load_s
    member.last_used = time.monotonic()
    metrics.loads.labels(member.name, "ok").inc()
    metrics.load_seconds.labels(member.name).observe(load_s)
    log.info("loaded %s in %.1fs (ctx %d, %d slots)", member.name, load_s, model.n_ctx, model.parallel)
    events.publish(status_change(member.name, {"status": Status.LOADED.value, "info": {
        "context_length": model.n_ctx, "parallel": model.parallel, "load_s": round(load_s, 3)}}))
    return True


def run_unload(loader: Loader[M], name: str, model: M) -> None:
    try:
        loader.unload(model)
    except Exception:  # its memory may stay taken; the member is unloaded all the same
        log.exception("unloading %s failed", name)


def settle_unload(member: Member[M], reason: str, metrics: LibraryMetrics, events: EventHub) -> None:
    """The member's state once its model is freed: unloaded, its memory free."""
    member.status, member.model, member.closing = Status.UNLOADED, None, False
    member.need = NO_MEMORY
    member.unload_reason, member.cutoff, member.early_waiting = None, None, 0
    metrics.unloads.labels(member.name, reason).inc()
    log.info("unloaded %s (%s)", member.name, reason)
    events.publish(status_change(member.name, {"status": Status.UNLOADED.value, "reason": reason}))


class Workers:
    """The library's threads. `joined` ones (loads, unloads, the idle reaper) are waited for by
    `join`; downloads are not (a stalled connection would hold the exit up)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._joined: set[threading.Thread] = set()

    def spawn(self, target: Callable[[], None], name: str, *, joined: bool = True) -> None:
        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._joined.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        if joined:
            with self._lock:
                self._joined.add(thread)
        thread.start()

    def join(self) -> None:
        """Wait for the joined threads, and for those they start meanwhile."""
        while True:
            with self._lock:
                threads = list(self._joined)
            if not threads:
                return
            for thread in threads:
                thread.join()
