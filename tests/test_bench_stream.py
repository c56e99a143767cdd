"""The streaming benchmark (benchmarks/bench_stream.py) end to end on the tiny generated model.

Beyond keeping the benchmark working, this checks something the product promises: through HTTP,
the WebAssembly app and the engine, the server streams exactly the tokens a bare llama.cpp
greedy loop produces. And that both sides run with the environment the benchmark built, not
this process's (which has tests/conftest.py's OMP_WAIT_POLICY=PASSIVE)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_stream import main
from tests.tiny_gguf import write_tiny_gguf


def test_server_streams_what_raw_llama_cpp_generates(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "results.json"
    assert main(["--model", str(model), "--runs", "2", "--max-tokens", "24", "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    assert result["same_token_counts"] is True
    assert result["same_text"] is True
    for side in ("raw", "ours"):
        runs = result[side]["runs"]
        assert len(runs) == 2
        for run in runs:
            # Greedy on the tiny model never picks the end token: every run fills the budget.
            assert run["completion_tokens"] == 24
            assert run["ttft_ms"] > 0
            assert run["tokens_per_s"] > 0
    assert result["ratios_ours_over_raw"]["ttft"] > 0
    assert result["ratios_ours_over_raw"]["tokens_per_s"] > 0
    for side in ("raw", "ours"):
        assert result["processes"][side]["behaviour_env"] == {}
    assert result["processes"]["raw"]["argv"][1:4] == ["-m", "benchmarks.raw_llama", "stream"]
    assert result["env_not_passed"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert [entry["first"] for entry in result["load_per_round"]] == ["raw", "ours"]  # who goes first alternates


def test_raw_only_writes_no_server_side(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "results.json"
    assert main(["--model", str(model), "--runs", "1", "--max-tokens", "8", "--raw-only",
                 "--env", "OMP_WAIT_POLICY=PASSIVE", "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    assert "ours" not in result and "ratios_ours_over_raw" not in result
    assert result["raw"]["runs"][0]["completion_tokens"] == 8
    assert result["processes"]["raw"]["behaviour_env"] == {"OMP_WAIT_POLICY": "PASSIVE"}  # asked for, so passed
