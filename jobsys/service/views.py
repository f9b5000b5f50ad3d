"""What the interfaces show of the service layer's objects: one JSON shape each, shared by the
CLI (``--json``), the HTTP API and the MCP tools, so they agree."""

from __future__ import annotations

from typing import Any

from jobsys.declare import definitions, jobs


def spec_json(spec: jobs.JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": definitions.kind_of(spec),
        "description": spec.description,
        "version": spec.version,
        "tags": list(spec.tags),
        "labels": dict(spec.labels),
        "queue": spec.queue,
        "priority": spec.priority,
        "timeout": spec.timeout,
        "hidden": spec.hidden,
        "retry": {
            "max_attempts": spec.retry.max_attempts,
            "initial_backoff": spec.retry.initial_backoff,
            "multiplier": spec.retry.multiplier,
            "max_backoff": spec.retry.max_backoff,
            "jitter": spec.retry.jitter,
        },
        "input_schema": spec.input_schema(),
        "output_schema": spec.output_schema(),
    }
