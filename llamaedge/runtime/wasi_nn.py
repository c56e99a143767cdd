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

from llamaedge.engine import (
    LLAMA_CPP_PYTHON_VERSION,
    BadInput,
    FinishReason,
    GrammarError,
    LoadOptions,
    Model,
    PromptTooLong,
    SamplingOptions,
    Sequence,
    Token,
    json_schema_grammar,
)
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
    "ignore-eos": ("ignore_eos", bool),
}
_CONTEXT_FLAGS = {"enable-log", "enable-debug-log", "stream-stdout", "embedding"}
# Keys that together make the grammar: rebuilt and checked whenever one of them changes.
_GRAMMAR_KEYS = {"grammar", "json-schema", "grammar-prefix", "grammar-suffix", "grammar-triggers"}
# Accepted by WasmEdge, meaningless here: taken silently.
_ACCEPTED_NOOP = {"tensor-split", "flash-attn", "n-keep"}
# Modes this host does not offer: asking for one makes the next compute fail with
# "unsupported operation" rather than silently generating text instead.
_UNSUPPORTED_MODES = {"mmproj": "multimodal projectors", "image": "image input"}


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


ModelLoader = Callable[[Path, LoadOptions], Model]


class GraphRegistry:
    """Models by WASI-NN graph id, and the names they can be loaded by. Shared by every app
    instance in the process; loading a name twice returns the same graph. `loader` makes a
    model of a file (the engine's Model; tests may give a stand-in)."""

    def __init__(self, base_options: LoadOptions | None = None, preloads: list[Preload] | None = None,
                 *, loader: ModelLoader = Model) -> None:
        self.base_options = base_options or LoadOptions()
        self.loader = loader
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
            try:
                with open(preload.path, "rb"):
                    pass
            except OSError as exc:
                raise NNError(Errno.MODEL_NOT_FOUND, f"the model preloaded as {name!r} cannot be opened: {exc}") from exc
            graph = self._load(preload.path, metadata)
            self._by_name[name] = graph
            return graph

    def load_path(self, path: Path, metadata: dict[str, Any]) -> int:
        with self._lock:
            return self._load(path, metadata)

    def _load(self, path: Path, metadata: dict[str, Any]) -> int:
        options = load_options_from(metadata, self.base_options)
        try:
            model = self.loader(path, options)
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


@dataclass
class GrammarSource:
    """What the app said about the grammar; `build` makes the GBNF text of it."""

    gbnf: str | None = None
    json_schema: Any = None
    prefix: str = ""
    suffix: str = ""

    def build(self) -> str | None:
        if self.json_schema is None:
            return self.gbnf or None  # grammar-prefix/-suffix shape JSON-schema grammars only
        text = self.json_schema if isinstance(self.json_schema, str) else json.dumps(self.json_schema)
        try:
            return json_schema_grammar(text, self.prefix, self.suffix)
        except GrammarError as exc:
            raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc


@dataclass(eq=False)
class ExecutionContext:
    graph: int
    model: Model
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    flags: dict[str, Any] = field(default_factory=dict)  # stream-stdout, enable-log, reverse-prompt, embedding
    grammar: GrammarSource = field(default_factory=GrammarSource)
    embd_normalize: int = 2
    prompt: list[int] | None = None
    # The last prompt text set and its tokens: apps set the same prompt again after counting
    # its tokens (the chat app does, to size n-predict), and tokenizing is ~3 us a token.
    tokenized: tuple[bytes, tuple[int, ...]] | None = None
    embed_inputs: list[list[int]] | None = None  # set_input(3): a batch to embed
    sequence: Sequence | None = None
    last_piece: bytes = b""
    last_logprobs: dict[str, Any] | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    output: bytearray = field(default_factory=bytearray)
    embeddings: Any = None  # float32 rows after an embedding compute
    n_output_tokens: int = 0
    finish_reason: str | None = None
    started_s: float = 0.0

    def reset_generation(self) -> None:
        if self.sequence is not None:
            self.sequence.cancel()
        self.sequence = None
        self.last_piece = b""
        self.last_logprobs = None
        self.logprobs = []
        self.output = bytearray()
        self.embeddings = None
        self.n_output_tokens = 0
        self.finish_reason = None

    @property
    def embedding_mode(self) -> bool:
        return bool(self.flags.get("embedding"))

    def apply_metadata(self, metadata: dict[str, Any]) -> None:
        check = False
        for key, value in metadata.items():
            if key in _SAMPLING_KEYS:
                attr, kind = _SAMPLING_KEYS[key]
                setattr(self.sampling, attr, _convert(key, value, kind))
            elif key == "reverse-prompt":
                if not isinstance(value, str):
                    raise NNError(Errno.INVALID_ARGUMENT, "metadata 'reverse-prompt' must be a string")
                self.flags[key] = value
            elif key in _GRAMMAR_KEYS:
                self._apply_grammar_key(key, value)
                check = True
            elif key == "logit-bias":
                self.sampling.logit_bias = _logit_bias(value)
                check = True
            elif key == "preserved-tokens":
                if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                    raise NNError(Errno.INVALID_ARGUMENT, "metadata 'preserved-tokens' must be an array of strings")
                self.sampling.preserved_tokens = self.model.preserved_tokens(value)
            elif key == "logprobs":
                self.sampling.logprobs = _convert(key, value, bool)
            elif key == "top-logprobs":
                self.sampling.top_logprobs = _convert(key, value, int)
                check = True
            elif key == "embd-normalize":
                self.embd_normalize = _convert(key, value, int)
            elif key in _CONTEXT_FLAGS:
                self.flags[key] = bool(value)
            elif key in _UNSUPPORTED_MODES:
                if value:
                    self.flags["unsupported"] = _UNSUPPORTED_MODES[key]
            elif key in _LOAD_KEYS:
                log.info("metadata %r applies when a model is loaded; ignored here", key)
            elif key not in _ACCEPTED_NOOP:
                log.info("unknown metadata key %r ignored", key)
        if check:
            self.sampling.grammar = self.grammar.build()
            try:
                self.model.check_sampling(self.sampling)
            except (BadInput, GrammarError) as exc:
                raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc

    def _apply_grammar_key(self, key: str, value: Any) -> None:
        if key == "json-schema":
            if value is not None and not isinstance(value, (str, dict, bool)):
                raise NNError(Errno.INVALID_ARGUMENT, "metadata 'json-schema' must be an object or its JSON text")
            self.grammar.json_schema = None if value is None or value == "" else value
        elif key == "grammar-triggers":
            if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
                raise NNError(Errno.INVALID_ARGUMENT, "metadata 'grammar-triggers' must be an array of non-empty strings")
            self.sampling.grammar_triggers = list(value)
        else:
            text = None if value is None else _convert(key, value, str)
            if key == "grammar":
                self.grammar.gbnf = text
            elif key == "grammar-prefix":
                self.grammar.prefix = text or ""
            else:
                self.grammar.suffix = text or ""


def _logit_bias(value: Any) -> dict[int, float]:
    """OpenAI's logit_bias: {"token id": bias}; ids may be JSON strings or numbers (the
    engine checks that they are in the vocabulary)."""
    if not isinstance(value, dict):
        raise NNError(Errno.INVALID_ARGUMENT, "metadata 'logit-bias' must be an object of token id -> bias")
    biases: dict[int, float] = {}
    for key, bias in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise NNError(Errno.INVALID_ARGUMENT, f"logit-bias: {key!r} is not a token id") from None
        biases[token] = _convert(f"logit-bias[{key}]", bias, float)
    return biases


class NNSession:
    """The WASI-NN state of one app instance."""

    def __init__(self, registry: GraphRegistry, *, host_stdout: BinaryIO | None = None) -> None:
        self.registry = registry
        self.contexts: dict[int, ExecutionContext] = {}
        self._next_ctx = 0
        self.cancelled = threading.Event()
        self.host_stdout = host_stdout  # where stream-stdout prints (run-wasm: the terminal)
        # Generation options given when this instance loaded a graph: where its contexts start.
        self.graph_defaults: dict[int, dict[str, Any]] = {}

    def context(self, ctx: int) -> ExecutionContext:
        try:
            return self.contexts[ctx]
        except KeyError:
            raise NNError(Errno.INVALID_ARGUMENT, f"unknown execution context {ctx}") from None

    def new_context(self, graph: int) -> int:
        model = self.registry.get(graph)
        context = ExecutionContext(graph=graph, model=model)
        context.apply_metadata(self.graph_defaults.get(graph, {}))
        ctx = self._next_ctx
        self._next_ctx += 1
        self.contexts[ctx] = context
        return ctx

    def loaded(self, graph: int, metadata: dict[str, Any]) -> None:
        """A load call's config: its generation keys become the defaults of the contexts
        this instance opens on `graph` (as WasmEdge's graph metadata). Checked now, so a bad
        value is the load call's error."""
        defaults = {k: v for k, v in metadata.items() if k not in _LOAD_KEYS}
        if defaults:
            ExecutionContext(graph=graph, model=self.registry.get(graph)).apply_metadata(defaults)
            self.graph_defaults[graph] = defaults

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


def _start(context: ExecutionContext, session: NNSession) -> Sequence:
    if context.sequence is not None:
        return context.sequence
    if context.flags.get("unsupported"):
        raise NNError(Errno.UNSUPPORTED_OPERATION, f"{context.flags['unsupported']} is not supported by this host")
    if context.embedding_mode:
        raise NNError(Errno.UNSUPPORTED_OPERATION, "compute_single generates text: in embedding mode, call compute")
    if context.prompt is None:
        raise NNError(Errno.INVALID_ARGUMENT, "no prompt: call set_input with index 0 first")
    context.started_s = time.monotonic()
    try:
        # One session's sequences are a group: an app reads them in turn (n > 1).
        context.sequence = context.model.generate(context.prompt, context.sampling, group=session)
    except PromptTooLong as exc:
        raise NNError(Errno.PROMPT_TOO_LONG, str(exc)) from exc
    except (BadInput, GrammarError) as exc:
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc
    return context.sequence


_FINISH_ERRNO = {
    FinishReason.STOP: Errno.END_OF_SEQUENCE,
    FinishReason.LENGTH: Errno.END_OF_SEQUENCE,
    FinishReason.CONTEXT_FULL: Errno.CONTEXT_FULL,
}


def _embed(context: ExecutionContext) -> None:
    """compute in embedding mode: embed the prompt, or the batch of set_input(3)."""
    if context.flags.get("unsupported"):
        raise NNError(Errno.UNSUPPORTED_OPERATION, f"{context.flags['unsupported']} is not supported by this host")
    inputs = context.embed_inputs if context.embed_inputs is not None else (
        [context.prompt] if context.prompt is not None else None)
    if inputs is None:
        raise NNError(Errno.INVALID_ARGUMENT, "no input: call set_input with index 0 (or 3) first")
    context.started_s = time.monotonic()
    try:
        context.embeddings = context.model.embed(inputs, norm=context.embd_normalize)
    except PromptTooLong as exc:
        raise NNError(Errno.PROMPT_TOO_LONG, str(exc)) from exc
    except BadInput as exc:
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc
    rows = context.embeddings.tolist()
    n = context.model.n_embd
    body = {"n_embedding": n, "embeddings": rows} if context.embed_inputs is not None else {
        "n_embedding": n, "embedding": rows[0]}
    context.output = bytearray(json.dumps(body).encode())
    context.finish_reason = "stop"


def _check_embedding_inputs(model: Model, inputs: list[list[int]]) -> None:
    try:
        model.check_embedding_inputs(inputs)
    except PromptTooLong as exc:
        raise NNError(Errno.PROMPT_TOO_LONG, str(exc)) from exc
    except BadInput as exc:
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc


def _token_ids(model: Model, ids: list[Any], what: str) -> list[int]:
    if not all(isinstance(token, int) and not isinstance(token, bool) for token in ids):
        raise NNError(Errno.INVALID_ARGUMENT, f"{what} must be integers")
    try:
        model.check_tokens(ids)
    except BadInput as exc:
        raise NNError(Errno.INVALID_ARGUMENT, f"{what}: {exc}") from exc
    return list(ids)


def _held_back(output: bytearray, stop: bytes) -> int:
    """How many bytes at the end of `output` could be the start of `stop` (not printed yet)."""
    for n in range(min(len(stop) - 1, len(output)), 0, -1):
        if output.endswith(stop[:n]):
            return n
    return 0


def _log_stats(context: ExecutionContext) -> None:
    """`enable-log`: one line per generation, as WasmEdge's plugin prints its timings."""
    if context.flags.get("enable-log") or context.flags.get("enable-debug-log"):
        elapsed_s = max(time.monotonic() - context.started_s, 1e-9)
        sequence = context.sequence
        drafts = (f", {sequence.n_accepted} of {sequence.n_drafted} drafted tokens accepted"
                  if sequence is not None and sequence.n_drafted else "")
        log.info("generation %s: prompt %d tokens (%d cached), %d tokens generated in %.2fs (%.1f tokens/s)%s",
                 context.finish_reason, len(context.prompt or ()), sequence.n_cached if sequence else 0,
                 context.n_output_tokens, elapsed_s, context.n_output_tokens / elapsed_s, drafts)


def _finished(context: ExecutionContext, sequence: Sequence) -> NNError:
    reason = sequence.finish_reason or FinishReason.ERROR
    context.finish_reason = "stop" if reason == FinishReason.STOP else "length"
    _log_stats(context)
    errno = _FINISH_ERRNO.get(reason)
    if errno is None:
        return NNError(Errno.RUNTIME_ERROR, f"generation ended: {sequence.error or reason.value}")
    return NNError(errno, f"generation ended: {reason.value}")


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
        try:
            session.loaded(graph, metadata)
        except NNError:
            session.registry.unload(graph)  # this graph is the call's own: do not keep it
            raise
        mem.write_u32(graph_ptr, graph)

    def load_by_name(self, mem: Any, name_ptr: int, name_len: int, graph_ptr: int) -> None:
        name = mem.read(name_ptr, name_len).decode("utf-8", errors="replace")
        mem.write_u32(graph_ptr, self.session_of().registry.load_by_name(name, {}))

    def load_by_name_with_config(self, mem: Any, name_ptr: int, name_len: int, config_ptr: int,
                                 config_len: int, graph_ptr: int) -> None:
        name = mem.read(name_ptr, name_len).decode("utf-8", errors="replace")
        metadata = parse_metadata(mem.read(config_ptr, config_len))
        session = self.session_of()
        graph = session.registry.load_by_name(name, metadata)
        session.loaded(graph, metadata)
        mem.write_u32(graph_ptr, graph)

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
        model = context.model
        if index == 1:
            context.apply_metadata(parse_metadata(data))
            return
        if index not in (0, 2, 3):
            raise NNError(Errno.INVALID_ARGUMENT,
                          f"set_input index {index}: 0 is the prompt, 1 the metadata, 2 prompt tokens, 3 inputs to embed")
        context.reset_generation()
        context.prompt = context.embed_inputs = None
        if index == 0:
            if context.tokenized is None or context.tokenized[0] != data:
                context.tokenized = (data, tuple(model.tokenize(data)))
            context.prompt = list(context.tokenized[1])
        elif index == 2:
            if not data or len(data) % 4:
                raise NNError(Errno.INVALID_ARGUMENT, "prompt tokens must be a non-empty array of u32")
            context.prompt = _token_ids(model, list(struct.unpack(f"<{len(data) // 4}I", data)), "prompt tokens")
        else:
            context.embed_inputs = self._embedding_batch(model, data)
            return
        if context.embedding_mode:
            _check_embedding_inputs(model, [context.prompt])
        elif len(context.prompt) >= model.n_ctx:
            raise NNError(Errno.PROMPT_TOO_LONG,
                          f"prompt of {len(context.prompt)} tokens does not fit the context of {model.n_ctx}")

    def _embedding_batch(self, model: Model, data: bytes) -> list[list[int]]:
        try:
            items = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NNError(Errno.INVALID_ARGUMENT, f"inputs to embed are not JSON: {exc}") from exc
        if not isinstance(items, list) or not items:
            raise NNError(Errno.INVALID_ARGUMENT, "inputs to embed must be a non-empty JSON array")
        inputs = []
        for item in items:
            if isinstance(item, str):
                inputs.append(model.tokenize(item.encode()) if item else [])
            elif isinstance(item, list):
                inputs.append(_token_ids(model, item, "input tokens"))
            else:
                raise NNError(Errno.INVALID_ARGUMENT, "each input to embed is a string or an array of token ids")
        _check_embedding_inputs(model, inputs)
        return inputs

    def compute(self, mem: Any, ctx: int) -> None:
        session = self.session_of()
        context = session.context(ctx)
        session.check_cancelled()
        context.reset_generation()
        if context.embedding_mode:
            _embed(context)
            return
        sequence = _start(context, session)
        stop = (context.flags.get("reverse-prompt") or "").encode()
        echoed = 0  # bytes of the output printed (stream-stdout): never a part of the stop text
        while (token := sequence.next_token()) is not None:
            session.check_cancelled()
            self._took(context, token)
            if stop and stop in context.output:
                del context.output[context.output.index(stop):]
                sequence.cancel()
                context.finish_reason = "stop"
                self._echo(session, context, bytes(context.output[echoed:]))
                _log_stats(context)
                return
            safe = len(context.output) - _held_back(context.output, stop)
            self._echo(session, context, bytes(context.output[echoed:safe]))
            echoed = max(echoed, safe)
        self._echo(session, context, bytes(context.output[echoed:]))
        session.check_cancelled()
        error = _finished(context, sequence)
        if error.errno not in (Errno.END_OF_SEQUENCE,):
            raise error

    def compute_single(self, mem: Any, ctx: int) -> None:
        session = self.session_of()
        context = session.context(ctx)
        session.check_cancelled()
        if context.sequence is None:
            context.reset_generation()  # a new generation (after set_input or fini_single)
        sequence = _start(context, session)
        token = sequence.next_token()
        session.check_cancelled()
        if token is None:
            context.last_piece = b""
            context.last_logprobs = None
            raise _finished(context, sequence)
        self._took(context, token)
        self._echo(session, context, token.piece)

    def _took(self, context: ExecutionContext, token: Token) -> None:
        context.last_piece = token.piece
        context.last_logprobs = token.logprobs
        if token.logprobs is not None:
            context.logprobs.append(token.logprobs)
        context.output += token.piece
        context.n_output_tokens += 1

    def _echo(self, session: NNSession, context: ExecutionContext, piece: bytes) -> None:
        if piece and context.flags.get("stream-stdout") and session.host_stdout is not None:
            session.host_stdout.write(piece)
            session.host_stdout.flush()

    def _metadata_output(self, context: ExecutionContext) -> bytes:
        sequence = context.sequence
        info = {
            "input_tokens": len(context.prompt or ()),
            "output_tokens": context.n_output_tokens,
            "cached_tokens": sequence.n_cached if sequence else 0,
            # Speculative decoding, named as llama-server's timings name them.
            "draft_n": sequence.n_drafted if sequence else 0,
            "draft_n_accepted": sequence.n_accepted if sequence else 0,
            "finish_reason": context.finish_reason,
            "llama_build_number": 0,
            "llama_commit": LLAMA_CPP_PYTHON_VERSION,
        }
        if context.embedding_mode:
            each = [len(t) for t in context.embed_inputs] if context.embed_inputs is not None else [info["input_tokens"]]
            info.update(input_tokens=sum(each), n_embedding=context.model.n_embd, input_tokens_each=each)
        return json.dumps(info).encode()

    def _logprobs_output(self, context: ExecutionContext, single: bool) -> bytes:
        if not context.sampling.logprobs:
            raise NNError(Errno.INVALID_ARGUMENT, 'output index 2 holds log-probabilities: set "logprobs": true first')
        if single:
            if context.last_logprobs is None:
                raise NNError(Errno.INVALID_ARGUMENT, "no token has been generated yet")
            return json.dumps(context.last_logprobs).encode()
        return json.dumps(context.logprobs).encode()

    def get_output(self, mem: Any, ctx: int, index: int, out_ptr: int, out_max_len: int, written_ptr: int) -> None:
        context = self.session_of().context(ctx)
        if index == 0:
            data = bytes(context.output)
        elif index == 1:
            data = self._metadata_output(context)
        elif index == 2 and context.embedding_mode:
            if context.embeddings is None:
                raise NNError(Errno.INVALID_ARGUMENT, "nothing embedded yet: call compute first")
            data = context.embeddings.astype("<f4").tobytes()
        elif index == 2:
            data = self._logprobs_output(context, single=False)
        elif index == 3:
            data = context.model.detokenize(context.prompt or [])
        else:
            raise NNError(Errno.INVALID_ARGUMENT,
                          f"get_output index {index}: 0 is the text, 1 the metadata, 2 logprobs or embeddings, 3 the prompt")
        write_output(mem, data, out_ptr, out_max_len, written_ptr)

    def get_output_single(self, mem: Any, ctx: int, index: int, out_ptr: int, out_max_len: int,
                          written_ptr: int) -> None:
        context = self.session_of().context(ctx)
        if index == 0:
            data = context.last_piece
        elif index == 1:
            data = self._metadata_output(context)
        elif index == 2:
            data = self._logprobs_output(context, single=True)
        else:
            raise NNError(Errno.INVALID_ARGUMENT,
                          f"get_output_single index {index}: 0 is the token, 1 the metadata, 2 its logprobs")
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
