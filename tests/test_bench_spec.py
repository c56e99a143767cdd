"""benchmarks/bench_spec.py end to end, tiny: llamaedge with and without prompt lookup (and
llama-server beside it when it has been built), the results' record of each server's argv
and environment, and the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import llama_server_build
from benchmarks.bench_spec import OURS, THEIRS, main, task_messages
from tests.tiny_gguf import write_tiny_gguf

# The test suite's OpenMP setting (tests/conftest.py), given explicitly: the benchmark
# passes nothing of its own environment on.
TINY = ["--reps", "2", "--max-tokens", "12", "--ctx", "1024", "--env", "OMP_WAIT_POLICY=PASSIVE"]


def test_each_repetition_has_its_own_texts() -> None:
    for task in ("passage", "code"):
        texts = {task_messages(task, rep)[0]["content"] for rep in range(3)}
        assert len(texts) == 3
        assert task_messages(task, 3) == task_messages(task, 0)


def test_llamaedge_with_and_without_prompt_lookup(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "spec.json"
    assert main(["--model", str(model), "--servers", OURS, *TINY, "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    assert set(result["runs"]) == {OURS, f"{OURS} --spec-ngram"}
    for name, runs in result["runs"].items():
        assert [(r["rep"], r["task"]) for r in runs] == [(0, "passage"), (0, "code"), (1, "passage"), (1, "code")]
        assert all(r["tokens"] == 12 and r["tokens_per_s"] > 0 for r in runs), name
    server = result["servers"][f"{OURS} --spec-ngram"]
    assert "--spec-ngram" in server["argv"] and server["argv"][server["argv"].index("--threads") + 1] == "2"
    assert set(server["env"]) == {"PATH", "HOME", "LANG", "LLAMAEDGE_HOME", "PYTHONPATH", "OMP_WAIT_POLICY"}
    assert [load["rep"] for load in result["machine"]["load_average"]] == [0, 1]
    rows = {(row["task"], row["variant"]): row for row in result["table"]}
    for task in ("passage", "code"):
        assert rows[(task, OURS)]["speedup_vs_plain"] == 1.0
        assert rows[(task, f"{OURS} --spec-ngram")]["same_text_as_plain"] is True
    assert "x without drafts" in output.with_suffix(".md").read_text()


def test_llama_server_beside_it(tmp_path: Path) -> None:
    if llama_server_build.built_server() is None:
        pytest.skip("llama-server is not built: python -m benchmarks.llama_server_build")
    model = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    output = tmp_path / "spec.json"
    assert main(["--model", str(model), *TINY, "--reps", "1", "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    assert {THEIRS, f"{THEIRS} --spec-type ngram-simple", f"{THEIRS} --spec-default"} <= set(result["runs"])
    argv = result["servers"][f"{THEIRS} --spec-type ngram-simple"]["argv"]
    assert argv[argv.index("-t") + 1] == argv[argv.index("-tb") + 1] == "2" and "--kv-unified" in argv
    assert any(row["variant"].startswith(OURS) and " / " in row["variant"] for row in result["table"])
