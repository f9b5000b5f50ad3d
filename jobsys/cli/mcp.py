"""``jobsys mcp``: the MCP tools over stdio, for AI agents (Claude Desktop, IDEs, ...)."""

from __future__ import annotations

from jobsys.cli.base import handle_errors, main, make_client


@main.command("mcp")
@handle_errors
def mcp_command() -> None:
    """Serve the jobsys MCP tools over stdin/stdout (an MCP client starts this command).

    The tools act as JOBSYS_TOKEN's principal (or --token's), else as the local admin. Over
    HTTP the same tools are at /mcp of `jobsys serve`, behind a bearer token.
    """
    from jobsys.mcp import server  # on first use: the MCP SDK is not light

    client = make_client()
    try:
        server.main_stdio(client)
    finally:
        client.close()
