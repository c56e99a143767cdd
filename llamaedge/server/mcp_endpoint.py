"""`/mcp`: the mounted tools over the Model Context Protocol's streamable HTTP transport,
served by the official SDK (`mcp`): its low-level `Server` lists the tools from their
manifests and runs each call in the tool's sandbox (tools.py) on a worker thread.

Stateless: each POST is a whole exchange (no session to keep or to lose at a restart), and
answers are JSON. The API key and the Host and Origin guard are the server's middleware,
outside this route, as for `/v1`; the SDK's own DNS-rebinding check is not used twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from starlette.types import ASGIApp

from llamaedge import __version__
from llamaedge.limits import MAX_BODY_BYTES
from llamaedge.tools import ToolManifest, Toolbox


def _tool(manifest: ToolManifest) -> types.Tool:
    return types.Tool(name=manifest.name, description=manifest.description, input_schema=manifest.input_schema)


def mcp_app(manifests: list[ToolManifest], toolbox: Callable[[], Toolbox | None],
            executor: Callable[[], Executor | None]
            ) -> tuple[ASGIApp, Callable[[], contextlib.AbstractAsyncContextManager[None]]]:
    """The ASGI app of `/mcp` and the context it must run in (the server's lifespan).
    `toolbox()`: the compiled tools, and `executor()` the worker threads the calls run on,
    None while the server is still starting."""

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[_tool(m) for m in manifests])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        tools, threads = toolbox(), executor()
        if tools is None or threads is None:
            return types.CallToolResult(content=[types.TextContent(text="the server is still starting: try again")],
                                        is_error=True)
        result = await asyncio.get_running_loop().run_in_executor(threads, tools.call, params.name,
                                                                  params.arguments or {})
        structured = result.output if result.ok and isinstance(result.output, dict) else None
        return types.CallToolResult(content=[types.TextContent(text=result.text())], structured_content=structured,
                                    is_error=not result.ok)

    server: Server[Any] = Server("llamaedge", version=__version__,
                                 instructions="Tools that run in llamaedge's WebAssembly sandbox, each call under "
                                              "the tool's own policy (directories, hosts, memory, wall time).",
                                 on_list_tools=list_tools, on_call_tool=call_tool)
    manager = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True,
                                           max_request_body_size=MAX_BODY_BYTES)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with manager.run():
            yield

    return StreamableHTTPASGIApp(manager), running
