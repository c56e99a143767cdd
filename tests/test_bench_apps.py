"""The mounted-apps benchmark (benchmarks/bench_apps.py) end to end, tiny.

The llama-server row needs llama.cpp's llama-server built from the embedded llama.cpp
(`python -m benchmarks.llama_server_build`): that test is skipped when the build is not in
the cache. Without it the benchmark still runs its llamaedge rows and records why the
llama-server row is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_apps, llama_server_build
from benchmarks.columns import OURS, THEIRS
from tests.tiny_gguf import write_tiny_gguf

TINY = ["--requests", "6", "--clients", "2", "--reps", "2"]


def _run(tmp_path: Path) -> dict:
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "apps.json"
    assert bench_apps.main(["--model", str(model), *TINY, "--output", str(output)]) == 0
    return json.loads(output.read_text())


def _rows(result: dict, name: str) -> dict[int, dict]:
    return {row["clients"]: row for row in result["rows"] if row["row"] == name}


def test_llama_server_row_runs_the_same_chat_on_both_servers(tmp_path: Path) -> None:
    binary = llama_server_build.built_server()
    if binary is None:
        pytest.skip(f"llama-server is not built for llama-cpp-python {llama_server_build.installed_version()}: "
                    "run `python -m benchmarks.llama_server_build`")
    result = _run(tmp_path)

    assert result["llama_server_skipped"] is None
    theirs_argv = result["argv"][THEIRS]
    assert theirs_argv[0] == str(binary)
    # Same threads, context and slots as llamaedge's side.
    ours_argv = result["argv"][OURS]
    for theirs_flag, ours_flag in (("-t", "--threads"), ("-c", "--ctx-size"), ("-np", "--parallel")):
        assert theirs_argv[theirs_argv.index(theirs_flag) + 1] == ours_argv[ours_argv.index(ours_flag) + 1]
    assert ours_argv[ours_argv.index("--parallel") + 1] == "2"
    # Interleaved: each side ran every client count in every repetition, first every other one.
    for side in (OURS, THEIRS):
        runs = result["chat_runs"][side]
        assert sorted((r["rep"], r["clients"]) for r in runs) == [(0, 1), (0, 2), (1, 1), (1, 2)]
        firsts = [r["first"] for r in sorted(runs, key=lambda r: r["rep"]) if r["clients"] == 1]
        assert firsts in ([True, False], [False, True])
        assert all(r["requests"] == 6 and r["requests_per_s"] > 0 for r in runs)
    theirs_rows = _rows(result, "chat, max_tokens 1, llama-server")
    assert set(theirs_rows) == {1, 2}
    for entry in result["chat_summary"]:
        ours_rps = entry[OURS]["requests_per_s_median"]
        theirs_rps = entry[THEIRS]["requests_per_s_median"]
        assert entry["ratio_requests_per_s"] == pytest.approx(ours_rps / theirs_rps, abs=0.01)
        assert theirs_rows[entry["clients"]]["requests_per_s_median"] == theirs_rps
    assert result["machine"]["uptime_before"] and result["machine"]["uptime_after"]
    assert result["processes"][THEIRS]["behaviour_env"] == result["processes"][OURS]["behaviour_env"] == {}
    assert [rep["order"][0] for rep in result["reps"]] == [OURS, THEIRS]
    assert all(len(rep["load_average_before"]) == 3 for rep in result["reps"])


def test_without_llama_server_the_row_is_skipped_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(llama_server_build, "built_server", lambda version=None: None)
    result = _run(tmp_path)

    assert "llama-server is not built" in capsys.readouterr().err
    assert "python -m benchmarks.llama_server_build" in result["llama_server_skipped"]
    assert THEIRS not in result["argv"] and THEIRS not in result["chat_runs"]
    assert not _rows(result, "chat, max_tokens 1, llama-server")
    assert all("ratio_requests_per_s" not in entry for entry in result["chat_summary"])
    # The llamaedge rows still ran.
    assert set(_rows(result, "trivial app")) == {1, 2}
    assert set(_rows(result, "chat, max_tokens 1")) == {1, 2}
    assert set(result["instantiate_ms_median"]) == {"ok.wasm (WAT)", "chat-server.wasm", "review.wasm"}
