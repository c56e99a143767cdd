"""Inference on llama.cpp through llama-cpp-python's low-level API. The only package that
imports llama_cpp.

    bindings        llama_cpp's low-level bindings without its high-level API
    types           options, results (Token, FinishReason, EngineStats) and tunables
    errors          EngineError and its kinds
    cpus            the CPUs this process may use (affinity, cgroup quota, physical cores)
    backend         llama.cpp's process-wide setup and log
    devices         GPU offload, devices, build information
    gguf            metadata and shape of a GGUF without its weights
    grammar         JSON schema to GBNF, lazy-grammar triggers
    vocab           tokenizing and detokenizing
    sampling        sampler chains, lazy grammars, log-probabilities
    chat_template   Jinja chat templates as llama.cpp renders them
    sequence        a generation: its reader's queue of tokens and its scheduling state
    prefix          the common prefix of two token sequences: what a slot's cache reuses
    scheduler       continuous batching over slots, against a Decoder protocol
    speculative     drafts (prompt lookup, a draft model's protocol) and their lengths
    llama_decoder   the Decoder on a llama context, the Drafter on a draft model's
    embedding       the embedding context
    model           Model: all of the above for one GGUF
    contract        LoadedModel, Generation: what callers may use of a Model and its sequences
"""

from llamaedge.engine import bindings

bindings.install()  # before any module below imports llama_cpp

from llamaedge.engine.contract import Generation, LoadedModel, ModelLoader
from llamaedge.engine.devices import LLAMA_CPP_PYTHON_VERSION, build_info, list_devices, supports_gpu_offload
from llamaedge.engine.errors import (
    BadInput,
    EngineError,
    GrammarError,
    LoadError,
    ModelClosed,
    NoChatTemplate,
    PromptTooLong,
    TemplateError,
)
from llamaedge.engine.gguf import ModelShape, inspect_model
from llamaedge.engine.grammar import json_schema_grammar
from llamaedge.engine.model import Model
from llamaedge.engine.sequence import Sequence
from llamaedge.engine.types import (
    DEFAULT_CTX_SIZE,
    EMBED_CTX_MAX,
    EMBED_SEQ_MAX,
    LOOKAHEAD_TOKENS_MAX,
    TOP_LOGPROBS_MAX,
    EngineStats,
    FinishReason,
    LoadOptions,
    SamplingOptions,
    SpecOptions,
    Token,
    context_size,
    default_parallel,
    default_threads,
)

__all__ = [
    "BadInput", "DEFAULT_CTX_SIZE", "EMBED_CTX_MAX", "EMBED_SEQ_MAX", "EngineError", "EngineStats", "FinishReason",
    "Generation", "GrammarError", "LLAMA_CPP_PYTHON_VERSION", "LOOKAHEAD_TOKENS_MAX", "LoadError", "LoadOptions",
    "LoadedModel", "Model", "ModelClosed", "ModelLoader", "ModelShape", "NoChatTemplate", "PromptTooLong",
    "SamplingOptions", "Sequence", "SpecOptions", "TOP_LOGPROBS_MAX", "TemplateError", "Token", "build_info", "context_size",
    "default_parallel", "default_threads", "inspect_model", "json_schema_grammar", "list_devices", "supports_gpu_offload",
]
