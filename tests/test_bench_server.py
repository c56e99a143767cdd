"""The side-by-side benchmark (benchmarks/bench_server.py), tiny, on the tiny generated model.

The llamaedge-only run needs nothing beyond the test dependencies. The comparison and the
table need llama.cpp's llama-server and llama-batched-bench built from the embedded llama.cpp
(`python -m benchmarks.llama_server_build`, minutes of compiling): those tests are skipped when
the build is not in the cache, unless LLAMAEDGE_BENCH_BUILD_LLAMA_SERVER=1 asks to build it.

This process has OMP_WAIT_POLICY=PASSIVE (tests/conftest.py sets it): the tests check that no
measured server gets it unless --env passes it."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import llama_server_build, readme_speed
from benchmarks.bench_server import main, percentile, row_limit
from benchmarks.columns import (LIMIT, OURS, OURS_DEFAULTS, OURS_TREE, THEIRS, THEIRS_DEFAULTS, Config, llama_server_argv,
                               ours_argv)
from benchmarks.server_table import metric_rows, render_markdown, table_keys
from tests.tiny_gguf import write_tiny_gguf

TINY = [
    "--reps", "1", "--ctx", "2048", "--stream-tokens", "12", "--concurrency", "1,3",
    "--new-prompt-tokens", "60", "--turns", "3", "--turn-tokens", "6",
    "--long-prompt-tokens", "300", "--interfered-stream-tokens", "40",
]
# The table's rows only, two repetitions so that the order rotates.
TINY_TABLE = ["--table", "--reps", "2", "--ctx", "2048", "--stream-tokens", "12", "--concurrency", "1,3",
              "--parallel", "3"]


def _built() -> Path:
    binary = llama_server_build.built_server()
    if (binary is None or llama_server_build.built_batched_bench() is None) \
            and os.environ.get("LLAMAEDGE_BENCH_BUILD_LLAMA_SERVER") == "1":
        binary = llama_server_build.build()
    if binary is None or llama_server_build.built_batched_bench() is None:
        pytest.skip(
            "llama-server and llama-batched-bench are not built for llama-cpp-python "
            f"{llama_server_build.installed_version()}: run `python -m benchmarks.llama_server_build` "
            "or set LLAMAEDGE_BENCH_BUILD_LLAMA_SERVER=1"
        )
    return binary


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("bench-server") / "tiny-chat.gguf")


@pytest.fixture(scope="module")
def ours_only(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One llamaedge-only run of every row."""
    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"  # what must not leak
    output = tmp_path_factory.mktemp("bench-server-ours") / "server.json"
    assert main(["--model", str(tiny), "--sides", OURS, *TINY, "--output", str(output)]) == 0
    return json.loads(output.read_text())


def _check_column(result: dict[str, Any], side: str) -> None:
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
    assert cold["rss_bytes_after_load"] > 0
    assert rep["rss_bytes_after"] > 0
    assert result["columns"][side]["rss_bytes_after_warmup"] > 0


def test_llamaedge_side_measures_every_row(ours_only: dict[str, Any], tmp_path: Path) -> None:
    _check_column(ours_only, OURS)
    assert set(ours_only["runs"]) == {OURS}
    (rep,) = ours_only["reps"]
    assert rep["order"] == [OURS] and len(rep["load_average_before"]) == len(rep["load_average_after"]) == 3
    assert ours_only["machine"]["load_average_before"] and ours_only["machine"]["uptime_before"]
    assert ours_only["commit"] and ours_only["command"].startswith("python -m benchmarks.bench_server --model")
    keys = {row["key"] for row in ours_only["table"]}
    assert {"tokens_per_s/3", "ttft_median/1", "conversation/3", "interference/gap_p99", "cold_start",
            "rss_after_load"} <= keys
    markdown = render_markdown(ours_only)
    assert "TTFT, conversation turn 3" in markdown and "stream gap p99" in markdown


def test_the_servers_environment_is_built_not_inherited(ours_only: dict[str, Any]) -> None:
    column = ours_only["columns"][OURS]
    assert column["behaviour_env"] == {}
    assert set(column["env"]) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                                  "PYTHONPATH", "VIRTUAL_ENV", "LLAMAEDGE_HOME"}
    assert ours_only["env_not_passed"]["OMP_WAIT_POLICY"] == "PASSIVE"
    cpus = ours_only["machine"]["cpus"]
    assert 1 <= cpus["usable"] <= cpus["physical"] <= cpus["allowed"]


def test_env_passes_only_what_it_names(tiny: Path, tmp_path: Path) -> None:
    output = tmp_path / "server.json"
    assert main(["--model", str(tiny), "--sides", OURS, "--rows", "concurrency", "--concurrency", "1",
                 "--stream-tokens", "4", "--reps", "1", "--ctx", "1024", "--env", "OMP_WAIT_POLICY=ACTIVE",
                 "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["columns"][OURS]["behaviour_env"] == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert result["config"]["env"] == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_same_settings_give_both_sides_the_same_knobs_and_defaults_none() -> None:
    cfg = Config(model=Path("m.gguf"), threads=3, ctx=2048, parallel=6)
    ours = ours_argv(cfg)(0)
    theirs = llama_server_argv(Path("llama-server"), cfg)(0)

    def flag(argv: list[str], name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag(ours, "--threads") == flag(theirs, "-t") == flag(theirs, "-tb") == "3"
    assert flag(ours, "--parallel") == flag(theirs, "-np") == "6"
    assert flag(ours, "--ctx-size") == flag(theirs, "-c") == "2048"
    assert "--kv-unified" in theirs and flag(theirs, "--cache-ram") == "0"  # as llamaedge: one cache, none in RAM
    ours_defaults = ours_argv(cfg, defaults=True)(0)
    theirs_defaults = llama_server_argv(Path("llama-server"), cfg, defaults=True)(0)
    for knob in ("--threads", "--parallel"):
        assert knob not in ours_defaults
    for knob in ("-t", "-tb", "-np", "--kv-unified", "--cache-ram"):
        assert knob not in theirs_defaults
    assert flag(ours_defaults, "--ctx-size") == flag(theirs_defaults, "-c") == "2048"  # the context is always the same


def test_ratios_pair_the_same_knob_and_come_from_the_same_repetition() -> None:
    cfg = Config(model=Path("m.gguf"), concurrency=(1,), rows=("concurrency",),
                 variants=(OURS, OURS_DEFAULTS, THEIRS, THEIRS_DEFAULTS))

    def reps(*rates: float) -> list[dict[str, Any]]:
        return [{"concurrency": {"1": {"aggregate_tokens_per_s": r}}} for r in rates]

    runs = {OURS: reps(90, 100, 60), THEIRS: reps(100, 50, 60), OURS_DEFAULTS: reps(80, 80, 80),
            THEIRS_DEFAULTS: reps(100, 100, 100)}
    limit = [{"speed_tg": {"1": 120}}, {"speed_tg": {"1": 200}}, {"speed_tg": {"1": 120}}]
    row = next(r for r in metric_rows(runs, cfg, limit) if r["key"] == "tokens_per_s/1")
    # Same-repetition ratios 0.9, 2.0, 1.0: median 1.0 (the ratio of the medians would be 90/60).
    assert row["ratios"] == {"same settings": 1.0, "defaults": 0.8}
    assert row[OURS] == 90 and row[THEIRS] == 60
    assert row["limit"] == 120
    assert row["of_limit"][OURS] == pytest.approx(0.5)  # 0.75, 0.5, 0.5


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([10.0, 20.0], 99) == pytest.approx(19.9)
    assert percentile([7.0], 99) == 7.0


def test_without_llama_server_it_says_how_to_build_it(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(llama_server_build.CACHE_ENV, str(tmp_path / "empty-cache"))
    assert llama_server_build.built_server() is None
    assert llama_server_build.server_binary().is_relative_to(tmp_path / "empty-cache")
    assert main(["--model", str(tiny), "--reps", "1", "--output", str(tmp_path / "out.json")]) == 2
    assert "python -m benchmarks.llama_server_build" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_both_servers_side_by_side(tiny: Path, tmp_path: Path) -> None:
    binary = _built()
    output = tmp_path / "server.json"
    assert main(["--model", str(tiny), *TINY, "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    for side in (OURS, THEIRS):
        _check_column(result, side)
        assert result["columns"][side]["behaviour_env"] == {}
    theirs_argv = result["columns"][THEIRS]["argv"]
    assert theirs_argv[0] == str(binary)
    # Both servers ran the same greedy model on the same messages: the same first stream.
    assert result["runs"][OURS][0]["concurrency"]["1"]["text_head"] == result["runs"][THEIRS][0]["concurrency"]["1"]["text_head"]
    ratios = {row["key"]: row["ratios"] for row in result["table"]}
    assert ratios["tokens_per_s/1"]["same settings"] > 0
    assert ratios["cold_start"]["same settings"] > 0
    assert result["limit"] == []  # only with --table or --limit


def test_the_table_has_four_columns_and_the_limit(tiny: Path, tmp_path: Path) -> None:
    _built()
    output = tmp_path / "table.json"
    assert main(["--model", str(tiny), *TINY_TABLE, "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    assert list(result["columns"]) == [OURS, OURS_DEFAULTS, THEIRS, THEIRS_DEFAULTS]
    assert [rep["order"][0] for rep in result["reps"]] == [OURS, OURS_DEFAULTS]  # the order rotates
    for variant in (OURS_DEFAULTS, THEIRS_DEFAULTS):
        assert result["columns"][variant]["defaults"]
    assert "n_slots = 4" in result["columns"][THEIRS_DEFAULTS]["log_facts"]["slots"]  # -np auto
    assert "n_slots = 3" in result["columns"][THEIRS]["log_facts"]["slots"]
    for run in result["limit"]:
        assert set(run["speed_tg"]) == {"1", "3"} and all(v > 0 for v in run["speed_tg"].values())
        assert run["prompt_tokens"] > 10  # as long as the clients' prompts
    by_key = {row["key"]: row for row in result["table"]}
    assert set(result["table_keys"]) <= set(by_key)
    assert by_key["tokens_per_s/3"]["limit"] > 0
    assert not math.isnan(by_key["tokens_per_s/3"]["ratios"]["defaults"])
    markdown = output.with_suffix(".md").read_text()
    assert markdown.count("\n| tokens/s,") == 2 and "median TTFT, 3 clients" in markdown
    assert LIMIT in markdown and "llama-server defaults" in markdown and "same settings" in markdown


FAKE_BATCHED_BENCH = """#!{python}
import json, sys
from pathlib import Path
counts = sys.argv[sys.argv.index("-npl") + 1].split(",")
calls = Path(__file__).with_suffix(".calls")
first = not calls.exists()
with calls.open("a") as log:
    log.write(" ".join(counts) + "\\n")
# The first run loses its last record, as llama.cpp's asynchronous logger can at exit.
for pl in counts[:-1] if first else counts:
    print(json.dumps({{"pl": int(pl), "speed_tg": 10.0 * int(pl)}}))
"""


def test_a_record_the_limit_did_not_print_is_measured_again(tmp_path: Path) -> None:
    binary = tmp_path / "llama-batched-bench"
    binary.write_text(FAKE_BATCHED_BENCH.format(python=sys.executable))
    binary.chmod(0o755)
    cfg = Config(model=tmp_path / "m.gguf", concurrency=(1, 4, 8))
    row = row_limit(binary, cfg, 40, tmp_path)
    assert row["speed_tg"] == {"1": 10.0, "4": 40.0, "8": 80.0} and row["runs"] == 2
    # The second run asks only for what the first did not print.
    assert binary.with_suffix(".calls").read_text().splitlines() == ["1 4 8", "8"]


def _as_table_run(result: dict[str, Any]) -> dict[str, Any]:
    """The llamaedge-only run, marked as a --table run (which needs llama-server to make)."""
    cfg = Config(model=Path("m.gguf"), concurrency=(1, 3))
    return {**result, "table_keys": table_keys(cfg)}


def test_the_readme_table_is_written_between_its_markers(ours_only: dict[str, Any], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    result_path = tmp_path / "server-table-latest.json"
    result_path.write_text(json.dumps(_as_table_run(ours_only)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Speed\n\nintro\n\n{readme_speed.START}\nold figures\n{readme_speed.END}\n\n## Next\n")
    assert readme_speed.main(["--input", str(result_path), "--readme", str(readme)]) == 0

    text = readme.read_text()
    assert "old figures" not in text and text.startswith("# x\n\n## Speed\n\nintro\n") and text.endswith("## Next\n")
    section = text[text.index(readme_speed.START):text.index(readme_speed.END)]
    assert "| tokens/s, 3 streaming clients" in section and "| RSS after load" in section
    assert "conversation turn" not in section  # the table's rows only
    assert ours_only["date"] in section and str(ours_only["commit"]) in section
    assert f"load average {ours_only['machine']['load_average_before'][0]} before" in section
    # Written again from the same result: the same README.
    assert readme_speed.main(["--input", str(result_path), "--readme", str(readme)]) == 0
    assert readme.read_text() == text
    assert str(readme) in capsys.readouterr().out


def test_the_readme_writer_refuses_what_it_cannot_write(ours_only: dict[str, Any], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    result_path = tmp_path / "result.json"
    result_path.write_text(json.dumps(ours_only))
    assert readme_speed.main(["--input", str(result_path), "--readme", str(readme)]) == 1
    assert "bench_server --table" in capsys.readouterr().err
    result_path.write_text(json.dumps(_as_table_run(ours_only)))
    assert readme_speed.main(["--input", str(result_path), "--readme", str(readme)]) == 1
    assert "speed-table:start" in capsys.readouterr().err
    assert readme_speed.main(["--input", str(tmp_path / "missing.json"), "--readme", str(readme)]) == 1
    assert "bench_server --table" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"


def test_a_busy_run_is_flagged(ours_only: dict[str, Any]) -> None:
    quiet = json.loads(json.dumps(ours_only))
    for rep in quiet["reps"]:
        rep["load_average_before"][0] = rep["load_average_after"][0] = 0.1
    quiet["machine"]["load_average_before"][0] = quiet["machine"]["load_average_after"][0] = 0.1
    assert readme_speed.busy_warning(quiet) is None
    quiet["reps"][0]["load_average_after"][0] = 7.5
    assert "7.5" in (readme_speed.busy_warning(quiet) or "")


def test_another_checkout_runs_as_its_own_column(tiny: Path, tmp_path: Path) -> None:
    """--ours-tree: llamaedge from another checkout (here a tree whose package is this one's)
    beside this one, at the same settings, with the ratio between the two trees."""
    tree = tmp_path / "before"
    tree.mkdir()
    (tree / "llamaedge").symlink_to(Path(__file__).resolve().parent.parent / "llamaedge")
    output = tmp_path / "server.json"
    assert main(["--model", str(tiny), "--sides", f"{OURS},{OURS_TREE}", "--ours-tree", str(tree),
                 "--rows", "concurrency", "--concurrency", "1", "--stream-tokens", "4", "--reps", "2",
                 "--ctx", "1024", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    column = result["columns"][OURS_TREE]
    assert column["cwd"] == str(tree.resolve()) and column["argv"] == result["columns"][OURS]["argv"]
    assert column["log_facts"]["banner"].startswith("1024 tokens")
    assert [rep["order"] for rep in result["reps"]] == [[OURS, OURS_TREE], [OURS_TREE, OURS]]
    (row,) = [row for row in result["table"] if row["key"] == "tokens_per_s/1"]
    assert row[OURS_TREE] > 0 and row["ratios"]["this tree / other tree"] > 0
    assert f"run in {tree.resolve()}" in render_markdown(result)


@pytest.mark.parametrize("args, message", [
    (["--sides", OURS_TREE], "--ours-tree and the side"),
    (["--ours-tree", "."], "--ours-tree and the side"),
    (["--sides", OURS_TREE, "--ours-tree", "/"], "no llamaedge checkout there"),
    (["--sides", OURS_TREE, "--ours-tree", ".", "--ours-tune", "n_batch=64"], "cannot take it"),
])
def test_ours_tree_is_refused_where_it_cannot_work(args: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "x.gguf", *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
