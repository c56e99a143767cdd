"""The package type-checks: mypy, configured in pyproject.toml ([tool.mypy]), finds nothing.

Why here: the engine declares its contract as Protocols (llamaedge/engine/contract.py) and
nothing else checks that the implementations meet them; a wrapper that lacked the rerank
members once failed only when a mounted app reranked. mypy says so at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_errors() -> None:
    # From the repository root, so that mypy reads pyproject.toml and checks this tree; its
    # cache (.mypy_cache, git-ignored) makes a run after the first one quick.
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"mypy failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
