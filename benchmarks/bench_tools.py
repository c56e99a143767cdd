"""Tools: the cost of one sandboxed tool call against the same tool as a Python function.

    python -m benchmarks.bench_tools [--calls 200] [--reps 3] [--output FILE]

Rows, in this process (no server, no model):
- **calc, sandboxed**: `Toolbox.call("calc", ...)`, what the tool loop and `/mcp` pay per
  call: the arguments checked against the schema, a fresh Store and instance of calc.wasm,
  the arguments on stdin, `_start`, the result parsed from stdout.
- **calc, Python**: the same expression evaluated exactly (`fractions.Fraction` over Python's
  own parser), as a native tool would.
- **files read, sandboxed** and **files read, Python**: a 4 KiB text file read through the
  `files` tool (a preopened directory) and with `open().read()`.
Each row: the median, p10 and p90 of `--calls` calls, per repetition; the summary has the
median of the repetitions' medians and the ratio sandboxed/Python. The first call of each
side is made before the clock starts (compiling calc.wasm is the server's start, not a call).

Writes --output (default benchmarks/results/tools-latest.json): the head every result file has
(benchmarks/harness.py: date, commit, machine and load), the config and every repetition.
"""

from __future__ import annotations

import argparse
import ast
import operator
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS_DIR, load_average, result_head, write_json
from llamaedge.runtime import GraphRegistry, Runtime
from llamaedge.tools import Toolbox, load_tools

EXPRESSION = "(2^64 + 1) / 3 - 0.25 * (17 - 4)"
FILE_BYTES = 4096
_OPS: dict[type, Callable[[Any, Any], Any]] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                                               ast.Div: operator.truediv, ast.Pow: operator.pow}


def python_calc(expression: str) -> dict[str, str]:
    """calc's answer, natively: `^` is the power, as calc reads it (Python's `**`, of the same
    precedence and right to left)."""

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        raise ValueError("not an expression")

    result = value(ast.parse(expression.replace("^", "**"), mode="eval").body)
    return {"result": str(result)}


def _time(call: Callable[[], object], calls: int) -> dict[str, float]:
    call()  # before the clock
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    deciles = statistics.quantiles(samples, n=10)
    return {"median_us": statistics.median(samples), "p10_us": deciles[0], "p90_us": deciles[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per row and repetition (default 200)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "tools-latest.json")
    args = parser.parse_args(argv)
    if args.calls < 10 or args.reps < 1:
        parser.error("--calls must be at least 10 and --reps at least 1")
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as scratch:
        directory = Path(scratch)
        (directory / "page.txt").write_text("x" * (FILE_BYTES - 1) + "\n")
        runtime = Runtime(GraphRegistry())
        try:
            toolbox = Toolbox(runtime, load_tools(["calc", "files"], [f"files:dirs={directory}:/data"]))
            expected = python_calc(EXPRESSION)
            answer = toolbox.call("calc", {"expression": EXPRESSION})
            if answer.output != expected:
                print(f"error: calc answered {answer.text()}, Python {expected}", file=sys.stderr)
                return 1
            rows: dict[str, Callable[[], object]] = {
                "calc, sandboxed": lambda: toolbox.call("calc", {"expression": EXPRESSION}),
                "calc, Python": lambda: python_calc(EXPRESSION),
                "files read, sandboxed": lambda: toolbox.call("files", {"op": "read", "path": "page.txt"}),
                "files read, Python": lambda: (directory / "page.txt").read_text(),
            }
            reps = [{name: _time(call, args.calls) for name, call in rows.items()} for _ in range(args.reps)]
        finally:
            runtime.close()
    summary: dict[str, Any] = {name: statistics.median(rep[name]["median_us"] for rep in reps) for name in rows}
    for tool in ("calc", "files read"):
        summary[f"{tool}: sandboxed / Python"] = summary[f"{tool}, sandboxed"] / summary[f"{tool}, Python"]
    for name, value in summary.items():
        print(f"{name:32} {value:12.1f}" + ("" if "/" in name else " us"))
    write_json(args.output, {**result_head("benchmarks.bench_tools", argv, load_before, load_average()),
                             "config": {"calls": args.calls, "reps": args.reps, "expression": EXPRESSION,
                                        "file_bytes": FILE_BYTES},
                             "reps": reps, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
