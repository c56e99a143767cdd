"""The images benchmark (benchmarks/bench_images.py) end to end, tiny: both servers read the
same image through their projectors. It needs llama-server built from the embedded llama.cpp
(`python -m benchmarks.llama_server_build`): skipped when the build is not in the cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import bench_images, llama_server_build
from benchmarks.columns import OURS, THEIRS
from tests.tiny_gguf import png_bytes, write_tiny_gguf, write_tiny_mmproj


def test_both_servers_read_the_image(tmp_path: Path) -> None:
    if llama_server_build.built_server() is None:
        pytest.skip(f"llama-server is not built for llama-cpp-python {llama_server_build.installed_version()}: "
                    "run `python -m benchmarks.llama_server_build`")
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes(40, 30, seed=9))
    output = tmp_path / "images.json"
    assert bench_images.main(["--model", str(write_tiny_gguf(tmp_path / "tiny.gguf")),
                              "--mmproj", str(write_tiny_mmproj(tmp_path / "mmproj.gguf")),
                              "--image", str(picture), "--reps", "1", "--ctx", "1024",
                              "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert {row["side"] for row in result["rows"]} == {OURS, THEIRS}
    for row in result["rows"]:
        assert row["image"] == "picture.png" and len(row["runs"]) == 1
        assert all(math.isfinite(value) and value > 0 for value in row["median"].values())
    assert result["processes"][OURS]["argv"][-2:] == result["processes"][THEIRS]["argv"][-2:]  # the same --mmproj


def test_a_file_neither_side_reads_is_refused_first(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not an image"):
        bench_images.main(["--model", "m.gguf", "--mmproj", "p.gguf", "--image", str(junk)])
