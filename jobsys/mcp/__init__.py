"""jobsys for AI agents: the MCP tools (``server.py``), served over stdio by ``jobsys mcp`` and
over streamable HTTP at ``/mcp`` of ``jobsys serve`` (``http.py``).

Like the CLI and the HTTP API, the tools are a thin layer over ``jobsys.client.Client``, so what
an agent sees agrees with the run records and with every other interface.
"""

from __future__ import annotations

from jobsys.mcp.server import build_server, serve_stdio

__all__ = ["build_server", "serve_stdio"]
