"""Build the WebAssembly apps with the pinned Zig from PyPI (`ziglang`).

    python wasm-apps/build.py              # rebuilds llamaedge/apps/*.wasm and llamaedge/apps/tools/*.wasm
    python wasm-apps/build.py --out DIR    # builds into DIR instead
    python wasm-apps/build.py --test       # runs the Zig unit tests (every app's, and wasm-apps/shared's)

Builds are reproducible: the same sources and Zig version give the same bytes,
which tests/test_wasm_build.py checks against the committed file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

APPS_DIR = Path(__file__).resolve().parent
REPO_ROOT = APPS_DIR.parent
DEFAULT_OUT = REPO_ROOT / "llamaedge" / "apps"
ZIG_VERSION = "0.14.1"


class App(NamedTuple):
    """One WASI command module (it exports _start): its root source file, and the named
    modules it imports (`@import("name")`), each given by its root file."""

    root: Path
    deps: tuple[tuple[str, Path], ...] = ()


# The code every app imports as the module `shared`: its bindings to the host, WAGI,
# templates, the text filter and the thinking splitter, and the tests' scripted backend.
SHARED = ("shared", APPS_DIR / "shared" / "lib.zig")

APPS = {
    "chat-server": App(APPS_DIR / "chat-server" / "src" / "main.zig", deps=(SHARED,)),
    "llama-chat": App(APPS_DIR / "llama-chat" / "src" / "main.zig", deps=(SHARED,)),
    "review": App(APPS_DIR / "review" / "src" / "main.zig", deps=(SHARED,)),
}

# The example tools (docs/tools.md), built into a `tools` folder beside the apps; their
# manifests (NAME.json) are written by hand there.
TOOLS_DIR = APPS_DIR / "tools"
TOOLS = {name: App(TOOLS_DIR / name / "main.zig", deps=(SHARED,)) for name in ("calc", "files", "http_get")}
TOOLS_SUBDIR = "tools"

# What `--test` runs: Zig runs the tests of the root module only, so the shared module
# is a suite of its own beside every app's.
TEST_SUITES = {**APPS, **{f"tools/{name}": app for name, app in TOOLS.items()}, "shared": App(SHARED[1])}


class BuildError(Exception):
    """Zig is missing, is the wrong version, or the compile failed."""


def zig(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ziglang", *args], cwd=cwd, capture_output=True, text=True)


def check_zig() -> None:
    try:
        found = zig("version", cwd=APPS_DIR)
    except OSError as exc:  # the interpreter itself could not start
        raise BuildError(f"cannot run Zig: {exc}") from exc
    version = found.stdout.strip()
    if found.returncode != 0:
        raise BuildError(f"Zig is not installed: pip install ziglang=={ZIG_VERSION}")
    if version != ZIG_VERSION:
        raise BuildError(f"Zig {version} found, {ZIG_VERSION} needed: pip install ziglang=={ZIG_VERSION}")


def module_args(app: App, *options: str) -> list[str]:
    """The root source (and module flags) for `zig build-exe` / `zig test`, with `options`
    applying to the root module. A root without named modules (the shared module, tested
    on its own) is given as a plain file."""
    if not app.deps:
        return [str(app.root), *options]
    args = [*options]
    for name, _ in app.deps:
        args += ["--dep", name]
    args.append(f"-Mroot={app.root}")
    # Per-module options reset after each -M; the dependencies inherit the root's.
    for name, root in app.deps:
        args.append(f"-M{name}={root}")
    return args


def build(name: str, out_dir: Path) -> Path:
    """Compiles one app (or tool, a name of TOOLS) to OUT_DIR/NAME.wasm and returns its path."""
    source = APPS[name] if name in APPS else TOOLS[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.wasm"
    # Zig also leaves an object file next to its output: build in a scratch
    # directory and copy only the module.
    with tempfile.TemporaryDirectory(prefix=f"{name}-build-") as scratch:
        scratch_dir = Path(scratch)
        result = zig(
            "build-exe",
            *module_args(source, "-target", "wasm32-wasi", "-O", "ReleaseSmall", "-fstrip"),
            "--name", name,
            "--cache-dir", str(scratch_dir / "cache"),
            f"-femit-bin={scratch_dir / (name + '.wasm')}",
            cwd=scratch_dir,
        )
        if result.returncode != 0:
            raise BuildError(f"zig build-exe {name} failed:\n{result.stderr}")
        target.write_bytes((scratch_dir / f"{name}.wasm").read_bytes())
    return target


def test(name: str) -> subprocess.CompletedProcess[str]:
    """Runs the `test` blocks of an app or of the shared module (a name of TEST_SUITES)
    natively (testing allocator: leaks fail)."""
    app = TEST_SUITES[name]
    return zig("test", *module_args(app), cwd=app.root.parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the llamaedge WebAssembly apps.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--test", action="store_true", help="run the Zig unit tests instead of building")
    args = parser.parse_args(argv)
    try:
        check_zig()
        if args.test:
            for name in TEST_SUITES:
                result = test(name)
                sys.stderr.write(result.stderr)
                if result.returncode != 0:
                    return 1
        else:
            for name in APPS:
                path = build(name, args.out)
                print(f"built {path} ({path.stat().st_size} bytes)")
            for name in TOOLS:
                path = build(name, args.out / TOOLS_SUBDIR)
                print(f"built {path} ({path.stat().st_size} bytes)")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
