"""Jobs for tests/integration/test_semantic.py: one whose runs anyone of the tenant may list
but only the role ``ops`` may read, and one that logs its lines (log batches are indexed)."""

from __future__ import annotations

import pydantic

from jobsys import Fatal, JobContext, RetryPolicy, Rule, job


class Said(pydantic.BaseModel):
    message: str


class Nothing(pydantic.BaseModel):
    pass


@job(
    "semantic.sealed_fail",
    retry=RetryPolicy(max_attempts=1),
    access={"read": Rule(roles=["ops"])},
)
def sealed_fail(data: Said) -> Nothing:
    """Raise the message given; only the role ops may read its runs."""
    raise Fatal(data.message)


@job("semantic.logs", retry=RetryPolicy(max_attempts=1))
def logs(data: Said, ctx: JobContext) -> Nothing:
    """Log the message given, then complete."""
    ctx.log(data.message)
    return Nothing()
