"""Small WASI command modules written in WAT, for testing the runtime without the chat app."""

from __future__ import annotations

from pathlib import Path

import wasmtime

_PRELUDE = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; write(fd, ptr, len) -> errno, through one iovec at address 0
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
"""


def _data(offset: int, text: str) -> str:
    escaped = "".join(f"\\{b:02x}" for b in text.encode())
    return f'(data (i32.const {offset}) "{escaped}")'


def writes_app(chunks: list[str], *, exit_code: int = 0, fd: int = 1) -> str:
    """Writes each chunk with its own fd_write, then exits (with proc_exit when non-zero).
    Exits with 99 as soon as a write fails."""
    data, calls, offset = [], [], 64
    for chunk in chunks:
        data.append(_data(offset, chunk))
        n = len(chunk.encode())
        calls.append(f"(if (call $write (i32.const {fd}) (i32.const {offset}) (i32.const {n})) "
                     f"(then (call $proc_exit (i32.const 99))))")
        offset += n
    exit_call = f"(call $proc_exit (i32.const {exit_code}))" if exit_code else ""
    return f"(module {_PRELUDE} {' '.join(data)} (func (export \"_start\") {' '.join(calls)} {exit_call}))"


RUNAWAY = f'(module {_PRELUDE} (func (export "_start") (loop $l (br $l))))'
TRAPS = f'(module {_PRELUDE} (func (export "_start") unreachable))'


def computes_for_app(seconds: float) -> str:
    """Spins until the monotonic clock has moved `seconds`, then exits 0. Reading the clock is
    a WASI call, which renews no deadline: to a time limit between host calls, this app
    computes all along."""
    return f"""(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func $now (result i64)
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 0)))
    (i64.load (i32.const 0)))
  (func (export "_start") (local $end i64)
    (local.set $end (i64.add (call $now) (i64.const {round(seconds * 1e9)})))
    (loop $spin (br_if $spin (i64.lt_u (call $now) (local.get $end))))))"""


# Asks for 1 GiB more memory; exits 3 when refused (memory.grow returns -1).
MEMORY_HOG = f"""(module {_PRELUDE}
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 16384)) (i32.const -1)) (then (call $proc_exit (i32.const 3))))))"""


def write_app(directory: Path, name: str, wat: str) -> Path:
    path = directory / name
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


# Exits with the errno of fd_prestat_get(3): 0 when a directory was preopened, 8 (EBADF) when not.
PREOPEN_PROBE = """(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (call $prestat (i32.const 3) (i32.const 16)))))"""

# Exits with the number of environment variables it was given.
ENV_COUNT = """(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $sizes (i32.const 0) (i32.const 4))) (call $proc_exit (i32.load (i32.const 0)))))"""


def nn_compute_app(prompt: str, metadata: str, *, at_load: bool = False) -> str:
    """What a WasmEdge GGML app does: load_by_name("default"), set metadata and prompt,
    compute, then print get_output(0) to stdout. Exits with the first failing errno. With
    `at_load`, the metadata goes to load_by_name_with_config instead of set_input(1)."""
    name, meta, text = "default", metadata, prompt
    layout = {"name": 1024, "meta": 1100, "prompt": 2048}
    nbytes = {k: len(v.encode()) for k, v in (("name", name), ("meta", meta), ("prompt", text))}
    name_args = f'(i32.const {layout["name"]}) (i32.const {nbytes["name"]})'
    meta_args = f'(i32.const {layout["meta"]}) (i32.const {nbytes["meta"]})'
    if at_load:
        load = f"(call $check (call $load_with_config {name_args} {meta_args} (i32.const 100)))"
        set_meta = ""
    else:
        load = f"(call $check (call $load_by_name {name_args} (i32.const 100)))"
        set_meta = f"(call $check (call $set_input (i32.load (i32.const 104)) (i32.const 1) (call $tensor {meta_args})))"
    return f"""(module
  (import "wasi_ephemeral_nn" "load_by_name" (func $load_by_name (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "load_by_name_with_config" (func $load_with_config (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "set_input" (func $set_input (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "compute" (func $compute (param i32) (result i32)))
  (import "wasi_ephemeral_nn" "get_output" (func $get_output (param i32 i32 i32 i32 i32) (result i32)))
  {_PRELUDE}
  {_data(layout["name"], name)} {_data(layout["meta"], meta)} {_data(layout["prompt"], text)}
  (func $check (param $rc i32) (if (local.get $rc) (then (call $proc_exit (local.get $rc)))))
  ;; tensor at 256: dims_ptr, dims_len, type, data_ptr, data_len
  (func $tensor (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 256) (i32.const 300)) (i32.store (i32.const 260) (i32.const 1))
    (i32.store (i32.const 264) (i32.const 0)) (i32.store (i32.const 268) (local.get $ptr))
    (i32.store (i32.const 272) (local.get $len)) (i32.const 256))
  (func (export "_start")
    {load}
    (call $check (call $init (i32.load (i32.const 100)) (i32.const 104)))
    {set_meta}
    (call $check (call $set_input (i32.load (i32.const 104)) (i32.const 0) (call $tensor (i32.const {layout["prompt"]}) (i32.const {nbytes["prompt"]}))))
    (call $check (call $compute (i32.load (i32.const 104))))
    (call $check (call $get_output (i32.load (i32.const 104)) (i32.const 0) (i32.const 8192) (i32.const 4096) (i32.const 108)))
    (drop (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 108))))))"""
