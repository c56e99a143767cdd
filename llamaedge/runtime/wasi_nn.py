"""`wasi_ephemeral_nn`: the legacy WASI-NN ABI as WasmEdge's GGML plugin speaks it, on our
engine. Every function takes i32s and returns an error code; the cause of an error goes to
the log, and Python exceptions never cross into wasm.

Three lifetimes, as in the rest of the runtime:
- `GraphRegistry`: one per process. Preloaded names (`--nn-preload`) and loaded models.
- `NNSession`: one per app instance (one HTTP request, or one `run-wasm`). Its execution
  contexts, and whether its request was cancelled.
- `ExecutionContext`: one per `init_execution_context`: options, prompt, running sequence.
"""

from __future__ import annotations

import json
import logging
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

import llamaedge.engine as engine_mod
from llamaedge.engine import LoadOptions, Model, PromptTooLong, SamplingOptions, Sequence
from llamaedge.errors import ModelError, UsageError

log = logging.getLogger("llamaedge.wasi_nn")

MODULE = "wasi_ephemeral_nn"
ENCODING_AUTODETECT = 5
ENCODING_GGML = 6
_ENCODINGS = {"openvino": 0, "onnx": 1, "tensorflow": 2, "pytorch": 3, "tensorflowlite": 4,
              "autodetect": 5, "ggml": 6}
_TARGETS = {"cpu": 0, "gpu": 1, "tpu": 2, "auto": 3}


class Errno(IntEnum):
    SUCCESS = 0
    INVALID_ARGUMENT = 1
    INVALID_ENCODING = 2
    MISSING_MEMORY = 3
    BUSY = 4
    RUNTIME_ERROR = 5
    UNSUPPORTED_OPERATION = 6
    TOO_LARGE = 7
    NOT_FOUND = 8
    END_OF_SEQUENCE = 100
    CONTEXT_FULL = 101
    PROMPT_TOO_LONG = 102
    MODEL_NOT_FOUND = 103


class NNError(Exception):
    """Raised inside a host function: returned to the guest as `errno`, logged as message."""

    def __init__(self, errno: Errno, message: str) -> None:
        super().__init__(message)
        self.errno = errno


# ---------------------------------------------------------------------------------------------
# Options carried in metadata JSON

# Keys that shape the model or its context: they apply when a graph is first loaded.
_LOAD_KEYS: dict[str, tuple[str, type]] = {
    "ctx-size": ("ctx_size", int),
    "n-gpu-layers": ("n_gpu_layers", int),
    "threads": ("threads", int),
    "batch-size": ("batch_size", int),
    "ubatch-size": ("ubatch_size", int),
    "n-parallel": ("parallel", int),
    "use-mmap": ("use_mmap", bool),
    "main-gpu": ("main_gpu", int),
}
# Keys that shape one generation: they apply to the execution context that receives them.
_SAMPLING_KEYS: dict[str, tuple[str, type]] = {
    "n-predict": ("n_predict", int),
    "temp": ("temp", float),
    "top-p": ("top_p", float),
    "top-k": ("top_k", int),
    "min-p": ("min_p", float),
    "seed": ("seed", int),
    "repeat-penalty": ("repeat_penalty", float),
    "presence-penalty": ("presence_penalty", float),
    "frequency-penalty": ("frequency_penalty", float),
    "penalty-last-n": ("penalty_last_n", int),
    "grammar": ("grammar", str),
    "ignore-eos": ("ignore_eos", bool),
}
_CONTEXT_FLAGS = {"enable-log", "enable-debug-log", "stream-stdout", "reverse-prompt", "json-schema"}
# Accepted by WasmEdge, meaningless here: taken silently.
_ACCEPTED_NOOP = {"tensor-split", "flash-attn", "n-keep"}
# Modes this host does not offer: asking for one makes the next compute fail with
# "unsupported operation" rather than silently generating text instead.
_UNSUPPORTED_MODES = {"embedding": "embedding mode", "mmproj": "multimodal projectors", "image": "image input"}


def _convert(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise NNError(Errno.INVALID_ARGUMENT, f"metadata {key!r} must be true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise NNError(Errno.INVALID_ARGUMENT, f"metadata {key!r} must be an integer")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NNError(Errno.INVALID_ARGUMENT, f"metadata {key!r} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise NNError(Errno.INVALID_ARGUMENT, f"metadata {key!r} must be a string")
    return value


def parse_metadata(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NNError(Errno.INVALID_ARGUMENT, f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise NNError(Errno.INVALID_ARGUMENT, "metadata must be a JSON object")
    return data


def load_options_from(metadata: dict[str, Any], base: LoadOptions) -> LoadOptions:
    options = LoadOptions(**vars(base))
    for key, value in metadata.items():
        if key in _LOAD_KEYS:
            attr, kind = _LOAD_KEYS[key]
            setattr(options, attr, _convert(key, value, kind))
    if options.n_gpu_layers < -1:
        options.n_gpu_layers = -1
    return options


# ---------------------------------------------------------------------------------------------
# Preloads and graphs


@dataclass(frozen=True)
class Preload:
    name: str
    encoding: str
    target: str
    path: Path


def parse_preload(spec: str) -> Preload:
    """`NAME:ENCODING:TARGET:PATH`; the path may itself contain ':' (Windows drives)."""
    parts = spec.split(":", 3)
    if len(parts) != 4 or not parts[0] or not parts[3]:
        raise UsageError(f"bad --nn-preload {spec!r}", hint="use NAME:GGML:AUTO:PATH, e.g. default:GGML:AUTO:model.gguf")
    name, encoding, target, path = parts
    if encoding.lower() not in ("ggml", "autodetect"):
        raise UsageError(f"--nn-preload {spec!r}: encoding {encoding!r} is not supported", hint="use GGML")
    if target.lower() not in _TARGETS:
        raise UsageError(f"--nn-preload {spec!r}: unknown target {target!r}", hint="use AUTO, CPU or GPU")
    return Preload(name, encoding.upper(), target.upper(), Path(path))


class GraphRegistry:
    """Models by WASI-NN graph id, and the names they can be loaded by. Shared by every app
    instance in the process; loading a name twice returns the same graph."""

    def __init__(self, base_options: LoadOptions | None = None, preloads: list[Preload] | None = None) -> None:
        self.base_options = base_options or LoadOptions()
        self._preloads: dict[str, Preload] = {p.name: p for p in preloads or []}
        self._graphs: list[Model | None] = []
        self._by_name: dict[str, int] = {}
        self._owned: set[int] = set()  # loaded by an app (not registered by the host)
        self._lock = threading.Lock()

    def register(self, name: str, model: Model) -> int:
        """Offer an already loaded model under `name` (how `serve` provides `default`)."""
        with self._lock:
            self._graphs.append(model)
            graph = len(self._graphs) - 1
            self._by_name[name] = graph
            return graph

    def load_by_name(self, name: str, metadata: dict[str, Any]) -> int:
        with self._lock:
            if name in self._by_name:
                graph = self._by_name[name]
                self._warn_load_keys(name, metadata)
                return graph
            preload = self._preloads.get(name)
            if preload is None:
                raise NNError(Errno.NOT_FOUND, f"no model is preloaded as {name!r}")
            graph = self._load(preload.path, metadata)
            self._by_name[name] = graph
            return graph

    def load_path(self, path: Path, metadata: dict[str, Any]) -> int:
        with self._lock:
            return self._load(path, metadata)

    def _load(self, path: Path, metadata: dict[str, Any]) -> int:
        options = load_options_from(metadata, self.base_options)
        try:
            model = Model(path, options)
        except ModelError as exc:
            raise NNError(Errno.NOT_FOUND if not Path(path).is_file() else Errno.INVALID_ARGUMENT, str(exc)) from exc
        self._graphs.append(model)
        graph = len(self._graphs) - 1
        self._owned.add(graph)
        log.info("loaded graph %d from %s (ctx %d)", graph, Path(path).name, model.n_ctx)
        return graph

    def _warn_load_keys(self, name: str, metadata: dict[str, Any]) -> None:
        model = self._graphs[self._by_name[name]]
        ignored = sorted(k for k in metadata if k in _LOAD_KEYS)
        if ignored and model is not None:
            log.info("graph %r is already loaded; load-time keys %s keep their values", name, ignored)

    def get(self, graph: int) -> Model:
        if 0 <= graph < len(self._graphs):
            model = self._graphs[graph]
            if model is not None:
                return model
        raise NNError(Errno.INVALID_ARGUMENT, f"unknown graph id {graph}")

    def unload(self, graph: int) -> None:
        """Frees models an app loaded itself; models the host registered stay loaded."""
        with self._lock:
            model = self.get(graph)
            if graph in self._owned:
                self._graphs[graph] = None
                self._owned.discard(graph)
                for name, g in list(self._by_name.items()):
                    if g == graph:
                        del self._by_name[name]
                model.close()

    def close(self) -> None:
        with self._lock:
            for graph in sorted(self._owned):
                model = self._graphs[graph]
                if model is not None:
                    model.close()
                self._graphs[graph] = None
            self._owned.clear()


# ---------------------------------------------------------------------------------------------
# Execution contexts and sessions


@dataclass(eq=False)
class ExecutionContext:
    graph: int
    model: Model
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    flags: dict[str, Any] = field(default_factory=dict)  # stream-stdout, enable-log, reverse-prompt
    prompt: list[int] | None = None
    sequence: Sequence | None = None
    last_piece: bytes = b""
    output: bytearray = field(default_factory=bytearray)
    n_output_tokens: int = 0
    finish_reason: str | None = None
    started_s: float = 0.0

    def reset_generation(self) -> None:
        if self.sequence is not None:
            self.sequence.cancel()
        self.sequence = None
        self.last_piece = b""
        self.output = bytearray()
        self.n_output_tokens = 0
        self.finish_reason = None

    def apply_metadata(self, metadata: dict[str, Any]) -> None:
        for key, value in metadata.items():
            if key in _SAMPLING_KEYS:
                attr, kind = _SAMPLING_KEYS[key]
                setattr(self.sampling, attr, _convert(key, value, kind))
            elif key == "reverse-prompt":
                if not isinstance(value, str):
                    raise NNError(Errno.INVALID_ARGUMENT, "metadata 'reverse-prompt' must be a string")
                self.flags[key] = value
            elif key == "json-schema":
                self.sampling.grammar = _schema_to_grammar(value)
            elif key in _CONTEXT_FLAGS:
                self.flags[key] = bool(value)
            elif key in _UNSUPPORTED_MODES:
                if value:
                    self.flags["unsupported"] = _UNSUPPORTED_MODES[key]
            elif key in _LOAD_KEYS:
                log.info("metadata %r applies when a model is loaded; ignored here", key)
            elif key not in _ACCEPTED_NOOP:
                log.info("unknown metadata key %r ignored", key)


def _schema_to_grammar(schema: Any) -> str:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        return engine_mod.json_schema_grammar(text)
    except ValueError as exc:
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc


class NNSession:
    """The WASI-NN state of one app instance."""

    def __init__(self, registry: GraphRegistry, *, host_stdout: BinaryIO | None = None) -> None:
        self.registry = registry
        self.contexts: dict[int, ExecutionContext] = {}
        self._next_ctx = 0
        self.cancelled = threading.Event()
        self.host_stdout = host_stdout  # where stream-stdout prints (run-wasm: the terminal)

    def context(self, ctx: int) -> ExecutionContext:
        try:
            return self.contexts[ctx]
        except KeyError:
            raise NNError(Errno.INVALID_ARGUMENT, f"unknown execution context {ctx}") from None

    def new_context(self, graph: int) -> int:
        model = self.registry.get(graph)
        ctx = self._next_ctx
        self._next_ctx += 1
        self.contexts[ctx] = ExecutionContext(graph=graph, model=model)
        return ctx

    def cancel(self) -> None:
        """The client went away: stop generating now and fail the app's next call."""
        self.cancelled.set()
        for context in list(self.contexts.values()):
            if context.sequence is not None:
                context.sequence.cancel()

    def close(self) -> None:
        for context in self.contexts.values():
            context.reset_generation()
        self.contexts.clear()

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise NNError(Errno.RUNTIME_ERROR, "the request was cancelled (client disconnected)")


# ---------------------------------------------------------------------------------------------
# The functions


def write_output(mem: Any, data: bytes, out_ptr: int, out_max_len: int, written_ptr: int) -> None:
    mem.check(out_ptr, out_max_len)  # the whole buffer offered must be the guest's own
    mem.check(written_ptr, 4)
    if len(data) > (out_max_len & 0xFFFFFFFF):
        mem.write_u32(written_ptr, len(data))
        raise NNError(Errno.TOO_LARGE, f"output of {len(data)} bytes does not fit a buffer of {out_max_len & 0xFFFFFFFF}")
    mem.write(out_ptr, data)
    mem.write_u32(written_ptr, len(data))


def _start(context: ExecutionContext) -> Sequence:
    if context.sequence is not None:
        return context.sequence
    if context.flags.get("unsupported"):
        raise NNError(Errno.UNSUPPORTED_OPERATION, f"{context.flags['unsupported']} is not supported by this host")
    if context.prompt is None:
        raise NNError(Errno.INVALID_ARGUMENT, "no prompt: call set_input with index 0 first")
    context.started_s = time.monotonic()
    try:
        context.sequence = context.model.generate(context.prompt, context.sampling)
    except PromptTooLong as exc:
        raise NNError(Errno.PROMPT_TOO_LONG, str(exc)) from exc
    except ValueError as exc:  # a grammar that does not parse
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc
    return context.sequence


_FINISH_ERRNO = {
    engine_mod.FINISH_STOP: Errno.END_OF_SEQUENCE,
    engine_mod.FINISH_LENGTH: Errno.END_OF_SEQUENCE,
    engine_mod.FINISH_CONTEXT_FULL: Errno.CONTEXT_FULL,
}


def _log_stats(context: ExecutionContext) -> None:
    """`enable-log`: one line per generation, as WasmEdge's plugin prints its timings."""
    if context.flags.get("enable-log") or context.flags.get("enable-debug-log"):
        elapsed_s = max(time.monotonic() - context.started_s, 1e-9)
        log.info("generation %s: prompt %d tokens (%d cached), %d tokens generated in %.2fs (%.1f tokens/s)",
                 context.finish_reason, len(context.prompt or ()), context.sequence.n_cached if context.sequence else 0,
                 context.n_output_tokens, elapsed_s, context.n_output_tokens / elapsed_s)


def _finished(context: ExecutionContext, sequence: Sequence) -> NNError:
    reason = sequence.finish_reason or engine_mod.FINISH_ERROR
    context.finish_reason = "stop" if reason == engine_mod.FINISH_STOP else "length"
    _log_stats(context)
    errno = _FINISH_ERRNO.get(reason)
    if errno is None:
        return NNError(Errno.RUNTIME_ERROR, f"generation ended: {sequence.error or reason}")
    return NNError(errno, f"generation ended: {reason}")


class Functions:
    """The bodies of the `wasi_ephemeral_nn` imports. Each returns nothing on success and
    raises NNError otherwise; `mem` is the calling instance's GuestMemory."""

    def __init__(self, session_of: Callable[[], NNSession]) -> None:
        self.session_of = session_of

    def load(self, mem: Any, builders_ptr: int, builders_len: int, encoding: int, target: int, graph_ptr: int) -> None:
        if encoding not in (ENCODING_GGML, ENCODING_AUTODETECT):
            raise NNError(Errno.INVALID_ENCODING, f"encoding {encoding} is not supported (GGML is {ENCODING_GGML})")
        builders = mem.read_u32_pairs(builders_ptr, builders_len)
        if not builders:
            raise NNError(Errno.INVALID_ARGUMENT, "load needs at least one builder (the model)")
        first = mem.read(*builders[0])
        metadata = parse_metadata(mem.read(*builders[1])) if len(builders) > 1 else {}
        session = self.session_of()
        if first.startswith(b"preload:"):
            path = Path(first[len(b"preload:"):].decode("utf-8", errors="replace"))
            graph = session.registry.load_path(path, metadata)
        else:
            # llama.cpp loads from files: keep the bytes in a temporary file while loading.
            with tempfile.NamedTemporaryFile(suffix=".gguf") as tmp:
                tmp.write(first)
                tmp.flush()
                graph = session.registry.load_path(Path(tmp.name), {**metadata, "use-mmap": False})
        mem.write_u32(graph_ptr, graph)

    def load_by_name(self, mem: Any, name_ptr: int, name_len: int, graph_ptr: int) -> None:
        name = mem.read(name_ptr, name_len).decode("utf-8", errors="replace")
        mem.write_u32(graph_ptr, self.session_of().registry.load_by_name(name, {}))

    def load_by_name_with_config(self, mem: Any, name_ptr: int, name_len: int, config_ptr: int,
                                 config_len: int, graph_ptr: int) -> None:
        name = mem.read(name_ptr, name_len).decode("utf-8", errors="replace")
        metadata = parse_metadata(mem.read(config_ptr, config_len))
        mem.write_u32(graph_ptr, self.session_of().registry.load_by_name(name, metadata))

    def init_execution_context(self, mem: Any, graph: int, ctx_ptr: int) -> None:
        session = self.session_of()
        ctx = session.new_context(graph)
        try:
            mem.write_u32(ctx_ptr, ctx)
        except Exception:
            del session.contexts[ctx]
            raise

    def set_input(self, mem: Any, ctx: int, index: int, tensor_ptr: int) -> None:
        context = self.session_of().context(ctx)
        _dims_ptr, _dims_len, _type, data_ptr, data_len = struct.unpack("<5I", mem.read(tensor_ptr, 20))
        data = mem.read(data_ptr, data_len)
        if index == 0:
            context.reset_generation()
            context.prompt = context.model.tokenize(data)
            if len(context.prompt) >= context.model.n_ctx:
                raise NNError(Errno.PROMPT_TOO_LONG,
                              f"prompt of {len(context.prompt)} tokens does not fit the context of {context.model.n_ctx}")
        elif index == 1:
            context.apply_metadata(parse_metadata(data))
        else:
            raise NNError(Errno.INVALID_ARGUMENT, f"set_input index {index}: 0 is the prompt, 1 the metadata")

    def compute(self, mem: Any, ctx: int) -> None:
        session = self.session_of()
        context = session.context(ctx)
        session.check_cancelled()
        context.reset_generation()
        sequence = _start(context)
        stop = context.flags.get("reverse-prompt") or None
        for piece in sequence:
            session.check_cancelled()
            context.output += piece
            context.n_output_tokens += 1
            self._echo(session, context, piece)
            if stop and stop.encode() in context.output:
                del context.output[context.output.index(stop.encode()):]
                sequence.cancel()
                context.finish_reason = "stop"
                _log_stats(context)
                return
        session.check_cancelled()
        error = _finished(context, sequence)
        if error.errno not in (Errno.END_OF_SEQUENCE,):
            raise error

    def compute_single(self, mem: Any, ctx: int) -> None:
        session = self.session_of()
        context = session.context(ctx)
        session.check_cancelled()
        sequence = _start(context)
        piece = sequence.next_piece()
        session.check_cancelled()
        if piece is None:
            context.last_piece = b""
            raise _finished(context, sequence)
        context.last_piece = piece
        context.output += piece
        context.n_output_tokens += 1
        self._echo(session, context, piece)

    def _echo(self, session: NNSession, context: ExecutionContext, piece: bytes) -> None:
        if context.flags.get("stream-stdout") and session.host_stdout is not None:
            session.host_stdout.write(piece)
            session.host_stdout.flush()

    def _metadata_output(self, context: ExecutionContext) -> bytes:
        sequence = context.sequence
        info = {
            "input_tokens": len(context.prompt or ()),
            "output_tokens": context.n_output_tokens,
            "cached_tokens": sequence.n_cached if sequence else 0,
            "finish_reason": context.finish_reason,
            "llama_build_number": 0,
            "llama_commit": engine_mod.LLAMA_CPP_PYTHON_VERSION,
        }
        return json.dumps(info).encode()

    def get_output(self, mem: Any, ctx: int, index: int, out_ptr: int, out_max_len: int, written_ptr: int) -> None:
        context = self.session_of().context(ctx)
        if index == 0:
            data = bytes(context.output)
        elif index == 1:
            data = self._metadata_output(context)
        else:
            raise NNError(Errno.INVALID_ARGUMENT, f"get_output index {index}: 0 is the text, 1 the metadata")
        write_output(mem, data, out_ptr, out_max_len, written_ptr)

    def get_output_single(self, mem: Any, ctx: int, index: int, out_ptr: int, out_max_len: int,
                          written_ptr: int) -> None:
        context = self.session_of().context(ctx)
        if index == 0:
            data = context.last_piece
        elif index == 1:
            data = self._metadata_output(context)
        else:
            raise NNError(Errno.INVALID_ARGUMENT, f"get_output_single index {index}: 0 is the token, 1 the metadata")
        write_output(mem, data, out_ptr, out_max_len, written_ptr)

    def fini_single(self, mem: Any, ctx: int) -> None:
        context = self.session_of().context(ctx)
        if context.sequence is not None:
            context.sequence.cancel()
        context.sequence = None
        context.last_piece = b""

    def unload(self, mem: Any, graph: int) -> None:
        self.session_of().registry.unload(graph)

    def finalize_execution_context(self, mem: Any, ctx: int) -> None:
        session = self.session_of()
        session.context(ctx).reset_generation()
        del session.contexts[ctx]


# name -> number of i32 parameters
SIGNATURES: dict[str, int] = {
    "load": 5,
    "load_by_name": 3,
    "load_by_name_with_config": 5,
    "init_execution_context": 2,
    "set_input": 3,
    "compute": 1,
    "get_output": 5,
    "compute_single": 1,
    "get_output_single": 5,
    "fini_single": 1,
    "unload": 1,
    "finalize_execution_context": 1,
}
