"""The web chat's routes: the built bundle in `llamaedge/webui/` (made from `ui/` by Vite and
committed, so users need no Node) served at `/`.

Caching follows from how Vite names files: `assets/` holds content-hashed names that never
change meaning, so browsers may keep them forever; `index.html` names the current hashes, so
browsers must revalidate it on every load. Only files inside the bundle are reachable: the
root files are routed by name, and an asset path is resolved and checked before it is opened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

WEBUI_DIR = Path(__file__).resolve().parent / "webui"

CACHE_HTML = "no-cache"
CACHE_HASHED = "public, max-age=31536000, immutable"
# Files at the bundle root (favicon) keep their names across builds: cache briefly.
CACHE_ROOT_FILE = "public, max-age=3600"

# A fixed table rather than `mimetypes`, whose answers depend on the host's registry
# (Windows has served .js as text/plain).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}

# The page loads only its own scripts and styles; it may call any API origin (the server URL
# is a setting). Images are limited to the page itself, so a reply cannot make the browser
# fetch a URL the model chose.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src *",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ]
)

MISSING_BUNDLE = (
    "The web UI bundle is missing from this installation (llamaedge/webui/index.html). "
    "Reinstall llamaedge, or build it from a checkout: npm --prefix ui ci && npm --prefix ui run build\n"
)


def webui_routes(bundle_dir: Path = WEBUI_DIR) -> list[BaseRoute]:
    """Routes for the bundle: `/` and `/index.html`, each root file by its name, and
    `/assets/{name}`. Mount them after the API routes; they claim no other path."""
    root = bundle_dir.resolve()
    assets_dir = root / "assets"

    async def index(request: Request) -> Response:
        path = root / "index.html"
        if not path.is_file():
            return PlainTextResponse(MISSING_BUNDLE, status_code=500)
        return _file(request, path, CACHE_HTML, {"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    async def asset(request: Request) -> Response:
        path = _inside(assets_dir, request.path_params["name"])
        if path is None:
            return PlainTextResponse("Not Found\n", status_code=404)
        return _file(request, path, CACHE_HASHED)

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/index.html", index, methods=["GET", "HEAD"]),
        Route("/assets/{name:path}", asset, methods=["GET", "HEAD"]),
    ]
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if path.is_file() and path.name != "index.html" and path.suffix in CONTENT_TYPES:
                routes.append(Route(f"/{path.name}", _root_file(path), methods=["GET", "HEAD"]))
    return routes


def _root_file(path: Path) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return _file(request, path, CACHE_ROOT_FILE)

    return endpoint


def _inside(directory: Path, name: str) -> Path | None:
    """The file `name` names under `directory`, or None when it names anything else: a parent
    (`..`, also when it arrived percent-encoded), an absolute path, a directory, a missing file,
    or a symlink leading out."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return None
    if any(part in ("", ".", "..") for part in name.split("/")):
        return None
    try:
        candidate = (directory / name).resolve()
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(directory) or not candidate.is_file():
        return None
    if candidate.suffix not in CONTENT_TYPES:
        return None
    return candidate


def _file(request: Request, path: Path, cache_control: str, extra: dict[str, str] | None = None) -> Response:
    headers = {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff", **(extra or {})}
    try:
        stat = path.stat()
    except OSError:
        return PlainTextResponse("Not Found\n", status_code=404)
    response = FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=headers, stat_result=stat)
    # no-cache means "revalidate": answer a matching If-None-Match with 304 so a reload
    # costs a round trip, not the file.
    etag = response.headers.get("etag")
    if etag and etag in _etags(request.headers.get("if-none-match", "")):
        kept = {k: v for k, v in response.headers.items() if k.lower() in ("etag", "cache-control", "last-modified")}
        return Response(status_code=304, headers=kept)
    return response


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
