"""Runtime lifetimes: compiled code cached on disk; a fresh Store and instance per run, so
nothing one run leaves behind is seen by the next."""

from __future__ import annotations

import os
from pathlib import Path

import wasmtime

from llamaedge.runtime import GraphRegistry, NNSession, Runtime
from tests.wat_apps import _PRELUDE, write_app

# Increments a mutable global and a memory cell, then exits with the sum (2 on a fresh instance).
COUNTER = f"""(module {_PRELUDE}
  (global $calls (mut i32) (i32.const 0))
  (func (export "_start")
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store (i32.const 512) (i32.add (i32.load (i32.const 512)) (i32.const 1)))
    (call $proc_exit (i32.add (global.get $calls) (i32.load (i32.const 512))))))"""


def test_no_state_survives_between_runs(tmp_path: Path) -> None:
    runtime = Runtime(GraphRegistry(), cache=False)
    app = runtime.load_app(write_app(tmp_path, "counter.wasm", COUNTER))
    codes = [runtime.run(app, wasmtime.WasiConfig(), NNSession(runtime.registry)) for _ in range(3)]
    assert codes == [2, 2, 2]
    runtime.close()


def test_compiled_modules_are_cached_on_disk(tmp_path: Path) -> None:
    app_path = write_app(tmp_path, "counter.wasm", COUNTER)
    cache = Path(os.environ["LLAMAEDGE_HOME"]) / "cache" / "wasmtime"
    Runtime(GraphRegistry()).load_app(app_path)
    # Compiled code, not the usage statistics that wasmtime keeps beside it.
    cached = [p for p in cache.rglob("*") if p.is_file() and p.parent != cache and not p.name.endswith(".stats")]
    assert cached, f"nothing cached under {cache}"
    # The cached entry is what a second runtime loads (same key, not compiled and written again).
    before = {p: p.stat().st_mtime_ns for p in cached}
    Runtime(GraphRegistry()).load_app(app_path)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
