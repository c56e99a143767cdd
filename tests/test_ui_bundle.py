"""The committed bundle (llamaedge/webui) is exactly what the sources in ui/ build to, so a
fresh clone serves the current UI with no Node installed. On failure, rebuild and commit:
    npm --prefix ui ci && npm --prefix ui run build
"""

from __future__ import annotations

from pathlib import Path

from llamaedge.webui import WEBUI_DIR
from tests.test_ui_unit import npm_project, run_npm


def tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_committed_bundle_matches_a_fresh_build(tmp_path: Path) -> None:
    project = npm_project(tmp_path)
    # vite.config.ts writes to ../llamaedge/webui, which in the copy is inside tmp_path.
    run_npm(project, "run", "build")
    built = tree(tmp_path / "llamaedge" / "webui")
    committed = tree(WEBUI_DIR)
    assert "index.html" in built
    assert sorted(built) == sorted(committed), "files differ: rebuild with `npm --prefix ui run build` and commit"
    stale = [name for name in built if built[name] != committed[name]]
    assert not stale, f"stale files {stale}: rebuild with `npm --prefix ui run build` and commit"
