"""One call of a tool: a fresh instance of its module under its policy, the arguments (JSON)
on stdin, the result (JSON) on stdout (docs/tools.md).

The sandbox is the app's: the same Runtime, Store limits, epoch deadline and RunGuard, so a
tool's memory, wall time, directories, environment and hosts are enforced exactly as a
mounted app's are. What is a tool's own: no models (its policy grants none), no key-value
store, and a cap on what it writes to stdout.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

import wasmtime

from llamaedge.runtime import host
from llamaedge.runtime.host import Runtime
from llamaedge.runtime.nn import NNSession
from llamaedge.runtime.breaches import OutputTooLarge
from llamaedge.runtime.guard import RunGuard
from llamaedge.runtime.policy import AppPolicy
from llamaedge.runtime.run import App
from llamaedge.runtime.wagi import LineLog


@dataclass(frozen=True)
class ToolRun:
    """A run that ended without a breach or a trap: its exit code, stdout, and the last line
    it wrote to stderr."""

    exit_code: int
    stdout: bytes
    stderr_last: str


class _Output:
    """stdout, refused past `max_bytes`: the write fails (EFBIG) and `over` is called once."""

    def __init__(self, max_bytes: int, over: Callable[[], None]) -> None:
        self.data = bytearray()
        self._max_bytes = max_bytes
        self._over = over
        self.refused = False

    def write(self, data: bytes) -> int:
        if self.refused:
            return -errno.EFBIG
        if len(self.data) + len(data) > self._max_bytes:
            self.refused = True
            self._over()
            return -errno.EFBIG
        self.data += data
        return len(data)


def run_tool(runtime: Runtime, app: App, arguments: bytes, *, output_max_bytes: int,
             policy: AppPolicy | None = None, chain: tuple[str, ...] = ()) -> ToolRun:
    """Run one call of the tool `app` on this thread, under `policy` (default: the app's).
    `chain`: the tools running on this thread, this one last (nested calls). Raises
    PolicyBreach (its memory, wall time, a host not granted, too much output) or AppTrap; a
    tool that exits non-zero is a ToolRun all the same."""
    policy = policy or app.policy
    assert policy is not None, "a tool always runs under a policy"
    session = NNSession(runtime.registry)
    guard = RunGuard(app.name, policy, session)
    out = _Output(output_max_bytes, lambda: guard.fail(OutputTooLarge(
        f"{app.name} wrote more than {output_max_bytes} bytes of output", hint="return less, or page the result")))
    wasi = wasmtime.WasiConfig()
    wasi.argv = [app.name]
    wasi.env = list(policy.env)
    host.grant_dirs(wasi, policy)
    host.set_stdin_bytes(wasi, arguments)
    wasi.stdout_custom = out.write
    stderr = LineLog(app.name)
    wasi.stderr_custom = stderr.write
    try:
        code = runtime.run(app, wasi, session, guard, chain)
    finally:
        guard.close()
        stderr.flush()
    return ToolRun(code, bytes(out.data), stderr.last)
