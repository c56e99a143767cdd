"""Inference on llama.cpp through llama-cpp-python's low-level API. The only module that
imports llama_cpp.

One `Model` owns one llama context. A single scheduler thread alone decodes and samples on
that context: callers submit sequences (`Model.generate`) and read their tokens from a queue.
Every step decodes one `llama_batch` holding the next token of every running sequence plus a
chunk of any prompt still being read, so several sequences share each decode (continuous
batching). Each sequence runs in a slot (a llama sequence id) whose KV cache is kept after it
ends: the next request that starts with the same tokens (the same conversation, one turn
later) reuses that prefix instead of reading it again.

Tokenizing and detokenizing read only the vocabulary, which llama.cpp never mutates, so they
run on the caller's thread.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import llama_cpp as lc
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llamaedge.errors import ModelError
from llamaedge.types import Device

log = logging.getLogger("llamaedge.engine")

LLAMA_CPP_PYTHON_VERSION: str = lc.__version__

DEFAULT_CTX_SIZE = 4096
# A sequence runs at most this many tokens ahead of its reader: a slow client slows its own
# generation only, and a client that left wastes at most this much work.
LOOKAHEAD_TOKENS_MAX = 16
TOP_LOGPROBS_MAX = 20
# The embedding context: inputs of up to this many tokens (or the model's training context,
# if shorter), up to EMBED_SEQ_MAX of them decoded together.
EMBED_CTX_MAX = 2048
EMBED_SEQ_MAX = 16
_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}
_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level; the rest is debug


@lc.llama_log_callback
def _forward_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        log.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", message)


_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            lc.llama_log_set(_forward_llama_log, ctypes.c_void_p(0))
            lc.llama_backend_init()
            _backend_ready = True


# ---------------------------------------------------------------------------------------------
# Build and device information


def supports_gpu_offload() -> bool:
    _init_backend()
    return bool(lc.llama_supports_gpu_offload())


def _ggml() -> ctypes.CDLL:
    from llama_cpp._ggml import libggml  # the ggml library llama-cpp-python loaded

    lib = libggml
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    return lib


def list_devices() -> list[Device]:
    """The devices in ggml's backend registry, with their free and total memory."""
    _init_backend()
    lib = _ggml()
    devices = []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            Device(
                name=(lib.ggml_backend_dev_name(dev) or b"").decode(),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(),
                kind=_DEVICE_KINDS.get(lib.ggml_backend_dev_type(dev), "unknown"),
                memory_free_bytes=free.value,
                memory_total_bytes=total.value,
            )
        )
    return devices


def build_info() -> dict[str, str]:
    """llama-cpp-python's version and llama.cpp's system info line (backends, CPU features)."""
    _init_backend()
    return {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "system_info": lc.llama_print_system_info().decode(errors="replace").strip(),
        "gpu_offload": "yes" if lc.llama_supports_gpu_offload() else "no",
    }


@dataclass(frozen=True)
class ModelShape:
    """What the offload decision needs to know of a model before loading its weights."""

    n_layers: int
    n_kv_heads: int
    head_dim: int
    n_ctx_train: int


def inspect_model(path: Path) -> ModelShape:
    """Read a GGUF's hyperparameters without loading its weights (a vocab-only load, which
    keeps the metadata but not the per-layer hyperparameters)."""
    _init_backend()
    params = lc.llama_model_default_params()
    params.vocab_only = True
    model = lc.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelError(f"llama.cpp could not read {Path(path).name}",
                         hint="is it a GGUF file of an architecture this llama.cpp supports?")
    try:
        meta = _read_metadata(model)
    finally:
        lc.llama_model_free(model)
    arch = meta.get("general.architecture", "llama")

    def number(key: str, default: int) -> int:
        value = meta.get(f"{arch}.{key}", "")
        return int(value) if value.isdigit() else default  # per-layer arrays: use the default

    n_heads = max(1, number("attention.head_count", 1))
    return ModelShape(
        n_layers=number("block_count", 0),
        n_kv_heads=number("attention.head_count_kv", n_heads),
        head_dim=number("embedding_length", 0) // n_heads,
        n_ctx_train=number("context_length", 0),
    )


def _read_metadata(model: ctypes.c_void_p) -> dict[str, str]:
    """A model's GGUF metadata as strings (arrays are summarized by llama.cpp)."""
    values: dict[str, str] = {}
    buf = ctypes.create_string_buffer(1 << 16)
    for index in range(lc.llama_model_meta_count(model)):
        n = lc.llama_model_meta_key_by_index(model, index, buf, len(buf))
        if n < 0:
            continue
        key = buf.value.decode(errors="replace")
        n = lc.llama_model_meta_val_str_by_index(model, index, buf, len(buf))
        if n >= len(buf):
            big = ctypes.create_string_buffer(n + 1)
            lc.llama_model_meta_val_str_by_index(model, index, big, len(big))
            values[key] = big.value.decode(errors="replace")
        elif n >= 0:
            values[key] = buf.value.decode(errors="replace")
    return values


def json_schema_grammar(schema: str, prefix: str = "", suffix: str = "") -> str:
    """A GBNF grammar that only admits `prefix` + JSON valid under `schema` (JSON text) +
    `suffix`, the JSON part built the way llama.cpp's server does. ValueError when the schema
    cannot be converted."""
    from llama_cpp.llama_grammar import SchemaConverter

    try:
        converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        resolved = converter.resolve_refs(json.loads(schema), "stdin")
        value = converter.visit(resolved, "" if not (prefix or suffix) else "json-value")
        if prefix or suffix:
            parts = [converter._format_literal(prefix)] if prefix else []
            parts.append(value)
            if suffix:
                parts.append(converter._format_literal(suffix))
            converter._add_rule("root", " ".join(parts))
        return converter.format_grammar()
    except Exception as exc:  # the converter raises assorted errors on bad schemas
        raise ValueError(f"json-schema cannot be turned into a grammar: {exc}") from exc


def _trigger_pattern(text: str) -> bytes:
    """llama.cpp's lazy-grammar pattern for a trigger word: the generated text so far matches
    once it contains the word, and the grammar takes over from the word on."""
    escaped = "".join("\\" + ch if ch in ".^$|()*+?[]{}\\" else ch for ch in text)
    return f"[\\s\\S]*?({escaped})[\\s\\S]*".encode()


# ---------------------------------------------------------------------------------------------
# Options


@dataclass
class LoadOptions:
    """Fixed for the life of a model: the context and where the layers live."""

    ctx_size: int | None = None  # None: the model's training context, at most DEFAULT_CTX_SIZE
    n_gpu_layers: int = 0  # -1: all
    threads: int | None = None  # None: all cores
    batch_size: int = 512
    ubatch_size: int = 512
    parallel: int = 4  # sequences decoded together
    use_mmap: bool = True
    main_gpu: int = 0


@dataclass
class SamplingOptions:
    """Per sequence."""

    temp: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    grammar: str | None = None
    # With triggers the grammar is lazy: it constrains from the first trigger text on.
    grammar_triggers: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0  # 0..TOP_LOGPROBS_MAX alternatives per token
    n_predict: int = -1  # -1: until the model ends or the context is full
    ignore_eos: bool = False


class PromptTooLong(ValueError):
    """The prompt alone fills the context."""


FINISH_STOP = "stop"  # the model ended the sequence
FINISH_LENGTH = "length"  # n_predict reached
FINISH_CONTEXT_FULL = "context_full"  # no room left in the context
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"


# ---------------------------------------------------------------------------------------------
# Sequences


@dataclass(frozen=True)
class Token:
    """A sampled token: its id, its bytes (maybe part of a UTF-8 character) and, when the
    sequence asked for them, its log-probability record (see `Model._logprobs`)."""

    id: int
    piece: bytes
    logprobs: dict[str, Any] | None = None


@dataclass(eq=False)
class Sequence:
    """One generation. The scheduler puts tokens on `_pieces`, then None."""

    prompt: list[int]
    sampling: SamplingOptions
    _model: Model
    _pieces: queue.SimpleQueue[Token | None] = field(default_factory=queue.SimpleQueue)
    finish_reason: str | None = None
    n_generated: int = 0
    n_cached: int = 0  # prompt tokens found in the KV cache
    error: str | None = None
    _cancelled: bool = False
    _drained: bool = False
    # Scheduler state
    _slot: int = -1
    _pending: list[int] = field(default_factory=list)  # tokens to feed to the next decode
    _n_past: int = 0
    _sampler: ctypes.c_void_p | None = None

    def next_token(self, timeout_s: float | None = None) -> Token | None:
        """The next token, or None at the end (then `finish_reason` says why), and None
        again on every later call. Raises queue.Empty after `timeout_s`."""
        if self._drained:
            return None
        token = self._pieces.get(timeout=timeout_s)
        self._drained = token is None
        if self._pieces.qsize() == LOOKAHEAD_TOKENS_MAX - 1:
            self._model._wake()  # the scheduler may be waiting for room in this queue
        return token

    def next_piece(self, timeout_s: float | None = None) -> bytes | None:
        """The bytes of the next token (maybe part of a UTF-8 character); see `next_token`."""
        token = self.next_token(timeout_s)
        return None if token is None else token.piece

    def __iter__(self) -> Iterator[bytes]:
        while (piece := self.next_piece()) is not None:
            yield piece

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        """Stop generating; the slot is freed at the scheduler's next step."""
        if not self.done:
            self._cancelled = True
            self._model._wake()


# ---------------------------------------------------------------------------------------------
# The model and its scheduler


class Model:
    """A GGUF model loaded into one llama context, served by one scheduler thread."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        _init_backend()
        self.path = Path(path)
        self.options = options
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}", hint="check the path")
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers
        mparams.main_gpu = options.main_gpu
        mparams.use_mmap = options.use_mmap
        started = time.monotonic()
        self._model = lc.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise ModelError(
                f"llama.cpp could not load {self.path.name}",
                hint="is it a GGUF file of an architecture this llama.cpp supports? (run with -v for details)",
            )
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_ctx_train = lc.llama_model_n_ctx_train(self._model)
        self.n_layers = lc.llama_model_n_layer(self._model)
        self.n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        self.size_bytes = lc.llama_model_size(self._model)

        ctx_size = options.ctx_size or min(self.n_ctx_train or DEFAULT_CTX_SIZE, DEFAULT_CTX_SIZE)
        threads = options.threads or os.cpu_count() or 1
        parallel = max(1, options.parallel)
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = ctx_size
        cparams.n_batch = options.batch_size
        cparams.n_ubatch = min(options.ubatch_size, options.batch_size)
        cparams.n_seq_max = parallel
        cparams.kv_unified = True  # every sequence may use the whole context
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lc.llama_model_free(self._model)
            raise ModelError(
                f"llama.cpp could not create a context of {ctx_size} tokens for {self.path.name}",
                hint="try a smaller --ctx-size",
            )
        self.n_ctx = lc.llama_n_ctx(self._ctx)
        self.threads = threads
        self.parallel = parallel
        self.load_s = time.monotonic() - started
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(options.batch_size, 0, 1)

        self.metadata = _read_metadata(self._model)
        self.chat_template: str | None = self.metadata.get("tokenizer.chat_template")
        self.bos_token = self._special_text(lc.llama_vocab_bos(self._vocab))
        self.eos_token = self._special_text(lc.llama_vocab_eos(self._vocab))
        self._bos = lc.llama_vocab_bos(self._vocab)
        self.tool_use_template: str | None = self.metadata.get("tokenizer.chat_template.tool_use")
        self._formatters: dict[tuple[str, bool], Jinja2ChatFormatter] = {}

        # Scheduler state: touched only by the scheduler thread, except under _cond.
        self._cond = threading.Condition()
        self._incoming: list[Sequence] = []
        self._running: list[Sequence] = []
        self._slot_tokens: list[list[int]] = [[] for _ in range(parallel)]  # what each slot's KV holds
        self._slot_busy = [False] * parallel
        self._closing = False
        self._jobs: list[tuple[Callable[[], Any], Future[Any]]] = []  # run on the scheduler thread
        self.n_tokens_decoded = 0  # tokens fed through llama_decode, prompts and generations

        # Embedding mode: a second context on the same weights, created on first use.
        arch = self.metadata.get("general.architecture", "")
        self._model_pools = self.metadata.get(f"{arch}.pooling_type", "0") in ("1", "2", "3")
        self.n_embd = (lc.llama_model_n_embd_out(self._model) if hasattr(lc, "llama_model_n_embd_out")
                       else lc.llama_model_n_embd(self._model))
        self.n_ctx_embed = min(self.n_ctx_train or EMBED_CTX_MAX, EMBED_CTX_MAX)
        self._embed_ctx: ctypes.c_void_p | None = None
        self._embed_batch: Any = None
        self._thread = threading.Thread(target=self._schedule, name="llamaedge-engine", daemon=True)
        self._thread.start()

    # -- information -----------------------------------------------------------------------

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.token_piece(token, special=True).decode(errors="replace")

    def render_chat(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
                    tools: list[Any] | None = None, template_kwargs: dict[str, Any] | None = None) -> str:
        """The prompt the model's own chat template makes of `messages` (and `tools`), with
        the variables llama.cpp's Jinja path gives a template: messages, tools,
        add_generation_prompt, bos_token, eos_token, then `template_kwargs` on top. With tools
        the GGUF's `tokenizer.chat_template.tool_use` variant is preferred. Tool-call
        arguments that are JSON text reach the template as objects. LookupError when the
        GGUF has no template; ValueError when the template rejects the messages."""
        template = (self.tool_use_template if tools else None) or self.chat_template
        if not template:
            raise LookupError("the model has no embedded chat template")
        extra = dict(template_kwargs or {})
        add_generation_prompt = bool(extra.pop("add_generation_prompt", add_generation_prompt))
        for reserved in ("messages", "tools", "bos_token", "eos_token"):
            extra.pop(reserved, None)
        key = (template, add_generation_prompt)
        formatter = self._formatters.get(key)
        if formatter is None:
            formatter = Jinja2ChatFormatter(template, self.eos_token, self.bos_token,
                                            add_generation_prompt=add_generation_prompt)
            self._formatters[key] = formatter
        try:
            return formatter(messages=[_template_message(m) for m in messages], tools=tools or None, **extra).prompt
        except (jinja2.TemplateError, TypeError) as exc:
            raise ValueError(f"the chat template failed: {exc}") from exc

    def detokenize(self, tokens: list[int]) -> bytes:
        """The text of `tokens` as the model writes it, special tokens included."""
        if not tokens:
            return b""
        array = (lc.llama_token * len(tokens))(*tokens)
        size = max(64, len(tokens) * 8)
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_detokenize(self._vocab, array, len(tokens), buf, size, False, True)
            if n >= 0:
                return buf.raw[:n]
            size = -n
        raise RuntimeError("llama_detokenize did not fit its buffer")

    @property
    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        lc.llama_model_desc(self._model, buf, len(buf))
        return buf.value.decode(errors="replace")

    # -- tokens ----------------------------------------------------------------------------

    def tokenize(self, text: bytes, *, special: bool = True) -> list[int]:
        """Tokens of `text`, with the model's BOS when it wants one (never twice: chat
        templates often write the BOS text themselves)."""
        n_max = len(text) + 8
        tokens = (lc.llama_token * n_max)()
        n = lc.llama_tokenize(self._vocab, text, len(text), tokens, n_max, True, special)
        if n < 0:
            n_max = -n
            tokens = (lc.llama_token * n_max)()
            n = lc.llama_tokenize(self._vocab, text, len(text), tokens, n_max, True, special)
        result = list(tokens[:n])
        if len(result) >= 2 and result[0] == result[1] == self._bos:
            del result[0]
        return result

    def token_piece(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    # -- generation ------------------------------------------------------------------------

    def generate(self, prompt: list[int], sampling: SamplingOptions) -> Sequence:
        """Queue a sequence; read it with `Sequence.next_piece` or by iterating."""
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.n_ctx:
            raise PromptTooLong(f"prompt of {len(prompt)} tokens does not fit a context of {self.n_ctx}")
        sampling = dataclasses.replace(sampling)  # the caller may change its copy meanwhile
        seq = Sequence(prompt=list(prompt), sampling=sampling, _model=self)
        seq._sampler = self._make_sampler(sampling)  # raises ValueError on a bad grammar
        with self._cond:
            if self._closing:
                raise ModelError("the model is shutting down")
            self._incoming.append(seq)
            self._cond.notify()
        return seq

    def check_sampling(self, s: SamplingOptions) -> None:
        """ValueError when `s` cannot be sampled with (a grammar that does not parse, a
        logit bias on a token the model lacks)."""
        lc.llama_sampler_free(self._make_sampler(s))

    def _grammar_sampler(self, s: SamplingOptions) -> ctypes.c_void_p:
        assert s.grammar
        if s.grammar_triggers:
            patterns = (ctypes.c_char_p * len(s.grammar_triggers))(*[_trigger_pattern(t) for t in s.grammar_triggers])
            sampler = lc.llama_sampler_init_grammar_lazy_patterns(
                self._vocab, s.grammar.encode(), b"root", patterns, len(s.grammar_triggers), None, 0)
        else:
            sampler = lc.llama_sampler_init_grammar(self._vocab, s.grammar.encode(), b"root")
        if not sampler:
            raise ValueError("the grammar could not be parsed")
        return sampler

    def _make_sampler(self, s: SamplingOptions) -> ctypes.c_void_p:
        for token, bias in s.logit_bias.items():
            if not 0 <= token < self.n_vocab:
                raise ValueError(f"logit-bias: token {token} is not in the vocabulary of {self.n_vocab}")
            if not math.isfinite(bias):
                raise ValueError(f"logit-bias of token {token} must be a finite number")
        if not 0 <= s.top_logprobs <= TOP_LOGPROBS_MAX:
            raise ValueError(f"top-logprobs must be between 0 and {TOP_LOGPROBS_MAX}")
        grammar = self._grammar_sampler(s) if s.grammar else None
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if s.logit_bias:
            biases = (lc.llama_logit_bias * len(s.logit_bias))(
                *[lc.llama_logit_bias(token, bias) for token, bias in s.logit_bias.items()])
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(self.n_vocab, len(biases), biases))
        if grammar is not None:
            lc.llama_sampler_chain_add(chain, grammar)
        if s.repeat_penalty != 1.0 or s.presence_penalty or s.frequency_penalty:
            lc.llama_sampler_chain_add(
                chain,
                lc.llama_sampler_init_penalties(
                    self.n_vocab, s.penalty_last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
                ),
            )
        if s.temp <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            if s.top_k > 0:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(s.top_k))
            if 0 < s.top_p < 1:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
            if 0 < s.min_p < 1:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(s.min_p, 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(s.temp))
            seed = lc.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # -- embeddings ------------------------------------------------------------------------

    def embed(self, inputs: list[list[int]], *, normalize: int = 2) -> np.ndarray:
        """One pooled embedding per input (rows of a float32 array of n_embd columns),
        normalized as llama.cpp's `embd_normalize` says (-1 none, 0 max-abs int16, 1 taxicab,
        2 euclidean, >2 p-norm). Inputs are decoded together, EMBED_SEQ_MAX at a time, on the
        scheduler thread (the contexts share the weights and the threads)."""
        for tokens in inputs:
            if not tokens:
                raise ValueError("empty input")
            if len(tokens) > self.n_ctx_embed:
                raise PromptTooLong(f"input of {len(tokens)} tokens does not fit the embedding context of {self.n_ctx_embed}")
        vectors = self._run_job(lambda: self._embed_all(inputs))
        return _normalize(vectors, normalize)

    def _run_job(self, job: Callable[[], Any]) -> Any:
        future: Future[Any] = Future()
        with self._cond:
            if self._closing:
                raise ModelError("the model is shutting down")
            self._jobs.append((job, future))
            self._cond.notify()
        return future.result()

    def _embedding_context(self) -> ctypes.c_void_p:
        if self._embed_ctx is None:
            cparams = lc.llama_context_default_params()
            cparams.n_ctx = self.n_ctx_embed
            # A pooled sequence must fit one micro-batch.
            cparams.n_batch = cparams.n_ubatch = self.n_ctx_embed
            cparams.n_seq_max = EMBED_SEQ_MAX
            cparams.kv_unified = True
            cparams.embeddings = True
            cparams.pooling_type = lc.LLAMA_POOLING_TYPE_UNSPECIFIED if self._model_pools else lc.LLAMA_POOLING_TYPE_MEAN
            cparams.n_threads = cparams.n_threads_batch = self.threads
            cparams.no_perf = True
            ctx = lc.llama_init_from_model(self._model, cparams)
            if not ctx:
                raise ModelError(f"llama.cpp could not create an embedding context for {self.path.name}")
            self._embed_ctx = ctx
            self._embed_batch = lc.llama_batch_init(self.n_ctx_embed, 0, 1)
        return self._embed_ctx

    def _embed_all(self, inputs: list[list[int]]) -> np.ndarray:
        ctx = self._embedding_context()
        mem = lc.llama_get_memory(ctx)
        batch = self._embed_batch
        out = np.zeros((len(inputs), self.n_embd), dtype=np.float32)
        start = 0
        while start < len(inputs):
            group, n = [], 0
            while (start + len(group) < len(inputs) and len(group) < EMBED_SEQ_MAX
                   and n + len(inputs[start + len(group)]) <= self.n_ctx_embed):
                tokens = inputs[start + len(group)]
                for pos, token in enumerate(tokens):
                    batch.token[n] = token
                    batch.pos[n] = pos
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = len(group)
                    batch.logits[n] = 1
                    n += 1
                group.append(tokens)
            batch.n_tokens = n
            lc.llama_memory_clear(mem, True)
            rc = lc.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with {rc} in embedding mode")
            self.n_tokens_decoded += n
            for seq in range(len(group)):
                pooled = lc.llama_get_embeddings_seq(ctx, seq)
                if not pooled:
                    raise RuntimeError("llama.cpp returned no pooled embedding")
                out[start + seq] = np.ctypeslib.as_array(pooled, shape=(self.n_embd,))
            start += len(group)
        lc.llama_memory_clear(mem, True)
        return out

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=30)
        if self._embed_ctx is not None:
            lc.llama_batch_free(self._embed_batch)
            lc.llama_free(self._embed_ctx)
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)
        lc.llama_model_free(self._model)

    # -- the scheduler thread --------------------------------------------------------------

    def _schedule(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        for seq in self._incoming + self._running:
                            self._finish(seq, FINISH_CANCELLED)
                        for _job, future in self._jobs:
                            future.set_exception(ModelError("the model is shutting down"))
                        return
                    self._admit()
                    jobs, self._jobs = self._jobs, []
                    if jobs or self._runnable():
                        break
                    # Idle, or every sequence is waiting for its reader (who wakes us).
                    self._cond.wait(timeout=0.1 if self._running else None)
            for job, future in jobs:
                try:
                    future.set_result(job())
                except Exception as exc:  # the caller gets it; the thread goes on
                    future.set_exception(exc)
            for seq in [s for s in self._running if s._cancelled]:
                self._finish(seq, FINISH_CANCELLED)
            if not self._running:
                continue
            try:
                self._step()
            except Exception as exc:  # keep the thread alive; fail what was running
                log.exception("decode step failed")
                for seq in list(self._running):
                    seq.error = str(exc)
                    self._finish(seq, FINISH_ERROR)

    def _runnable(self) -> list[Sequence]:
        return [s for s in self._running if s._cancelled or s._pieces.qsize() < LOOKAHEAD_TOKENS_MAX]

    def _admit(self) -> None:
        """Drop queued sequences that were cancelled, then move queued sequences into free
        slots, preferring the slot whose cached tokens share the longest prefix. A prefix
        held by a busy slot is shared (its KV cells copied to the new sequence's slot); a
        sequence whose prefix another sequence is reading right now waits for it."""
        for seq in [s for s in self._incoming if s._cancelled]:
            self._incoming.remove(seq)
            self._finish(seq, FINISH_CANCELLED)
        for seq in list(self._incoming):
            if all(self._slot_busy):
                break
            best, best_len = -1, -1
            for slot, busy in enumerate(self._slot_busy):
                if busy:
                    continue
                common = _common_prefix(self._slot_tokens[slot], seq.prompt)
                if common > best_len:
                    best, best_len = slot, common
            source, source_len = -1, best_len
            for slot, busy in enumerate(self._slot_busy):
                if busy:
                    common = _common_prefix(self._slot_tokens[slot], seq.prompt)
                    if common > source_len:
                        source, source_len = slot, common
            held = max(best_len, source_len)
            if any(other.n_generated == 0 and len(other._pending) > 1
                   and _common_prefix(other.prompt, seq.prompt) > held for other in self._running):
                continue  # decoding those tokens twice would be waste: take them when read
            self._incoming.remove(seq)
            # At least one token must be decoded to get logits for the first sample.
            if source >= 0:
                reuse = min(source_len, len(seq.prompt) - 1)
                lc.llama_memory_seq_rm(self._mem, best, -1, -1)
                lc.llama_memory_seq_cp(self._mem, source, best, 0, reuse)
                self._slot_tokens[best] = self._slot_tokens[source][:reuse]
            else:
                reuse = min(best_len, len(seq.prompt) - 1)
                lc.llama_memory_seq_rm(self._mem, best, reuse, -1)
                del self._slot_tokens[best][reuse:]
            self._slot_busy[best] = True
            seq._slot = best
            seq._n_past = reuse
            seq.n_cached = reuse
            seq._pending = seq.prompt[reuse:]
            self._running.append(seq)

    def _step(self) -> None:
        batch = self._batch
        n_batch = self.options.batch_size
        outputs: list[tuple[Sequence, int]] = []
        fed: list[tuple[Sequence, list[int]]] = []
        n = 0
        # Sequences that are generating add one token each first (keeps their latency low),
        # then prompts fill what is left of the batch.
        order = sorted(self._runnable(), key=lambda s: len(s._pending) > 1)
        for seq in order:
            if n >= n_batch:
                break
            take = seq._pending[: n_batch - n]
            if not take:
                continue
            for i, token in enumerate(take):
                batch.token[n] = token
                batch.pos[n] = seq._n_past + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq._slot
                last = i == len(take) - 1 and len(take) == len(seq._pending)
                batch.logits[n] = 1 if last else 0
                if last:
                    outputs.append((seq, n))
                n += 1
            fed.append((seq, take))
        if n == 0:
            return
        batch.n_tokens = n
        self.n_tokens_decoded += n
        rc = lc.llama_decode(self._ctx, batch)
        if rc == 1 and self._evict_idle_slots():
            rc = lc.llama_decode(self._ctx, batch)
        if rc == 1:
            # The context is full: end the longest sequence; the others go on next step.
            victim = max(self._running, key=lambda s: s._n_past)
            self._finish(victim, FINISH_CONTEXT_FULL)
            return
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with {rc}")
        for seq, take in fed:
            seq._n_past += len(take)
            del seq._pending[: len(take)]
            self._slot_tokens[seq._slot].extend(take)
        for seq, index in outputs:
            self._sample(seq, index)

    def _sample(self, seq: Sequence, index: int) -> None:
        token = lc.llama_sampler_sample(seq._sampler, self._ctx, index)
        if lc.llama_vocab_is_eog(self._vocab, token) and not seq.sampling.ignore_eos:
            self._finish(seq, FINISH_STOP)
            return
        seq.n_generated += 1
        logprobs = self._logprobs(seq.sampling, index, token) if seq.sampling.logprobs else None
        seq._pieces.put(Token(token, self.token_piece(token), logprobs))
        if seq.sampling.n_predict >= 0 and seq.n_generated >= seq.sampling.n_predict:
            self._finish(seq, FINISH_LENGTH)
        elif seq._n_past + 1 >= self.n_ctx:
            self._finish(seq, FINISH_CONTEXT_FULL)
        else:
            seq._pending = [token]

    def _logprobs(self, s: SamplingOptions, index: int, token: int) -> dict[str, Any]:
        """The sampled token's log-probability and the `top_logprobs` likeliest tokens: the
        log-softmax of the logits after logit bias (before temperature, top-k/p and grammar),
        so that the greedy choice is the top entry."""
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,))
        logits = logits.astype(np.float64)
        for biased, bias in s.logit_bias.items():
            logits[biased] += bias
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        top = np.argsort(-logprobs, kind="stable")[: s.top_logprobs]
        entry = self._logprob_entry(token, float(logprobs[token]))
        entry["top_logprobs"] = [self._logprob_entry(int(t), float(logprobs[t])) for t in top]
        return entry

    def _logprob_entry(self, token: int, logprob: float) -> dict[str, Any]:
        piece = self.token_piece(token)
        # JSON has no -inf; OpenAI writes -9999.0 for a token with no chance.
        return {"id": token, "token": piece.decode("utf-8", errors="replace"), "bytes": list(piece),
                "logprob": max(logprob, -9999.0)}

    def _evict_idle_slots(self) -> bool:
        evicted = False
        for slot, busy in enumerate(self._slot_busy):
            if not busy and self._slot_tokens[slot]:
                lc.llama_memory_seq_rm(self._mem, slot, -1, -1)
                self._slot_tokens[slot].clear()
                evicted = True
        return evicted

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq in self._running:
            self._running.remove(seq)
        if seq._slot >= 0:
            self._slot_busy[seq._slot] = False
        if seq._sampler:
            lc.llama_sampler_free(seq._sampler)
            seq._sampler = None
        seq.finish_reason = reason
        seq._pieces.put(None)
        if reason in (FINISH_CANCELLED, FINISH_ERROR):
            log.info("sequence %s after %d tokens; slot %d is free", reason, seq.n_generated, seq._slot)


def _normalize(vectors: np.ndarray, norm: int) -> np.ndarray:
    """llama.cpp's common_embd_normalize, row by row."""
    if norm < 0:
        return vectors
    if norm == 0:
        scale = np.abs(vectors).max(axis=1, keepdims=True) / 32760.0
    elif norm == 2:
        scale = np.sqrt((vectors.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    else:
        scale = (np.abs(vectors.astype(np.float64)) ** norm).sum(axis=1, keepdims=True) ** (1.0 / norm)
    return (vectors / np.where(scale > 0, scale, 1.0)).astype(np.float32)


def _template_message(message: Any) -> Any:
    """A message as a chat template wants it: the arguments of its tool calls as objects
    when they are JSON text (templates iterate over them; llama.cpp does the same)."""
    if not isinstance(message, dict) or not isinstance(message.get("tool_calls"), list):
        return message
    calls = []
    for call in message["tool_calls"]:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            try:
                arguments = json.loads(function["arguments"])
            except json.JSONDecodeError:
                arguments = function["arguments"]
            call = {**call, "function": {**function, "arguments": arguments}}
        calls.append(call)
    return {**message, "tool_calls": calls}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
