"""Bounds-checked access to a wasm instance's linear memory from a host function."""

from __future__ import annotations

import ctypes
import struct

from wasmtime import Caller, Memory


class GuestMemoryError(Exception):
    """A pointer or length from the guest points outside its memory (or it has no memory)."""


class GuestMemory:
    """The exported `memory` of the instance that made the current host call.

    Built per call (memory may grow, and move, between calls) and looked up only when a
    function touches memory: `compute_single`, the hottest call, never does."""

    def __init__(self, caller: Caller) -> None:
        self._caller = caller
        self._base = -1
        self._size = 0

    def _bounds(self) -> None:
        memory = self._caller.get("memory")
        if not isinstance(memory, Memory):
            raise GuestMemoryError("the module exports no memory named 'memory'")
        self._base = ctypes.addressof(memory.data_ptr(self._caller).contents)
        self._size = memory.data_len(self._caller)

    def check(self, ptr: int, length: int) -> None:
        """Raise GuestMemoryError unless [ptr, ptr+length) lies in guest memory."""
        self._check(ptr, length & 0xFFFFFFFF)

    def _check(self, ptr: int, length: int) -> int:
        if self._base < 0:
            self._bounds()
        ptr &= 0xFFFFFFFF  # wasm32 pointers arrive as signed i32
        if length < 0 or ptr + length > self._size:
            raise GuestMemoryError(f"range {ptr}+{length} is outside guest memory ({self._size} bytes)")
        return self._base + ptr

    def read(self, ptr: int, length: int) -> bytes:
        length &= 0xFFFFFFFF
        return ctypes.string_at(self._check(ptr, length), length) if length else b""

    def write(self, ptr: int, data: bytes) -> None:
        if data:
            ctypes.memmove(self._check(ptr, len(data)), data, len(data))

    def write_u32(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<I", value & 0xFFFFFFFF))

    def read_u32_pairs(self, ptr: int, count: int) -> list[tuple[int, int]]:
        """`count` consecutive `{u32 ptr, u32 len}` entries (a WASI-NN builder array)."""
        count &= 0xFFFFFFFF
        raw = self.read(ptr, 8 * count)
        return [struct.unpack_from("<II", raw, 8 * i) for i in range(count)]
