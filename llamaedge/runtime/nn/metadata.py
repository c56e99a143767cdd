"""The options an app passes as metadata JSON (`load_by_name_with_config`, `set_input`
index 1), by WasmEdge's GGML plugin's key names: which keys exist, what each means, and how a
value is checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llamaedge.engine import LoadOptions
from llamaedge.runtime.nn.errors import Errno, NNError

# Keys that shape the model or its context: they apply when a graph is first loaded.
LOAD_KEYS: dict[str, tuple[str, type]] = {
    "ctx-size": ("ctx_size", int),
    "n-gpu-layers": ("n_gpu_layers", int),
    "threads": ("threads", int),
    "batch-size": ("batch_size", int),
    "ubatch-size": ("ubatch_size", int),
    "n-parallel": ("parallel", int),
    "use-mmap": ("use_mmap", bool),
    "main-gpu": ("main_gpu", int),
    # The vision projector's path, as WasmEdge's llava and Qwen2-VL examples give it.
    "mmproj": ("mmproj", str),
}
# Keys that shape one generation: they apply to the execution context that receives them.
SAMPLING_KEYS: dict[str, tuple[str, type]] = {
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
CONTEXT_FLAGS = {"enable-log", "enable-debug-log", "stream-stdout", "embedding"}
# WasmEdge's `image`: the path of an image file the next prompt shows (at its `<image>`), as
# WasmEdge's llava example gives it.
IMAGE_KEY = "image"
# Our extension `pooling` (embedding mode): "model" pools as the model says (the default),
# "rank" scores (query, document) pairs with a reranker's classification head.
POOLING_MODES = {"model", "rank"}
# Keys that together make the grammar: rebuilt and checked whenever one of them changes.
GRAMMAR_KEYS = {"grammar", "json-schema", "grammar-prefix", "grammar-suffix", "grammar-triggers"}
# Accepted by WasmEdge, meaningless here: taken silently.
ACCEPTED_NOOP = {"tensor-split", "flash-attn", "n-keep"}
# Modes this host does not offer: asking for one makes the next compute fail with
# "unsupported operation" rather than silently generating text instead.
UNSUPPORTED_MODES: dict[str, str] = {}


def convert(key: str, value: Any, kind: type) -> Any:
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
        if key in LOAD_KEYS:
            attr, kind = LOAD_KEYS[key]
            setattr(options, attr, convert(key, value, kind))
    if isinstance(options.mmproj, str):
        options.mmproj = Path(options.mmproj) if options.mmproj else None
    if options.n_gpu_layers < -1:
        options.n_gpu_layers = -1
    return options


def logit_bias(value: Any) -> dict[int, float]:
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
        biases[token] = convert(f"logit-bias[{key}]", bias, float)
    return biases
