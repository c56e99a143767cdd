"""The WebAssembly runtime: wasmtime with WASI preview 1, `wasi_ephemeral_nn`, the
`llamaedge` import, the `llamaedge_kv` key-value import (kv.py) and the `llamaedge_http`
import (http.py: a GET to the hosts a policy grants). `llamaedge.call` runs a mounted tool
from inside an app or a tool (docs/tools.md), through the runtime's `tool_host`.

Lifetimes: one wasmtime Engine and Linker per process (`Runtime`); one compiled Module and
InstancePre per app (`App`, compiled code cached on disk); one Store per run, never shared
between threads. Host functions find the run they serve through a thread-local, since a run
executes on one thread from `_start` to exit.

Limits: a Store may use `memory_max_bytes` of linear memory, and wasm may execute for at
most `wasm_slice_max_s` between two host calls (an epoch deadline that every host call
renews), so a trapping or runaway app fails its own run and nothing else. A mounted app
also has a policy (policy.py): its run's guard (guard.py) sets its memory limit and wall-time deadline,
and once the guard records a breach every host call fails, so the app can only exit.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import wasmtime
from wasmtime import _ffi as wasmtime_ffi  # stdin from bytes has no public wrapper in wasmtime-py 50

from llamaedge.engine import NoChatTemplate, TemplateError
from llamaedge.errors import AppError
from llamaedge.limits import APP_KV_MAX_BYTES, APP_MEMORY_MAX_BYTES, TOOL_CALL_DEPTH_MAX
from llamaedge.runtime import http, nn
from llamaedge.runtime.guest import GuestMemory, GuestMemoryError
from llamaedge.runtime.kv import KeyValueStore, QuotaExceeded
from llamaedge.runtime.breaches import MemoryLimitReached, PolicyBreach, WallTimeExceeded
from llamaedge.runtime.guard import RunGuard
from llamaedge.runtime.policy import AppPolicy
from llamaedge.runtime.nn import Errno, GraphRegistry, NNError, NNSession
from llamaedge.settings import cache_dir

log = logging.getLogger("llamaedge.runtime")

EPOCH_TICK_S = 0.05
HOST_MODULE = "llamaedge"
KV_MODULE = "llamaedge_kv"
HTTP_MODULE = "llamaedge_http"
# A key names a value within the app's namespace: short text, not data.
KV_KEY_MAX_BYTES = 1024


class AppTrap(AppError):
    """The app trapped (or was interrupted) while running."""


@dataclass
class RunLimits:
    memory_max_bytes: int = APP_MEMORY_MAX_BYTES
    wasm_slice_max_s: float = 5.0  # wasm time between two host calls

    @property
    def deadline_ticks(self) -> int:
        return max(1, round(self.wasm_slice_max_s / EPOCH_TICK_S))


class ToolHost(Protocol):
    """What `llamaedge.call` calls (tools.py's Toolbox): run the tool `name` with `arguments`
    (JSON) under its policy capped by `caller` (None: the host's own app, trusted), within
    `seconds_left`; `chain`: the tools already running on this thread, outermost first.
    Returns whether it succeeded and the result's JSON text (the error's when it failed);
    None when there is no such tool."""

    def call_nested(self, name: str, arguments: bytes, caller: AppPolicy | None, seconds_left: float | None,
                    chain: tuple[str, ...]) -> tuple[bool, bytes] | None: ...


class _Run:
    """What the host functions need to know about the run on this thread."""

    def __init__(self, store: wasmtime.Store, session: NNSession, limits: RunLimits, guard: RunGuard | None,
                 app: App | None = None, kv: Callable[[], KeyValueStore] | None = None,
                 chain: tuple[str, ...] = (), tools: ToolHost | None = None) -> None:
        self.store = store
        self.session = session
        self.limits = limits
        self.guard = guard
        self.app = app
        self.kv = kv
        self.chain = chain  # the tools running on this thread, outermost first, this one last
        self.tools = tools

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
_runs: weakref.WeakKeyDictionary[NNSession, _Run] = weakref.WeakKeyDictionary()


def restart_wasm_slice(session: NNSession) -> None:
    """The host waited on `session`'s app outside a host call (a write to a client that does
    not read): that time is not the app's."""
    run = _runs.get(session)
    if run is not None:
        run.store.set_epoch_deadline(run.deadline_ticks())


def _run() -> _Run:
    run = getattr(_current, "run", None)
    if run is None:  # only reachable if a module is run outside Runtime.run
        raise NNError(Errno.RUNTIME_ERROR, "host call outside a run")
    return run


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


class Runtime:
    def __init__(self, registry: GraphRegistry, *, limits: RunLimits | None = None, cache: bool = True,
                 kv_path: Path | None = None) -> None:
        self.registry = registry
        self.limits = limits or RunLimits()
        # Opened on first use, so that runs which never touch it leave no file.
        self._kv_path = kv_path
        self._kv: KeyValueStore | None = None
        self._kv_lock = threading.Lock()
        self.tool_host: ToolHost | None = None  # what `llamaedge.call` runs (the server's Toolbox)
        config = wasmtime.Config()
        config.epoch_interruption = True
        if cache:
            config.cache = str(_cache_config())
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self._define_imports()
        self._ticker_stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="llamaedge-epoch", daemon=True)
        self._ticker.start()

    # -- setup -------------------------------------------------------------------------------

    def _tick(self) -> None:
        while not self._ticker_stop.wait(EPOCH_TICK_S):
            self.engine.increment_epoch()

    def _define_imports(self) -> None:
        functions = nn.Functions(lambda: _run().session)
        for name, n_params in nn.SIGNATURES.items():
            self._define(nn.MODULE, name, n_params, getattr(functions, name))
        self._define(HOST_MODULE, "chat_template", 6, _chat_template)
        self._define(HOST_MODULE, "call", 7, _call)
        self._define(KV_MODULE, "get", 5, _kv_get)
        self._define(KV_MODULE, "set", 4, _kv_set)
        self._define(KV_MODULE, "delete", 2, _kv_delete)
        self._define(HTTP_MODULE, "get", 6, _http_get)

    def kv(self) -> KeyValueStore:
        """The key-value store, opened on first use."""
        with self._kv_lock:
            if self._kv is None:
                self._kv = KeyValueStore(self._kv_path)
            return self._kv

    def _define(self, module: str, name: str, n_params: int, body: Callable[..., None]) -> None:
        i32 = wasmtime.ValType.i32()
        ty = wasmtime.FuncType([i32] * n_params, [i32])

        def host_call(caller: wasmtime.Caller, *args: int) -> int:
            run = getattr(_current, "run", None)
            if run is not None and run.guard is not None and run.guard.breach is not None:
                return Errno.RUNTIME_ERROR  # the request failed its policy: nothing more for it
            try:
                body(GuestMemory(caller), *args)
                return Errno.SUCCESS
            except NNError as err:
                if err.errno not in (Errno.END_OF_SEQUENCE,):
                    log.info("%s.%s -> %d: %s", module, name, err.errno, err)
                return err.errno
            except GuestMemoryError as err:
                log.warning("%s.%s: %s", module, name, err)
                return Errno.INVALID_ARGUMENT
            except Exception:  # a host bug must fail the call, not unwind through wasm
                log.exception("%s.%s failed", module, name)
                return Errno.RUNTIME_ERROR
            finally:
                if run is not None:
                    # Time spent in the host (waiting for tokens) is not the app's.
                    run.store.set_epoch_deadline(run.deadline_ticks())

        self.linker.define_func(module, name, ty, host_call, access_caller=True)

    def close(self) -> None:
        self._ticker_stop.set()
        with self._kv_lock:
            if self._kv is not None:
                self._kv.close()
                self._kv = None

    # -- apps --------------------------------------------------------------------------------

    def load_app(self, path: Path, policy: AppPolicy | None = None, *, kv_namespace: str | None = None) -> App:
        """The app at `path`, compiled. Its key-value namespace is `kv_namespace` (default: the
        file's stem); the host's own app (no policy) may store APP_KV_MAX_BYTES there."""
        try:
            module = wasmtime.Module.from_file(self.engine, str(path))
            pre = self.linker.instantiate_pre(module)
        except FileNotFoundError as exc:
            raise AppError(f"app not found: {path}", hint="check the path to the .wasm file") from exc
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid module"
            raise AppError(f"cannot load {Path(path).name}: {first}",
                           hint="is it a wasm32-wasi command module?") from exc
        return App(name=Path(path).name, pre=pre, policy=policy, kv_namespace=kv_namespace or Path(path).stem,
                   kv_max_bytes=policy.kv_max_bytes if policy is not None else APP_KV_MAX_BYTES)

    @contextmanager
    def instance(self, app: App, wasi: wasmtime.WasiConfig, session: NNSession, guard: RunGuard | None = None,
                 chain: tuple[str, ...] = ()) -> Iterator[tuple[wasmtime.Store, wasmtime.Instance]]:
        """A fresh Store and instance of `app`, usable on this thread inside the block. A run
        may start inside another's host call (`llamaedge.call`): the outer one is this
        thread's run again afterwards."""
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=guard.policy.memory_max_bytes if guard else self.limits.memory_max_bytes)
        store.set_wasi(wasi)
        run = _Run(store, session, self.limits, guard, app, self.kv, chain, self.tool_host)
        store.set_epoch_deadline(run.deadline_ticks())
        outer = getattr(_current, "run", None)
        _current.run = _runs[session] = run
        try:
            yield store, app.pre.instantiate(store)
        finally:
            _current.run = outer
            _runs.pop(session, None)
            session.close()

    def run(self, app: App, wasi: wasmtime.WasiConfig, session: NNSession, guard: RunGuard | None = None,
            chain: tuple[str, ...] = ()) -> int:
        """Run the app's `_start` on this thread; return its exit code. Raises AppTrap, or
        with a guard the PolicyBreach that ended the run. `chain`: a tool's, the tools
        running on this thread (for nested calls), itself last."""
        memory: list[int] = [0]  # the instance's memory size when it ended
        try:
            with self.instance(app, wasi, session, guard, chain) as (store, instance):
                try:
                    start = instance.exports(store).get("_start")
                    if not isinstance(start, wasmtime.Func):
                        raise AppError(f"{app.name} has no _start: it is not a WASI command module")
                    start(store)
                    code = 0
                finally:
                    exported = instance.exports(store).get("memory")
                    if isinstance(exported, wasmtime.Memory):
                        memory[0] = exported.data_len(store)
        except wasmtime.ExitTrap as exit_trap:
            code = exit_trap.code
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            if guard is not None:
                interrupted = getattr(exc, "trap_code", None) == wasmtime.TrapCode.INTERRUPT
                _check_guard(app.name, guard, memory[0], failed=True,
                             out_of_time=interrupted and guard.seconds_left() < self.limits.wasm_slice_max_s)
            raise AppTrap(_describe_trap(app.name, exc, self.limits)) from exc
        if guard is not None:
            _check_guard(app.name, guard, memory[0], failed=code != 0)
        return code

    def run_attached(self, app: App, args: list[str], session: NNSession, *,
                     env: list[tuple[str, str]] | None = None,
                     dirs: list[tuple[str, str]] | None = None) -> int:
        """Run the app as this process's command: its stdio attached to ours, the given
        environment and (host, guest) directories only. Returns its exit code."""
        wasi = wasmtime.WasiConfig()
        wasi.argv = [app.name, *args]
        wasi.env = env or []
        wasi.inherit_stdin()
        wasi.inherit_stdout()
        wasi.inherit_stderr()
        for host_dir, guest_dir in dirs or []:
            wasi.preopen_dir(host_dir, guest_dir)
        return self.run(app, wasi, session)

    def run_command(self, app: App, args: list[str], session: NNSession) -> bytes:
        """Run the app as a command with `args`; return what it wrote to stdout."""
        out = bytearray()
        wasi = wasmtime.WasiConfig()
        wasi.argv = [app.name, *args]
        wasi.stdout_custom = out.extend
        code = self.run(app, wasi, session)
        if code != 0:
            raise AppError(f"{app.name} {' '.join(args)} exited with code {code}")
        return bytes(out)


def grant_dirs(wasi: wasmtime.WasiConfig, policy: AppPolicy) -> None:
    """Preopen the directories `policy` grants, read-only unless writable. wasmtime (cap-std)
    then refuses any path that leaves them: `..`, an absolute path, a symlink out."""
    for grant in policy.dirs:
        wasi.preopen_dir(str(grant.host), grant.guest, grant.writable)


def set_stdin_bytes(config: wasmtime.WasiConfig, data: bytes) -> None:
    vec = wasmtime_ffi.wasm_byte_vec_t()
    buffer = (ctypes.c_ubyte * len(data)).from_buffer_copy(data) if data else None
    wasmtime_ffi.wasm_byte_vec_new(ctypes.byref(vec), len(data), buffer)
    wasmtime_ffi.wasi_config_set_stdin_bytes(config.ptr(), ctypes.byref(vec))  # takes ownership


def _check_guard(app_name: str, guard: RunGuard, memory_bytes: int, *, failed: bool, out_of_time: bool = False) -> None:
    """Raise the breach that ended a guarded run, if one did. A run that failed with its
    memory at the limit (the next page would not fit) is taken to have hit it."""
    if guard.breach is None and failed and (guard.expired or out_of_time):
        guard.fail(WallTimeExceeded(f"{app_name} ran past its wall-time limit of {guard.policy.wall_time_s:g}s",
                                    hint="raise wall-time in its policy"))
    limit = guard.policy.memory_max_bytes
    if guard.breach is None and failed and memory_bytes + 65536 > limit:
        guard.fail(MemoryLimitReached(f"{app_name} failed at its memory limit of {limit / 2**20:g} MiB",
                                      hint="raise memory in its policy"))
    if guard.breach is not None:
        raise guard.breach


def _describe_trap(app_name: str, exc: Exception, limits: RunLimits) -> str:
    trap_code = getattr(exc, "trap_code", None)
    if trap_code == wasmtime.TrapCode.INTERRUPT:
        return f"{app_name} ran for more than {limits.wasm_slice_max_s:g}s without calling the host and was stopped"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    for line in lines:
        if line.startswith("wasm trap:") or "Caused by" in line:
            message = line
    return f"{app_name} trapped: {message}"


def _cache_config() -> Path:
    """wasmtime's compiled-code cache, under our cache directory."""
    directory = cache_dir() / "wasmtime"
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.toml"
    text = f"[cache]\ndirectory = {json.dumps(str(directory))}\n"
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return config


# ---------------------------------------------------------------------------------------------
# The `llamaedge` import


def _chat_template(mem: GuestMemory, graph: int, messages_ptr: int, messages_len: int,
                   out_ptr: int, out_max_len: int, written_ptr: int) -> None:
    """Render the graph's embedded chat template (see docs/host-interface.md)."""
    session = _run().session
    model = session.registry.get(graph)
    try:
        request: Any = json.loads(mem.read(messages_ptr, messages_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NNError(Errno.INVALID_ARGUMENT, f"chat_template input is not JSON: {exc}") from exc
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise NNError(Errno.INVALID_ARGUMENT, 'chat_template input must be {"messages": [...]}')
    tools, kwargs = request.get("tools"), request.get("chat_template_kwargs")
    if tools is not None and not isinstance(tools, list):
        raise NNError(Errno.INVALID_ARGUMENT, "chat_template: tools must be an array")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise NNError(Errno.INVALID_ARGUMENT, "chat_template: chat_template_kwargs must be an object")
    try:
        prompt = model.render_chat(request["messages"],
                                   add_generation_prompt=bool(request.get("add_generation_prompt", True)),
                                   tools=tools, template_kwargs=kwargs)
    except NoChatTemplate as exc:
        raise NNError(Errno.NOT_FOUND, str(exc)) from exc
    except TemplateError as exc:
        raise NNError(Errno.RUNTIME_ERROR, str(exc)) from exc
    nn.write_output(mem, prompt.encode(), out_ptr, out_max_len, written_ptr)


# ---------------------------------------------------------------------------------------------
# The `llamaedge_kv` import (docs/host-interface.md): the run's app's namespace only


def _kv_grant() -> tuple[KeyValueStore, str, int]:
    run = _run()
    app = run.app
    if app is None or run.kv is None or app.kv_max_bytes <= 0:
        name = app.name if app is not None else "this app"
        raise NNError(Errno.UNSUPPORTED_OPERATION, f"{name} is not granted the key-value store (policy key kv)")
    return run.kv(), app.kv_namespace, app.kv_max_bytes


def _kv_key(mem: GuestMemory, ptr: int, length: int) -> str:
    if not 0 < length <= KV_KEY_MAX_BYTES:
        raise NNError(Errno.INVALID_ARGUMENT, f"a key has 1 to {KV_KEY_MAX_BYTES} bytes, not {length}")
    try:
        return mem.read(ptr, length).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NNError(Errno.INVALID_ENCODING, "a key must be UTF-8") from exc


def _kv_get(mem: GuestMemory, key_ptr: int, key_len: int, out_ptr: int, out_max_len: int, written_ptr: int) -> None:
    """The value of a key: NOT_FOUND without one; TOO_LARGE (and its size written) when it
    does not fit the buffer."""
    store, namespace, _ = _kv_grant()
    key = _kv_key(mem, key_ptr, key_len)
    value = store.get(namespace, key)
    if value is None:
        raise NNError(Errno.NOT_FOUND, f"no key {key!r}")
    nn.write_output(mem, value, out_ptr, out_max_len, written_ptr)


def _kv_set(mem: GuestMemory, key_ptr: int, key_len: int, value_ptr: int, value_len: int) -> None:
    """Set a key; TOO_LARGE when the app's keys and values would exceed its quota."""
    store, namespace, quota = _kv_grant()
    key = _kv_key(mem, key_ptr, key_len)
    try:
        store.set(namespace, key, mem.read(value_ptr, value_len), quota)
    except QuotaExceeded as exc:
        raise NNError(Errno.TOO_LARGE, f"{namespace}: {exc}") from exc


def _kv_delete(mem: GuestMemory, key_ptr: int, key_len: int) -> None:
    """Delete a key: NOT_FOUND when there was none."""
    store, namespace, _ = _kv_grant()
    key = _kv_key(mem, key_ptr, key_len)
    if not store.delete(namespace, key):
        raise NNError(Errno.NOT_FOUND, f"no key {key!r}")


# ---------------------------------------------------------------------------------------------
# The `llamaedge_http` import (docs/tools.md): a GET to the hosts the run's policy grants


def _http_get(mem: GuestMemory, url_ptr: int, url_len: int, out_ptr: int, out_max_len: int,
              written_ptr: int, status_ptr: int) -> None:
    """GET a URL: the body into the buffer, its length and the HTTP status written; TOO_LARGE
    when the body was cut at the buffer's size (what fits is written). A host not granted is
    a breach: the run fails."""
    run = _run()
    policy = run.guard.policy if run.guard is not None else None
    name = run.app.name if run.app is not None else "the app"
    mem.check(out_ptr, out_max_len)
    mem.check(written_ptr, 4)
    mem.check(status_ptr, 4)
    try:
        url = mem.read(url_ptr, url_len).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NNError(Errno.INVALID_ENCODING, "the URL must be UTF-8") from exc
    try:
        target = http.check_url(url, policy, name)
    except PolicyBreach as breach:
        if run.guard is not None:
            run.guard.fail(breach)
        raise NNError(Errno.UNSUPPORTED_OPERATION, str(breach)) from breach
    timeout_s = max(0.1, run.guard.seconds_left()) if run.guard is not None else 30.0
    status, body, cut = http.get(target, timeout_s=timeout_s, max_bytes=out_max_len & 0xFFFFFFFF)
    mem.write(out_ptr, body)
    mem.write_u32(written_ptr, len(body))
    mem.write_u32(status_ptr, status)
    if cut:
        raise NNError(Errno.TOO_LARGE, f"the body of {url[:100]} is longer than the buffer of {len(body)} bytes")


# ---------------------------------------------------------------------------------------------
# `llamaedge.call`: a mounted tool, called from an app or a tool (docs/tools.md)


def _call(mem: GuestMemory, name_ptr: int, name_len: int, input_ptr: int, input_len: int, out_ptr: int,
          out_max_len: int, written_ptr: int) -> None:
    """Run the tool `name` with the JSON input; its result's JSON into the buffer. 0: it
    succeeded; RUNTIME_ERROR: it failed (or was refused), and `{"error", "code"}` is written;
    NOT_FOUND: no such tool; TOO_LARGE: the buffer is too small (its size needed written: the
    call ran, and asking again runs it again)."""
    run = _run()
    try:
        name = mem.read(name_ptr, name_len).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NNError(Errno.INVALID_ENCODING, "a tool name must be UTF-8") from exc
    arguments = mem.read(input_ptr, input_len)
    mem.check(out_ptr, out_max_len)
    mem.check(written_ptr, 4)
    if run.tools is None:
        raise NNError(Errno.NOT_FOUND, f"no tool {name!r}: this server mounts no tools")
    chain = " -> ".join((*run.chain, name))
    outcome: tuple[bool, bytes] | None
    if name in run.chain:
        outcome = (False, json.dumps({"error": f"a cycle of calls: {chain}", "code": "call_cycle"}).encode())
    elif len(run.chain) >= TOOL_CALL_DEPTH_MAX:
        outcome = (False, json.dumps({"error": f"calls nest at most {TOOL_CALL_DEPTH_MAX} deep: {chain}",
                                      "code": "call_too_deep"}).encode())
    else:
        policy = run.guard.policy if run.guard is not None else None
        seconds_left = run.guard.seconds_left() if run.guard is not None else None
        outcome = run.tools.call_nested(name, arguments, policy, seconds_left, run.chain)
    if outcome is None:
        raise NNError(Errno.NOT_FOUND, f"no tool {name!r}")
    ok, text = outcome
    nn.write_output(mem, text, out_ptr, out_max_len, written_ptr)
    if not ok:
        raise NNError(Errno.RUNTIME_ERROR, f"the call of {name} failed: {text[:200].decode(errors='replace')}")
