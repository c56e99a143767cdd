"""A GGUF's metadata and the hyperparameters that decide offload, read without the weights."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as lc

from llamaedge.engine.backend import init_backend
from llamaedge.engine.errors import LoadError


@dataclass(frozen=True)
class ModelShape:
    """What the offload decision needs to know of a model before loading its weights."""

    n_layers: int
    n_kv_heads: int
    head_dim: int
    n_ctx_train: int


def file_metadata(path: Path) -> dict[str, str]:
    """A GGUF file's metadata as llama.cpp reads it, without the weights (a vocab-only load,
    which keeps the metadata but not the per-layer hyperparameters)."""
    init_backend()
    params = lc.llama_model_default_params()
    params.vocab_only = True
    model = lc.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise LoadError(f"llama.cpp could not read {Path(path).name}",
                         hint="is it a GGUF file of an architecture this llama.cpp supports?")
    try:
        return read_metadata(model)
    finally:
        lc.llama_model_free(model)


def inspect_model(path: Path) -> ModelShape:
    """Read a GGUF's hyperparameters without loading its weights."""
    meta = file_metadata(path)
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


def read_metadata(model: ctypes.c_void_p) -> dict[str, str]:
    """A loaded model's GGUF metadata as strings (arrays are summarized by llama.cpp)."""
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


def pooling_is_defined(metadata: dict[str, str]) -> bool:
    """Whether the model says how to pool its embeddings (mean, CLS or last token)."""
    arch = metadata.get("general.architecture", "")
    return metadata.get(f"{arch}.pooling_type", "0") in ("1", "2", "3")


def pooling_is_rank(metadata: dict[str, str]) -> bool:
    """Whether the model is a reranker: llama.cpp's pooling type RANK (4), a classification
    head giving each (query, document) pair its score."""
    arch = metadata.get("general.architecture", "")
    return metadata.get(f"{arch}.pooling_type") == "4"
