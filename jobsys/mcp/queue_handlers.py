"""The MCP tools of pauses: ``queue_list``, ``queue_pause``, ``queue_resume``, and the job
side of ``job_pause`` and ``job_resume`` (over ``Client.pauses``, as the CLI and HTTP)."""

from __future__ import annotations

from typing import Any

from jobsys.mcp import args
from jobsys.mcp.answers import bad_argument
from jobsys.service.client import Client


def queue_list(c: Client, _: args.NoArgs) -> dict[str, Any]:
    return {
        "queues": [q.to_json() for q in c.pauses.queues()],
        "pauses": [p.to_json() for p in c.pauses.list_pauses()],
    }


def queue_pause(c: Client, a: args.QueueArgs) -> dict[str, Any]:
    if _everything(a):
        return {"pause": c.pauses.pause_all().to_json()}
    return {"pause": c.pauses.pause_queue(str(a.name)).to_json()}


def queue_resume(c: Client, a: args.QueueArgs) -> dict[str, Any]:
    if _everything(a):
        return c.pauses.resume_all().to_json()
    return c.pauses.resume_queue(str(a.name)).to_json()


def pause_job(c: Client, name: str) -> dict[str, Any]:
    return {"pause": c.pauses.pause_job(name).to_json()}


def resume_job(c: Client, name: str) -> dict[str, Any]:
    return c.pauses.resume_job(name).to_json()


def _everything(a: args.QueueArgs) -> bool:
    if a.all and a.name:
        raise bad_argument("name", "give a queue's name or all: true, not both")
    if not a.all and not a.name:
        raise bad_argument("name", "give the queue's name (queue_list shows them), or all: true")
    return a.all
