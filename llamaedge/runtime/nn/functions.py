"""The host functions: the bodies of the `wasi_ephemeral_nn` imports. Each takes i32s (and the
calling instance's memory) and returns nothing or raises NNError, which the runtime returns to
the guest as its error code."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llamaedge.engine import (
    LLAMA_CPP_PYTHON_VERSION,
    BadInput,
    FinishReason,
    Generation,
    GrammarError,
    LoadedModel,
    PromptTooLong,
    Token,
)
from llamaedge.images import ImageError, check_image
from llamaedge.runtime.nn.errors import Errno, NNError
from llamaedge.runtime.nn.metadata import parse_metadata
from llamaedge.runtime.nn.sessions import ExecutionContext, NNSession

log = logging.getLogger("llamaedge.wasi_nn")

MODULE = "wasi_ephemeral_nn"
ENCODING_AUTODETECT = 5
ENCODING_GGML = 6
# An image inside a prompt, as WasmEdge's GGML plugin finds it (its llava-base64-stream
# example), and the marker that stands for an image in a prompt's text (the plugin's mtmd
# media marker: the `image` option's file, or a tag once its bytes are taken out).
IMG_TAG = re.compile(rb'<img src="data:image/[A-Za-z0-9.+-]*;base64,([A-Za-z0-9+/=\s]*)">')
IMAGE_MARKER = b"<image>"
# The placeholder the plugin's first llava support split a prompt on, where the `image`
# option's file goes: taken as the marker too, so apps written for it run unchanged.
WASMEDGE_IMAGE_PLACEHOLDER = b"{WASMEDGE_IMAGE}"


def write_output(mem: Any, data: bytes, out_ptr: int, out_max_len: int, written_ptr: int) -> None:
    mem.check(out_ptr, out_max_len)  # the whole buffer offered must be the guest's own
    mem.check(written_ptr, 4)
    if len(data) > (out_max_len & 0xFFFFFFFF):
        mem.write_u32(written_ptr, len(data))
        raise NNError(Errno.TOO_LARGE, f"output of {len(data)} bytes does not fit a buffer of {out_max_len & 0xFFFFFFFF}")
    mem.write(out_ptr, data)
    mem.write_u32(written_ptr, len(data))


def _start(context: ExecutionContext, session: NNSession) -> Generation:
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
        extra = {"images": context.images} if context.images else {}  # text-only stand-ins take none
        context.sequence = context.model.generate(context.prompt, context.sampling, group=session, **extra)
    except PromptTooLong as exc:
        raise NNError(Errno.PROMPT_TOO_LONG, str(exc)) from exc
    except (BadInput, GrammarError) as exc:
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc
    if session.cancelled.is_set():
        # cancel() ran after the caller's check but before this sequence existed, so it could
        # not cancel it: cancel it here, or it would wait for a slot nobody gives it.
        context.sequence.cancel()
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
        if context.rank_mode:
            scores = context.model.rank(inputs)
        else:
            context.embeddings = context.model.embed(inputs, norm=context.embd_normalize)
    except PromptTooLong as exc:
        raise NNError(Errno.PROMPT_TOO_LONG, str(exc)) from exc
    except BadInput as exc:
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc
    if context.rank_mode:
        import numpy as np  # not at import: it is not needed to load a model and start (40 ms)

        context.embeddings = np.array([[score] for score in scores], dtype=np.float32)
        body: dict[str, Any] = {"scores": scores}
    else:
        rows = context.embeddings.tolist()
        n = context.model.n_embd
        body = {"n_embedding": n, "embeddings": rows} if context.embed_inputs is not None else {
            "n_embedding": n, "embedding": rows[0]}
    context.output = bytearray(json.dumps(body).encode())
    context.finish_reason = "stop"


def _check_embedding_inputs(model: LoadedModel, inputs: list[list[int]]) -> None:
    try:
        model.check_embedding_inputs(inputs)
    except PromptTooLong as exc:
        raise NNError(Errno.PROMPT_TOO_LONG, str(exc)) from exc
    except BadInput as exc:
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc


def _rank_pairs(model: LoadedModel, data: bytes) -> list[list[int]]:
    """set_input(3) with rank pooling: a JSON array of [query, document] string pairs, each
    formatted as llama-server formats a rerank input."""
    try:
        items = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NNError(Errno.INVALID_ARGUMENT, f"pairs to rank are not JSON: {exc}") from exc
    if not isinstance(items, list) or not items or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair) for pair in items):
        raise NNError(Errno.INVALID_ARGUMENT, "pairs to rank must be a non-empty JSON array of [query, document] strings")
    inputs = [model.rank_input(query.encode(), document.encode()) for query, document in items]
    _check_embedding_inputs(model, inputs)
    return inputs


def _media_prompt(context: ExecutionContext, data: bytes) -> Any:
    """The prompt `data` with its images (a MediaPrompt), as WasmEdge's GGML plugin reads
    them: each `<img src="data:image/...;base64,...">` tag becomes an image at its place;
    without a tag, the `image` option's file is the image at the prompt's `<image>` (or
    `{WASMEDGE_IMAGE}`). None for
    a prompt with neither. Each image is checked against llamaedge/limits.py first."""
    path = context.flags.get("image")
    tags = list(IMG_TAG.finditer(data))
    if not tags and not path:
        return None
    if context.tokenized_media is not None and context.tokenized_media[:2] == (data, path):
        return context.tokenized_media[2]
    model = context.model
    if not getattr(model, "vision", False):
        raise NNError(Errno.INVALID_ARGUMENT, "the prompt shows an image, but this model reads none: "
                      "load it with its projector (the 'mmproj' option)")
    if tags:
        try:
            blobs = [base64.b64decode(tag.group(1)) for tag in tags]
        except (binascii.Error, ValueError) as exc:
            raise NNError(Errno.INVALID_ARGUMENT, f"an image tag's base64 does not decode: {exc}") from exc
        text = IMG_TAG.sub(IMAGE_MARKER, data)
    else:
        assert path is not None  # no tags: the return above leaves only a prompt with a path
        try:
            blobs = [Path(path).read_bytes()]
        except OSError as exc:
            raise NNError(Errno.INVALID_ARGUMENT, f"the image {path!r} cannot be read: {exc.strerror}") from exc
        text = data.replace(WASMEDGE_IMAGE_PLACEHOLDER, IMAGE_MARKER)
    if text.count(IMAGE_MARKER) != len(blobs):
        raise NNError(Errno.INVALID_ARGUMENT, f"the prompt has {text.count(IMAGE_MARKER)} image markers "
                      f"({IMAGE_MARKER.decode()}) for {len(blobs)} images")
    try:
        for blob in blobs:
            check_image(blob)
        images = [model.read_image(blob) for blob in blobs]
        media = model.tokenize_media(text.replace(IMAGE_MARKER, model.media_marker), images)
    except (ImageError, BadInput) as exc:
        raise NNError(Errno.INVALID_ARGUMENT, str(exc)) from exc
    context.tokenized_media = (data, path, media)
    return media


def _token_ids(model: LoadedModel, ids: list[Any], what: str) -> list[int]:
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
        log.info("generation %s: prompt %d tokens (%d cached), %d tokens generated in %.2fs (%.1f tokens/s)",
                 context.finish_reason, len(context.prompt or ()), context.sequence.n_cached if context.sequence else 0,
                 context.n_output_tokens, elapsed_s, context.n_output_tokens / elapsed_s)


def _timings_ms(context: ExecutionContext) -> dict[str, float]:
    """The generation's times, named as llama-server's `timings` name them: `prompt_ms` from
    the prompt's submission to the first token (a wait for a free slot included), and
    `predicted_ms` from the first token to the last; 0 before the first token."""
    first = context.first_token_s
    if first is None:
        return {"prompt_ms": 0.0, "predicted_ms": 0.0}
    return {"prompt_ms": round((first - context.started_s) * 1000, 3),
            "predicted_ms": round((context.last_token_s - first) * 1000, 3)}


def _finished(context: ExecutionContext, sequence: Generation) -> NNError:
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
        if index != 3 and context.rank_mode:
            raise NNError(Errno.INVALID_ARGUMENT, "rank pooling scores (query, document) pairs: set them with index 3")
        context.reset_generation()
        context.prompt = context.embed_inputs = None
        context.images, context.n_prompt_tokens = {}, None
        media = _media_prompt(context, data) if index == 0 else None
        if media is not None:
            if context.embedding_mode:
                raise NNError(Errno.INVALID_ARGUMENT, "a prompt with images cannot be embedded")
            context.prompt, context.images, context.n_prompt_tokens = list(media.tokens), media.images, media.n_tokens
        elif index == 0:
            if context.tokenized is None or context.tokenized[0] != data:
                context.tokenized = (data, tuple(model.tokenize(data)))
            context.prompt = list(context.tokenized[1])
        elif index == 2:
            if not data or len(data) % 4:
                raise NNError(Errno.INVALID_ARGUMENT, "prompt tokens must be a non-empty array of u32")
            context.prompt = _token_ids(model, list(struct.unpack(f"<{len(data) // 4}I", data)), "prompt tokens")
        elif context.rank_mode:
            context.embed_inputs = _rank_pairs(model, data)
            return
        else:
            context.embed_inputs = self._embedding_batch(model, data)
            return
        if context.embedding_mode:
            _check_embedding_inputs(model, [context.prompt])
        elif len(context.prompt) >= model.n_ctx:
            raise NNError(Errno.PROMPT_TOO_LONG,
                          f"prompt of {len(context.prompt)} tokens does not fit the context of {model.n_ctx}")

    def _embedding_batch(self, model: LoadedModel, data: bytes) -> list[list[int]]:
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
        context.last_token_s = time.monotonic()
        if context.first_token_s is None:
            context.first_token_s = context.last_token_s
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
        # The images' embeddings count as the tokens the model reads.
        input_tokens = context.n_prompt_tokens if context.n_prompt_tokens is not None else len(context.prompt or ())
        info: dict[str, Any] = {  # a JSON object
            "input_tokens": input_tokens,
            "output_tokens": context.n_output_tokens,
            "cached_tokens": sequence.n_cached if sequence else 0,
            # Speculative decoding, named as llama-server's timings name them.
            "draft_n": sequence.n_drafted if sequence else 0,
            "draft_n_accepted": sequence.n_accepted if sequence else 0,
            **_timings_ms(context),
            "finish_reason": context.finish_reason,
            "llama_build_number": 0,
            "llama_commit": LLAMA_CPP_PYTHON_VERSION,
        }
        if context.embedding_mode:
            each = [len(t) for t in context.embed_inputs] if context.embed_inputs is not None else [input_tokens]
            # Rank pooling gives one value (the score) per input.
            n_embedding = 1 if context.rank_mode else context.model.n_embd
            info.update(input_tokens=sum(each), n_embedding=n_embedding, input_tokens_each=each)
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
