"""A GGUF file's header, read in pure Python: the key-value metadata, without llama.cpp and
without the weights. The library lists and sizes every file in the models folder with it; a
vocab-only load through llama.cpp takes about half a second a file, this a few milliseconds.

Format (little-endian, versions 2 and 3): magic `GGUF`, u32 version, u64 tensor count, u64
key-value count, then each key (u64 length + UTF-8) with a u32 value type and its value.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from llamaedge.errors import ModelError
from llamaedge.library.types import ModelFacts

_MAGIC = b"GGUF"
# Value types: struct format of the scalars; 8 string, 9 array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# A header claiming more keys than this is not one we trust to walk.
_KEYS_MAX = 1 << 16


class _Reader:
    def __init__(self, data: mmap.mmap | bytes) -> None:
        self.data = data
        self.at = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if self.at + length > len(self.data):
            raise ValueError("a string runs past the end of the file")
        text = bytes(self.data[self.at:self.at + length]).decode("utf-8", errors="replace")
        self.at += length
        return text

    def skip_string(self) -> None:
        self.at += 8 + struct.unpack_from("<Q", self.data, self.at)[0]

    def value(self, kind: int) -> Any:
        """A scalar or a string; an array's element count (its elements are skipped)."""
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            element, count = self.unpack("<I"), self.unpack("<Q")
            if element in _SCALARS:
                self.at += struct.calcsize(_SCALARS[element]) * count
            elif element == _STRING:
                for _ in range(count):
                    self.skip_string()
            else:
                raise ValueError(f"an array of value type {element}")
            return _Count(count)
        raise ValueError(f"unknown value type {kind}")


class _Count(int):
    """An array's length, kept apart from scalar values."""


def _as_text(value: Any) -> str:
    """A scalar as llama.cpp's metadata strings show it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:f}"
    return str(value)


def read_header(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """(scalar metadata as strings, array lengths by key). ModelError when it is not a GGUF
    file this reader understands."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(_Reader(data), path)
    except (OSError, ValueError) as exc:  # mmap of an empty file is a ValueError too
        raise ModelError(f"cannot read the GGUF header of {Path(path).name}: {exc}",
                         hint="is it a complete .gguf file?") from exc


def _parse(reader: _Reader, path: Path) -> tuple[dict[str, str], dict[str, int]]:
    if bytes(reader.data[:4]) != _MAGIC:
        raise ValueError("not a GGUF file")
    reader.at = 4
    version = reader.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (this reader knows 2 and 3, little-endian)")
    reader.unpack("<Q")  # tensor count
    n_keys = reader.unpack("<Q")
    if n_keys > _KEYS_MAX:
        raise ValueError(f"{n_keys} metadata keys")
    scalars: dict[str, str] = {}
    arrays: dict[str, int] = {}
    try:
        for _ in range(n_keys):
            key = reader.string()
            value = reader.value(reader.unpack("<I"))
            if isinstance(value, _Count):
                arrays[key] = int(value)
            else:
                scalars[key] = _as_text(value)
    except struct.error as exc:
        raise ValueError("the header is cut short") from exc
    return scalars, arrays


def _number(metadata: dict[str, str], key: str, default: int) -> int:
    value = metadata.get(key, "")
    return int(value) if value.isdigit() else default


def read_facts(path: Path) -> ModelFacts:
    """What the library needs to know of a GGUF file before loading it. Keys stored per layer
    (as arrays) count as absent and take the defaults: the estimate is an estimate."""
    metadata, arrays = read_header(path)
    arch = metadata.get("general.architecture", "llama")
    n_embd = _number(metadata, f"{arch}.embedding_length", 0)
    n_heads = max(1, _number(metadata, f"{arch}.attention.head_count", 1))
    n_vocab = arrays.get("tokenizer.ggml.tokens") or _number(metadata, f"{arch}.vocab_size", 0)
    return ModelFacts(
        size_bytes=Path(path).stat().st_size,
        architecture=arch,
        n_layers=_number(metadata, f"{arch}.block_count", 0),
        n_heads=n_heads,
        n_kv_heads=_number(metadata, f"{arch}.attention.head_count_kv", n_heads),
        head_dim=_number(metadata, f"{arch}.attention.key_length", n_embd // n_heads),
        n_embd=n_embd,
        n_ff=_number(metadata, f"{arch}.feed_forward_length", 4 * n_embd),
        n_vocab=n_vocab,
        n_ctx_train=_number(metadata, f"{arch}.context_length", 0),
        metadata=metadata,
    )
