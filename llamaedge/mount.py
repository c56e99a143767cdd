"""User apps beside the chat server: `serve --app /ROUTE=PATH.wasm`.

Each mounted app is a WAGI app (docs/host-interface.md) that answers ROUTE and everything
under it, on the same engine as the chat server: one model in memory, requests from every
app batched together. Its policy (runtime/policy.py) comes from a manifest beside the app
(`PATH.toml` or `PATH.json`) and `--app-policy ROUTE:KEY=VALUE` flags, which win. The host
lists the mounted apps at `GET /apps`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llamaedge.errors import UsageError
from llamaedge.runtime import AppPolicy
from llamaedge.runtime import policy as policies

APPS_ROUTE = "/apps"
TOOLS_ROUTE = "/tools"  # the --tool tools' manifests (docs/tools.md)
MCP_ROUTE = "/mcp"  # the tools over MCP (server/mcp_endpoint.py)
# Paths the host answers itself; a mounted route may not be one of them, under one or above one.
HOST_ROUTES = ("/v1", "/health", "/metrics", APPS_ROUTE, TOOLS_ROUTE, MCP_ROUTE)
_ROUTE = re.compile(r"(/[A-Za-z0-9._~-]+)+\Z")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Mount:
    route: str
    path: Path
    policy: AppPolicy
    manifest: Path | None = None
    # What a `llamaedge.call` of the app must send (the manifest's `input-schema`): checked
    # before the app runs, as a tool's arguments are (docs/tools.md). None: any JSON.
    input_schema: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name


# ---------------------------------------------------------------------------------------------
# From flags to mounts


def parse_app_spec(spec: str) -> tuple[str, Path]:
    """`/ROUTE=PATH.wasm`."""
    route, sep, path = spec.partition("=")
    if not sep or not path:
        raise UsageError(f"bad --app {spec!r}", hint="use /ROUTE=PATH.wasm, e.g. --app /review=review.wasm")
    route = route.rstrip("/") if route != "/" else route
    if not _ROUTE.match(route):
        raise UsageError(f"--app {spec!r}: {route or '(empty)'!r} is not a route",
                         hint="use a path like /review (letters, digits, . _ ~ -)")
    wasm = Path(path).expanduser()
    if not wasm.is_file():
        raise UsageError(f"--app {spec!r}: no file {path}", hint="check the path to the .wasm file")
    return route, wasm.resolve()


def _overlaps(route: str, other: str) -> bool:
    return route == other or route.startswith(other + "/") or other.startswith(route + "/")


def check_route(route: str, taken: list[str], reserved: list[str]) -> None:
    for host_route in [*HOST_ROUTES, *reserved]:
        if _overlaps(route, host_route):
            raise UsageError(f"--app route {route} would shadow the host's {host_route}",
                             hint="mount the app at a route of its own, e.g. /review")
    for other in taken:
        if _overlaps(route, other):
            raise UsageError(f"--app route {route} overlaps the app mounted at {other}",
                             hint="give each app its own route")


def manifest_of(wasm: Path) -> Path | None:
    """`PATH.toml` or `PATH.json` beside `PATH.wasm` (not both)."""
    found = [p for p in (wasm.with_suffix(".toml"), wasm.with_suffix(".json")) if p.is_file()]
    if len(found) > 1:
        raise UsageError(f"{wasm.name} has two manifests ({found[0].name} and {found[1].name})",
                         hint="keep one of them")
    return found[0] if found else None


INPUT_SCHEMA_KEY = "input-schema"  # a manifest's key beside the policy keys


def read_manifest(path: Path, environ: dict[str, str]) -> tuple[AppPolicy, dict[str, Any] | None]:
    """The manifest's policy, and its input schema if it declares one."""
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the manifest {path}: {exc}",
                         hint="check that the file is readable UTF-8") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"manifest {path.name} is not valid {path.suffix[1:].upper()}: {exc}",
                         hint="see docs/apps.md for the format") from exc
    if not isinstance(data, dict):
        raise UsageError(f"manifest {path.name} must be a table (an object) of policy keys",
                         hint="see docs/apps.md for the format")
    schema = None
    if INPUT_SCHEMA_KEY in data:
        from llamaedge.tools import check_schema  # jsonschema, only for an app that declares a schema

        schema = check_schema(data.pop(INPUT_SCHEMA_KEY), f"manifest {path.name} ({INPUT_SCHEMA_KEY})")
    policy = AppPolicy()
    for key, value in data.items():
        policy = policies.apply(policy, key, value, f"manifest {path.name}", base=path.parent,
                                environ=environ, from_flag=False)
    return policy, schema


def parse_policy_flag(spec: str) -> tuple[str, str, str]:
    """`/ROUTE:KEY=VALUE` -> (route, key, value)."""
    target, sep, value = spec.partition("=")
    route, colon, key = target.rpartition(":")
    if not sep or not colon or not route or not key:
        raise UsageError(f"bad --app-policy {spec!r}", hint="use /ROUTE:KEY=VALUE, e.g. /review:max-tokens=256")
    return route.rstrip("/") or route, key, value


def load_mounts(app_specs: list[str], policy_specs: list[str], *,
                environ: dict[str, str] | None = None, reserved: list[str] | None = None) -> list[Mount]:
    """The mounts the flags ask for, each with its manifest and flags applied; UsageError
    (one line, with a hint) for anything wrong. `reserved`: more paths the host answers."""
    environ = dict(os.environ) if environ is None else environ
    mounts: dict[str, Mount] = {}
    for spec in app_specs:
        route, wasm = parse_app_spec(spec)
        check_route(route, list(mounts), reserved or [])
        manifest = manifest_of(wasm)
        policy, schema = read_manifest(manifest, environ) if manifest else (AppPolicy(), None)
        mounts[route] = Mount(route, wasm, policy, manifest, schema)
    for spec in policy_specs:
        route, key, value = parse_policy_flag(spec)
        if route not in mounts:
            raise UsageError(f"--app-policy {spec!r}: no app is mounted at {route}",
                             hint="mount it with --app " + route + "=PATH.wasm")
        mount = mounts[route]
        policy = policies.apply(mount.policy, key, value, f"--app-policy {spec!r}", base=Path.cwd(),
                                environ=environ, from_flag=True)
        mounts[route] = dataclasses.replace(mount, policy=policy)
    return list(mounts.values())


def reserved_paths(routes: list[BaseRoute]) -> list[str]:
    """The fixed part of each route's path (`/assets/{name}` -> `/assets`)."""
    paths = []
    for route in routes:
        path = getattr(route, "path", "")
        fixed = path.split("{", 1)[0].rstrip("/")
        if fixed:
            paths.append(fixed)
        elif path == "/":
            paths.append("/")
    return paths


# ---------------------------------------------------------------------------------------------
# Routes


def mount_routes(mounts: list[Mount], endpoint_for: Callable[[str], Endpoint]) -> list[BaseRoute]:
    """The routes of the mounted apps and `GET /apps`, for create_app's extra routes.
    `endpoint_for(route)`: the server's handler that runs the app mounted at `route`. With
    --api-key they need the key, as /v1 does (server.auth)."""

    async def apps(request: Request) -> Response:
        data = [{"route": m.route, "app": m.name, "manifest": m.manifest.name if m.manifest else None,
                 "policy": m.policy.summary(), "input_schema": m.input_schema} for m in mounts]
        return JSONResponse({"object": "list", "data": data})

    routes: list[BaseRoute] = [Route(APPS_ROUTE, apps, methods=["GET"])]
    for mount in mounts:
        handler = endpoint_for(mount.route)
        routes.append(Route(mount.route, handler, methods=_METHODS))
        routes.append(Route(mount.route + "/{rest:path}", handler, methods=_METHODS))
    return routes
