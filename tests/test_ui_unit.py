"""The web UI's own unit tests (vitest: stream parser, storage, errors, stats), run from
pytest so one command checks everything. Needs Node and the npm registry or its cache."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
NPM_TIMEOUT_S = 300


def npm_project(tmp_path: Path) -> Path:
    """A copy of ui/ (sources and lock file, no node_modules) with its locked dependencies
    installed by `npm ci`, in tmp_path/ui. A copy, so a developer's ui/node_modules is left
    alone and the check does not depend on what is installed there."""
    if shutil.which("npm") is None:
        pytest.skip("Node.js/npm is not installed; the web UI checks need it (CI has it)")
    project = tmp_path / "ui"
    shutil.copytree(UI_DIR, project, ignore=shutil.ignore_patterns("node_modules", "dist", ".vite"))
    run_npm(project, "ci", "--prefer-offline", "--no-audit", "--no-fund")
    return project


def run_npm(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "npm_config_loglevel": "error", "npm_config_update_notifier": "false", "CI": "1"}
    result = subprocess.run(
        ["npm", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
    )
    assert result.returncode == 0, f"npm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_vitest_suite_passes(tmp_path: Path) -> None:
    project = npm_project(tmp_path)
    result = run_npm(project, "exec", "--", "vitest", "run", "--reporter=verbose")
    output = result.stdout + result.stderr
    # The suites this project relies on ran (a renamed or emptied file would not go unnoticed).
    for suite in ("sse.test.ts", "chatstream.test.ts", "storage.test.ts"):
        assert suite in output, output
    assert " failed" not in output
