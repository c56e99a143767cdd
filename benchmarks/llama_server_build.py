"""Build llama.cpp's own `llama-server` and `llama-batched-bench` from the llama.cpp that
llamaedge embeds.

    python -m benchmarks.llama_server_build [--jobs 2]

The llama.cpp sources come from the sdist of the installed llama-cpp-python (its
vendor/llama.cpp), so both sides of benchmarks/bench_server.py run the same llama.cpp
commit, compiled the same way (Release, GGML_NATIVE and OpenMP: llama.cpp's defaults, which
are also what the llama-cpp-python wheel was built with on this machine). Only the two
targets are built, once: llama-server (the other side) and llama-batched-bench (llama.cpp
decoding N sequences with nothing around it: the limit row). The result is cached outside
the repository, in $LLAMAEDGE_BENCH_CACHE or else the user cache directory
(~/.cache/llamaedge-bench), one folder per llama-cpp-python version. Delete that folder to
rebuild.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import platformdirs

CACHE_ENV = "LLAMAEDGE_BENCH_CACHE"
PACKAGE = "llama-cpp-python"

# Server only: no tests, examples, web UI (its assets would be fetched from a model hub),
# HTTPS or curl (no network at run time). LLAMA_CURL is deprecated in this llama.cpp and
# curl is off without it.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
]


SERVER = "llama-server"
BATCHED_BENCH = "llama-batched-bench"
TARGETS = (SERVER, BATCHED_BENCH)


class BuildError(RuntimeError):
    """The sdist could not be fetched or llama-server did not build."""


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("llamaedge-bench"))


def installed_version() -> str:
    return importlib.metadata.version(PACKAGE)


def version_dir(version: str | None = None) -> Path:
    return cache_root() / f"{PACKAGE}-{version or installed_version()}"


def binary_path(target: str, version: str | None = None) -> Path:
    return version_dir(version) / "build" / "bin" / target


def server_binary(version: str | None = None) -> Path:
    return binary_path(SERVER, version)


def built(target: str, version: str | None = None) -> Path | None:
    """The cached `target` binary for the installed llama-cpp-python, if it has been built."""
    binary = binary_path(target, version)
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def built_server(version: str | None = None) -> Path | None:
    """The cached llama-server for the installed llama-cpp-python, if it has been built."""
    return built(SERVER, version)


def built_batched_bench(version: str | None = None) -> Path | None:
    """The cached llama-batched-bench, if it has been built."""
    return built(BATCHED_BENCH, version)


def build_info(version: str | None = None) -> dict[str, object] | None:
    path = version_dir(version) / "build-info.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=cwd)
    if result.returncode != 0:
        raise BuildError(f"{cmd[0]} exited with {result.returncode}")


def _sources(version: str, root: Path) -> Path:
    """The unpacked sdist's vendored llama.cpp."""
    llama_dir = root / "src" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if (llama_dir / "CMakeLists.txt").is_file():
        return llama_dir
    sdist_dir = root / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    sdists = sorted(sdist_dir.glob("*.tar.gz"))
    if not sdists:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"{PACKAGE}=={version}", "-d", str(sdist_dir)])
        sdists = sorted(sdist_dir.glob("*.tar.gz"))
    if not sdists:
        raise BuildError(f"pip download left no sdist in {sdist_dir}")
    src = root / "src"
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(src, filter="data")
    if not (llama_dir / "CMakeLists.txt").is_file():
        raise BuildError(f"the sdist has no vendor/llama.cpp at {llama_dir}")
    return llama_dir


def build(version: str | None = None, *, jobs: int = 2) -> Path:
    """Build (once) both targets and return the llama-server binary; a cache that has
    llama-server only (from before llama-batched-bench was a target) gets the missing one."""
    version = version or installed_version()
    missing = [target for target in TARGETS if built(target, version) is None]
    if not missing:
        return server_binary(version)
    if shutil.which("cmake") is None:
        raise BuildError("cmake is not installed")
    root = version_dir(version)
    llama_dir = _sources(version, root)
    build_dir = root / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(["cmake", "-S", str(llama_dir), "-B", str(build_dir), *generator, *CMAKE_FLAGS])
    _run(["cmake", "--build", str(build_dir), "--target", *missing, "-j", str(jobs)])
    for target in missing:
        if built(target, version) is None:
            raise BuildError(f"the build finished without {binary_path(target, version)}")
    (root / "build-info.json").write_text(json.dumps({
        "llama_cpp_python": version,
        "cmake_flags": CMAKE_FLAGS,
        "binary": str(server_binary(version)),
        "binaries": {target: str(binary_path(target, version)) for target in TARGETS},
    }, indent=2) + "\n")
    return server_binary(version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    parser.add_argument("--version", help=f"{PACKAGE} version (default: the installed one)")
    args = parser.parse_args(argv)
    try:
        build(args.version, jobs=args.jobs)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for target in TARGETS:
        print(binary_path(target, args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
