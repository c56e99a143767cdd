"""benchmarks/bench_library.py and soak_library.py: both servers get the same knobs and no
environment of the test run; the second model is really another; the figures summarize as
the docstring says; and, where the servers can, a one-repetition run of each side (llama-server
when it is built, llamaedge once `serve` serves a library) and a short soak."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_library
from benchmarks.bench_library import (OURS, ROWS, THEIRS, Config, llama_server_argv, llamaedge_argv, models_folder,
                                      ours_unavailable, summarize, theirs_unavailable)
from benchmarks.harness import ENV_WHITELIST, behaviour_env, measured_env
from llamaedge.engine.gguf import file_metadata


def knobs(argv: list[str], names: dict[str, str]) -> dict[str, str]:
    """The values of the flags in `names` (flag -> knob) in a command line."""
    return {knob: argv[argv.index(flag) + 1] for flag, knob in names.items() if flag in argv}


def test_both_servers_get_the_same_knobs_and_none_of_this_environment(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config(threads=3, ctx_size=1024, parallel=2, env={"OMP_WAIT_POLICY": "ACTIVE"})
    ours = llamaedge_argv(tmp_path, cfg, models_max=1)(8080)
    theirs = llama_server_argv(Path("/bin/llama-server"), tmp_path, cfg, models_max=1)(8081)
    assert knobs(ours, {"--models-dir": "dir", "--models-max": "max", "--ctx-size": "ctx", "--threads": "threads",
                        "--parallel": "slots"}) == knobs(
        theirs, {"--models-dir": "dir", "--models-max": "max", "-c": "ctx", "-t": "threads", "-np": "slots"}) == {
        "dir": str(tmp_path), "max": "1", "ctx": "1024", "threads": "3", "slots": "2"}
    assert "--model" not in ours and "-m" not in theirs  # the library; llama-server's router
    assert theirs[theirs.index("-tb") + 1] == "3" and "--kv-unified" in theirs
    assert ours[ours.index("--idle-unload-s") + 1] == "0"  # as llama-server's sleep, off by default

    # The test run's own settings (conftest sets OMP_WAIT_POLICY) stay out; only --env gets in.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("GGML_SOMETHING", "1")
    env = measured_env(cfg.env, home=Path("/home"))
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["LLAMAEDGE_HOME"] == "/home"
    assert not {k for k in env if k.startswith(("OMP_", "GGML_"))} - {"OMP_WAIT_POLICY"}
    assert set(env) <= set(ENV_WHITELIST) | {"LLAMAEDGE_HOME", "OMP_WAIT_POLICY"}
    assert behaviour_env(env) == {"OMP_WAIT_POLICY": "ACTIVE"}


@pytest.mark.slow
def test_the_models_are_smollm2_and_others_quantized_from_it(tmp_path: Path) -> None:
    files = models_folder(tmp_path, ("Q8_0",))
    assert [f.name for f in files] == ["smollm2-135m-q4_1.gguf", "smollm2-135m-q8_0.gguf"]
    q4, q8 = (file_metadata(f) for f in files)
    assert q4["general.architecture"] == q8["general.architecture"] == "llama"
    assert q4["general.file_type"] != q8["general.file_type"]
    assert files[1].stat().st_size > files[0].stat().st_size


def _run(rows: dict[str, float]) -> dict[str, Any]:
    return {row: {"ttft_ms": ms} for row, ms in rows.items()}


def test_the_summary_is_medians_and_ours_over_theirs() -> None:
    runs = [{OURS: _run({r: 100.0 * (i + 1) for r in ROWS}), THEIRS: _run({r: 400.0 for r in ROWS})} for i in range(3)]
    summary = summarize(runs, (OURS, THEIRS))
    assert summary["evicted"][OURS] == {"median_ms": 200.0, "min_ms": 100.0, "max_ms": 300.0}
    assert summary["evicted"]["ratio"] == 0.5 and summary["not_loaded"]["ratios_per_rep"] == [0.25, 0.5, 0.75]
    assert "ratio" not in summarize(runs, (THEIRS,))["switch"]


def _one_repetition(side: str, tmp_path: Path) -> dict[str, Any]:
    output = tmp_path / "library.json"
    assert bench_library.main(["--sides", side, "--reps", "1", "--output", str(output)]) == 0
    result: dict[str, Any] = json.loads(output.read_text())
    run = result["runs"][0]
    a, b = "smollm2-135m-q4_1", "smollm2-135m-q8_0"
    assert [run[side][row]["model"] for row in ROWS] == [a, a, b, a]
    # One model at a time: B evicted A, and A came back in B's place.
    assert run[side]["switch"]["loaded_after"] == [b] and run[side]["evicted"]["loaded_after"] == [a]
    assert all(run[side][row]["ttft_ms"] > 0 and run[side][row]["rss_mib"] > 0 for row in ROWS)
    record = result["servers"][side]
    assert "--models-max" in record["argv"]
    # The test run's OMP_WAIT_POLICY stays out; what is there is the server's own state folder.
    assert "OMP_WAIT_POLICY" in os.environ and not any(k.startswith("OMP_") for k in record["env"])
    assert set(record["behaviour_env"]) <= {"LLAMA_CACHE"}
    assert "load_average_before" in run and result["summary"]["evicted"][side]["median_ms"] > 0
    return result


@pytest.mark.slow
@pytest.mark.parametrize("side", [THEIRS, OURS])
def test_one_repetition_of_a_side(side: str, tmp_path: Path) -> None:
    why = {THEIRS: theirs_unavailable, OURS: ours_unavailable}[side]()
    if why:
        pytest.skip(why)
    _one_repetition(side, tmp_path)


@pytest.mark.slow
def test_a_short_library_soak_fails_no_request_and_gives_the_memory_back(tmp_path: Path) -> None:
    why = ours_unavailable()
    if why:
        pytest.skip(why)
    from benchmarks import soak_library

    output = tmp_path / "soak.json"
    code = soak_library.main(["--duration-s", "30", "--clients", "4", "--output", str(output)])
    result = json.loads(output.read_text())
    assert result["goals"]["no_failed_well_formed_requests"], result["failures"]
    assert result["goals"]["every_malformed_request_4xx"], result["failures"]
    assert len(result["by_model"]) == 3  # every model was asked for
    assert result["rss"]["start_mib"] > 0 and result["rss"]["during"]["peak_mib"] > result["rss"]["start_mib"]
    assert result["unloaded_at_end"] and result["server"]["behaviour_env"] == {}
    assert code == (0 if all(result["goals"].values()) else 1)
