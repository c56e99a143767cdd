"""The side-by-side benchmark end to end, tiny: `pytest benchmarks/test_bench_server.py`.

The llamaedge-only run needs nothing beyond the test dependencies. The comparison needs
llama.cpp's llama-server built from the embedded llama.cpp (`python -m
benchmarks.llama_server_build`, minutes of compiling): it is skipped when that build is not in
the cache, unless LLAMAEDGE_BENCH_BUILD_LLAMA_SERVER=1 asks this test to build it first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import llama_server_build
from benchmarks.bench_server import OURS, THEIRS, main, percentile
from tests.tiny_gguf import write_tiny_gguf

TINY = [
    "--reps", "1", "--ctx", "2048", "--stream-tokens", "12", "--concurrency", "1,3",
    "--new-prompt-tokens", "60", "--turns", "3", "--turn-tokens", "6",
    "--long-prompt-tokens", "300", "--interfered-stream-tokens", "40",
]


def _llama_server() -> Path:
    binary = llama_server_build.built_server()
    if binary is None and os.environ.get("LLAMAEDGE_BENCH_BUILD_LLAMA_SERVER") == "1":
        binary = llama_server_build.build()
    if binary is None:
        pytest.skip(
            "llama-server is not built for llama-cpp-python "
            f"{llama_server_build.installed_version()}: run `python -m benchmarks.llama_server_build` "
            "or set LLAMAEDGE_BENCH_BUILD_LLAMA_SERVER=1"
        )
    return binary


def _check_side(result: dict, side: str) -> None:
    (rep,) = result["runs"][side]
    for clients in ("1", "3"):
        row = rep["concurrency"][clients]
        assert len(row["ttft_ms"]) == int(clients)
        # Greedy on the tiny model never picks the end token: every stream fills its budget.
        assert row["completion_tokens"] == [12] * int(clients)
        assert row["aggregate_tokens_per_s"] > 0
        assert 0 < row["ttft_ms_median"] <= row["ttft_ms_p99"]
    assert rep["new_prompt"]["ttft_ms"] > 0
    assert rep["new_prompt"]["prompt_tokens"] > 60
    turns = rep["conversation"]
    assert len(turns["ttft_ms"]) == 3
    # Each turn resends the conversation so far: the prompts grow.
    assert turns["prompt_tokens"] == sorted(turns["prompt_tokens"])
    assert len(set(turns["prompt_tokens"])) == 3
    interference = rep["interference"]
    assert interference["stream_tokens"] == 40
    assert interference["long_prompt_tokens"] > 300
    assert interference["gap_ms_max"] >= interference["gap_ms_p99"] >= interference["gap_ms_p50"] > 0
    cold = rep["cold_start"]
    assert 0 < cold["ready_ms"] < cold["first_chat_ms"]
    assert rep["rss_bytes_after"] > 0
    assert result["rss_bytes_after_warmup"][side] > 0


def test_llamaedge_side_measures_every_row(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "server.json"
    assert main(["--model", str(model), "--sides", OURS, *TINY, "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    _check_side(result, OURS)
    assert THEIRS not in result["runs"]
    assert result["machine"]["load_average_before"] and result["machine"]["uptime_before"]
    table = output.with_suffix(".md").read_text()
    assert "conversation turn 3: TTFT" in table and "stream gap p99" in table


def test_both_servers_side_by_side(tmp_path: Path) -> None:
    binary = _llama_server()
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "server.json"
    assert main(["--model", str(model), *TINY, "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    for side in (OURS, THEIRS):
        _check_side(result, side)
    theirs_argv = result["argv"][THEIRS]
    assert theirs_argv[0] == str(binary)
    assert ["-t", "2"] == theirs_argv[theirs_argv.index("-t"):][:2]
    assert ["-np", "4"] == theirs_argv[theirs_argv.index("-np"):][:2]
    assert "--kv-unified" in theirs_argv
    # Both servers ran the same greedy model on the same messages: the same first stream.
    assert result["runs"][OURS][0]["concurrency"]["1"]["text_head"] == result["runs"][THEIRS][0]["concurrency"]["1"]["text_head"]
    ratios = {row["metric"]: row["ratio"] for row in result["table"] if "ratio" in row}
    assert ratios["1 client: aggregate tokens/s"] > 0
    assert ratios["cold start to first finished chat"] > 0


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([10.0, 20.0], 99) == pytest.approx(19.9)
    assert percentile([7.0], 99) == 7.0


def test_without_llama_server_it_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(llama_server_build.CACHE_ENV, str(tmp_path / "empty-cache"))
    assert llama_server_build.built_server() is None
    assert llama_server_build.server_binary().is_relative_to(tmp_path / "empty-cache")
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    assert main(["--model", str(model), "--reps", "1", "--output", str(tmp_path / "out.json")]) == 2
    assert "python -m benchmarks.llama_server_build" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
