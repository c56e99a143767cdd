"""bench_server's table: its rows from the raw runs (medians per column, same-repetition
ratios per pair, the share of the limit), and the Markdown of a result file with what it was
measured on. readme_speed writes that Markdown into the README."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.columns import LIMIT, OURS, OURS_DEFAULTS, OURS_TREE, PAIRS, Config


def _med(values: list[float | None]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else float("nan")


def _get(rep: object, *path: object) -> float | None:
    node = rep
    for key in path:
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return None
    return node if isinstance(node, (int, float)) else None


def _clients(c: int) -> str:
    return f"{c} client{'s' if c > 1 else ''}"


def metric_rows(runs: Mapping[str, list[dict[str, Any]]], cfg: Config,
                limit: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Table rows: key, name, unit, better (higher/lower), each column's per-repetition values
    and median, and per pair the median of same-repetition ratios llamaedge/llama-server. A
    tokens/s row with the limit measured also has the limit's median and each column's median
    same-repetition ratio to it."""
    rows: list[dict[str, Any]] = []
    variants = [v for v in cfg.variants if runs.get(v)]

    def add(key: str, name: str, unit: str, better: str, pick: Callable[[dict[str, Any]], float | None],
            limit_pick: Callable[[dict[str, Any]], float | None] | None = None) -> None:
        values = {v: [pick(rep) for rep in runs[v]] for v in variants}
        row: dict[str, Any] = {"key": key, "metric": name, "unit": unit, "better": better, "values": values}
        for v, vals in values.items():
            row[v] = _med(vals)
        ratios = {}
        for ours, theirs, label in PAIRS:
            if ours in values and theirs in values:
                ratios[label] = _med([o / t for o, t in zip(values[ours], values[theirs]) if o is not None and t])
        if limit and limit_pick is not None:
            limits = [limit_pick(rep) for rep in limit]
            row["limit_values"] = limits
            row["limit"] = _med(limits)
            row["of_limit"] = {v: _med([o / lim for o, lim in zip(vals, limits) if o is not None and lim])
                               for v, vals in values.items()}
        row["ratios"] = ratios
        rows.append(row)

    if "concurrency" in cfg.rows:
        for c in cfg.concurrency:
            add(f"tokens_per_s/{c}", f"tokens/s, {c} streaming client{'s' if c > 1 else ''}", "tok/s", "higher",
                lambda r, c=c: _get(r, "concurrency", str(c), "aggregate_tokens_per_s"),
                lambda r, c=c: _get(r, "speed_tg", str(c)))
        for c in cfg.concurrency:
            add(f"ttft_median/{c}", f"{'median ' if c > 1 else ''}TTFT, {_clients(c)}", "ms", "lower",
                lambda r, c=c: _get(r, "concurrency", str(c), "ttft_ms_median"))
            if c > 1:
                add(f"ttft_p99/{c}", f"p99 TTFT, {_clients(c)}", "ms", "lower",
                    lambda r, c=c: _get(r, "concurrency", str(c), "ttft_ms_p99"))
    if "new_prompt" in cfg.rows:
        add("new_prompt", f"TTFT, a new ~{cfg.new_prompt_tokens}-token prompt", "ms", "lower",
            lambda r: _get(r, "new_prompt", "ttft_ms"))
    if "conversation" in cfg.rows:
        for turn in range(cfg.turns):
            add(f"conversation/{turn + 1}", f"TTFT, conversation turn {turn + 1}", "ms", "lower",
                lambda r, t=turn: _get(r, "conversation", "ttft_ms", t))
    if "interference" in cfg.rows:
        add("interference/gap_p99", f"stream gap p99 during a ~{cfg.long_prompt_tokens}-token prompt", "ms", "lower",
            lambda r: _get(r, "interference", "gap_ms_p99"))
        add("interference/gap_max", f"stream gap max during a ~{cfg.long_prompt_tokens}-token prompt", "ms", "lower",
            lambda r: _get(r, "interference", "gap_ms_max"))
        add("interference/ttft", f"TTFT, a ~{cfg.long_prompt_tokens}-token prompt beside a stream", "ms", "lower",
            lambda r: _get(r, "interference", "long_prompt_ttft_ms"))
    if "cold_start" in cfg.rows:
        add("cold_start", "cold start to the first finished chat", "ms", "lower",
            lambda r: _get(r, "cold_start", "first_chat_ms"))
        add("rss_after_load", "RSS after load", "MiB", "lower",
            lambda r: (_get(r, "cold_start", "rss_bytes_after_load") or 0) / 2**20 or None)
    add("rss_after_rep", "RSS after the repetition's rows", "MiB", "lower",
        lambda r: (_get(r, "rss_bytes_after") or 0) / 2**20 or None)
    return rows


def table_keys(cfg: Config) -> list[str]:
    """The rows of the README's table, in its order."""
    keys = [f"tokens_per_s/{c}" for c in cfg.concurrency]
    keys += [f"ttft_median/{max(cfg.concurrency)}", f"ttft_median/{min(cfg.concurrency)}"]
    return [*dict.fromkeys(keys), "cold_start", "rss_after_load", "rss_after_rep"]


def _fmt(value: object, unit: str = "") -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    if unit == "ms" and value >= 1000:
        return f"{value / 1000:.2f} s"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return f"{text} {unit}" if unit in ("ms", "MiB") else text


def _ratio_text(row: Mapping[str, Any]) -> str:
    parts = [f"{label} {ratio:.2f}" for label, ratio in row["ratios"].items()
             if not math.isnan(ratio)]
    of_limit = row.get("of_limit") or {}
    parts += [f"{v} / limit {r:.2f}" for v, r in of_limit.items() if v in (OURS, OURS_DEFAULTS) and not math.isnan(r)]
    return "; ".join(parts) or "-"


def command_text(argv: list[str]) -> str:
    """A column's command line as the table shows it: programs and files by name, no port."""
    shown: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in ("--port", "--host"):
            skip = True
        else:
            shown.append(Path(arg).name if arg.startswith("/") or i == 0 else arg)
    return " ".join(shown)


def render_markdown(result: Mapping[str, Any], keys: list[str] | None = None) -> str:
    """The table of a result file (all its rows, or `keys`' rows in that order), the limit row,
    and what it was measured on: date, commit, machine, load averages, each column's command
    and the defaults each side chose."""
    cfg = result["config"]
    columns: dict[str, dict[str, Any]] = result["columns"]
    names = list(columns)
    by_key = {row["key"]: row for row in result["table"]}
    rows = [by_key[k] for k in keys if k in by_key] if keys else list(by_key.values())
    lines = ["| | " + " | ".join(str(columns[v]["label"]) for v in names) + " | ratios (llamaedge / llama-server, and / the limit) |",
             "|---|" + "---|" * len(names) + "---|"]
    for row in rows:
        better = "higher is better" if row["better"] == "higher" else "lower is better"
        cells = [_fmt(row.get(v), str(row["unit"])) for v in names]
        lines.append(f"| {row['metric']} ({better}) | " + " | ".join(cells) + f" | {_ratio_text(row)} |")
    limit = [row for row in rows if "limit" in row]
    if limit:
        speeds = " / ".join(_fmt(row["limit"]) for row in limit)
        sequences = " / ".join(str(row["key"]).split("/")[1] for row in limit)
        lines.append(f"| {LIMIT} `-t {cfg['threads']} -tb {cfg['threads']} --kv-unified` (the limit), generation "
                     f"tokens/s at {sequences} sequences | {speeds} |" + " |" * len(names))
    machine: dict[str, Any] = result["machine"]
    cpus: dict[str, Any] = machine["cpus"]
    rep_loads = [rep["load_average_before"][0] for rep in result["reps"]] + \
        [rep["load_average_after"][0] for rep in result["reps"]]
    notes = [
        f"Measured {result['date']}, commit {result['commit']}, by `{result['command']}`: "
        f"{cfg['model']}, context {cfg['ctx']}, {cfg['stream_tokens']} streamed greedy tokens per client, "
        f"{cfg['reps']} repetition{'s' if cfg['reps'] != 1 else ''} (medians; ratios are medians of same-repetition ratios).",
        f"Machine: {cpus['online']} CPUs online, {cpus['allowed']} in the affinity mask, {cpus['physical']} physical "
        f"cores, cgroup quota {cpus['quota_cpus'] or 'none'}; {machine['processor']}, {machine['platform']}. "
        f"1-minute load average {machine['load_average_before'][0]} before and {machine['load_average_after'][0]} "
        f"after, {min(rep_loads)}-{max(rep_loads)} around the repetitions.",
        "Environment: every process gets only " + ", ".join(sorted({k for c in columns.values() for k in c["env"]}))
        + "; none that changes llama.cpp (OMP_*, GOMP_*, GGML_*, LLAMA_*...) unless a column says so below.",
    ]
    for v in names:
        column = columns[v]
        line = f"- {column['label']}: `{command_text(column['argv'])}`"
        if v == OURS_TREE:
            line += f", run in {column['cwd']}"
        if column.get("defaults"):
            line += f"; its defaults: {column['defaults']}"
        if column["behaviour_env"]:
            line += "; with " + ", ".join(f"`{k}={val}`" for k, val in column["behaviour_env"].items())
        if column.get("log_facts"):
            line += "; its log: " + ", ".join(f"{k} {val}" for k, val in column["log_facts"].items())
        notes.append(line)
    return "\n".join(lines) + "\n\n" + "\n".join(notes[:3]) + "\n\n" + "\n".join(notes[3:]) + "\n"
