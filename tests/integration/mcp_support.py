"""What the MCP tests share: the generic tools' names and SDK client sessions with the jobsys MCP
server, over stdio (``python -m jobsys mcp`` spawned with a cluster's environment) or over
streamable HTTP (``/mcp`` of a ``jobsys serve``, ``tests.servers.Serve``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.cluster import ROOT

GENERIC_TOOLS = (
    "list_jobs",
    "describe_job",
    "execute_job",
    "get_job_status",
    "get_job_events",
    "register_job",
    "remove_job",
    "job_create",
    "job_list",
    "job_show",
    "job_update",
    "job_pause",
    "job_resume",
    "job_cancel",
    "job_result",
    "job_search",
    "list_workers",
)
"""The tools the server offers whatever the jobs (besides one ``run__<job>`` per job, named by
``jobsys.mcp.names.tool_name``)."""

Session = ClientSession


@contextlib.asynccontextmanager
async def stdio_session(env: dict[str, str], errlog: Path) -> AsyncIterator[Session]:
    """An SDK session with ``python -m jobsys mcp`` spawned with ``env``."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "jobsys", "mcp"], env=env, cwd=str(ROOT)
    )
    with errlog.open("a") as err:
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write, read_timeout_seconds=120) as session,
        ):
            await session.initialize()
            yield session


@contextlib.asynccontextmanager
async def http_session(url: str, token: str) -> AsyncIterator[Session]:
    """An SDK session over streamable HTTP, sending the bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx2.Timeout(30, read=120)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=120) as session,
    ):
        await session.initialize()
        yield session
