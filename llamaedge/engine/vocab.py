"""Text to tokens and back on a model's vocabulary (read-only in llama.cpp: any thread)."""

from __future__ import annotations

import ctypes

import llama_cpp as lc


def tokenize(vocab: ctypes.c_void_p, text: bytes, *, add_special: bool, parse_special: bool) -> list[int]:
    n_max = len(text) + 8
    tokens = (lc.llama_token * n_max)()
    n = lc.llama_tokenize(vocab, text, len(text), tokens, n_max, add_special, parse_special)
    if n < 0:
        n_max = -n
        tokens = (lc.llama_token * n_max)()
        n = lc.llama_tokenize(vocab, text, len(text), tokens, n_max, add_special, parse_special)
    return list(tokens[:n])


def token_piece(vocab: ctypes.c_void_p, token: int, *, special: bool) -> bytes:
    buf = ctypes.create_string_buffer(64)
    n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]


def single_token(vocab: ctypes.c_void_p, text: bytes) -> int | None:
    """The id of the one token `text` is (special tokens matched by their text), else None."""
    tokens = tokenize(vocab, text, add_special=False, parse_special=True) if text else []
    return tokens[0] if len(tokens) == 1 else None
