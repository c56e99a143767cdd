"""A run: one app instance executing on one thread, from `_start` to exit, and what the host
functions know of it. The runtime (host.py) enters a run around each instance; the host
functions (imports.py, and host.py's wrapper around every import) find it through a
thread-local, since a run executes on one thread. Both import this module; it imports
neither.

    App             a compiled app, ready to instantiate, and what it is granted
    RunLimits       the memory and the wasm time between two host calls a run may use
    ToolHost        what `llamaedge.call` calls (tools.py's Toolbox)
    Run             the run on this thread: its Store, session, guard, app, tools
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import wasmtime

from llamaedge.limits import APP_MEMORY_MAX_BYTES
from llamaedge.runtime.guard import RunGuard
from llamaedge.runtime.kv import KeyValueStore
from llamaedge.runtime.nn import Errno, NNError, NNSession
from llamaedge.runtime.policy import AppPolicy

EPOCH_TICK_S = 0.05


@dataclass
class RunLimits:
    memory_max_bytes: int = APP_MEMORY_MAX_BYTES
    wasm_slice_max_s: float = 5.0  # wasm time between two host calls

    @property
    def deadline_ticks(self) -> int:
        return max(1, round(self.wasm_slice_max_s / EPOCH_TICK_S))


@dataclass(frozen=True)
class App:
    """A compiled app, ready to instantiate."""

    name: str
    pre: wasmtime.InstancePre
    policy: AppPolicy | None = None  # a mounted app's; None: the host's own app, trusted with its limits
    # Its keys in the key-value store: the namespace, and the bytes it may hold there (0: no
    # access). The host's own app has APP_KV_MAX_BYTES; a mounted app what its policy grants.
    kv_namespace: str = ""
    kv_max_bytes: int = 0


class ToolHost(Protocol):
    """What `llamaedge.call` calls (tools.py's Toolbox): run the tool `name` with `arguments`
    (JSON) under its policy capped by `caller` (None: the host's own app, trusted), within
    `seconds_left`; `chain`: the tools already running on this thread, outermost first.
    Returns whether it succeeded and the result's JSON text (the error's when it failed);
    None when there is no such tool."""

    def call_nested(self, name: str, arguments: bytes, caller: AppPolicy | None, seconds_left: float | None,
                    chain: tuple[str, ...]) -> tuple[bool, bytes] | None: ...


@dataclass(eq=False)  # a run is itself, not its fields
class Run:
    """What the host functions need to know about the run on this thread."""

    store: wasmtime.Store
    session: NNSession
    limits: RunLimits
    guard: RunGuard | None
    app: App | None = None
    kv: Callable[[], KeyValueStore] | None = None
    chain: tuple[str, ...] = ()  # the tools running on this thread, outermost first, this one last
    tools: ToolHost | None = None

    def deadline_ticks(self) -> int:
        """Epoch ticks until the wasm must next call the host: the slice, or less when the
        wall-time deadline comes first."""
        if self.guard is None:
            return self.limits.deadline_ticks
        # One tick more than the time left, so that the interrupt comes after the deadline.
        return max(1, min(self.limits.deadline_ticks, math.ceil(self.guard.seconds_left() / EPOCH_TICK_S) + 1))


_current = threading.local()
# The same runs by session, for host work done on other threads (wasmtime writes the app's
# stdout from a thread of its own).
_runs: weakref.WeakKeyDictionary[NNSession, Run] = weakref.WeakKeyDictionary()


@contextmanager
def entered(run: Run) -> Iterator[None]:
    """`run` is this thread's run inside the block. A run may start inside another's host
    call (`llamaedge.call`): the outer one is this thread's run again afterwards."""
    outer = getattr(_current, "run", None)
    _current.run = _runs[run.session] = run
    try:
        yield
    finally:
        _current.run = outer
        _runs.pop(run.session, None)


def running() -> Run | None:
    """This thread's run, if it has one."""
    return getattr(_current, "run", None)


def current_run() -> Run:
    """This thread's run, for a host function (which only a run calls)."""
    run = running()
    if run is None:  # only reachable if a module is run outside Runtime.run
        raise NNError(Errno.RUNTIME_ERROR, "host call outside a run")
    return run


def restart_wasm_slice(session: NNSession) -> None:
    """The host waited on `session`'s app outside a host call (a write to a client that does
    not read): that time is not the app's."""
    run = _runs.get(session)
    if run is not None:
        run.store.set_epoch_deadline(run.deadline_ticks())
