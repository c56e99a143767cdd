"""Writes the README's speed table from the latest table run of bench_server.

    python -m benchmarks.bench_server --table     # measure (on a quiet machine)
    python -m benchmarks.readme_speed             # then write README.md's table from it

Replaces what lies between README.md's `<!-- speed-table:start -->` and
`<!-- speed-table:end -->` with the table of benchmarks/results/server-table-latest.json (or
--input), rendered by server_table.render_markdown: the rows of the issue's table, the limit,
the date, the commit, the machine and its load averages, each column's command line and
defaults. The README carries no speed figure that does not come from a result file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO_ROOT, RESULTS_DIR
from benchmarks.server_table import render_markdown

START = "<!-- speed-table:start -->"
END = "<!-- speed-table:end -->"
# A 1-minute load average above this share of the usable CPUs means other work shared the
# machine: the figures are then worth little, and the tool says so.
BUSY_LOAD_PER_CPU = 0.5


class ReadmeError(RuntimeError):
    """The result file or the README is not what this tool can write from or into."""


def speed_section(result: dict[str, Any]) -> str:
    """The Markdown that goes between the markers."""
    keys = result.get("table_keys")
    if not keys:
        raise ReadmeError("the result is not a --table run: run `python -m benchmarks.bench_server --table`")
    return render_markdown(result, keys)


def replace_section(readme: str, section: str) -> str:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ReadmeError(f"the README has no {START} ... {END} section to fill")
    return readme[: start + len(START)] + "\n" + section.rstrip("\n") + "\n" + readme[end:]


def busy_warning(result: dict[str, Any]) -> str | None:
    machine: dict[str, Any] = result["machine"]
    usable = machine["cpus"]["usable"]
    loads = [machine["load_average_before"][0], machine["load_average_after"][0]]
    loads += [rep[key][0] for rep in result["reps"] for key in ("load_average_before", "load_average_after")]
    if max(loads) > BUSY_LOAD_PER_CPU * usable:
        return (f"warning: the 1-minute load average reached {max(loads)} on {usable} usable CPUs during that run: "
                "other work shared the machine, so its figures are worth little; rerun on a quiet machine")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=RESULTS_DIR / "server-table-latest.json",
                        help="a bench_server --table result (default: the latest)")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md", help="the file to write (default README.md)")
    args = parser.parse_args(argv)
    try:
        if not args.input.is_file():
            raise ReadmeError(f"{args.input} does not exist: run `python -m benchmarks.bench_server --table` first")
        result = json.loads(args.input.read_text())
        args.readme.write_text(replace_section(args.readme.read_text(), speed_section(result)))
    except ReadmeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    warning = busy_warning(result)
    if warning:
        print(warning, file=sys.stderr)
    print(f"{args.readme}: speed table from {args.input} ({result['date']}, commit {result['commit']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
