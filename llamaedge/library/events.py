"""The library's events, for any number of readers (GET /models/sse), in llama-server's shapes:
`{"model": NAME, "event": KIND, "data": {...}}`.

    status_change       data {"status": VALUE, ...}: loading; loaded with "info"; unloaded
                        with "reason" (idle, evicted, asked, cancelled); failed with "reason"
                        and "failed": true; downloading
    download_progress   data {FILE: {"done": BYTES, "total": BYTES}}
    download_finished   (no data)
    download_failed     data {"reason": TEXT}
    models_reload       model "*": the members changed (rescan)

(llama-server's README calls the status event `model_status`; its code, which its clients
read, sends `status_change`: so do we.)

Events are published from any thread. A reader that falls EVENTS_PENDING_MAX events behind
is cut off (its `closed` is set and reading ends): it reconnects and reads `GET /models`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

EVENTS_PENDING_MAX = 1024


@dataclass(frozen=True)
class LibraryEvent:
    model: str
    event: str
    data: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "event": self.event}
        if self.data is not None:
            body["data"] = self.data
        return body


def status_change(model: str, data: dict[str, Any]) -> LibraryEvent:
    """A member's new status: `data` holds "status" and what goes with it (see above)."""
    return LibraryEvent(model, "status_change", data)


class Subscription:
    """One reader's events, in order. Read with `get` from a thread or `next` on an event
    loop (the one that subscribed: it is woken through it)."""

    def __init__(self, hub: EventHub, loop: asyncio.AbstractEventLoop | None) -> None:
        self._hub = hub
        self._pending: deque[LibraryEvent] = deque()
        self._cond = threading.Condition()
        self._loop = loop
        self._ready = asyncio.Event() if loop is not None else None
        self.closed = False

    def _put(self, event: LibraryEvent) -> None:
        with self._cond:
            if self.closed:
                return
            if len(self._pending) >= EVENTS_PENDING_MAX:
                self.closed = True  # too far behind: cut off rather than hold ever more
            else:
                self._pending.append(event)
            self._cond.notify_all()
        self._wake()

    def _wake(self) -> None:
        if self._loop is not None and self._ready is not None:
            try:
                self._loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:  # the loop is closed: nobody reads any more
                self.close()

    def get(self, timeout_s: float | None = None) -> LibraryEvent | None:
        """The next event; None when closed (and nothing is left) or after `timeout_s`."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self.closed, timeout_s)
            return self._pending.popleft() if self._pending else None

    async def next(self, timeout_s: float | None = None) -> LibraryEvent | None:
        """As `get`, on the subscribing event loop."""
        assert self._ready is not None, "subscribe(loop) to read on an event loop"
        while True:
            with self._cond:
                if self._pending:
                    return self._pending.popleft()
                if self.closed:
                    return None
                self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except asyncio.TimeoutError:
                return None

    def close(self) -> None:
        """The reader is done: what it did not read is dropped."""
        with self._cond:
            self.closed = True
            self._pending.clear()
            self._cond.notify_all()
        self._hub._drop(self)
        if self._loop is not None and self._ready is not None:
            try:
                self._loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:
                pass

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    def subscribe(self, loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        """A reader of the events from now on; closed at once when the hub is (nothing more comes)."""
        subscription = Subscription(self, loop)
        with self._lock:
            if not self._closed:
                self._subscriptions.add(subscription)
                return subscription
        subscription.close()
        return subscription

    def publish(self, event: LibraryEvent) -> None:
        with self._lock:
            readers = list(self._subscriptions)
        for reader in readers:
            reader._put(event)

    def _drop(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            readers = list(self._subscriptions)
        for reader in readers:
            reader.close()
