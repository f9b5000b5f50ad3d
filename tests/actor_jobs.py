"""External jobs for the tests of runs driven from outside (``tests/integration/test_actors.py``):
an outside actor does their work; no worker runs them."""

from __future__ import annotations

from typing import Literal

import pydantic

from jobsys import RetryPolicy, Rule, job


class Document(pydantic.BaseModel):
    url: str


class Review(pydantic.BaseModel):
    verdict: Literal["approve", "reject"]
    score: int = pydantic.Field(ge=0, le=10)


TWICE = RetryPolicy(max_attempts=2, initial_backoff=0, jitter=0)


@job("actors.review", external=True, lease=30, retry=TWICE)
def review(doc: Document) -> Review:
    """A person or an agent reviews a document (a lease long enough for the tests' reports
    on a loaded machine: the tests of a lease running out use ``actors.brief``)."""
    raise NotImplementedError  # (never called: an outside actor does the work)


@job("actors.brief", external=True, lease=2, retry=TWICE)
def brief(doc: Document) -> Review:
    """``actors.review`` with a 2 s lease: an actor silent past it loses the run."""
    raise NotImplementedError


@job("actors.once", external=True, lease=1, retry=RetryPolicy(max_attempts=1))
def once(doc: Document) -> Review:
    """One attempt: an actor silent past its lease fails it, timed out."""
    raise NotImplementedError


@job(
    "actors.restricted",
    external=True,
    access={"execute": Rule(roles=["reviewer"]), "read": Rule(roles=["reviewer"])},
)
def restricted(doc: Document) -> Review:
    """Only reviewers may take (and read) its runs."""
    raise NotImplementedError


class Measure(pydantic.BaseModel):
    value: float


@job("actors.measure", external=True)
def measure(doc: Document) -> Measure:
    """A free number for an output: NaN and infinities are no JSON and must be refused."""
    raise NotImplementedError
