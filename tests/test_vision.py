"""Images on the engine: the tiny model with its tiny projector (llava's mlp type, random
weights) through llama.cpp's mtmd: decoding, token counts, the prompt cache, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaedge.engine import BadInput, LoadError, LoadOptions, Model, SamplingOptions
from llamaedge.images import ImageError, check_image, decode_webp, dimensions, image_format
from llamaedge.limits import IMAGE_PIXELS_MAX
from tests.tiny_gguf import MMPROJ_IMAGE_TOKENS, png_bytes, webp_bytes, write_tiny_mmproj

GREEDY = SamplingOptions(temp=0, n_predict=8)


@pytest.fixture(scope="module")
def vision_model(tiny_model: Path, tiny_mmproj: Path) -> Iterator[Model]:
    model = Model(tiny_model, LoadOptions(threads=2, ctx_size=1024, parallel=2, mmproj=tiny_mmproj))
    yield model
    model.close()


def _prompt(model: Model, question: str) -> bytes:
    marker = model.media_marker.decode()
    return f"<|im_start|>user\n{marker}\n{question}<|im_end|>\n<|im_start|>assistant\n".encode()


def _run(model: Model, text: bytes, image: bytes) -> tuple[list[int], object]:
    prompt = model.tokenize_media(text, [model.read_image(image)])
    seq = model.generate(prompt.tokens, GREEDY, images=prompt.images)
    out = b"".join(seq)
    assert seq.finish_reason in ("stop", "length"), seq.error
    return prompt.tokens, (seq, out)


def test_a_model_with_a_projector_reads_images(vision_model: Model) -> None:
    assert vision_model.vision
    assert vision_model.media_marker == b"<__media__>"
    text = _prompt(vision_model, "What is this?")
    prompt = vision_model.tokenize_media(text, [vision_model.read_image(png_bytes(40, 30))])
    text_tokens = vision_model.tokenize(text.replace(b"<__media__>", b""))
    # The image's embeddings count as tokens the model reads: llava's 16 patches here.
    assert prompt.n_tokens == len(prompt.tokens)  # llava: one position per embedding
    assert sum(1 for token in prompt.tokens if token < 0) == MMPROJ_IMAGE_TOKENS
    assert abs(len(prompt.tokens) - MMPROJ_IMAGE_TOKENS - len(text_tokens)) <= 2  # "\n" may merge
    assert len(prompt.images) == 1 and next(iter(prompt.images.values())).n_tokens == MMPROJ_IMAGE_TOKENS
    seq = vision_model.generate(prompt.tokens, GREEDY, images=prompt.images)
    out = b"".join(seq)
    assert seq.finish_reason in ("stop", "length"), seq.error
    assert out.decode("ascii").isprintable()
    assert b"<__media__>" in vision_model.detokenize(prompt.tokens)


def test_the_same_image_again_reuses_its_cells(vision_model: Model) -> None:
    text = _prompt(vision_model, "Describe it.")
    image = png_bytes(64, 64, seed=7)
    tokens, (first, first_out) = _run(vision_model, text, image)
    _tokens, (again, again_out) = _run(vision_model, text, image)
    assert again.n_cached == len(tokens) - 1  # all but the last token, the image included
    assert again_out == first_out  # greedy, and the cells reused hold what a fresh read makes
    # Another image at the same place: only the text before it is reused.
    start = tokens.index(next(token for token in tokens if token < 0))
    _tokens, (other, _out) = _run(vision_model, text, png_bytes(64, 64, seed=8))
    assert other.n_cached <= start


def test_a_follow_up_turn_reuses_the_image(vision_model: Model) -> None:
    first_text = _prompt(vision_model, "What colour?")
    image = png_bytes(32, 32, seed=11)
    tokens, (first, out) = _run(vision_model, first_text, image)
    follow = first_text + out + b"<|im_end|>\n<|im_start|>user\nAnd the shape?<|im_end|>\n<|im_start|>assistant\n"
    _tokens, (second, _out) = _run(vision_model, follow, image)
    assert second.n_cached >= len(tokens)


def test_webp_is_decoded_by_the_host_into_the_same_bitmap(vision_model: Model) -> None:
    """mtmd reads WebP only through ffmpeg, which this build lacks: the host decodes it
    (Pillow) and gives mtmd the bitmap. A lossless WebP of a PNG's pixels reads as the PNG."""
    text = _prompt(vision_model, "What is this?")
    png, webp = png_bytes(40, 24, seed=13), webp_bytes(40, 24, seed=13)
    assert check_image(webp) == "webp" and dimensions(webp) == (40, 24)
    image = vision_model.read_image(webp)
    assert (image.width, image.height) == (40, 24)
    webp_tokens, (_seq, webp_out) = _run(vision_model, text, webp)
    assert sum(1 for token in webp_tokens if token < 0) == MMPROJ_IMAGE_TOKENS
    # The same WebP again reuses its cells (its bitmap has an id, as mtmd's helper gives).
    _tokens, (again, again_out) = _run(vision_model, text, webp)
    assert again.n_cached == len(webp_tokens) - 1 and again_out == webp_out
    _tokens, (_seq, png_out) = _run(vision_model, text, png)
    assert webp_out == png_out  # greedy on the same embeddings
    # Lossy and animated ones too: an animation's first frame.
    for lossy_or_animated in (webp_bytes(40, 24, seed=13, lossless=False), webp_bytes(40, 24, seed=13, frames=2)):
        assert dimensions(lossy_or_animated) == (40, 24)
        _run(vision_model, text, lossy_or_animated)
    width, height, rgb = decode_webp(webp_bytes(40, 24, seed=13, frames=2))
    assert (width, height, rgb) == decode_webp(webp)


def test_a_webp_over_the_pixel_limit_is_refused_before_it_is_decoded() -> None:
    """The size comes from the header (VP8X's canvas here), checked before Pillow decodes."""
    data = bytearray(webp_bytes(8, 8, frames=2))
    assert data[12:16] == b"VP8X"
    data[24:30] = (9999).to_bytes(3, "little") + (9999).to_bytes(3, "little")  # 10000 x 10000
    assert 10_000 * 10_000 > IMAGE_PIXELS_MAX
    with pytest.raises(ImageError, match=r"10000x10000 pixels, over the limit .*\(image_pixels_max\)"):
        check_image(bytes(data))
    # Pillow's reading is checked too, before the pixels are: a limit under the true size.
    with pytest.raises(ImageError, match="8x8 pixels, over the limit of 63"):
        decode_webp(webp_bytes(8, 8), pixels_max=63)


def test_images_are_checked(vision_model: Model, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a PNG, JPEG, WebP, GIF"):
        vision_model.read_image(b"hello, not an image")
    with pytest.raises(BadInput, match="WebP image could not be decoded"):
        vision_model.read_image(webp_bytes(16, 16)[:60])
    with pytest.raises(BadInput, match="could not be decoded"):
        vision_model.read_image(png_bytes(8, 8)[:40])
    image = vision_model.read_image(png_bytes(8, 8))
    with pytest.raises(BadInput, match="2 image markers"):
        vision_model.tokenize_media(b"<__media__><__media__>", [image])
    assert image_format(png_bytes(4, 4)) == "png"
    plain = Model(tiny_model, LoadOptions(threads=1, ctx_size=256, parallel=1))
    try:
        assert not plain.vision
        with pytest.raises(BadInput, match="without a projector"):
            plain.read_image(png_bytes(8, 8))
    finally:
        plain.close()
    wrong = write_tiny_mmproj(tmp_path / "wide.gguf", n_embd_out=96)
    with pytest.raises(LoadError, match="projector"):
        Model(tiny_model, LoadOptions(threads=1, ctx_size=256, parallel=1, mmproj=wrong)).close()
    with pytest.raises(LoadError, match="not found"):
        Model(tiny_model, LoadOptions(threads=1, ctx_size=256, parallel=1, mmproj=tmp_path / "none.gguf")).close()
