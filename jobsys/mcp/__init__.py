"""jobsys for AI agents: the MCP tools, served over stdio by ``jobsys mcp`` and over streamable
HTTP at ``/mcp`` of ``jobsys serve``.

* ``args.py``: the tools' argument models and the checks of their shape;
* ``answers.py``: tool results, error bodies and the JSON views of runs and schedules;
* ``names.py``: the tools' names, the per-job tools' ``run__<job>`` and the deprecated names;
* ``handlers.py``: what each generic tool does;
* ``tools.py``: the tool table, the per-job ``run__<job>`` tools, ``list_tools`` and ``call``;
* ``server.py``: the MCP server and its stdio serving;
* ``http.py``: the token-authenticated streamable HTTP endpoint;
* ``mount.py``: its mount at ``/mcp`` of ``jobsys serve``, which loads the MCP SDK on the first
  request (a server no agent talks to never pays for it).

Like the CLI and the HTTP API, the tools are a thin layer over
``jobsys.service.client.Client``, so what an agent sees agrees with the run records and with
every other interface.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_server", "serve_stdio"]


def __getattr__(name: str) -> Any:
    """``build_server`` and ``serve_stdio``, loaded on first use (the MCP SDK is not light)."""
    if name in __all__:
        from jobsys.mcp import server

        return getattr(server, name)
    raise AttributeError(f"module 'jobsys.mcp' has no attribute {name!r}")
