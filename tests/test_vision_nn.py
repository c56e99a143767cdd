"""Images through WASI-NN, as WasmEdge's GGML plugin takes them: the `mmproj` load option,
`<img src="data:image/...;base64,...">` tags in the prompt and the `image` option's file at
the prompt's `<image>`; and an app written the way WasmEdge's llava example is, under
`llamaedge run-wasm`. The tiny model with its tiny projector (random weights)."""

from __future__ import annotations

import base64
import json
import logging
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaedge.limits import IMAGE_PIXELS_MAX
from llamaedge.runtime import Runtime
from llamaedge.runtime.nn.errors import Errno
from tests.nn_harness import Harness, harness, harness_app, preloaded
from tests.tiny_gguf import MMPROJ_IMAGE_TOKENS, png_bytes, webp_bytes
from tests.wat_apps import nn_compute_app, write_app

GREEDY = {"temp": 0, "seed": 1, "n-predict": 6}


def _tag(data: bytes, kind: str = "png") -> str:
    return f'<img src="data:image/{kind};base64,{base64.b64encode(data).decode()}">'


def _prompt(image_part: str, question: str = "What is it?") -> bytes:
    return f"<|im_start|>user\n{image_part}\n{question}<|im_end|>\n<|im_start|>assistant\n".encode()


@pytest.fixture(scope="module")
def runtime(tiny_model: Path) -> Iterator[Runtime]:
    with preloaded(tiny_model, ctx_size=512) as (_, runtime):
        yield runtime


@pytest.fixture
def nn(runtime: Runtime) -> Iterator[Harness]:
    with harness(runtime, harness_app(runtime)) as h:
        yield h


def _context(nn: Harness, tiny_mmproj: Path, metadata: dict | None = None) -> int:
    rc, graph = nn.load_by_name("default", {"mmproj": str(tiny_mmproj)})
    assert rc == Errno.SUCCESS
    rc, ctx = nn.init_context(graph)
    assert rc == Errno.SUCCESS
    assert nn.set_input(ctx, 1, {**GREEDY, **(metadata or {})}) == Errno.SUCCESS
    return ctx


def test_an_image_tag_in_the_prompt_is_read_and_counted(nn: Harness, tiny_mmproj: Path) -> None:
    ctx = _context(nn, tiny_mmproj)
    prompt = _prompt(_tag(png_bytes(20, 20, seed=1)))
    assert nn.set_input(ctx, 0, prompt) == Errno.SUCCESS
    rc, text_only = nn.get_output(ctx, 3)
    assert rc == 0 and b"<__media__>" in text_only and b"base64" not in text_only
    counted = nn.metadata(ctx)["input_tokens"]
    assert nn.set_input(ctx, 0, _prompt("")) == Errno.SUCCESS
    assert counted - nn.metadata(ctx)["input_tokens"] >= MMPROJ_IMAGE_TOKENS  # the image's 16, and its newline
    assert nn.set_input(ctx, 0, prompt) == Errno.SUCCESS
    assert nn.call("compute", ctx) == Errno.SUCCESS
    rc, out = nn.get_output(ctx, 0)
    assert rc == 0 and out and out.decode("ascii").isprintable()
    # The same prompt again: its image's cells are reused.
    assert nn.set_input(ctx, 0, prompt) == Errno.SUCCESS
    assert nn.call("compute", ctx) == Errno.SUCCESS
    assert nn.metadata(ctx)["cached_tokens"] == counted - 1
    assert nn.get_output(ctx, 0) == (0, out)


def test_a_webp_tag_reads_as_the_same_pixels_in_a_png(nn: Harness, tiny_mmproj: Path) -> None:
    outputs = []
    for tag in (_tag(webp_bytes(20, 20, seed=4), "webp"), _tag(png_bytes(20, 20, seed=4))):
        ctx = _context(nn, tiny_mmproj)
        assert nn.set_input(ctx, 0, _prompt(tag)) == Errno.SUCCESS
        assert nn.call("compute", ctx) == Errno.SUCCESS
        outputs.append((nn.get_output(ctx, 0), nn.metadata(ctx)["input_tokens"]))
    assert outputs[0] == outputs[1] and outputs[0][0][1]


def test_the_image_option_shows_a_file_at_the_prompts_marker(nn: Harness, tiny_mmproj: Path, tmp_path: Path) -> None:
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes(30, 20, seed=3))
    ctx = _context(nn, tiny_mmproj, {"image": str(picture)})
    assert nn.set_input(ctx, 0, _prompt("<image>")) == Errno.SUCCESS
    out, end = nn.stream(ctx)
    assert end == Errno.END_OF_SEQUENCE and out
    assert nn.set_input(ctx, 0, _prompt("no marker")) == Errno.INVALID_ARGUMENT
    # The placeholder of the plugin's first llava support marks the place as well.
    assert nn.set_input(ctx, 0, _prompt("{WASMEDGE_IMAGE}")) == Errno.SUCCESS
    again, end = nn.stream(ctx)
    assert end == Errno.END_OF_SEQUENCE and again == out
    assert nn.set_input(ctx, 1, {"image": str(tmp_path / "missing.png")}) == Errno.SUCCESS
    assert nn.set_input(ctx, 0, _prompt("<image>")) == Errno.INVALID_ARGUMENT


def test_bad_images_are_invalid_arguments(nn: Harness, tiny_mmproj: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = _context(nn, tiny_mmproj)
    huge = bytearray(png_bytes(2, 2))
    huge[16:24] = struct.pack(">II", 10_000, 10_000)  # the header claims 100 M pixels
    assert 10_000 * 10_000 > IMAGE_PIXELS_MAX
    caplog.set_level(logging.INFO)
    for bad, why in [
        (_tag(b"plain text, not an image"), "not an image"),
        (_tag(webp_bytes(16, 16)[:60], "webp"), "WebP image could not be decoded"),
        (_tag(bytes(huge)), "image_pixels_max"),
        ('<img src="data:image/png;base64,abc">', "does not decode"),
        (_tag(png_bytes(4, 4)) + "<image>", "2 image markers"),
    ]:
        caplog.clear()
        rc = nn.set_input(ctx, 0, _prompt(bad))
        assert rc == Errno.INVALID_ARGUMENT, why
        assert why in caplog.text, caplog.text


def test_a_llava_style_app_runs_under_run_wasm(tmp_path: Path, tiny_model: Path, tiny_mmproj: Path) -> None:
    """The shape of WasmEdge's llava example: the projector and the image's file in the
    graph's config (load_by_name_with_config), the prompt with `<image>` where the image goes,
    compute, get_output."""
    picture = tmp_path / "monalisa.png"
    picture.write_bytes(png_bytes(8, 12, seed=5))  # small: the inline one must fit the app's 6 KiB of prompt
    config = json.dumps({"mmproj": str(tiny_mmproj), "image": str(picture), "ctx-size": 512, "n-predict": 8,
                         "temp": 0})
    prompt = "You are a helpful assistant.\nUSER:<image>\nWhat is in the picture?\nASSISTANT:"
    app = write_app(tmp_path, "llava.wasm", nn_compute_app(prompt, config, at_load=True))
    result = subprocess.run([sys.executable, "-m", "llamaedge", "run-wasm", "--nn-preload",
                             f"default:GGML:AUTO:{tiny_model}", str(app)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout and result.stdout.isprintable()
    # The same app with its image inline (WasmEdge's llava-base64-stream example's way).
    inline = prompt.replace("<image>", _tag(png_bytes(8, 12, seed=5)))
    config = json.dumps({"mmproj": str(tiny_mmproj), "ctx-size": 512, "n-predict": 8, "temp": 0})
    app = write_app(tmp_path, "llava64.wasm", nn_compute_app(inline, config, at_load=True))
    again = subprocess.run([sys.executable, "-m", "llamaedge", "run-wasm", "--nn-preload",
                            f"default:GGML:AUTO:{tiny_model}", str(app)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout  # the same pixels, the same greedy answer
