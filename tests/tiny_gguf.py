"""A tiny llama-architecture GGUF chat model, written in-process for tests.

The model has random (seeded) weights, so what it says is gibberish, but it is a real GGUF that
llama.cpp loads, tokenizes with a real BPE vocabulary, templates with ChatML and samples from in
milliseconds. Two properties are built into the weights so tests can rely on them:

* Output is printable ASCII. Random weights would happily emit lone bytes that are not valid
  UTF-8, so hidden dimension 0 is held constant through the whole residual stream (constant in
  every embedding, never written by attention or FFN outputs) and the output matrix uses it as
  a per-token bias: a large negative one for every token that is not printable ASCII.
* Generations stop on their own sometimes. The end token `<|im_end|>` gets a moderate bias
  through the same dimension, so sampled replies end naturally a good part of the time and run
  into `max_tokens` the rest of the time: tests need both kinds of stop.

Two options make variants (the default file does not change):

* `control_tokens`: more CONTROL tokens after the three above, e.g. Gemma 4's markers, which
  real models have as single control tokens. Like the others they are never said unless
  something (a logit bias, a script) makes the model say them.
* `script`: token texts t0, t1, ..., tn wired into the weights as a bigram: after t_i the model
  says t_(i+1), with near certainty. t0 is the prompt's last token; texts not in the vocabulary
  join it as normal tokens (a whole phrase may be one). Each text may appear once, so that
  every step has one successor. Each t_i (i < n) gets a hidden dimension of its own, held
  only by its embedding and read only by its successor's output row.

Usage: `write_tiny_gguf(tmp_path / "tiny.gguf")`. The same arguments give a byte-identical file.

`write_tiny_reranker` writes a reranker on the same vocabulary: qwen3 with a classification
head and pooling type RANK (see the function). `write_tiny_mmproj` writes a vision projector
for the chat model (llava's `mlp` type), and `png_bytes` an image to show it.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, PoolingType, TokenType

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Gemma 4's markup, single control tokens of its vocabulary (for `control_tokens`).
GEMMA4_MARKERS = ("<|turn>", "<turn|>", "<|think|>", "<|channel>", "<channel|>", "<|tool>", "<tool|>",
                  "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>')

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_LAYER = 2
ROPE_DIMS = 16
N_MERGES = 250

# Hidden dimension 0 carries a constant; the output matrix turns it into per-token biases.
# The blocks add only small updates to the residual stream (_UPDATE_STD per dimension), so its
# norm, and with it the normalised constant, barely moves from token to token: the biases hold.
_CONST_DIM_VALUE = 3.0
_UPDATE_STD = 0.3
_LOGIT_STD = 2.0
_BIAS_UNPRINTABLE = -40.0
_BIAS_END = 1.2
# A scripted step: the token's own dimension in its embedding, and the weight with which its
# successor's output row reads it (tens of logits above every other token).
_SCRIPT_EMBED = 16.0
_SCRIPT_WEIGHT = 8.0

# A small English text to train the BPE merges on. Kept to one line of printable ASCII so no
# merge produces a token the model is not allowed to say.
_CORPUS = " ".join(
    """
    The quick brown fox jumps over the lazy dog. A local model answers questions without
    sending anything to a server. You can ask it about the weather, the capital of a country,
    or how to write a small program. It reads your message, thinks for a moment, and then
    writes an answer one token at a time. Tokens are short pieces of text: a word, part of a
    word, a space or a mark of punctuation. The model keeps the conversation in its context,
    so it can refer back to what you said before. When the context is full, the oldest
    messages are the first to go. Hello there! How are you today? I am fine, thank you. What
    is the time? It is about ten past three in the afternoon. Where is the station? Walk to
    the end of the street and turn left at the bakery. Please tell me a short story about a
    cat and a mouse who become friends. Once upon a time, in a quiet house at the edge of a
    town, there lived a cat named Tom and a mouse named Jerry. They were not friends at
    first, but one cold winter night they shared a warm place near the fire, and from then on
    they were never apart. The end. Numbers like 1, 2, 3, 10, 42 and 2024 appear in text too,
    as do words such as "the", "and", "that", "with", "this", "from", "they", "have" and
    "there". Good morning, good evening and good night.
    """.split()
)

_PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+""")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which llama.cpp's `gpt2`
    tokenizer expects vocabulary entries to be written in."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("\xa1"), ord("\xac") + 1))
    printable += list(range(ord("\xae"), ord("\xff") + 1))
    mapping: dict[int, str] = {}
    extra = 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def _train_merges(corpus: str, n_merges: int, byte_map: dict[int, str]) -> list[tuple[str, str]]:
    """Plain BPE training over the pre-tokenized corpus. Ties break on the pair itself, so the
    result does not depend on dict ordering."""
    words: Counter[tuple[str, ...]] = Counter(
        tuple(byte_map[b] for b in piece.encode()) for piece in _PRETOKENIZE.findall(corpus)
    )
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        if pairs[best] < 2:
            break
        merges.append(best)
        merged_words: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged_words[tuple(out)] += count
        words = merged_words
    return merges


def _vocabulary(control_tokens: Sequence[str] = (), script: Sequence[str] = ()
                ) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    byte_map = _byte_to_unicode()
    tokens = [byte_map[b] for b in range(256)]
    merges = _train_merges(_CORPUS, N_MERGES, byte_map)
    known = set(tokens)
    for left, right in merges:
        if left + right not in known:
            tokens.append(left + right)
            known.add(left + right)
    specials = (ENDOFTEXT, IM_START, IM_END, *control_tokens)
    for text in script:  # phrases the script says as one token
        entry = _entry(text)
        if text not in specials and entry not in known:
            tokens.append(entry)
            known.add(entry)
    types = [int(TokenType.NORMAL)] * len(tokens)
    for special in specials:
        tokens.append(special)
        types.append(int(TokenType.CONTROL))
    ids = {token: i for i, token in enumerate(tokens)}
    return tokens, types, [f"{left} {right}" for left, right in merges], ids


def _entry(text: str) -> str:
    """A normal token's vocabulary entry for `text` (GPT-2's byte map)."""
    byte_map = _byte_to_unicode()
    return "".join(byte_map[b] for b in text.encode())


def _is_printable_ascii(token: str, unicode_to_byte: dict[str, int]) -> bool:
    return all(0x20 <= unicode_to_byte[ch] <= 0x7E for ch in token)


def _weights(rng: np.random.Generator, tokens: list[str], ids: dict[str, int],
             script: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """Random weights, in numpy's (rows=outputs, cols=inputs) layout, which the writer turns
    into ggml's reversed shape."""
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD
    n_embd_kv = head_dim * N_HEAD_KV

    def normal(*shape: int, std: float) -> np.ndarray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    # Projections of a normalised input (entries ~1) get std 1/sqrt(fan_in): outputs ~1.
    unit = 1.0 / np.sqrt(N_EMBD)
    tensors: dict[str, np.ndarray] = {}
    embd = normal(n_vocab, N_EMBD, std=1.0)
    embd[:, 0] = _CONST_DIM_VALUE
    tensors["token_embd.weight"] = embd
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}"
        tensors[f"{prefix}.attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        tensors[f"{prefix}.attn_q.weight"] = normal(N_EMBD, N_EMBD, std=unit)
        tensors[f"{prefix}.attn_k.weight"] = normal(n_embd_kv, N_EMBD, std=unit)
        tensors[f"{prefix}.attn_v.weight"] = normal(n_embd_kv, N_EMBD, std=unit)
        attn_out = normal(N_EMBD, N_EMBD, std=_UPDATE_STD / np.sqrt(N_EMBD))
        attn_out[0, :] = 0.0  # never write the constant dimension
        tensors[f"{prefix}.attn_output.weight"] = attn_out
        tensors[f"{prefix}.ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        tensors[f"{prefix}.ffn_gate.weight"] = normal(N_FF, N_EMBD, std=unit)
        tensors[f"{prefix}.ffn_up.weight"] = normal(N_FF, N_EMBD, std=unit)
        # silu(gate) * up has a std of about 0.5.
        ffn_down = normal(N_EMBD, N_FF, std=2 * _UPDATE_STD / np.sqrt(N_FF))
        ffn_down[0, :] = 0.0
        tensors[f"{prefix}.ffn_down.weight"] = ffn_down
    tensors["output_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)

    # After the final RMS norm the constant dimension reads about `const_normed`; dividing
    # by it keeps the biases in logit units.
    other_var = 1.0 + 2 * N_LAYER * _UPDATE_STD**2
    const_normed = _CONST_DIM_VALUE / np.sqrt((_CONST_DIM_VALUE**2 + (N_EMBD - 1) * other_var) / N_EMBD)
    unicode_to_byte = {ch: b for b, ch in _byte_to_unicode().items()}
    bias = np.zeros(n_vocab, dtype=np.float32)
    for i, token in enumerate(tokens):
        # Control tokens come last; none is ever said as text, and the end token gets its own
        # bias just below.
        if i >= ids[ENDOFTEXT] or not _is_printable_ascii(token, unicode_to_byte):
            bias[i] = _BIAS_UNPRINTABLE
    bias[ids[IM_END]] = _BIAS_END
    output = normal(n_vocab, N_EMBD, std=_LOGIT_STD / np.sqrt(N_EMBD - 1))
    output[:, 0] = bias / const_normed
    for dim, (token, successor) in enumerate(zip(script, script[1:]), start=1):
        embd[:, dim] = 0.0
        embd[token, dim] = _SCRIPT_EMBED
        output[:, dim] = 0.0
        output[successor, dim] = _SCRIPT_WEIGHT
    tensors["output.weight"] = output
    return tensors


def write_tiny_gguf(
    path: Path,
    *,
    chat_template: str | None = CHATML,
    ctx_len: int = 2048,
    seed: int = 0,
    control_tokens: Sequence[str] = (),
    script: Sequence[str] = (),
) -> Path:
    """Write the tiny chat model to `path` and return `path`. `chat_template=None` writes no
    template, for tests of the fallback; `control_tokens` and `script`: see the module."""
    path = Path(path)
    if len(set(script)) != len(script) or len(script) > N_EMBD:
        raise ValueError("a script names each token once, at most N_EMBD of them")
    tokens, types, merges, ids = _vocabulary(control_tokens, script)
    specials = {ENDOFTEXT, IM_START, IM_END, *control_tokens}
    steps = [ids[text] if text in specials else ids[_entry(text)] for text in script]
    tensors = _weights(np.random.default_rng(seed), tokens, ids, steps)

    return _write(path, "llama", "tiny-chat", tensors, (tokens, types, merges, ids), ctx_len, chat_template)


def _write(path: Path, arch: str, name: str, tensors: dict[str, np.ndarray],
           vocabulary: tuple[list[str], list[int], list[str], dict[str, int]], ctx_len: int,
           chat_template: str | None, extra: dict[str, str] | None = None) -> Path:
    """The header, the tokenizer and the tensors, shared by the chat model and the reranker;
    `extra`: more string keys."""
    tokens, types, merges, ids = vocabulary
    writer = GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_context_length(ctx_len)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(ROPE_DIMS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(LlamaFileType.ALL_F32)
    if arch == "qwen3":  # the reranker
        writer.add_pooling_type(PoolingType.RANK)
        writer.add_classifier_output_labels(RERANK_LABELS)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids[IM_START])
    writer.add_eos_token_id(ids[IM_END])
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    return _finish(writer, tensors, path)


def _finish(writer: GGUFWriter, tensors: dict[str, np.ndarray], path: Path) -> Path:
    """The tensors, then the file written and closed."""
    for tensor_name, array in tensors.items():
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# The reranker: Qwen3's architecture with a classification head (`cls.output`) of two outputs,
# as Qwen3-Reranker GGUFs have (llama.cpp takes the softmax of the last token's; the score is
# the first, "yes"), and its `rerank` template, in Qwen3-Reranker's shape.
RERANK_LABELS = ("yes", "no")
RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query. "
    "Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
    "<Query>: {query}\n<Document>: {document}<|im_end|>\n<|im_start|>assistant\n"
)


def write_tiny_reranker(path: Path, *, rerank_template: str | None = RERANK_TEMPLATE, seed: int = 1) -> Path:
    """Write a tiny reranker to `path` and return `path`: the chat model's vocabulary and
    random weights in the qwen3 architecture (per-head Q and K norms), pooling type RANK and a
    classification head. `rerank_template=None` leaves the template out, so pairs take
    llama.cpp's fallback format. Its scores mean nothing, but they differ from pair to pair."""
    path = Path(path)
    tokens, types, merges, ids = _vocabulary()
    rng = np.random.default_rng(seed)
    tensors = _weights(rng, tokens, ids)
    head_dim = N_EMBD // N_HEAD
    for layer in range(N_LAYER):
        tensors[f"blk.{layer}.attn_q_norm.weight"] = np.ones(head_dim, dtype=np.float32)
        tensors[f"blk.{layer}.attn_k_norm.weight"] = np.ones(head_dim, dtype=np.float32)
    tensors["cls.output.weight"] = rng.normal(0.0, 8.0 / np.sqrt(N_EMBD),
                                              size=(len(RERANK_LABELS), N_EMBD)).astype(np.float32)
    extra = {"tokenizer.chat_template.rerank": rerank_template} if rerank_template is not None else None
    return _write(path, "qwen3", "tiny-reranker", tensors, (tokens, types, merges, ids), 2048, None, extra)


# The projector: llava's "mlp" type (a ViT, then two linear layers with a GELU between), tiny.
# An image is resized to MMPROJ_IMAGE_SIZE square and cut into patches of MMPROJ_PATCH_SIZE:
# (56 / 14)^2 = 16 image tokens, each an embedding of the chat model's width.
MMPROJ_IMAGE_SIZE = 56
MMPROJ_PATCH_SIZE = 14
MMPROJ_IMAGE_TOKENS = (MMPROJ_IMAGE_SIZE // MMPROJ_PATCH_SIZE) ** 2
_V_EMBD = 32
_V_HEAD = 2
_V_FF = 64
_V_LAYER = 2  # llava reads the features of the last layer but one: the first
_MM_HIDDEN = 64


def write_tiny_mmproj(path: Path, *, seed: int = 2, n_embd_out: int = N_EMBD) -> Path:
    """Write a tiny vision projector for the tiny chat model to `path` and return `path`:
    random (seeded) weights in llava's `mlp` layout, which mtmd loads. What it makes of an
    image means nothing, but it differs from image to image. Its embeddings keep the chat
    model's hidden dimension 0 at the constant the model's output biases read (see the
    module), so a reply after an image is printable ASCII as any other. `n_embd_out` other
    than the chat model's width makes a projector that does not fit it (mtmd refuses it)."""
    path = Path(path)
    rng = np.random.default_rng(seed)

    def normal(*shape: int, std: float) -> np.ndarray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    unit = 1.0 / np.sqrt(_V_EMBD)
    tensors: dict[str, np.ndarray] = {
        # numpy's (outputs, ...) layout; ggml's conv kernel is [patch, patch, 3, n_embd].
        "v.patch_embd.weight": normal(_V_EMBD, 3, MMPROJ_PATCH_SIZE, MMPROJ_PATCH_SIZE,
                                      std=1.0 / np.sqrt(3 * MMPROJ_PATCH_SIZE**2)),
        "v.patch_embd.bias": np.zeros(_V_EMBD, dtype=np.float32),
        "v.position_embd.weight": normal(MMPROJ_IMAGE_TOKENS, _V_EMBD, std=0.1),
        "v.pre_ln.weight": np.ones(_V_EMBD, dtype=np.float32),
        "v.pre_ln.bias": np.zeros(_V_EMBD, dtype=np.float32),
    }
    for layer in range(_V_LAYER):
        prefix = f"v.blk.{layer}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{prefix}.{name}.weight"] = normal(_V_EMBD, _V_EMBD, std=unit)
            tensors[f"{prefix}.{name}.bias"] = np.zeros(_V_EMBD, dtype=np.float32)
        for name in ("ln1", "ln2"):
            tensors[f"{prefix}.{name}.weight"] = np.ones(_V_EMBD, dtype=np.float32)
            tensors[f"{prefix}.{name}.bias"] = np.zeros(_V_EMBD, dtype=np.float32)
        tensors[f"{prefix}.ffn_up.weight"] = normal(_V_FF, _V_EMBD, std=unit)
        tensors[f"{prefix}.ffn_up.bias"] = np.zeros(_V_FF, dtype=np.float32)
        tensors[f"{prefix}.ffn_down.weight"] = normal(_V_EMBD, _V_FF, std=1.0 / np.sqrt(_V_FF))
        tensors[f"{prefix}.ffn_down.bias"] = np.zeros(_V_EMBD, dtype=np.float32)
    tensors["mm.0.weight"] = normal(_MM_HIDDEN, _V_EMBD, std=unit)
    tensors["mm.0.bias"] = np.zeros(_MM_HIDDEN, dtype=np.float32)
    mm2 = normal(n_embd_out, _MM_HIDDEN, std=1.0 / np.sqrt(_MM_HIDDEN))
    mm2_bias = np.zeros(n_embd_out, dtype=np.float32)
    mm2[0, :] = 0.0  # the constant dimension: what every token embedding holds there
    mm2_bias[0] = _CONST_DIM_VALUE
    tensors["mm.2.weight"] = mm2
    tensors["mm.2.bias"] = mm2_bias

    writer = GGUFWriter(str(path), "clip")
    writer.add_name("tiny-mmproj")
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", MMPROJ_IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", MMPROJ_PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", _V_EMBD)
    writer.add_uint32("clip.vision.feed_forward_length", _V_FF)
    writer.add_uint32("clip.vision.projection_dim", n_embd_out)
    writer.add_uint32("clip.vision.block_count", _V_LAYER)
    writer.add_uint32("clip.vision.attention.head_count", _V_HEAD)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    return _finish(writer, tensors, path)


def _pixels(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def webp_bytes(width: int, height: int, *, seed: int = 0, lossless: bool = True, frames: int = 1) -> bytes:
    """A WebP made by Pillow: the pixels png_bytes makes of the same arguments (lossless: the
    same bitmap), or lossy; with `frames` > 1 an animation whose later frames are the first's
    negative."""
    from PIL import Image

    pixels = _pixels(width, height, seed)
    images = [Image.fromarray(pixels if i % 2 == 0 else 255 - pixels, "RGB") for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "WEBP", lossless=lossless, quality=80, save_all=frames > 1, append_images=images[1:],
                   duration=100)
    return out.getvalue()


def png_bytes(width: int, height: int, *, seed: int = 0) -> bytes:
    """A PNG of random RGB pixels (the standard library's zlib, no imaging package)."""
    pixels = _pixels(width, height, seed)
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
