"""What keeps the benchmarks from leaking the test suite's settings into a measurement: they
import nothing from tests/, and every measured process gets an environment built from a
whitelist plus what the command line names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmarks.harness import REPO_ROOT, behaviour_env, dropped_env, measured_env, parse_env


def test_no_benchmark_imports_the_tests() -> None:
    importers = []
    for path in sorted((REPO_ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            importers += [f"{path.name}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert importers == []
    assert not list((REPO_ROOT / "benchmarks").glob("test_*.py"))  # the benchmarks' tests live in tests/


def test_a_measured_environment_is_the_whitelist_and_what_was_asked(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("GGML_SCHED_MAX_COPIES", "1")
    monkeypatch.setenv("LLAMA_ARG_THREADS", "1")
    monkeypatch.setenv("LLAMAEDGE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SOME_TOKEN", "secret")
    env = measured_env({"OMP_WAIT_POLICY": "ACTIVE"}, home=tmp_path / "home")
    assert env["PATH"] == "/usr/bin"
    assert env["LLAMAEDGE_HOME"] == str(tmp_path / "home")
    for name in ("OMP_NUM_THREADS", "GGML_SCHED_MAX_COPIES", "LLAMA_ARG_THREADS", "LLAMAEDGE_MODELS_DIR", "SOME_TOKEN"):
        assert name not in env
    assert behaviour_env(env) == {"OMP_WAIT_POLICY": "ACTIVE"}
    # What the shell sets and the measured processes do not get, so that a result can say so.
    assert {"OMP_NUM_THREADS", "GGML_SCHED_MAX_COPIES", "LLAMA_ARG_THREADS"} <= set(dropped_env())
    assert "LLAMAEDGE_HOME" not in measured_env()


def test_env_arguments_must_be_key_value() -> None:
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_env(["OMP_WAIT_POLICY"])
