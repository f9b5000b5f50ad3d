"""The no-op job `jobsys bench` measures, on a queue of its own so a cluster's workers keep
out of the way."""

from __future__ import annotations

import pydantic

from jobsys import job

QUEUE = "jobsys-bench"


class Nothing(pydantic.BaseModel):
    pass


@job("bench.noop", queue=QUEUE, hidden=True, timeout=60)
def noop(data: Nothing) -> Nothing:
    """Do nothing: the cost measured is jobsys's own."""
    return data
