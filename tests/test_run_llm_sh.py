"""run-llm.sh, the one-line installer: its checks and messages, the interactive menu, and the
whole flow from the local checkout to a chat answer (reusing the repository's .venv, so
llama-cpp-python is not compiled a second time)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llamaedge import catalog
from tests.conftest import REPO_ROOT, free_port

SCRIPT = REPO_ROOT / "run-llm.sh"
REPO_VENV = Path(sys.prefix)  # the environment running these tests, which runs this checkout


def script_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "LLAMAEDGE_VENV": str(REPO_VENV), "LLAMAEDGE_SPEC": str(REPO_ROOT)}
    env.update(extra)
    return env


def run_script(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env or script_env(), capture_output=True, text=True,
        timeout=timeout_s, stdin=subprocess.DEVNULL,
    )


def test_help_lists_every_flag() -> None:
    result = run_script("--help")
    assert result.returncode == 0
    for flag in ("--model NAME", "--port N", "--interactive", "--cpu", "--no-browser", "--yes", "--help"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option: --bogus"),
        (["--port", "abc"], "--port abc is not a number"),
        (["--port", "70000"], "--port 70000 is out of range"),
        (["--model"], "--model needs a NAME"),
    ],
)
def test_bad_arguments_say_what_to_do(args: list[str], message: str) -> None:
    result = run_script(*args)
    assert result.returncode == 1
    assert f"error: {message}" in result.stderr
    assert "fix: " in result.stderr


def test_missing_python_names_the_install_command(tmp_path: Path) -> None:
    env = script_env(LLAMAEDGE_VENV=str(tmp_path / "venv"), LLAMAEDGE_PYTHON=str(tmp_path / "no-python3"))
    result = run_script("--yes", env=env)
    assert result.returncode == 1
    assert "was not found: llamaedge needs Python 3.10 or newer" in result.stderr
    assert "fix: " in result.stderr
    assert not (tmp_path / "venv").exists()


def test_old_python_is_refused(tmp_path: Path) -> None:
    old_python = tmp_path / "python3.8"
    # Answers the script's two questions as a Python 3.8 would: its version, and "too old".
    old_python.write_text('#!/bin/sh\ncase "$2" in *print*) echo 3.8 ;; *) exit 1 ;; esac\n')
    old_python.chmod(0o755)
    env = script_env(LLAMAEDGE_VENV=str(tmp_path / "venv"), LLAMAEDGE_PYTHON=str(old_python))
    result = run_script("--yes", env=env)
    assert result.returncode == 1
    assert "is Python 3.8; llamaedge needs 3.10 or newer" in result.stderr


def test_backend_choice_is_printed_with_its_reason() -> None:
    result = run_script("--cpu", "--model", "no-such-model", "--no-browser", "--port", str(free_port()))
    assert "llama.cpp backend: cpu (--cpu was given)" in result.stderr


def _menu_index(name: str) -> int:
    chat = [e.name for e in catalog.load_catalog() if e.kind == "chat"]
    return chat.index(name) + 1


def test_interactive_menu_rejects_a_number_off_the_list(tmp_path: Path) -> None:
    answers = tmp_path / "answers"
    answers.write_text("999\n")
    result = run_script("--interactive", "--no-browser", env=script_env(LLAMAEDGE_TTY=str(answers)))
    assert result.returncode == 1
    assert "999 is not on the list" in result.stderr
    assert "smollm2-135m" in result.stderr and "recommended" in result.stderr


def test_interactive_menu_runs_the_chosen_model(tmp_path: Path) -> None:
    answers = tmp_path / "answers"
    answers.write_text(f"{_menu_index('smollm2-135m')}\n")
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "--interactive", "--no-browser", "--port", str(free_port())],
        env=script_env(LLAMAEDGE_TTY=str(answers)), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "starting:" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "starting: llamaedge run smollm2-135m" in seen, seen
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.slow
def test_one_liner_from_the_checkout_answers_a_chat(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "run-llm.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT), "--model", "smollm2-135m", "--no-browser", "--yes", "--port", str(port)],
            env=script_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            ready = False
            while not ready and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                try:
                    ready = httpx.get(f"{base}/health", timeout=1).status_code == 200
                except httpx.HTTPError:
                    time.sleep(0.2)
            assert ready, log.read_text()
            reply = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "smollm2-135m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                      "max_tokens": 24, "temperature": 0},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["choices"][0]["message"]["content"].strip()
            assert body["choices"][0]["finish_reason"] in ("stop", "length")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    assert "reusing" in text and "installing llamaedge" not in text


def test_piped_without_a_source_says_where_to_point_it(tmp_path: Path) -> None:
    # `curl ... | bash`: the script arrives on stdin, so it cannot find a checkout around it.
    env = {k: v for k, v in script_env(LLAMAEDGE_VENV=str(tmp_path / "venv")).items() if k != "LLAMAEDGE_SPEC"}
    result = subprocess.run(
        ["bash", "-s", "--", "--yes"], input=SCRIPT.read_text(), env=env, capture_output=True, text=True,
        timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "no source to install llamaedge from" in result.stderr and "LLAMAEDGE_SPEC" in result.stderr


def detect(tmp_path: Path, tools: dict[str, str], *, os_name: str = "Linux", arch: str = "x86_64",
           force_cpu: int = 0) -> list[str]:
    """Run run-llm.sh's own detect_backend with stand-in tools on PATH; (backend, why, flags)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, output in tools.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")
        tool.chmod(0o755)
    function = subprocess.run(["sed", "-n", "/^detect_backend() {/,/^}/p", str(SCRIPT)],
                              capture_output=True, text=True, check=True).stdout
    assert function.startswith("detect_backend()")
    script = f'{function}\nFORCE_CPU={force_cpu}; OS={os_name}; ARCH={arch}\ndetect_backend\nprintf "%s\\n%s\\n%s\\n" "$BACKEND" "$BACKEND_WHY" "$CMAKE_FLAGS"\n'
    result = subprocess.run(["bash", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_install_time_detection_nvidia_with_cuda(tmp_path: Path) -> None:
    backend, why, flags = detect(tmp_path, {"nvidia-smi": "GPU 0: NVIDIA H100 (UUID: GPU-1)", "nvcc": "cuda"})
    assert backend == "cuda" and "NVIDIA H100" in why and flags == "-DGGML_CUDA=on"


def test_install_time_detection_apple_silicon(tmp_path: Path) -> None:
    assert detect(tmp_path, {}, os_name="Darwin", arch="arm64") == ["metal", "Apple Silicon: Metal", "-DGGML_METAL=on"]


def test_install_time_detection_amd_rocm(tmp_path: Path) -> None:
    backend, why, flags = detect(tmp_path, {"rocminfo": "Name: gfx1100", "hipcc": "hip"})
    assert backend == "hip" and "ROCm" in why and flags == "-DGGML_HIP=on"


def test_install_time_detection_nothing_found_and_forced_cpu(tmp_path: Path) -> None:
    backend, why, *_ = detect(tmp_path, {})
    assert backend == "cpu" and "no supported GPU" in why
    backend, why, *_ = detect(tmp_path, {"nvidia-smi": "GPU 0: NVIDIA H100", "nvcc": "cuda"}, force_cpu=1)
    assert backend == "cpu" and why == "--cpu was given"
