"""Where a server's CPU goes per generated token, under N streaming clients.

    python -m benchmarks.profile_server [--clients 4] [--seconds 20] [--sides llamaedge,llama-server]
                                        [--py-spy PATH] [--env K=V] [--ours-env K=V] [--ours-tune K=V]

Starts each server as bench_server.py starts its same-settings columns (same model, threads,
context, slots, the same explicitly built environment plus --env), keeps N
clients streaming for the given time, and reads every thread's CPU time and context switches
from /proc before and after, per generated token. On llamaedge the Python threads are named
with `py-spy dump` when py-spy is given (the others are llama.cpp's OpenMP workers and
wasmtime's); with --py-spy it also records a sampled profile (py-spy record, raw collapsed
stacks) for the same window and prints the lines where the threads spend it.
Thread CPU time is what the process itself used, so it says little about other load on the
machine; tokens/s does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks import llama_server_build
from benchmarks.bench_server import _messages
from benchmarks.columns import OURS, THEIRS, Config, server_maker
from benchmarks.harness import ServerProcess, load_average, parse_env, smollm2_path
from benchmarks.server_client import stream_chat

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float, int, int]]:
    """tid -> (comm, user+system CPU seconds, voluntary and involuntary context switches)
    for every thread of `pid`."""
    out: dict[int, tuple[str, float, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = {k: int(v) for k, _, v in (line.partition(":") for line in status.splitlines()) if k.endswith("ctxt_switches")}
        out[int(task.name)] = (
            comm,
            (int(fields[11]) + int(fields[12])) / CLK_TCK,
            switches.get("voluntary_ctxt_switches", 0),
            switches.get("nonvoluntary_ctxt_switches", 0),
        )
    return out


def python_thread_names(py_spy: str, pid: int) -> dict[int, str]:
    result = subprocess.run([py_spy, "dump", "--pid", str(pid), "--json"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return {}
    return {t["os_thread_id"]: t["thread_name"] for t in json.loads(result.stdout) if t.get("os_thread_id")}


def _group(name: str) -> str:
    return "llamaedge-app (wasm app runs)" if name.startswith("llamaedge-app") else name


def load(side: ServerSide, clients: int, seconds: float, tokens: int) -> int:
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def worker(i: int) -> None:
        k = 0
        with side.new_client() as client:
            while time.monotonic() < stop:
                run = stream_chat(client, side.model, _messages(f"prof-{i}-{k}-{time.time()}"), max_tokens=tokens)
                counts[i] += run.completion_tokens
                k += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def top_lines(collapsed: Path, n: int = 12) -> list[tuple[int, str]]:
    """The innermost frame of each sampled stack, by thread name, most samples first."""
    counter: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if ": " in frames[0] else frames[0]
        counter[f"{_group(thread)} | {frames[-1]}"] += int(count)
    return [(c, k) for k, c in counter.most_common(n)]


def profile(side: ServerProcess, args: argparse.Namespace, work: Path) -> dict[str, object]:
    side.start()
    try:
        side.wait_ready(poll_s=0.1)
        side.connect()
        assert side.client is not None and side.proc is not None
        stream_chat(side.client, side.model, _messages("warmup"), max_tokens=16)
        names = python_thread_names(args.py_spy, side.proc.pid) if args.py_spy and side.name == OURS else {}
        recorder = None
        collapsed = work / f"{side.name}.collapsed.txt"
        if args.py_spy and side.name == OURS:
            recorder = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(side.proc.pid), "--duration", str(int(args.seconds)),
                 "--rate", "100", "--threads", "--nonblocking", "--format", "raw", "--output", str(collapsed)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        before = thread_cpu_s(side.proc.pid)
        started = time.perf_counter()
        tokens = load(side, args.clients, args.seconds, args.tokens)
        elapsed = time.perf_counter() - started
        after = thread_cpu_s(side.proc.pid)
        if recorder is not None:
            recorder.wait(timeout=120)
    finally:
        side.stop()
    per_thread: Counter[str] = Counter()
    voluntary: Counter[str] = Counter()
    preempted: Counter[str] = Counter()
    for tid, (comm, cpu, vol, nonvol) in after.items():
        _, cpu0, vol0, nonvol0 = before.get(tid, (comm, 0.0, 0, 0))
        label = _group(names.get(tid, f"{comm} (native)" if names else comm))
        per_thread[label] += cpu - cpu0
        voluntary[label] += vol - vol0
        preempted[label] += nonvol - nonvol0
    total = sum(per_thread.values())
    report: dict[str, object] = {
        "side": side.name,
        "clients": args.clients,
        "tokens": tokens,
        "seconds": round(elapsed, 2),
        "tokens_per_s": round(tokens / elapsed, 2),
        "cpu_ms_per_token_total": round(total * 1000 / tokens, 3),
        "cpu_ms_per_token": {k: round(v * 1000 / tokens, 3) for k, v in per_thread.most_common()},
        "cpu_cores_busy": round(total / elapsed, 2),
        # Sleeps (waiting for work) and preemptions (the scheduler took the CPU away), per token.
        "voluntary_switches_per_token": {k: round(v / tokens, 2) for k, v in voluntary.most_common()},
        "involuntary_switches_per_token": {k: round(v / tokens, 2) for k, v in preempted.most_common()},
    }
    if recorder is not None and collapsed.is_file():
        report["py_spy_top"] = top_lines(collapsed)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request (default 128)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--sides", default=f"{OURS},{THEIRS}")
    parser.add_argument("--py-spy", help="py-spy executable: names llamaedge's threads and samples its stacks")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for both servers")
    parser.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--ours-tune", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", type=Path, help="write the reports as JSON here")
    args = parser.parse_args(argv)
    cfg = Config(
        model=args.model or smollm2_path(), threads=args.threads, ctx=args.ctx, parallel=args.parallel,
        env=parse_env(args.env), ours_env=parse_env(args.ours_env), ours_tune=list(args.ours_tune),
    )
    reports = []
    with tempfile.TemporaryDirectory(prefix="llamaedge-profile-") as tmp:
        work = Path(tmp)
        for name in args.sides.split(","):
            if name not in (OURS, THEIRS):
                parser.error(f"unknown side {name!r}")
            binary = llama_server_build.built_server() if name == THEIRS else None
            if name == THEIRS and binary is None:
                print("llama-server is not built: run `python -m benchmarks.llama_server_build`", file=sys.stderr)
                return 2
            side = server_maker(name, cfg, binary, work)()
            report = profile(side, args, work)
            report["load_average"] = load_average()
            report["server"] = side.record()
            reports.append(report)
            print(json.dumps(report, indent=2), flush=True)
    if args.output:
        args.output.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
