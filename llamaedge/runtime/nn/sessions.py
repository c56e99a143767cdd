"""What one app instance holds: its `NNSession` (execution contexts, whether its request was
cancelled) and each `ExecutionContext` (options, prompt, the running sequence, its output)."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from llamaedge.engine import BadInput, Generation, GrammarError, LoadedModel, SamplingOptions, json_schema_grammar
from llamaedge.runtime.nn.errors import Errno, NNError
from llamaedge.runtime.nn.graphs import Graphs
from llamaedge.runtime.nn.metadata import (
    ACCEPTED_NOOP,
    CONTEXT_FLAGS,
    GRAMMAR_KEYS,
    IMAGE_KEY,
    LOAD_KEYS,
    POOLING_MODES,
    SAMPLING_KEYS,
    UNSUPPORTED_MODES,
    convert,
    logit_bias,
)

log = logging.getLogger("llamaedge.wasi_nn")


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
    model: LoadedModel
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    flags: dict[str, Any] = field(default_factory=dict)  # stream-stdout, enable-log, reverse-prompt, embedding
    grammar: GrammarSource = field(default_factory=GrammarSource)
    embd_normalize: int = 2
    prompt: list[int] | None = None
    # The last prompt text set and its tokens: apps set the same prompt again after counting
    # its tokens (the chat app does, to size n-predict), and tokenizing is ~3 us a token.
    tokenized: tuple[bytes, tuple[int, ...]] | None = None
    embed_inputs: list[list[int]] | None = None  # set_input(3): a batch to embed
    # A prompt with images (see functions._media_prompt): its images by placeholder, and
    # what the model reads (text tokens and image embeddings); text alone: {} and None.
    images: dict[int, Any] = field(default_factory=dict)
    n_prompt_tokens: int | None = None
    # The last prompt with images set, with the image option then, and what it made: the
    # chat app sets each prompt twice, and reading an image again costs a decode.
    tokenized_media: tuple[bytes, str | None, Any] | None = None
    sequence: Generation | None = None
    last_piece: bytes = b""
    last_logprobs: dict[str, Any] | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    output: bytearray = field(default_factory=bytearray)
    embeddings: Any = None  # float32 rows after an embedding compute
    n_output_tokens: int = 0
    finish_reason: str | None = None
    started_s: float = 0.0  # the generation (or embedding) began: its prompt submitted
    first_token_s: float | None = None  # its first token came: the prompt was read
    last_token_s: float = 0.0

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
        self.first_token_s = None

    @property
    def embedding_mode(self) -> bool:
        return bool(self.flags.get("embedding"))

    @property
    def rank_mode(self) -> bool:
        """Embedding mode with our extension `"pooling": "rank"`: inputs are (query, document)
        pairs and compute scores them with the reranker's classification head."""
        return self.embedding_mode and self.flags.get("pooling") == "rank"

    def apply_metadata(self, metadata: dict[str, Any]) -> None:
        check = False
        for key, value in metadata.items():
            if key in SAMPLING_KEYS:
                attr, kind = SAMPLING_KEYS[key]
                setattr(self.sampling, attr, convert(key, value, kind))
            elif key == "reverse-prompt":
                if not isinstance(value, str):
                    raise NNError(Errno.INVALID_ARGUMENT, "metadata 'reverse-prompt' must be a string")
                self.flags[key] = value
            elif key in GRAMMAR_KEYS:
                self._apply_grammar_key(key, value)
                check = True
            elif key == "logit-bias":
                self.sampling.logit_bias = logit_bias(value)
                check = True
            elif key == "preserved-tokens":
                if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                    raise NNError(Errno.INVALID_ARGUMENT, "metadata 'preserved-tokens' must be an array of strings")
                self.sampling.preserved_tokens = self.model.preserved_tokens(value)
            elif key == "logprobs":
                self.sampling.logprobs = convert(key, value, bool)
            elif key == "top-logprobs":
                self.sampling.top_logprobs = convert(key, value, int)
                check = True
            elif key == "embd-normalize":
                self.embd_normalize = convert(key, value, int)
            elif key == "pooling":
                pooling = self._pooling(value)
                if pooling != self.flags.get(key, "model"):
                    self.embed_inputs = None  # a batch set for the other pooling is not an input of this one
                self.flags[key] = pooling
            elif key in CONTEXT_FLAGS:
                self.flags[key] = bool(value)
            elif key == IMAGE_KEY:
                if value is not None and not isinstance(value, str):
                    raise NNError(Errno.INVALID_ARGUMENT, "metadata 'image' must be the path of an image file")
                self.flags[key] = value or None
            elif key in UNSUPPORTED_MODES:
                if value:
                    self.flags["unsupported"] = UNSUPPORTED_MODES[key]
            elif key in LOAD_KEYS:
                log.info("metadata %r applies when a model is loaded; ignored here", key)
            elif key not in ACCEPTED_NOOP:
                log.info("unknown metadata key %r ignored", key)
        if check:
            self.sampling.grammar = self.grammar.build()
            try:
                self.model.check_sampling(self.sampling)
            except (BadInput, GrammarError) as exc:
                raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc

    def _pooling(self, value: Any) -> str:
        if value not in POOLING_MODES:
            raise NNError(Errno.INVALID_ARGUMENT, f"metadata 'pooling' is one of {sorted(POOLING_MODES)}, not {value!r}")
        if value == "rank" and not self.model.can_rank:
            raise NNError(Errno.UNSUPPORTED_OPERATION, "this model cannot rerank: its pooling type is not rank")
        return str(value)

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
            text = None if value is None else convert(key, value, str)
            if key == "grammar":
                self.grammar.gbnf = text
            elif key == "grammar-prefix":
                self.grammar.prefix = text or ""
            else:
                self.grammar.suffix = text or ""


class NNSession:
    """The WASI-NN state of one app instance."""

    def __init__(self, registry: Graphs, *, host_stdout: BinaryIO | None = None) -> None:
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
        defaults = {k: v for k, v in metadata.items() if k not in LOAD_KEYS}
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
