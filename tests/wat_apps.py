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
# Asks for 1 GiB more memory; exits 3 when refused (memory.grow returns -1).
MEMORY_HOG = f"""(module {_PRELUDE}
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 16384)) (i32.const -1)) (then (call $proc_exit (i32.const 3))))))"""


def write_app(directory: Path, name: str, wat: str) -> Path:
    path = directory / name
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path
