"""The jobsys MCP server (built on the low-level ``mcp.server.Server``) and its stdio serving.

``build_server`` answers ``tools/list`` and ``tools/call`` with the tools of ``tools.py``, each
request acting as the client ``client_for(ctx)`` gives (one client over stdio; the token's
principal over HTTP, ``http.py``), and announces ``tools.listChanged`` after a call that adds
or removes tools. ``serve_stdio`` / ``main_stdio`` serve it over this process's stdin and
stdout (``jobsys mcp``), answering a request the SDK could not read with a JSON-RPC error that
names its id, instead of leaving the client to time out.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import sys
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import mcp.types as types
import pydantic
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from jobsys.mcp.answers import error_body, failed, ok, one_line
from jobsys.mcp.args import MAX_DEPTH
from jobsys.mcp.tools import call, list_tools, resolve
from jobsys.service.client import Client

log = logging.getLogger("jobsys.mcp")

Context = ServerRequestContext[Any, Any]
ClientFor = Callable[[Context], Client]
"""Resolves the client of a request (one client over stdio; the token's principal over HTTP)."""


class JobsysServer(Server[Any]):
    """A low-level MCP server that announces ``tools.listChanged``."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


def build_server(client_for: ClientFor) -> Server[Any]:
    """The MCP server; ``client_for(ctx)`` gives the client each request acts with."""

    async def on_list_tools(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            client = client_for(ctx)
            tools = await anyio.to_thread.run_sync(list_tools, client)
        except Exception as exc:
            message = error_body(exc)["error"]["message"]
            raise MCPError(code=types.INTERNAL_ERROR, message=message) from None
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(
        ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            client = client_for(ctx)
            arguments = params.arguments if params.arguments is not None else {}
            answer = await anyio.to_thread.run_sync(call, client, params.name, arguments)
        except Exception as exc:
            return failed(exc)
        tool = resolve(params.name)
        if tool is not None and tool.changes_tools:
            await _tools_changed(ctx)
        return ok(answer)

    return JobsysServer(
        "jobsys",
        version=_version(),
        instructions="Typed background jobs: list_jobs shows what you can run and each input "
        "schema; execute_job or a job's own run__<job> tool (named in list_jobs) runs one; "
        "get_job_status follows it.",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


def _version() -> str:
    try:
        return importlib.metadata.version("jobsys")
    except importlib.metadata.PackageNotFoundError:
        return "0"


async def _tools_changed(ctx: Context) -> None:
    try:
        await ctx.session.send_tool_list_changed()
    except Exception:  # a client that cannot take it still gets its answer
        log.debug("jobsys mcp: tools/list_changed not sent", exc_info=True)


async def serve_stdio(client: Client) -> None:
    """Serve the tools over this process's stdin and stdout, acting as ``client``."""
    server = build_server(lambda _ctx: client)
    async with stdio_server() as (sdk_read, write_stream):
        send, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_answer_unreadable, sdk_read, send, write_stream.send)
            await server.run(read_stream, write_stream, server.create_initialization_options())
            tg.cancel_scope.cancel()


async def _answer_unreadable(
    source: AsyncIterable[SessionMessage | Exception],
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    reply_with: Callable[[SessionMessage], Awaitable[None]],
) -> None:
    """Pass the messages on; answer a request the SDK could not read (nested too deeply for
    its parser, not JSON-RPC) with an error naming its id, instead of leaving the client to
    time out."""
    async with sink:
        async for item in source:
            reply = unreadable_reply(item) if isinstance(item, Exception) else None
            if reply is None:
                await sink.send(item)
            else:
                await reply_with(reply)


def unreadable_reply(exc: Exception) -> SessionMessage | None:
    """The JSON-RPC error answering the request that failed to parse with ``exc``; ``None``
    when no request id can be found in it (a notification, or garbage)."""
    if not isinstance(exc, pydantic.ValidationError):
        return None
    for problem in exc.errors():
        raw = problem.get("input")
        request_id = _request_id(raw)
        if request_id is None:
            continue
        if problem["type"] == "json_invalid":
            code, message = types.PARSE_ERROR, f"the request is not readable JSON: {problem['msg']}"
            if "recursion" in problem["msg"]:
                message += f" (tool arguments may nest at most {MAX_DEPTH} levels)"
        else:
            code, message = types.INVALID_REQUEST, f"not a JSON-RPC request: {problem['msg']}"
        error = types.ErrorData(code=code, message=one_line(message))
        return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))
    return None


_ID = re.compile(r'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


def _request_id(raw: Any) -> int | str | None:
    """The id of a request, from its parsed form or, failing that, its raw text (where the
    SDK's client writes the id before the params)."""
    if isinstance(raw, dict):
        found = raw.get("id") if "method" in raw else None
        return found if isinstance(found, int | str) and not isinstance(found, bool) else None
    if not isinstance(raw, str):
        return None
    head = raw[: raw.find('"params"')] if '"params"' in raw else raw[:1000]
    match = _ID.search(head)
    if match is None or '"method"' not in raw[:2000]:
        return None
    value = json.loads(match.group(1))
    return value if isinstance(value, int | str) else None


def main_stdio(client: Client) -> None:
    """Run the stdio server until the client closes stdin."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    anyio.run(serve_stdio, client)
