"""The tools benchmark (benchmarks/bench_tools.py) end to end, tiny: it runs, checks the
sandboxed calc against the Python one, and writes every row."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_tools


def test_python_calc_is_calcs_reading() -> None:
    assert bench_tools.python_calc("2^10 / 4 - 0.5") == {"result": "511/2"}
    assert bench_tools.python_calc("-(1/3)") == {"result": "-1/3"}


def test_bench_tools_writes_each_row(tmp_path: Path) -> None:
    output = tmp_path / "tools.json"
    assert bench_tools.main(["--calls", "10", "--reps", "1", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["config"]["calls"] == 10 and len(result["reps"]) == 1
    assert set(result["reps"][0]) == {"calc, sandboxed", "calc, Python", "files read, sandboxed", "files read, Python"}
    assert result["summary"]["calc: sandboxed / Python"] > 0
    assert "machine" in result and "commit" in result
