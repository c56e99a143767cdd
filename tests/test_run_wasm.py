"""`llamaedge run-wasm`, the counterpart of `wasmedge --dir .:. --nn-preload ... app.wasm`:
a WASI command module run as a process, with its exit code, stdio, directories, environment
and preloaded models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llamaedge.runtime import RunLimits
from tests.wat_apps import ENV_COUNT, PREOPEN_PROBE, TRAPS, computes_for_app, nn_compute_app, write_app, writes_app

PROMPT = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def run_wasm(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamaedge", "run-wasm", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_exit_code_and_stdout_are_the_apps(tmp_path: Path) -> None:
    app = write_app(tmp_path, "hello.wasm", writes_app(["hello ", "world\n"], exit_code=7))
    result = run_wasm(str(app))
    assert result.returncode == 7
    assert result.stdout == "hello world\n"


def test_a_trap_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    result = run_wasm(str(write_app(tmp_path, "trap.wasm", TRAPS)))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "trap.wasm trapped" in lines[0] and "Traceback" not in result.stderr


def test_directories_only_when_granted(tmp_path: Path) -> None:
    probe = write_app(tmp_path, "probe.wasm", PREOPEN_PROBE)
    assert run_wasm(str(probe)).returncode == 8  # EBADF: nothing preopened
    assert run_wasm("--dir", f"{tmp_path}:/data", str(probe)).returncode == 0


def test_environment_only_what_is_passed(tmp_path: Path) -> None:
    app = write_app(tmp_path, "env.wasm", ENV_COUNT)
    assert run_wasm(str(app)).returncode == 0
    assert run_wasm("--env", "A=1", "--env", "B=2", str(app)).returncode == 2


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    app = write_app(tmp_path, "hello.wasm", writes_app(["x"]))
    for args, expected in [
        (["--nn-preload", "default:GGML", str(app)], "bad --nn-preload"),
        (["--nn-preload", "default:ONNX:AUTO:/m.onnx", str(app)], "not supported"),
        (["--dir", str(tmp_path / "missing"), str(app)], "is not a directory"),
        (["--env", "NOEQUALS", str(app)], "bad --env"),
        ([str(tmp_path / "missing.wasm")], "app not found"),
    ]:
        result = run_wasm(*args)
        assert result.returncode == 1, args
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_not_a_wasm_module(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm junk")
    result = run_wasm(str(junk))
    assert result.returncode == 1 and "cannot load junk.wasm" in result.stderr


def test_a_wasi_nn_app_generates_with_a_preloaded_model_and_streams_stdout(tmp_path: Path, tiny_model: Path) -> None:
    metadata = json.dumps({"n-predict": 12, "temp": 0, "stream-stdout": True, "ctx-size": 256})
    app = write_app(tmp_path, "nn.wasm", nn_compute_app(PROMPT, metadata))
    result = run_wasm("--nn-preload", f"default:GGML:AUTO:{tiny_model}", str(app))
    assert result.returncode == 0, result.stderr
    # The host streamed the tokens (stream-stdout), then the app printed get_output(0).
    half = len(result.stdout) // 2
    assert result.stdout and result.stdout[:half] == result.stdout[half:]


def test_enable_log_reports_the_generation(tmp_path: Path, tiny_model: Path) -> None:
    metadata = json.dumps({"n-predict": 5, "temp": 0, "enable-log": True, "ignore-eos": True})
    app = write_app(tmp_path, "nn.wasm", nn_compute_app(PROMPT, metadata))
    result = run_wasm("--nn-preload", f"default:GGML:AUTO:{tiny_model}", str(app))
    assert result.returncode == 0, result.stderr
    assert "generation length: prompt" in result.stderr and "5 tokens generated" in result.stderr


def test_a_wasi_nn_app_without_the_model_gets_not_found(tmp_path: Path) -> None:
    app = write_app(tmp_path, "nn.wasm", nn_compute_app(PROMPT, "{}"))
    assert run_wasm(str(app)).returncode == 8


def test_the_chat_server_app_runs_from_a_shell(tmp_path: Path) -> None:
    from llamaedge.server import default_app_path

    result = run_wasm("--env", "REQUEST_METHOD=GET", "--env", "PATH_INFO=/v1/models",
                      "--env", "LLAMAEDGE_MODEL_ID=m", "--env", "LLAMAEDGE_MODEL_CREATED=1",
                      str(default_app_path()))
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition("\n\n")
    assert "application/json" in head
    assert json.loads(body)["data"][0]["id"] == "m"


def test_command_line_apps_have_no_time_limit_between_host_calls(tmp_path: Path) -> None:
    # A compute-bound app is the user's own program: it is not interrupted like a server app.
    # This one computes for longer than a server app may between host calls, then exits 0.
    app = write_app(tmp_path, "compute.wasm", computes_for_app(RunLimits().wasm_slice_max_s + 1))
    result = run_wasm(str(app))
    assert result.returncode == 0, f"the app was stopped: {result.stderr!r}"