"""Tools: WASI modules that the server runs for a model (the tool loop), for MCP clients
(`/mcp`) and for other apps, each call in a fresh sandbox under the tool's policy
(docs/tools.md).

    ToolManifest   name, description, input JSON Schema, output description and policy: the
                   JSON file beside the .wasm (`calc.wasm` -> `calc.json`)
    load_tools     `serve --tool` and `--tool-policy` flags -> manifests (UsageError, one line)
    Toolbox        the compiled tools by name; `call(name, arguments)` -> ToolResult
    ToolResult     what the caller sees: the tool's JSON output, or an error and its code. A
                   call that fails is a result, never an exception: the model reads it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from llamaedge.errors import UsageError
from llamaedge.limits import TOOL_MEMORY_MAX_BYTES, TOOL_OUTPUT_MAX_BYTES, TOOL_WALL_TIME_S
from llamaedge.runtime import App, AppPolicy, AppTrap, PolicyBreach, Runtime
from llamaedge.runtime import policy as policies
from llamaedge.runtime.policy import capped
from llamaedge.runtime.tools import run_tool

log = logging.getLogger("llamaedge.tools")

# The policy keys a tool's manifest may use: a tool gets no model, key-value store or header.
TOOL_KEYS = ("memory", "wall-time", "env", "dirs", "hosts")
MANIFEST_KEYS = ("name", "description", "input_schema", "output", "policy")
# As OpenAI's function names: the model writes this name to call the tool.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")
# Nothing granted, and small limits: a tool is one function call, not a server.
DEFAULT_TOOL_POLICY = AppPolicy(memory_max_bytes=TOOL_MEMORY_MAX_BYTES, wall_time_s=TOOL_WALL_TIME_S, models=())


def shipped_dir() -> Path:
    """Where the example tools the package ships live (`--tool NAME`)."""
    return Path(str(resources.files("llamaedge") / "apps" / "tools"))


def shipped_tools() -> list[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.wasm"))


@dataclass(frozen=True)
class ToolManifest:
    name: str
    description: str
    input_schema: dict[str, Any]
    output: str
    policy: AppPolicy
    path: Path  # the .wasm
    manifest: Path | None = None

    def summary(self) -> dict[str, Any]:
        """What `GET /tools` shows: never an environment value or a host path."""
        p = self.policy
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema,
                "output": self.output, "policy": {
                    "memory_mib": p.memory_max_bytes / 2**20, "wall_time_s": p.wall_time_s,
                    "env": [name for name, _ in p.env], "hosts": list(p.hosts),
                    "dirs": [{"guest": d.guest, "writable": d.writable} for d in p.dirs]}}

    def describe(self) -> str:
        """One line for the startup banner."""
        p = self.policy
        parts = [f"memory {p.memory_max_bytes / 2**20:g} MiB", f"wall time {p.wall_time_s:g}s"]
        if p.dirs:
            parts.append("dirs " + ",".join(d.guest + ("(rw)" if d.writable else "") for d in p.dirs))
        if p.hosts:
            parts.append("hosts " + ",".join(p.hosts))
        if p.env:
            parts.append("env " + ",".join(name for name, _ in p.env))
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Manifests and flags


def apply_policy(policy: AppPolicy, key: str, value: Any, where: str, *, base: Path, environ: dict[str, str],
                 from_flag: bool) -> AppPolicy:
    """An app policy key, limited to the keys a tool may have."""
    if key not in TOOL_KEYS:
        raise UsageError(f"{where}: {key!r} is not a tool policy key", hint="use one of: " + ", ".join(TOOL_KEYS))
    return policies.apply(policy, key, value, where, base=base, environ=environ, from_flag=from_flag)


def _policy_table(data: Any, where: str, base: Path, environ: dict[str, str]) -> AppPolicy:
    if not isinstance(data, dict):
        raise UsageError(f"{where}: policy must be an object of policy keys", hint="see docs/tools.md")
    policy = DEFAULT_TOOL_POLICY
    for key, value in data.items():
        policy = apply_policy(policy, key, value, where, base=base, environ=environ, from_flag=False)
    return policy


def _read_data(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", hint="check that the file is readable UTF-8") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path.name} is not valid {path.suffix[1:].upper()}: {exc}",
                         hint="see docs/tools.md for the format") from exc


def check_schema(schema: Any, where: str) -> dict[str, Any]:
    """An input schema: a valid JSON Schema whose root is an object (what OpenAI's function
    parameters and MCP's inputSchema require)."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise UsageError(f"{where}: input_schema must be a JSON Schema with \"type\": \"object\"",
                         hint='e.g. {"type": "object", "properties": {...}, "required": [...]}')
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UsageError(f"{where}: input_schema is not a valid JSON Schema: {exc.message}",
                         hint="see https://json-schema.org") from exc
    return schema


def read_tool_manifest(path: Path, wasm: Path, environ: dict[str, str], *, name: str | None = None) -> ToolManifest:
    """The manifest at `path` (JSON) for the tool `wasm`; `name` (the flag's) wins over its own."""
    where = f"manifest {path.name}"
    data = _read_data(path)
    if not isinstance(data, dict):
        raise UsageError(f"{where} must be an object", hint="see docs/tools.md for the format")
    unknown = set(data) - set(MANIFEST_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {sorted(unknown)[0]!r}", hint="use: " + ", ".join(MANIFEST_KEYS))
    tool_name = name or data.get("name") or wasm.stem
    if not isinstance(tool_name, str) or not _NAME.match(tool_name):
        raise UsageError(f"{where}: {tool_name!r} is not a tool name", hint="letters, digits, _ and -, at most 64")
    description, output = data.get("description"), data.get("output", "")
    if not isinstance(description, str) or not description.strip():
        raise UsageError(f"{where}: description is missing", hint="say what the tool does, for the model")
    if not isinstance(output, str):
        raise UsageError(f"{where}: output must be a string describing the result", hint="see docs/tools.md")
    schema = check_schema(data.get("input_schema"), where)
    policy = _policy_table(data.get("policy", {}), where, path.parent, environ)
    return ToolManifest(tool_name, description.strip(), schema, output, policy, wasm, path)


def parse_tool_spec(spec: str) -> tuple[str, Path]:
    """`NAME=PATH.wasm`, or `NAME`: an example the package ships."""
    name, sep, path = spec.partition("=")
    if not _NAME.match(name):
        raise UsageError(f"bad --tool {spec!r}: {name!r} is not a tool name",
                         hint="use NAME=PATH.wasm, or the name of a shipped tool: " + ", ".join(shipped_tools()))
    if not sep:
        wasm = shipped_dir() / f"{name}.wasm"
        if not wasm.is_file():
            raise UsageError(f"--tool {name}: no such shipped tool",
                             hint="use one of " + ", ".join(shipped_tools()) + ", or NAME=PATH.wasm")
        return name, wasm
    wasm = Path(path).expanduser()
    if not wasm.is_file():
        raise UsageError(f"--tool {spec!r}: no file {path}", hint="check the path to the .wasm file")
    return name, wasm.resolve()


def load_tools(tool_specs: list[str], policy_specs: list[str], *,
               environ: dict[str, str] | None = None) -> list[ToolManifest]:
    """The tools the flags ask for. `--tool-policy NAME=FILE` replaces a tool's policy with
    the table in FILE (JSON or TOML, the manifest's `policy` keys); `--tool-policy
    NAME:KEY=VALUE` sets one key (env, dirs and hosts add)."""
    environ = dict(os.environ) if environ is None else environ
    tools: dict[str, ToolManifest] = {}
    for spec in tool_specs:
        name, wasm = parse_tool_spec(spec)
        if name in tools:
            raise UsageError(f"--tool {name} is given twice", hint="give each tool its own name")
        manifest = wasm.with_suffix(".json")
        if not manifest.is_file():
            raise UsageError(f"--tool {spec!r}: no manifest {manifest.name} beside {wasm.name}",
                             hint="a tool needs its name, description and input_schema (docs/tools.md)")
        tools[name] = read_tool_manifest(manifest, wasm, environ, name=name)
    for spec in policy_specs:
        target, sep, value = spec.partition("=")
        name, colon, key = target.partition(":")
        if not sep or name not in tools:
            raise UsageError(f"bad --tool-policy {spec!r}: no tool {name!r} is mounted",
                             hint="use NAME=FILE or NAME:KEY=VALUE for a tool given with --tool")
        where = f"--tool-policy {spec!r}"
        if colon:
            policy = apply_policy(tools[name].policy, key, value, where, base=Path.cwd(), environ=environ,
                                  from_flag=True)
        else:
            file = Path(value).expanduser()
            policy = _policy_table(_read_data(file), where, file.resolve().parent, environ)
        tools[name] = dataclasses.replace(tools[name], policy=policy)
    return list(tools.values())


# ---------------------------------------------------------------------------------------------
# Calls


@dataclass(frozen=True)
class ToolResult:
    name: str
    ok: bool
    output: Any = None  # the tool's JSON result
    error: str | None = None
    code: str | None = None  # why it failed: invalid_arguments, tool_failed, wall_time_exceeded, ...
    duration_s: float = 0.0

    def text(self) -> str:
        """The result as the model (and an MCP client) reads it: JSON."""
        if self.ok:
            return json.dumps(self.output, ensure_ascii=False)
        return json.dumps({"error": self.error, "code": self.code}, ensure_ascii=False)


def input_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """The validator of an input schema (checked by check_schema)."""
    return jsonschema.validators.validator_for(schema)(schema)


def checked_arguments(validator: jsonschema.protocols.Validator, arguments: Any) -> tuple[Any, str | None]:
    """`arguments` (JSON, or its text as a model writes it) checked against an input schema:
    (the value, None), or (None, why not) for an `invalid_arguments` error."""
    if isinstance(arguments, (str, bytes)):
        try:
            arguments = json.loads(arguments or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, f"the arguments are not JSON: {exc}"
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        return None, f"invalid arguments{' at ' + where if where else ''}: {error.message}"
    return arguments, None


@dataclass(frozen=True)
class _Tool:
    manifest: ToolManifest
    app: App
    validator: jsonschema.protocols.Validator  # of its input


class Toolbox:
    """The mounted tools, compiled once. `call` runs on the calling thread (a worker's):
    the wasm runs there from `_start` to exit. `on_result` sees every result (metrics).
    It is also the runtime's `tool_host`: apps and tools call tools through `llamaedge.call`
    (`call_nested`)."""

    def __init__(self, runtime: Runtime, manifests: list[ToolManifest], *,
                 output_max_bytes: int = TOOL_OUTPUT_MAX_BYTES,
                 on_result: Callable[[ToolResult], None] | None = None) -> None:
        self.runtime = runtime
        self.output_max_bytes = output_max_bytes
        self.on_result = on_result
        self._tools: dict[str, _Tool] = {}
        for manifest in manifests:
            app = runtime.load_app(manifest.path, manifest.policy, kv_namespace="tool:" + manifest.name)
            self._tools[manifest.name] = _Tool(manifest, app, input_validator(manifest.input_schema))
        runtime.tool_host = self

    @property
    def manifests(self) -> list[ToolManifest]:
        return [tool.manifest for tool in self._tools.values()]

    def get(self, name: str) -> ToolManifest | None:
        tool = self._tools.get(name)
        return tool.manifest if tool is not None else None

    def call(self, name: str, arguments: Any, *, policy: AppPolicy | None = None,
             chain: tuple[str, ...] = ()) -> ToolResult:
        """One call. `arguments`: a JSON object, or its text (as a model writes it).
        `policy`: run under this one instead of the tool's (a caller's cap, nested calls);
        `chain`: the tools already running on this thread (nested calls)."""
        started = time.monotonic()
        return self._finish(self._call(name, arguments, policy, (*chain, name)), started)

    def call_nested(self, name: str, arguments: bytes, caller: AppPolicy | None, seconds_left: float | None,
                    chain: tuple[str, ...]) -> tuple[bool, bytes] | None:
        """A call from inside an app or a tool (`llamaedge.call`): under the tool's policy
        capped by its caller's (policy.capped); one that would widen it is refused."""
        tool = self._tools.get(name)
        if tool is None:
            return None
        policy = None
        if caller is not None:
            started = time.monotonic()
            try:
                policy = capped(tool.manifest.policy, caller, seconds_left if seconds_left is not None else math.inf,
                                name)
            except PolicyBreach as breach:
                refused = self._finish(ToolResult(name, False, error=str(breach), code=breach.code), started)
                return False, refused.text().encode()
        result = self.call(name, arguments, policy=policy, chain=chain)
        return result.ok, result.text().encode()

    def _finish(self, result: ToolResult, started: float) -> ToolResult:
        result = dataclasses.replace(result, duration_s=time.monotonic() - started)
        if not result.ok:
            log.info("tool %s: %s (%s)", result.name, result.error, result.code)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _call(self, name: str, arguments: Any, policy: AppPolicy | None, chain: tuple[str, ...]) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(name, False, error=f"no tool named {name!r} (tools: {', '.join(self._tools)})",
                              code="unknown_tool")
        arguments, invalid = checked_arguments(tool.validator, arguments)
        if invalid is not None:
            return ToolResult(name, False, error=invalid, code="invalid_arguments")
        try:
            run = run_tool(self.runtime, tool.app, json.dumps(arguments).encode(),
                           output_max_bytes=self.output_max_bytes, policy=policy, chain=chain)
        except PolicyBreach as breach:
            return ToolResult(name, False, error=str(breach), code=breach.code)
        except AppTrap as trap:
            return ToolResult(name, False, error=str(trap), code="tool_trapped")
        return _outcome(name, run.exit_code, run.stdout, run.stderr_last)


def _outcome(name: str, exit_code: int, stdout: bytes, stderr_last: str) -> ToolResult:
    """The contract: exit 0 and one JSON value on stdout; or a non-zero exit, with
    `{"error": "..."}` on stdout (or a last line on stderr) saying why."""
    try:
        value = json.loads(stdout.decode("utf-8")) if stdout.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        value = None
        if exit_code == 0:
            return ToolResult(name, False, error=f"{name} wrote output that is not JSON", code="bad_output")
    if exit_code != 0:
        message = value.get("error") if isinstance(value, dict) and isinstance(value.get("error"), str) else None
        return ToolResult(name, False, error=message or stderr_last or f"{name} exited with code {exit_code}",
                          code="tool_failed")
    if value is None:
        return ToolResult(name, False, error=f"{name} wrote no result", code="bad_output")
    return ToolResult(name, True, output=value)
