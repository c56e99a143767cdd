"""Images through llama.cpp's multimodal library (mtmd): a model's projector (`mmproj`),
images decoded from their bytes, prompts of text and images tokenized, and an image decoded
into a sequence's KV cells.

In a prompt's token list an image is a run of placeholder ids, one per position it takes in
the sequence (`n_pos`: as many as its embeddings for most models, fewer for M-RoPE ones),
all the same negative number drawn from the image's hash (mtmd's helper hashes the bytes
with SHA-256, as llama-server keys its cache). So the scheduler's prefix matching reuses an
image's cells as it reuses text's: the same image at the same place gives the same run, and
another image another run. The scheduler never feeds a placeholder to a text decode: a run
goes whole to `LlamaDecoder.decode_image`.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as lc
from llama_cpp import mtmd_cpp as mtmd

from llamaedge.engine.backend import forward_log
from llamaedge.engine.errors import BadInput, LoadError
from llamaedge.images import SUPPORTED, ImageError, decode_webp, image_format

log = logging.getLogger("llamaedge.engine")


def _placeholder(image_id: bytes, index: int) -> int:
    """The placeholder of the `index`-th chunk of the image `image_id`: a negative int32."""
    digest = hashlib.sha256(image_id + b"#%d" % index).digest()
    return -1 - (int.from_bytes(digest[:4], "little") & 0x3FFF_FFFF)


class ImageChunk:
    """One image's chunk of a tokenized prompt (an mtmd_input_chunk it owns, freed with it)."""

    def __init__(self, chunk: int, n_tokens: int, n_pos: int) -> None:
        self.chunk = chunk
        self.n_tokens = n_tokens  # embeddings it gives the model (what usage counts)
        self.n_pos = n_pos  # positions it takes in the sequence (its placeholders)
        weakref.finalize(self, mtmd.mtmd_input_chunk_free, chunk)


@dataclass
class MediaPrompt:
    """A prompt of text and images, tokenized (see the module)."""

    tokens: list[int]  # text tokens, and each image chunk's run of placeholders
    images: dict[int, ImageChunk]  # placeholder -> its image chunk
    n_tokens: int  # what the model reads: text tokens and image embeddings


class Image:
    """A decoded image (an mtmd bitmap it owns)."""

    def __init__(self, bitmap: int) -> None:
        self.bitmap = bitmap
        self.width = mtmd.mtmd_bitmap_get_nx(bitmap)
        self.height = mtmd.mtmd_bitmap_get_ny(bitmap)
        weakref.finalize(self, mtmd.mtmd_bitmap_free, bitmap)


class Projector:
    """A model's projector, loaded beside it: reads images into embeddings the model takes."""

    def __init__(self, path: Path, model: ctypes.c_void_p, *, use_gpu: bool, threads: int) -> None:
        if not path.is_file():
            raise LoadError(f"projector file not found: {path}", hint="check the --mmproj path")
        mtmd.mtmd_helper_log_set(forward_log, ctypes.c_void_p(0))
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = threads
        params.print_timings = False
        ctx = mtmd.mtmd_init_from_file(str(path).encode(), model, params)
        if not ctx:
            raise LoadError(f"llama.cpp could not load the projector {path.name} for this model",
                            hint="is it the mmproj GGUF made for this very model? (run with -v for details)")
        self._ctx = ctx
        if not mtmd.mtmd_support_vision(ctx):
            self.close()
            raise LoadError(f"the projector {path.name} reads no images (an audio projector?)",
                            hint="give the model's vision projector")
        self.path = path
        self.marker = mtmd.mtmd_default_marker()

    def image(self, data: bytes) -> Image:
        """`data` decoded. BadInput when it is not an image of a format this host reads."""
        kind = image_format(data)
        if kind is None:
            raise BadInput(f"the image is not a {SUPPORTED} image")
        if kind == "webp":
            return self._webp(data)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        wrapper = mtmd.mtmd_helper_bitmap_init_from_buf_wrapper(self._ctx, buf, len(data), False,
                                                                mtmd.mtmd_helper_init_opt_default())
        if wrapper.video_ctx:
            mtmd.mtmd_helper_video_free(wrapper.video_ctx)
        if not wrapper.bitmap:
            raise BadInput("the image could not be decoded (corrupt or truncated)")
        return Image(wrapper.bitmap)

    @staticmethod
    def _webp(data: bytes) -> Image:
        """A WebP, decoded by the host (mtmd decodes it only through ffmpeg, which this build
        lacks: images.decode_webp) and given to mtmd as a bitmap, with the id mtmd's helper
        gives the other formats (the SHA-256 of the file's bytes), so that the prompt cache
        knows it again."""
        try:
            width, height, rgb = decode_webp(data)
        except ImageError as err:
            raise BadInput(str(err)) from err
        bitmap = mtmd.mtmd_bitmap_init(width, height, (ctypes.c_uint8 * len(rgb)).from_buffer_copy(rgb))
        if not bitmap:
            raise BadInput("the image could not be decoded")
        mtmd.mtmd_bitmap_set_id(bitmap, hashlib.sha256(data).hexdigest().encode())
        return Image(bitmap)

    def tokenize(self, text: bytes, images: list[Image], bos: int) -> MediaPrompt:
        """`text`, where each marker (`self.marker`) stands for the next of `images`, as the
        model reads it. BadInput when markers and images do not pair up."""
        n_markers = text.count(self.marker)
        if n_markers != len(images):
            raise BadInput(f"the prompt has {n_markers} image markers ({self.marker.decode()}) for "
                           f"{len(images)} images")
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            inp = mtmd.mtmd_input_text(text=text, text_len=len(text), add_special=True, parse_special=True)
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(images)))(*[image.bitmap for image in images])
            rc = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(inp), bitmaps, len(images))
            if rc != 0:
                raise BadInput(f"the projector could not read the images (mtmd_tokenize returned {rc})")
            return self._prompt(chunks, bos)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)

    def _prompt(self, chunks: int, bos: int) -> MediaPrompt:
        tokens: list[int] = []
        held: dict[int, ImageChunk] = {}
        n_tokens = 0
        seen: dict[bytes, int] = {}  # image id -> its chunks so far (one image may make several)
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t(0)
                ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                text_tokens = list(ptr[:n.value]) if n.value else []
                if not tokens and len(text_tokens) >= 2 and text_tokens[0] == text_tokens[1] == bos:
                    del text_tokens[0]  # the template wrote the BOS and mtmd added one (see Model.tokenize)
                tokens += text_tokens
                n_tokens += len(text_tokens)
                continue
            if kind != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                raise BadInput("only images are supported, not audio")
            image_id = mtmd.mtmd_input_chunk_get_id(chunk) or b""
            index = seen.get(image_id, 0)
            seen[image_id] = index + 1
            owned = mtmd.mtmd_input_chunk_copy(chunk)
            image = ImageChunk(owned, n_tokens=mtmd.mtmd_input_chunk_get_n_tokens(chunk),
                               n_pos=mtmd.mtmd_input_chunk_get_n_pos(chunk))
            placeholder = _placeholder(image_id, index)
            held[placeholder] = image
            tokens += [placeholder] * image.n_pos
            n_tokens += image.n_tokens
        return MediaPrompt(tokens, held, n_tokens)

    def decode(self, lctx: ctypes.c_void_p, image: ImageChunk, pos: int, slot: int, n_batch: int) -> int:
        """Encode `image` and decode its embeddings into `slot`'s cells from position `pos`;
        mtmd's return code (0: done; 1: no room in the KV cache; else an error)."""
        new_pos = lc.llama_pos(pos)
        return mtmd.mtmd_helper_eval_chunk_single(self._ctx, lctx, image.chunk, pos, slot, n_batch, False,
                                                  ctypes.byref(new_pos))

    def close(self) -> None:
        if self._ctx:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None
