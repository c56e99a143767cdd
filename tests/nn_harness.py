"""A wasm module that re-exports every host function, so tests can call the real imports
through real wasmtime with pointers into real guest memory."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wasmtime

from llamaedge.engine import FinishReason, Generation, LoadOptions, Model, ModelLoader, SamplingOptions, Token
from llamaedge.runtime import App, GraphRegistry, NNSession, Preload, Runtime
from llamaedge.runtime.nn import SIGNATURES

HOST_IMPORTS = {"chat_template": 6}


def harness_wat() -> str:
    imports, exports = [], []
    for module, table in (("wasi_ephemeral_nn", SIGNATURES), ("llamaedge", HOST_IMPORTS)):
        for name, n in table.items():
            params = " ".join(["i32"] * n)
            imports.append(f'(import "{module}" "{name}" (func ${module}_{name} (param {params}) (result i32)))')
            gets = " ".join(f"local.get {i}" for i in range(n))
            exports.append(f'(func (export "{name}") (param {params}) (result i32) {gets} call ${module}_{name})')
    return "(module\n" + "\n".join(imports) + '\n(memory (export "memory") 64)\n' + "\n".join(exports) + "\n)"


@dataclass
class Harness:
    """Calls into the harness instance. Memory layout: scratch data from 1024 upwards."""

    store: wasmtime.Store
    instance: wasmtime.Instance
    session: NNSession
    _next: int = 1024
    _out: dict[int, tuple[int, int]] = field(default_factory=dict)

    def call(self, name: str, *args: int) -> int:
        func = self.instance.exports(self.store)[name]
        assert isinstance(func, wasmtime.Func)
        return func(self.store, *args)

    @property
    def memory(self) -> wasmtime.Memory:
        memory = self.instance.exports(self.store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        return memory

    def alloc(self, data: bytes | int) -> int:
        """Copy bytes (or reserve n zero bytes) into guest memory; return the pointer."""
        raw = bytes(data) if isinstance(data, int) else data
        ptr = self._next
        self.memory.write(self.store, raw, ptr)
        self._next += (len(raw) + 15) & ~7
        return ptr

    def u32(self, ptr: int) -> int:
        return struct.unpack("<I", self.memory.read(self.store, ptr, ptr + 4))[0]

    def read(self, ptr: int, length: int) -> bytes:
        return bytes(self.memory.read(self.store, ptr, ptr + length))

    def tensor(self, data: bytes) -> int:
        dims = self.alloc(struct.pack("<I", len(data)))
        data_ptr = self.alloc(data)
        return self.alloc(struct.pack("<5I", dims, 1, 0, data_ptr, len(data)))

    # -- the common calls, returning (errno, value) -------------------------------------------

    def load_by_name(self, name: str, config: dict | None = None) -> tuple[int, int]:
        out = self.alloc(4)
        raw = name.encode()
        if config is None:
            rc = self.call("load_by_name", self.alloc(raw), len(raw), out)
        else:
            cfg = json.dumps(config).encode()
            rc = self.call("load_by_name_with_config", self.alloc(raw), len(raw), self.alloc(cfg), len(cfg), out)
        return rc, self.u32(out)

    def init_context(self, graph: int) -> tuple[int, int]:
        out = self.alloc(4)
        rc = self.call("init_execution_context", graph, out)
        return rc, self.u32(out)

    def set_input(self, ctx: int, index: int, data: bytes | dict) -> int:
        raw = json.dumps(data).encode() if isinstance(data, dict) else data
        return self.call("set_input", ctx, index, self.tensor(raw))

    def out_buffer(self, size: int) -> tuple[int, int]:
        """A reusable (buffer, written) pair of pointers for outputs of up to `size` bytes."""
        if size not in self._out:
            self._out[size] = (self.alloc(size), self.alloc(4))
        return self._out[size]

    def get_output(self, ctx: int, index: int, size: int = 65536, single: bool = False) -> tuple[int, bytes]:
        buf, written = self.out_buffer(size)
        rc = self.call("get_output_single" if single else "get_output", ctx, index, buf, size, written)
        return rc, self.read(buf, self.u32(written)) if rc == 0 else b""

    def metadata(self, ctx: int) -> dict:
        rc, raw = self.get_output(ctx, 1)
        assert rc == 0
        return json.loads(raw)

    def stream(self, ctx: int) -> tuple[bytes, int]:
        """compute_single + get_output_single until an end code; (bytes, end code)."""
        pieces = []
        while True:
            rc = self.call("compute_single", ctx)
            if rc != 0:
                return b"".join(pieces), rc
            status, piece = self.get_output(ctx, 0, single=True)
            assert status == 0
            pieces.append(piece)


@contextmanager
def harness(runtime: Runtime, app: App, session: NNSession | None = None) -> Iterator[Harness]:
    session = session or NNSession(runtime.registry)
    with runtime.instance(app, wasmtime.WasiConfig(), session) as (store, instance):
        yield Harness(store, instance, session)


def harness_app(runtime: Runtime) -> App:
    module = wasmtime.Module(runtime.engine, wasmtime.wat2wasm(harness_wat()))
    return App(name="harness.wasm", pre=runtime.linker.instantiate_pre(module))


def new_runtime(registry: GraphRegistry) -> Runtime:
    return Runtime(registry, cache=False)


@contextmanager
def preloaded(model: Path, *, name: str = "default", ctx_size: int = 256,
              loader: ModelLoader = Model) -> Iterator[tuple[GraphRegistry, Runtime]]:
    """A registry with `model` preloaded as `name` (2 threads, loaded by `loader`), and a
    runtime on it; both closed after."""
    registry = GraphRegistry(LoadOptions(threads=2, ctx_size=ctx_size), [Preload(name, "GGML", "AUTO", model)],
                             loader=loader)
    runtime = new_runtime(registry)
    try:
        yield registry, runtime
    finally:
        runtime.close()
        registry.close()


class _Ended:
    """A Generation that has ended before its first token."""

    finish_reason = FinishReason.STOP
    error = None
    n_cached = 0
    n_drafted = 0
    n_accepted = 0

    def next_token(self, timeout_s: float | None = None) -> Token | None:
        return None

    def cancel(self) -> None:
        pass


class StandInModel:
    """A LoadedModel without llama.cpp, for tests of the runtime's bookkeeping (loading,
    unloading, graphs) rather than of text: a token is a byte, every generation ends at once,
    every embedding is zeros, and a chat renders as its contents joined."""

    n_embd = 4

    def __init__(self, n_ctx: int = 64) -> None:
        self.n_ctx = n_ctx
        self.closed = False

    def tokenize(self, text: bytes, *, special: bool = True) -> list[int]:
        return list(text)

    def detokenize(self, tokens: list[int]) -> bytes:
        return bytes(tokens)

    def check_tokens(self, tokens: list[int]) -> None:
        pass

    def preserved_tokens(self, texts: list[str]) -> frozenset[int]:
        return frozenset()

    def check_sampling(self, sampling: SamplingOptions) -> None:
        pass

    def generate(self, prompt: list[int], sampling: SamplingOptions, *, group: object = None) -> Generation:
        return _Ended()

    def check_embedding_inputs(self, inputs: list[list[int]]) -> None:
        pass

    def embed(self, inputs: list[list[int]], *, norm: int = 2) -> np.ndarray:
        return np.zeros((len(inputs), self.n_embd), dtype=np.float32)

    can_rank = False

    def rank_input(self, query: bytes, document: bytes) -> list[int]:
        return list(query + document)

    def rank(self, inputs: list[list[int]]) -> list[float]:
        return [0.0] * len(inputs)

    def render_chat(self, messages: list[dict[str, object]], *, add_generation_prompt: bool = True,
                    tools: list[object] | None = None, template_kwargs: dict[str, object] | None = None) -> str:
        return "".join(str(message.get("content", "")) for message in messages)

    def close(self) -> None:
        self.closed = True
