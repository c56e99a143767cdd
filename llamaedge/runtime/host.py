"""The WebAssembly runtime: wasmtime with WASI preview 1, `wasi_ephemeral_nn` (nn/) and the
host's own imports (imports.py: `llamaedge.chat_template`, `llamaedge.call`, `llamaedge_kv`,
`llamaedge_http`). `llamaedge.call` runs a mounted tool from inside an app or a tool
(docs/tools.md), through the runtime's `tool_host`.

Lifetimes: one wasmtime Engine and Linker per process (`Runtime`); one compiled Module and
InstancePre per app (`App`, compiled code cached on disk); one Store per run, never shared
between threads. The host functions find the run they serve (run.py) through a thread-local,
since a run executes on one thread from `_start` to exit.

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
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import wasmtime
from wasmtime import _ffi as wasmtime_ffi  # stdin from bytes has no public wrapper in wasmtime-py 50

from llamaedge.errors import AppError
from llamaedge.limits import APP_KV_MAX_BYTES
from llamaedge.runtime import imports, nn
from llamaedge.runtime.breaches import MemoryLimitReached, WallTimeExceeded
from llamaedge.runtime.guard import RunGuard
from llamaedge.runtime.guest import GuestMemory, GuestMemoryError
from llamaedge.runtime.kv import KeyValueStore
from llamaedge.runtime.nn import Errno, GraphRegistry, NNError, NNSession
from llamaedge.runtime.policy import AppPolicy
from llamaedge.runtime.run import EPOCH_TICK_S, App, Run, RunLimits, ToolHost, current_run, entered, running
from llamaedge.settings import cache_dir

log = logging.getLogger("llamaedge.runtime")


class AppTrap(AppError):
    """The app trapped (or was interrupted) while running."""


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
        functions = nn.Functions(lambda: current_run().session)
        for name, n_params in nn.SIGNATURES.items():
            self._define(nn.MODULE, name, n_params, getattr(functions, name))
        for module, name, n_params, body in imports.FUNCTIONS:
            self._define(module, name, n_params, body)

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
            run = running()
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
        run = Run(store, session, self.limits, guard, app, self.kv, chain, self.tool_host)
        store.set_epoch_deadline(run.deadline_ticks())
        try:
            with entered(run):
                yield store, app.pre.instantiate(store)
        finally:
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
