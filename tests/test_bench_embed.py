"""The embedding benchmark (benchmarks/bench_embed.py) end to end on the tiny generated model.

Beyond keeping the benchmark working, this checks what the comparison rests on: through HTTP,
the WebAssembly app and the engine, the server returns the very vectors a bare llama.cpp
embedding loop computes."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_embed import main, sentences
from tests.tiny_gguf import write_tiny_gguf


def test_server_embeds_what_raw_llama_cpp_computes(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "results.json"
    assert main(["--model", str(model), "--runs", "2", "--sentences", "24", "--batch", "10", "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    assert result["embeddings"] == 24
    assert result["max_abs_difference"] < 1e-5
    for side in ("raw", "ours"):
        assert len(result[side]["runs_s"]) == 2
        assert result[side]["summary"]["embeddings_per_s_median"] > 0
    assert result["ratio_ours_over_raw"] > 0
    assert result["processes"]["raw"]["behaviour_env"] == result["processes"]["ours"]["behaviour_env"] == {}


def test_raw_only_writes_no_server_side(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "results.json"
    assert main(["--model", str(model), "--runs", "1", "--sentences", "8", "--raw-only", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert "ours" not in result and "ratio_ours_over_raw" not in result
    assert len(result["raw"]["runs_s"]) == 1


def test_the_sentences_differ_and_repeat_across_runs() -> None:
    assert sentences(256) == sentences(256)
    assert len(set(sentences(256))) == 256
