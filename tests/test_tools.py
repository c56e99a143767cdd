"""Tools (docs/tools.md): manifests and flags, the sandboxed call (arguments checked against
the schema first; traps, loops, memory, output, paths and hosts each failing their call
only), the shipped examples (calc, files, http_get) in real wasmtime, and `serve --tool`
through the MCP SDK's own client over streamable HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamaedge.errors import UsageError
from llamaedge.runtime import GraphRegistry, Runtime
from llamaedge.tools import ToolResult, Toolbox, load_tools, shipped_tools
from tests.conftest import ServerProcess, serving
from tests.wat_apps import RUNAWAY, write_app

SECRET = "the secret outside the granted directory"

# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    runtime = Runtime(GraphRegistry(), cache=False)
    yield runtime
    runtime.close()


class _Hold:
    """`GET /hold` on the local web server answers once the test lets it go: a tool call that
    stays in flight for as long as a test needs, with no clock involved."""

    arrived = threading.Event()
    release = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/hold":
            _Hold.arrived.set()
            _Hold.release.wait(timeout=120)  # a bound, so that a failed test does not hang the server
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://example.com/")
            self.end_headers()
            return
        body = ("x" * 300_000).encode() if self.path == "/big" else f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[int]:
    """A local HTTP server on 127.0.0.1: its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`granted/` (what the files tool may see) beside `outside/` (what it may not), with
    symlinks from the one to the other."""
    root = tmp_path_factory.mktemp("tree")
    granted, outside = root / "granted", root / "outside"
    (granted / "src").mkdir(parents=True)
    outside.mkdir()
    (granted / "notes.txt").write_text("first line\nthe needle is here\n")
    (granted / "src" / "main.py").write_text("print('needle')\n")
    (outside / "secret.txt").write_text(SECRET + "\n")
    (granted / "link.txt").symlink_to(outside / "secret.txt")
    (granted / "relative-link.txt").symlink_to(Path("..") / "outside" / "secret.txt")
    (granted / "outdir").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def toolbox(runtime: Runtime, tree: Path, web: int) -> Toolbox:
    tools = load_tools(["calc", "files", "http_get"],
                       [f"files:dirs={tree / 'granted'}:/data", f"http_get:hosts=127.0.0.1:{web}"])
    return Toolbox(runtime, tools)


def _failed(result: ToolResult, code: str) -> None:
    assert not result.ok and result.code == code, result
    assert SECRET not in result.text()


# ---------------------------------------------------------------------------------------------
# calc


def test_calc_is_exact(toolbox: Toolbox) -> None:
    assert toolbox.call("calc", {"expression": "0.1 + 0.2"}).output == {"result": "3/10"}
    assert toolbox.call("calc", {"expression": "2^100 / 3"}).output == {"result": "1267650600228229401496703205376/3"}
    assert toolbox.call("calc", '{"expression": "(1/3) * 3 - 1"}').output == {"result": "0"}


def test_a_tool_error_is_a_result_the_model_can_read(toolbox: Toolbox) -> None:
    result = toolbox.call("calc", {"expression": "1/(2-2)"})
    assert not result.ok and result.code == "tool_failed" and result.error == "division by zero"
    assert json.loads(result.text()) == {"error": "division by zero", "code": "tool_failed"}


@pytest.mark.parametrize("arguments", [{"expr": "1"}, {"expression": 1}, {"expression": "1", "extra": 2}, "not json", []])
def test_arguments_are_checked_against_the_schema_before_the_tool_runs(toolbox: Toolbox, arguments: Any) -> None:
    result = toolbox.call("calc", arguments)
    assert not result.ok and result.code == "invalid_arguments", result


def test_an_unknown_tool_is_a_result_too(toolbox: Toolbox) -> None:
    result = toolbox.call("rm", {})
    assert not result.ok and result.code == "unknown_tool" and "calc" in (result.error or "")


# ---------------------------------------------------------------------------------------------
# files: the sandbox, not the tool, keeps it inside the granted directory


def test_files_lists_reads_and_searches_the_granted_directory(toolbox: Toolbox) -> None:
    listing = toolbox.call("files", {"op": "list"})
    assert listing.ok, listing
    names = {e["name"]: e for e in listing.output["entries"]}
    assert set(names) == {"notes.txt", "src", "link.txt", "relative-link.txt", "outdir"}
    assert names["src"]["kind"] == "directory" and names["link.txt"]["kind"] == "symlink"
    assert names["notes.txt"]["size"] == len("first line\nthe needle is here\n")
    read = toolbox.call("files", {"op": "read", "path": "src/main.py"})
    assert read.output == {"path": "src/main.py", "content": "print('needle')\n", "truncated": False}
    found = toolbox.call("files", {"op": "search", "pattern": "needle"})
    assert sorted((m["path"], m["line"]) for m in found.output["matches"]) == [("notes.txt", 2), ("src/main.py", 1)]


@pytest.mark.parametrize("arguments", [
    {"op": "read", "path": "../outside/secret.txt"},  # ..
    {"op": "read", "path": "src/../../outside/secret.txt"},
    {"op": "list", "path": ".."},
    {"op": "read", "path": "/etc/passwd"},  # absolute
    {"op": "read", "path": "/data/../outside/secret.txt"},
    {"op": "read", "path": "link.txt"},  # a symlink out (absolute target)
    {"op": "read", "path": "relative-link.txt"},  # a symlink out (relative target)
    {"op": "list", "path": "outdir"},
    {"op": "search", "path": "outdir", "pattern": "secret"},
], ids=["dotdot", "dotdot-inside", "list-parent", "absolute", "absolute-guest", "symlink-absolute",
        "symlink-relative", "symlink-dir", "search-symlink-dir"])
def test_escapes_fail_their_call_only(toolbox: Toolbox, tree: Path, arguments: dict[str, str]) -> None:
    if arguments["path"] == "/etc/passwd":
        arguments = {**arguments, "path": str(tree / "outside" / "secret.txt")}
    _failed(toolbox.call("files", arguments), "tool_failed")
    assert toolbox.call("files", {"op": "read", "path": "notes.txt"}).ok  # the next call is served


def test_search_passes_over_symlinks_out(toolbox: Toolbox) -> None:
    found = toolbox.call("files", {"op": "search", "pattern": "secret"})
    assert found.ok and found.output["matches"] == []


def test_nothing_is_granted_by_default(runtime: Runtime) -> None:
    bare = Toolbox(runtime, load_tools(["files"], []))
    result = bare.call("files", {"op": "list"})
    assert not result.ok and result.code == "tool_failed"


# ---------------------------------------------------------------------------------------------
# http_get: through the host's narrow import, granted hosts only


def test_http_get_fetches_from_a_granted_host(toolbox: Toolbox, web: int) -> None:
    result = toolbox.call("http_get", {"url": f"http://127.0.0.1:{web}/page?q=1"})
    assert result.output == {"status": 200, "body": "hello from /page?q=1", "truncated": False}
    big = toolbox.call("http_get", {"url": f"http://127.0.0.1:{web}/big"}).output
    assert big["truncated"] is True and len(big["body"]) == 256 * 1024


def test_redirects_are_not_followed(toolbox: Toolbox, web: int) -> None:
    result = toolbox.call("http_get", {"url": f"http://127.0.0.1:{web}/redirect"})
    assert result.output == {"status": 302, "body": "", "truncated": False}


@pytest.mark.parametrize("url", ["http://localhost:{port}/", "http://127.0.0.1:1/", "https://example.com/"])
def test_a_host_not_granted_fails_the_call(toolbox: Toolbox, web: int, url: str) -> None:
    result = toolbox.call("http_get", {"url": url.format(port=web)})
    _failed(result, "host_not_allowed")
    assert toolbox.call("http_get", {"url": f"http://127.0.0.1:{web}/"}).ok


def test_a_granted_name_that_resolves_to_loopback_needs_the_address_granted(runtime: Runtime, web: int) -> None:
    by_name = Toolbox(runtime, load_tools(["http_get"], [f"http_get:hosts=localhost:{web}"]))
    refused = by_name.call("http_get", {"url": f"http://localhost:{web}/"})
    _failed(refused, "host_not_allowed")
    assert "not a public address" in (refused.error or "") and f"127.0.0.1:{web}" in (refused.error or "")
    both = Toolbox(runtime, load_tools(["http_get"], [f"http_get:hosts=localhost:{web},127.0.0.1:{web}"]))
    assert both.call("http_get", {"url": f"http://localhost:{web}/x"}).output == {
        "status": 200, "body": "hello from /x", "truncated": False}


@pytest.mark.parametrize(("addresses", "reached"), [
    (["10.0.0.7"], None), (["169.254.169.254"], None), (["::1"], None), (["::ffff:127.0.0.1"], None),
    (["192.168.1.2", "93.184.215.14"], "93.184.215.14"), (["10.0.0.7", "10.0.0.8"], "10.0.0.8"),
], ids=["private", "link-local", "loopback-v6", "mapped-loopback", "public-after-private", "granted-address"])
def test_a_name_is_checked_at_the_address_it_resolves_to(monkeypatch: pytest.MonkeyPatch, addresses: list[str],
                                                         reached: str | None) -> None:
    import socket

    from llamaedge.runtime import http
    from llamaedge.runtime.breaches import HostNotAllowed
    from llamaedge.tools import DEFAULT_TOOL_POLICY

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "api.example.com"
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    policy = dataclasses.replace(DEFAULT_TOOL_POLICY, hosts=("api.example.com", "10.0.0.8"))
    if reached is None:
        with pytest.raises(HostNotAllowed, match="not a public address"):
            http.check_url("https://api.example.com/v1", policy, "t")
    else:
        target = http.check_url("https://api.example.com/v1", policy, "t")
        assert (target.host, target.address, target.port) == ("api.example.com", reached, 443)


# ---------------------------------------------------------------------------------------------
# Tools that misbehave: each fails its own call


HOG = """(module (memory (export "memory") 1)
  (func (export "_start") (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable))"""
FLOOD = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 65536))
    (loop $l (br_if $l (i32.eqz (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))))"""
FLOOD_IGNORING_ERRORS = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 65536))
    (loop $l (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))))"""
TRAP = """(module (memory (export "memory") 1) (func (export "_start") unreachable))"""
NOT_JSON = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1) (data (i32.const 64) "not json")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


def _wat_tool(directory: Path, name: str, wat: str, policy: dict[str, Any]) -> str:
    path = write_app(directory, f"{name}.wasm", wat)
    path.with_suffix(".json").write_text(json.dumps({
        "description": f"misbehaves: {name}", "input_schema": {"type": "object"}, "policy": policy}))
    return f"{name}={path}"


@pytest.mark.parametrize(("wat", "policy", "code"), [
    (RUNAWAY, {"wall-time": "1s"}, "wall_time_exceeded"),
    (HOG, {"memory": "4MiB"}, "memory_limit_exceeded"),
    (FLOOD, {}, "output_too_large"),
    (FLOOD_IGNORING_ERRORS, {"wall-time": "1s"}, "output_too_large"),
    (TRAP, {}, "tool_trapped"),
    (NOT_JSON, {}, "bad_output"),
], ids=["loop", "memory-hog", "huge-output", "huge-output-ignoring-errors", "trap", "not-json"])
def test_a_misbehaving_tool_fails_its_call_only(runtime: Runtime, toolbox: Toolbox, tmp_path: Path, wat: str,
                                                 policy: dict[str, Any], code: str) -> None:
    bad = Toolbox(runtime, load_tools([_wat_tool(tmp_path, "bad", wat, policy)], []))
    _failed(bad.call("bad", {}), code)
    assert toolbox.call("calc", {"expression": "1+1"}).output == {"result": "2"}


# ---------------------------------------------------------------------------------------------
# Manifests and flags


def _manifest(tmp_path: Path, data: dict[str, Any]) -> str:
    wasm = write_app(tmp_path, "t.wasm", TRAP)
    wasm.with_suffix(".json").write_text(json.dumps(data))
    return f"t={wasm}"


@pytest.mark.parametrize(("data", "message"), [
    ({"input_schema": {"type": "object"}}, "description is missing"),
    ({"description": "d"}, "input_schema must be"),
    ({"description": "d", "input_schema": {"type": "object", "properties": 3}}, "not a valid JSON Schema"),
    ({"description": "d", "input_schema": {"type": "object"}, "policy": {"models": ["default"]}}, "not a tool policy key"),
    ({"description": "d", "input_schema": {"type": "object"}, "policy": {"hosts": ["not a host"]}}, "hosts"),
    ({"description": "d", "input_schema": {"type": "object"}, "extra": 1}, "unknown key 'extra'"),
])
def test_a_bad_manifest_is_one_line_naming_it(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_tools([_manifest(tmp_path, data)], [])


def test_flags_name_shipped_tools_and_set_policies(tmp_path: Path) -> None:
    assert shipped_tools() == ["calc", "files", "http_get"]
    with pytest.raises(UsageError, match="no such shipped tool"):
        load_tools(["nope"], [])
    with pytest.raises(UsageError, match="no tool 'files' is mounted"):
        load_tools(["calc"], ["files:dirs=."])
    policy_file = tmp_path / "p.json"
    policy_file.write_text(json.dumps({"hosts": ["example.com"], "wall-time": "2s"}))
    (tool,) = load_tools(["http_get"], [f"http_get={policy_file}", "http_get:hosts=127.0.0.1:8080"])
    assert tool.policy.hosts == ("example.com", "127.0.0.1:8080") and tool.policy.wall_time_s == 2.0
    assert tool.policy.models == () and tool.policy.dirs == ()
    assert tool.summary()["policy"] == {"memory_mib": 64.0, "wall_time_s": 2.0, "env": [],
                                        "hosts": ["example.com", "127.0.0.1:8080"], "dirs": []}


def test_cli_refuses_a_bad_tool_with_one_line_and_exit_1(tiny_model: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT, free_port

    bad_policy = tmp_path / "p.json"
    bad_policy.write_text('{"models": ["default"]}')
    for flags, message in [(["--tool", "nope"], "no such shipped tool"),
                           (["--tool", "calc", "--tool-policy", "calc:hosts=not a host"], "hosts"),
                           (["--tool", "calc", "--tool-policy", f"calc={bad_policy}"], "not a tool policy key")]:
        result = subprocess.run([sys.executable, "-m", "llamaedge", "serve", "--model", str(tiny_model),
                                 "--port", str(free_port()), *flags],
                                capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


# ---------------------------------------------------------------------------------------------
# serve --tool: /tools and /mcp through the MCP SDK's client


API_KEY = "tool-key"


@pytest.fixture(scope="module")
def tool_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, tree: Path, web: int
                ) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("tools-home"), "--model", str(tiny_model), "--threads", "2",
                 "--ctx-size", "512", "--api-key", API_KEY,
                 "--tool", "calc", "--tool", "files", "--tool", "http_get",
                 "--tool-policy", f"files:dirs={tree / 'granted'}:/data",
                 "--tool-policy", f"http_get:hosts=127.0.0.1:{web}") as server:
        yield server


async def _mcp(url: str, calls: list[tuple[str, dict[str, Any]]]) -> tuple[Any, Any, list[Any]]:
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http_client:
        async with streamable_http_client(url, http_client=http_client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                init = await session.initialize()
                listed = await session.list_tools()
                results = [await session.call_tool(name, arguments) for name, arguments in calls]
    return init, listed, results


def test_mcp_clients_list_and_call_the_tools(tool_server: ServerProcess, web: int) -> None:
    init, listed, results = asyncio.run(_mcp(f"{tool_server.base_url}/mcp", [
        ("calc", {"expression": "2^64"}),
        ("files", {"op": "read", "path": "notes.txt"}),
        ("http_get", {"url": f"http://127.0.0.1:{web}/mcp"}),
        ("files", {"op": "read", "path": "../outside/secret.txt"}),
        ("calc", {"expression": 7}),
    ]))
    assert init.server_info.name == "llamaedge"
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == {"calc", "files", "http_get"}
    assert tools["calc"].input_schema["required"] == ["expression"]
    calc, files, fetched, escape, invalid = results
    assert not calc.is_error and calc.structured_content == {"result": "18446744073709551616"}
    assert json.loads(calc.content[0].text) == {"result": "18446744073709551616"}
    assert files.structured_content["content"] == "first line\nthe needle is here\n"
    assert fetched.structured_content == {"status": 200, "body": "hello from /mcp", "truncated": False}
    assert escape.is_error and SECRET not in escape.content[0].text
    assert invalid.is_error and json.loads(invalid.content[0].text)["code"] == "invalid_arguments"


@pytest.mark.parametrize(("api", "body"), [
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("responses", {"input": "hi"}),
    ("messages", {"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}),
])
def test_an_unknown_server_tool_is_a_400_on_each_api(tool_server: ServerProcess, api: str,
                                                      body: dict[str, Any]) -> None:
    keyed = {"Authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}
    unknown = httpx.post(f"{tool_server.base_url}/v1/{api}", headers=keyed,
                         json={"model": "tiny-chat", **body, "tools": [{"type": "llamaedge_tool", "name": "rm"}]})
    assert unknown.status_code == 400
    assert "no server tool named 'rm'" in unknown.json()["error"]["message"]
    assert (unknown.json().get("type") == "error") == (api == "messages")  # each API's own error shape


def test_mcp_and_tools_need_the_api_key_and_a_good_host(tool_server: ServerProcess) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    url = f"{tool_server.base_url}/mcp"
    assert httpx.post(url, json=initialize, headers=headers).status_code == 401
    assert httpx.get(f"{tool_server.base_url}/tools").status_code == 401
    keyed = {**headers, "Authorization": f"Bearer {API_KEY}"}
    assert httpx.post(url, json=initialize, headers={**keyed, "Host": "evil.example"}).status_code == 403
    assert httpx.post(url, json=initialize, headers=keyed).status_code == 200
    listing = httpx.get(f"{tool_server.base_url}/tools", headers=keyed).json()
    assert [t["name"] for t in listing["data"]] == ["calc", "files", "http_get"]
    assert listing["data"][1]["policy"]["dirs"] == [{"guest": "/data", "writable": False}]


def test_mcp_calls_are_admitted_as_app_requests_are(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory,
                                                     web: int) -> None:
    """One place (a slot, no queue): while an MCP call holds it, a flood of MCP calls and a
    chat request each get the 503 of a full server, and the call after it is served."""
    url = f"http://127.0.0.1:{web}/hold"
    _Hold.arrived.clear()
    _Hold.release.clear()
    with serving(tmp_path_factory.mktemp("admission-home"), "--model", str(tiny_model), "--threads", "2",
                 "--ctx-size", "512", "--parallel", "1", "--queue-max", "0", "--api-key", API_KEY,
                 "--tool", "http_get", "--tool-policy", f"http_get:hosts=127.0.0.1:{web}",
                 "--tool-policy", "http_get:wall-time=120s") as server:
        held: list[Any] = []
        holder = threading.Thread(target=lambda: held.append(asyncio.run(_mcp(f"{server.base_url}/mcp",
                                                                                [("http_get", {"url": url})]))))
        holder.start()
        try:
            assert _Hold.arrived.wait(timeout=120)
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "http_get", "arguments": {"url": url}}}
            headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {API_KEY}"}

            async def flood() -> list[httpx.Response]:
                async with httpx.AsyncClient(headers=headers, timeout=60) as client:
                    return list(await asyncio.gather(*[client.post(f"{server.base_url}/mcp", json=call)
                                                       for _ in range(8)]))

            refused = asyncio.run(flood())
            chat = httpx.post(f"{server.base_url}/v1/chat/completions", headers=headers,
                              json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        finally:
            _Hold.release.set()
            holder.join(timeout=120)
        assert [r.status_code for r in refused] == [503] * 8
        assert {r.json()["error"]["code"] for r in refused} == {"server_overloaded"}
        assert all(r.headers["retry-after"] for r in refused)
        assert chat.status_code == 503
        ((result,),) = [results for _, _, results in held]
        assert not result.is_error and result.structured_content["body"] == "hello from /hold"
        _, _, (after,) = asyncio.run(_mcp(f"{server.base_url}/mcp",
                                          [("http_get", {"url": f"http://127.0.0.1:{web}/after"})]))
        assert not after.is_error
        metrics = httpx.get(f"{server.base_url}/metrics", headers=headers).text
        assert 'llamaedge_requests_rejected_total{reason="queue_full"} 9.0' in metrics
        assert "llamaedge_requests_in_flight 0.0" in metrics


def test_tool_calls_are_in_metrics_by_tool_and_result(tool_server: ServerProcess) -> None:
    asyncio.run(_mcp(f"{tool_server.base_url}/mcp", [("calc", {"expression": "1/0"}), ("calc", {"expression": "1"})]))
    text = httpx.get(f"{tool_server.base_url}/metrics").text
    assert 'llamaedge_tool_calls_total{result="tool_failed",tool="calc"}' in text
    assert 'llamaedge_tool_calls_total{result="ok",tool="calc"}' in text
    assert 'llamaedge_tool_call_seconds_count{tool="calc"}' in text


# ---------------------------------------------------------------------------------------------
# The server's tool loop


def test_a_request_without_server_tools_is_the_apps_alone() -> None:
    from llamaedge.server import tool_loop

    plain = {"messages": [], "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    assert tool_loop.plan(json.dumps(plain).encode(), None) is None
    assert tool_loop.plan(b"not json", None) is None


def test_the_loop_offers_server_tools_as_functions_beside_the_clients(runtime: Runtime) -> None:
    from llamaedge.server import tool_loop

    toolbox = Toolbox(runtime, load_tools(["calc"], []))
    client_tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    body = {"messages": [{"role": "user", "content": "?"}], "stream": True, "stream_options": {"include_usage": True},
            "tools": [{"type": "llamaedge_tool", "name": "calc"}, client_tool],
            "tool_choice": {"type": "llamaedge_tool", "name": "calc"}, "llamaedge_max_steps": 3}
    plan = tool_loop.plan(json.dumps(body).encode(), toolbox)
    assert plan is not None and plan.stream and plan.include_usage and plan.max_steps == 3
    assert plan.server_tools == {"calc"}
    calc = plan.body["tools"][0]
    assert calc["function"]["name"] == "calc" and calc["function"]["parameters"]["required"] == ["expression"]
    assert plan.body["tools"][1] == client_tool
    assert plan.body["tool_choice"] == {"type": "function", "function": {"name": "calc"}}
    assert not {"stream", "stream_options", "llamaedge_max_steps"} & set(plan.body)
    for bad, param in [({"tools": [{"type": "llamaedge_tool", "name": "rm"}]}, "tools"),
                       ({"tools": [{"type": "llamaedge_tool", "name": "calc"}], "n": 2}, "n"),
                       ({"tools": [{"type": "llamaedge_tool", "name": "calc"}], "llamaedge_max_steps": 1},
                        "llamaedge_max_steps")]:
        with pytest.raises(tool_loop.LoopRequestError) as refused:
            tool_loop.plan(json.dumps({"messages": [], **bad}).encode(), toolbox)
        assert refused.value.param == param


REVIEW_APP = Path(__file__).resolve().parent.parent / "llamaedge" / "apps" / "review.wasm"


def _loop_policies(tree: Path, web: int) -> list[str]:
    return [f"files:dirs={tree / 'granted'}:/data", f"http_get:hosts=127.0.0.1:{web}"]


@pytest.fixture(scope="module")
def loop_server(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory, tree: Path, web: int
                ) -> Iterator[ServerProcess]:
    """SmolLM2 with the three examples, and the review app twice: at /review granted the
    directory the files tool reads, at /review-bare not."""
    granted = tree / "granted"
    files_policy, http_policy = _loop_policies(tree, web)
    with serving(tmp_path_factory.mktemp("loop-home"), "--model", str(smollm2_model), "--threads", "2",
                 "--ctx-size", "2048", "--tool", "calc", "--tool", "files", "--tool", "http_get",
                 "--tool-policy", files_policy, "--tool-policy", http_policy,
                 "--app", f"/review={REVIEW_APP}", "--app-policy", f"/review:dirs={granted}:/data",
                 "--app", f"/review-bare={REVIEW_APP}") as server:
        yield server


LOOP_REQUEST: dict[str, Any] = {
    "model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 48, "temperature": 0,
    "messages": [{"role": "user", "content": "What is 1234 * 5678? Use the calculator."}],
    "tools": [{"type": "llamaedge_tool", "name": "calc"}],
    "tool_choice": {"type": "function", "function": {"name": "calc"}},
    "extra_body": {"llamaedge_max_steps": 2},
}


def _same_as_a_direct_call(runtime: Runtime, record: dict[str, Any], name: str = "calc",
                           policies: list[str] | None = None) -> None:
    """The loop's record of a call is what the tool, under the server's policy, answers to
    those arguments."""
    direct = Toolbox(runtime, load_tools([name], policies or [])).call(name, record["arguments"])
    assert record["name"] == name and record["ok"] == direct.ok
    assert record.get("output") == direct.output
    assert (record.get("error") or {}).get("code") == direct.code


@pytest.mark.slow
def test_the_server_runs_the_loop_with_smollm2(loop_server: ServerProcess, runtime: Runtime) -> None:
    import openai

    with openai.OpenAI(base_url=f"{loop_server.base_url}/v1", api_key="unused", max_retries=0) as client:
        completion = client.chat.completions.create(**LOOP_REQUEST)
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert not completion.choices[0].message.tool_calls  # the calls were the server's, and are done
    records = (completion.model_extra or {})["llamaedge_tool_calls"]
    assert len(records) >= 1
    _same_as_a_direct_call(runtime, records[0])
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    metrics = httpx.get(f"{loop_server.base_url}/metrics").text
    assert "llamaedge_tool_loop_steps_total 2.0" in metrics
    assert 'llamaedge_tool_call_seconds_count{tool="calc"} 1.0' in metrics


@pytest.mark.slow
def test_a_streamed_loop_shows_each_call_and_result_as_sdk_chunks(loop_server: ServerProcess,
                                                                   runtime: Runtime) -> None:
    import openai

    with openai.OpenAI(base_url=f"{loop_server.base_url}/v1", api_key="unused", max_retries=0) as client:
        chunks = list(client.chat.completions.create(**LOOP_REQUEST, stream=True,
                                                     stream_options={"include_usage": True}))
    extras = [chunk.model_extra or {} for chunk in chunks]
    calls = [e["llamaedge_tool_call"] for e in extras if "llamaedge_tool_call" in e]
    results = [e["llamaedge_tool_result"] for e in extras if "llamaedge_tool_result" in e]
    assert calls and len(calls) == len(results)
    assert calls[0]["function"]["name"] == "calc" and results[0]["id"] == calls[0]["id"]
    _same_as_a_direct_call(runtime, {**results[0], "arguments": calls[0]["function"]["arguments"]})
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


RESPONSES_REQUEST: dict[str, Any] = {
    "model": "SmolLM2-135M-Instruct.Q4_1", "max_output_tokens": 48, "temperature": 0,
    "input": "What is 1234 * 5678? Use the calculator.",
    "tools": [{"type": "llamaedge_tool", "name": "calc"}],
    "tool_choice": {"type": "llamaedge_tool", "name": "calc"},
    "extra_body": {"llamaedge_max_steps": 2},
}
MESSAGES_REQUEST: dict[str, Any] = {
    "model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 48,
    "messages": [{"role": "user", "content": "What is 1234 * 5678? Use the calculator."}],
    "tools": [{"type": "llamaedge_tool", "name": "calc"}],
    "tool_choice": {"type": "llamaedge_tool", "name": "calc"},
    "extra_body": {"llamaedge_max_steps": 2, "temperature": 0},  # anthropic's stream() takes no temperature
}


def _check_response(runtime: Runtime, response: Any, records: list[dict[str, Any]] | None) -> None:
    """A Responses loop, as the openai SDK parsed it: each call the server ran an `mcp_call`
    item (what a server-run tool is in the Responses API) whose result is the tool's under
    the server's policy, then the answer."""
    from openai.types.responses.response_output_item import McpCall

    calls = [item for item in response.output if isinstance(item, McpCall)]
    assert calls and response.output[-1].type == "message"
    call = calls[0]
    assert call.server_label == "llamaedge" and call.name == "calc"
    record: dict[str, Any] = {"name": call.name, "arguments": call.arguments, "ok": call.status == "completed"}
    if call.status == "completed":
        record["output"] = json.loads(call.output or "null")
    else:
        assert call.status == "failed" and call.error is not None and call.error.type == "mcp_tool_execution_error"
        record["error"] = call.error.content
    _same_as_a_direct_call(runtime, record)
    if records is not None:
        assert records[0]["arguments"] == call.arguments and records[0]["ok"] == record["ok"]
    assert response.usage is not None and response.usage.output_tokens > 0


@pytest.mark.slow
def test_the_loop_runs_on_responses_as_the_openai_sdk_parses_it(loop_server: ServerProcess,
                                                                 runtime: Runtime) -> None:
    import openai

    with openai.OpenAI(base_url=f"{loop_server.base_url}/v1", api_key="unused", max_retries=0) as client:
        response = client.responses.create(**RESPONSES_REQUEST)
        _check_response(runtime, response, (response.model_extra or {})["llamaedge_tool_calls"])
        # The output sent back as input (the SDK's own objects) continues the conversation.
        follow_up = client.responses.create(**{**RESPONSES_REQUEST, "tool_choice": "auto", "input": [
            {"role": "user", "content": RESPONSES_REQUEST["input"]},
            *[item.model_dump(exclude_none=True) for item in response.output],
            {"role": "user", "content": "Thanks. And 2 + 2?"}]})
        assert follow_up.status in ("completed", "incomplete") and follow_up.output[-1].type == "message"
        with client.responses.stream(**RESPONSES_REQUEST) as stream:
            events = [event.type for event in stream]
            streamed = stream.get_final_response()  # the SDK's own accumulation of the events
    _check_response(runtime, streamed, None)
    assert events[:2] == ["response.created", "response.in_progress"] and events[-1] == "response.completed"
    call_at = events.index("response.mcp_call.in_progress")
    assert events[call_at + 1] in ("response.mcp_call.completed", "response.mcp_call.failed")
    assert "response.output_text.delta" in events[call_at:]  # the answer after the call


def _check_message(runtime: Runtime, message: Any) -> None:
    """A Messages loop, as the anthropic SDK parsed it: each call a `server_tool_use` block
    (what a server-run tool is in the Messages API) and its `tool_result` block, then the answer."""
    from anthropic.types import ServerToolUseBlock

    use, result = message.content[0], message.content[1]
    assert isinstance(use, ServerToolUseBlock) and use.name == "calc"
    assert result.type == "tool_result" and result.tool_use_id == use.id
    outcome = json.loads(result.content)
    record = {"name": "calc", "arguments": json.dumps(use.input), "ok": not result.is_error}
    record["error" if result.is_error else "output"] = outcome
    _same_as_a_direct_call(runtime, record)
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0


@pytest.mark.slow
def test_the_loop_runs_on_messages_as_the_anthropic_sdk_parses_it(loop_server: ServerProcess,
                                                                  runtime: Runtime) -> None:
    import anthropic

    with anthropic.Anthropic(base_url=loop_server.base_url, api_key="unused", max_retries=0) as client:
        message = client.messages.create(**MESSAGES_REQUEST)
        _check_message(runtime, message)
        (record,) = (message.model_extra or {})["llamaedge_tool_calls"]
        assert json.loads(record["arguments"]) == message.content[0].input
        # The content sent back (the SDK's own blocks) continues the conversation.
        follow_up = client.messages.create(**{**MESSAGES_REQUEST, "tool_choice": {"type": "auto"}, "messages": [
            *MESSAGES_REQUEST["messages"],
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
            {"role": "user", "content": "Thanks. And 2 + 2?"}]})
        assert follow_up.stop_reason in ("end_turn", "max_tokens", "tool_use")
        with client.messages.stream(**MESSAGES_REQUEST) as stream:
            kinds = [event.type for event in stream]
            streamed = stream.get_final_message()  # the SDK's own accumulation of the events
    _check_message(runtime, streamed)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


def test_sent_back_server_calls_become_what_the_app_takes() -> None:
    from llamaedge.server.loop_apis import MESSAGES, RESPONSES

    body: dict[str, Any] = {"input": [
        {"role": "user", "content": "?"},
        {"id": "mcp_1", "type": "mcp_call", "server_label": "llamaedge", "name": "calc", "arguments": "{}",
         "error": {"type": "mcp_tool_execution_error", "content": {"error": "e", "code": "tool_failed"}}},
        {"id": "mcp_2", "type": "mcp_call", "server_label": "elsewhere", "name": "x", "arguments": "{}"}]}
    RESPONSES.prepare(body)
    assert body["input"][1:] == [
        {"type": "function_call", "call_id": "call_1", "name": "calc", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"error": "e", "code": "tool_failed"}'},
        {"id": "mcp_2", "type": "mcp_call", "server_label": "elsewhere", "name": "x", "arguments": "{}"}]
    assert body["store"] is False
    use = {"type": "server_tool_use", "id": "t1", "name": "calc", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "{}", "is_error": False}
    text = {"type": "text", "text": "done"}
    messages: dict[str, Any] = {"messages": [{"role": "user", "content": "?"},
                                             {"role": "assistant", "content": [use, result, text]}]}
    MESSAGES.prepare(messages)
    assert messages["messages"][1:] == [{"role": "assistant", "content": [{**use, "type": "tool_use"}]},
                                        {"role": "user", "content": [result]},
                                        {"role": "assistant", "content": [text]}]


# ---------------------------------------------------------------------------------------------
# Calls inside calls: `llamaedge.call`


def _caller_wat(target: str, arguments: dict[str, Any], head: str = "") -> str:
    """A tool that calls `target` with `arguments` and writes what it got back as its own
    result (whether the call succeeded or not); with `head`, a WAGI app that writes it first."""
    name, data = target.encode(), json.dumps(arguments).encode()
    escape = lambda raw: "".join(f"\\{b:02x}" for b in raw)  # noqa: E731
    write_head = (f'(i32.store (i32.const 0) (i32.const 2048)) (i32.store (i32.const 4) (i32.const {len(head)})) '
                  f'(drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))') if head else ""
    return f"""(module
  (import "llamaedge" "call" (func $call (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "{escape(name)}") (data (i32.const 512) "{escape(data)}")
  (data (i32.const 2048) "{escape(head.encode())}")
  (func (export "_start")
    {write_head}
    (drop (call $call (i32.const 64) (i32.const {len(name)}) (i32.const 512) (i32.const {len(data)})
                      (i32.const 4096) (i32.const 65536) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 4096)) (i32.store (i32.const 4) (i32.load (i32.const 16)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


def test_a_tool_calls_a_tool_within_its_own_policy(runtime: Runtime, tree: Path, tmp_path: Path) -> None:
    granted = tree / "granted"
    tools = Toolbox(runtime, load_tools(
        [_wat_tool(tmp_path, "adder", _caller_wat("calc", {"expression": "1+1"}), {}),
         _wat_tool(tmp_path, "lister", _caller_wat("files", {"op": "read", "path": "notes.txt"}),
                   {"dirs": [{"host": str(granted), "guest": "/data"}]}),
         "calc", "files"], [f"files:dirs={granted}:/data"]))
    assert tools.call("adder", {}).output == {"result": "2"}
    read = tools.call("lister", {})
    assert read.ok and read.output["content"] == "first line\nthe needle is here\n", read


def test_a_nested_call_that_would_widen_the_policy_is_refused(runtime: Runtime, tree: Path, tmp_path: Path,
                                                               web: int) -> None:
    granted = tree / "granted"
    tools = Toolbox(runtime, load_tools(
        [_wat_tool(tmp_path, "reader", _caller_wat("files", {"op": "read", "path": "notes.txt"}), {}),
         _wat_tool(tmp_path, "narrow", _caller_wat("files", {"op": "list"}),
                   {"dirs": [{"host": str(granted / "src"), "guest": "/src"}]}),
         _wat_tool(tmp_path, "fetcher", _caller_wat("http_get", {"url": f"http://127.0.0.1:{web}/"}),
                   {"hosts": ["127.0.0.1:1"]}),
         "files", "http_get"], [f"files:dirs={granted}:/data", f"http_get:hosts=127.0.0.1:{web}"]))
    for caller in ("reader", "narrow", "fetcher"):
        result = tools.call(caller, {})
        assert result.ok and result.output["code"] == "policy_widening", result
        assert "needle" not in result.text()


def test_calls_nest_four_deep_at_most(runtime: Runtime, tmp_path: Path) -> None:
    chain = [_wat_tool(tmp_path, f"t{i}", _caller_wat(f"t{i + 1}", {}), {}) for i in range(1, 6)]
    tools = Toolbox(runtime, load_tools(chain + [_wat_tool(tmp_path, "t6", TRAP, {})], []))
    assert tools.call("t1", {}).output == {"error": "calls nest at most 4 deep: t1 -> t2 -> t3 -> t4 -> t5",
                                           "code": "call_too_deep"}


def test_a_nested_call_has_at_most_its_callers_memory(runtime: Runtime, tmp_path: Path) -> None:
    tools = Toolbox(runtime, load_tools([_wat_tool(tmp_path, "small", _caller_wat("hog", {}), {"memory": "4MiB"}),
                                         _wat_tool(tmp_path, "hog", HOG, {"memory": "64MiB"})], []))
    result = tools.call("small", {})
    assert result.ok and result.output["code"] == "memory_limit_exceeded", result
    assert "memory limit of 4 MiB" in result.output["error"]


def test_capped_policies_take_the_smaller_limits_and_refuse_wider_grants(tree: Path) -> None:
    from llamaedge.runtime.breaches import PolicyWidening
    from llamaedge.runtime.policy import DirGrant, capped
    from llamaedge.tools import DEFAULT_TOOL_POLICY

    granted = tree / "granted"
    caller = dataclasses.replace(DEFAULT_TOOL_POLICY, memory_max_bytes=2**24, wall_time_s=30.0,
                                 dirs=(DirGrant(granted, "/data"),), hosts=("example.com",))
    callee = dataclasses.replace(DEFAULT_TOOL_POLICY, dirs=(DirGrant(granted / "src", "/src"),),
                                 hosts=("example.com:443",))
    narrowed = capped(callee, caller, 1.5, "callee")
    assert (narrowed.memory_max_bytes, narrowed.wall_time_s) == (2**24, 1.5)
    assert narrowed.dirs == callee.dirs and narrowed.hosts == callee.hosts
    for wider in (dataclasses.replace(callee, dirs=(DirGrant(granted / "src", "/src", writable=True),)),
                  dataclasses.replace(callee, dirs=(DirGrant(tree, "/tree"),)),
                  dataclasses.replace(callee, hosts=("example.org",)),
                  dataclasses.replace(callee, models=("default",))):
        with pytest.raises(PolicyWidening):
            capped(wider, caller, 1.5, "callee")


def test_a_cycle_of_calls_is_refused(runtime: Runtime, tmp_path: Path) -> None:
    tools = Toolbox(runtime, load_tools([_wat_tool(tmp_path, "ping", _caller_wat("pong", {}), {}),
                                         _wat_tool(tmp_path, "pong", _caller_wat("ping", {}), {}),
                                         _wat_tool(tmp_path, "self", _caller_wat("self", {}), {})], []))
    assert tools.call("self", {}).output["code"] == "call_cycle"
    assert tools.call("ping", {}).output == {"error": "a cycle of calls: ping -> pong -> ping", "code": "call_cycle"}


NOTES_DIFF = """--- a/notes.txt
+++ b/notes.txt
@@ -1,2 +1,2 @@
 first line
-the needle was here
+the needle is here
"""


@pytest.mark.slow
def test_the_review_app_reads_the_changed_files_through_the_files_tool(loop_server: ServerProcess) -> None:
    reviewed = httpx.post(f"{loop_server.base_url}/review", content=NOTES_DIFF, timeout=300)
    assert reviewed.status_code == 200, reviewed.text
    assert isinstance(reviewed.json()["comments"], list)
    metrics = httpx.get(f"{loop_server.base_url}/metrics").text
    assert 'llamaedge_tool_calls_total{result="ok",tool="files"} 1.0' in metrics
    # Without the directory in its own policy, the app may not reach it through the tool.
    bare = httpx.post(f"{loop_server.base_url}/review-bare", content=NOTES_DIFF, timeout=300)
    assert bare.status_code == 200, bare.text
    metrics = httpx.get(f"{loop_server.base_url}/metrics").text
    assert 'llamaedge_tool_calls_total{result="policy_widening",tool="files"} 1.0' in metrics
    assert 'llamaedge_tool_calls_total{result="ok",tool="files"} 1.0' in metrics


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["files", "http_get"])
def test_the_loop_runs_each_example_the_model_is_made_to_call(loop_server: ServerProcess, runtime: Runtime,
                                                              tree: Path, web: int, tool: str) -> None:
    import openai

    request = {**LOOP_REQUEST, "tools": [{"type": "llamaedge_tool", "name": tool}],
               "tool_choice": {"type": "llamaedge_tool", "name": tool},
               "messages": [{"role": "user", "content": "Use the tool, then say what it gave you."}]}
    with openai.OpenAI(base_url=f"{loop_server.base_url}/v1", api_key="unused", max_retries=0) as client:
        completion = client.chat.completions.create(**request)
    (record,) = (completion.model_extra or {})["llamaedge_tool_calls"]
    policy = [p for p in _loop_policies(tree, web) if p.startswith(tool + ":")]
    _same_as_a_direct_call(runtime, record, tool, policy)
    assert SECRET not in json.dumps(record)


# ---------------------------------------------------------------------------------------------
# Apps that call apps (and tools), by route


JSON_HEAD = "Content-Type: application/json\n\n"
TYPED_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.fixture(scope="module")
def apps_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, tree: Path) -> Iterator[ServerProcess]:
    from tests.wat_apps import writes_app

    apps = tmp_path_factory.mktemp("calling-apps")
    granted = tree / "granted"
    wat = {
        "pong": writes_app([JSON_HEAD + '{"pong": true}']),
        "caller": _caller_wat("/pong", {"x": 1}, JSON_HEAD),
        "tool-caller": _caller_wat("calc", {"expression": "1+1"}, JSON_HEAD),
        "ping": _caller_wat("/pong2", {}, JSON_HEAD),
        "pong2": _caller_wat("/ping", {}, JSON_HEAD),
        "reach": _caller_wat("/holder", {}, JSON_HEAD),
        "holder": writes_app([JSON_HEAD + '{"held": true}']),
        "typed": writes_app([JSON_HEAD + '{"typed": true}']),
        "typed-good": _caller_wat("/typed", {"n": 1}, JSON_HEAD),
        "typed-bad": _caller_wat("/typed", {"n": "one"}, JSON_HEAD),
    }
    (apps / "typed.json").write_text(json.dumps({"input-schema": TYPED_SCHEMA, "memory": "32MiB"}))
    flags = []
    for name, text in wat.items():
        flags += ["--app", f"/{name}={write_app(apps, f'{name}.wasm', text)}"]
    with serving(tmp_path_factory.mktemp("apps-home"), "--model", str(tiny_model), "--threads", "2",
                 "--ctx-size", "512", *flags, "--app-policy", f"/holder:dirs={granted}:/data",
                 "--tool", "calc") as server:
        yield server


def test_an_app_calls_an_app_and_a_tool_by_name(apps_server: ServerProcess) -> None:
    assert httpx.post(f"{apps_server.base_url}/caller").json() == {"pong": True}
    assert httpx.post(f"{apps_server.base_url}/tool-caller").json() == {"result": "2"}


def test_an_app_may_not_reach_through_an_app_granted_more(apps_server: ServerProcess) -> None:
    refused = httpx.post(f"{apps_server.base_url}/reach").json()
    assert refused["code"] == "policy_widening" and "/data" in refused["error"]


def test_a_cycle_of_apps_is_refused(apps_server: ServerProcess) -> None:
    assert httpx.post(f"{apps_server.base_url}/ping").json() == {
        "error": "a cycle of calls: /ping -> /pong2 -> /ping", "code": "call_cycle"}


def test_an_app_that_declares_an_input_schema_is_called_with_matching_input_only(apps_server: ServerProcess) -> None:
    assert httpx.post(f"{apps_server.base_url}/typed-good").json() == {"typed": True}
    assert httpx.post(f"{apps_server.base_url}/typed-bad").json() == {
        "error": "invalid arguments at n: 'one' is not of type 'integer'", "code": "invalid_arguments"}
    listing = {a["route"]: a for a in httpx.get(f"{apps_server.base_url}/apps").json()["data"]}
    assert listing["/typed"]["input_schema"] == TYPED_SCHEMA and listing["/pong"]["input_schema"] is None
    assert listing["/typed"]["policy"]["memory_mib"] == 32  # the manifest's policy keys still apply


def test_an_apps_input_schema_must_be_a_json_schema(tmp_path: Path) -> None:
    from llamaedge.mount import load_mounts

    wasm = write_app(tmp_path, "app.wasm", TRAP)
    for schema, message in [({"type": "array"}, "input_schema must be"),
                            ({"type": "object", "properties": 3}, "not a valid JSON Schema")]:
        wasm.with_suffix(".json").write_text(json.dumps({"input-schema": schema}))
        with pytest.raises(UsageError, match=message):
            load_mounts([f"/app={wasm}"], [])
