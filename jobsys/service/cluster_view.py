"""``Client.admin.workers()``: the operator's view of the cluster, one JSON shape for the CLI
(``jobsys workers list``), the HTTP API (``GET /api/v1/workers``), the MCP tool
``list_workers`` and the dashboard's Workers page.

Each worker process is listed from its heartbeat row (``jobsys.store.presence``) with what it
holds now (its running runs, from the run records), ``live`` or ``lost`` (no heartbeat for
three of its intervals), and ``mismatch``: what differs from the process answering (its jobsys
version, its catalog's hash), so a node left on an older deploy stands out. A worker that holds
running runs but has no heartbeat row is listed too, ``unknown``: a jobsys from before
heartbeats (mismatched in version), or one whose row was pruned.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from jobsys.base import release
from jobsys.declare import catalog
from jobsys.store import presence, runs

if TYPE_CHECKING:
    from jobsys.service.client import Client

RUNS_SHOWN = 20
"""Running runs listed by id per worker (``running`` counts them all)."""


def expected(c: Client) -> dict[str, Any]:
    """What a worker matching this process runs: its jobsys version and catalog."""
    return {
        "version": release.version(),
        "catalog_hash": catalog.digest(c.registry),
        "catalog": list(c.settings.catalog),
    }


def workers(c: Client, tenant: str | None) -> dict[str, Any]:
    """Every worker known, by host and name, with the runs it holds (by id those of
    ``tenant``, of every tenant if ``None``; counted all) and what differs from this process."""
    store = presence.PresenceStore(c.store.engine)
    now = runs.utcnow()
    want = expected(c)
    held: dict[str, list[presence.HeldRun]] = defaultdict(list)
    for run in store.held_runs():
        held[run.worker].append(run)
    shown = []
    for record in store.known():
        mismatch = [
            field
            for field, key in (("version", "version"), ("catalog", "catalog_hash"))
            if getattr(record, key) != want[key]
        ]
        state = "lost" if record.lost(now) else "live"
        shown.append(
            {**record.to_json(), "state": state, "seen_seconds_ago": _ago(now, record.last_seen)}
            | _holding(held.pop(record.name, []), tenant)
            | {"mismatch": mismatch}
        )
    for name in sorted(held):
        host = name.partition("@")[2] or None
        unknown = dict.fromkeys(presence.WorkerRecord.__dataclass_fields__)
        shown.append(
            {**unknown, "name": name, "host": host, "state": "unknown", "seen_seconds_ago": None}
            | _holding(held[name], tenant)
            | {"mismatch": ["version"]}
        )
    return {
        "workers": shown,
        "expected": want,
        "summary": {
            "workers": len(shown),
            "hosts": len({w["host"] for w in shown}),
            "live": sum(w["state"] == "live" for w in shown),
            "lost": sum(w["state"] == "lost" for w in shown),
            "mismatched": sum(bool(w["mismatch"]) for w in shown),
            "running": sum(w["running"] for w in shown),
        },
        "at": now.isoformat(),
    }


def _holding(held: list[presence.HeldRun], tenant: str | None) -> dict[str, Any]:
    visible = [r for r in held if tenant is None or r.tenant == tenant]
    return {
        "running": len(held),
        "runs": [
            {
                "id": r.id,
                "job": r.job,
                "started_at": r.started_at.isoformat() if r.started_at else None,
            }
            for r in visible[:RUNS_SHOWN]
        ],
    }


def _ago(now: dt.datetime, then: dt.datetime) -> float:
    return round(max(0.0, (now - then).total_seconds()), 3)
