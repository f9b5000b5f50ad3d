"""Every duration jobsys takes is a finite number of seconds within its documented bounds,
refused where it is given with the field named."""

from __future__ import annotations

import math
from typing import Any

import pytest

from jobsys import RetryPolicy
from jobsys.base import bounds, errors
from jobsys.declare import cadence, definitions, workflow_checks
from jobsys.declare.jobs import Registry
from jobsys.declare.workflows import Step, Workflow
from workers import examples

BAD = [math.inf, -math.inf, math.nan, 1e308, -1.0]


@pytest.mark.parametrize("value", BAD)
def test_a_duration_must_be_finite_and_bounded(value: float) -> None:
    assert bounds.seconds(value, 60.0) is not None
    assert bounds.seconds(30.0, 60.0) is None
    assert bounds.seconds(0, 60.0) is None and bounds.seconds(0, 60.0, positive=True)
    assert bounds.seconds("10", 60.0) is not None and bounds.seconds(True, 60.0) is not None


@pytest.mark.parametrize("value", BAD)
def test_a_workflow_step_delay_or_timeout_is_bounded(value: float) -> None:
    registry = Registry([examples.add])
    for field, step in (
        ("delay", Step("s", "examples.add", {"a": 1, "b": 1}, delay=value)),
        ("timeout", Step("s", "examples.add", {"a": 1, "b": 1}, timeout=value)),
    ):
        with pytest.raises(errors.WorkflowDeclarationError) as caught:
            workflow_checks.check(Workflow("w", (step,)), registry)
        assert (caught.value.step, caught.value.field) == ("s", field)
    with pytest.raises(errors.WorkflowDeclarationError) as caught:
        workflow_checks.check(
            Workflow("w", (Step("s", "examples.add", {"a": 1, "b": 1}),), timeout=value), registry
        )
    assert caught.value.field == "timeout"


@pytest.mark.parametrize("field", ["initial_backoff", "max_backoff"])
@pytest.mark.parametrize("value", BAD)
def test_a_retry_backoff_is_bounded(field: str, value: float) -> None:
    assert [f for f, _ in RetryPolicy(**{field: value}).problems()] == [f"retry.{field}"]


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e308, bounds.MAX_EVERY + 1])
def test_a_schedule_interval_is_bounded(value: float) -> None:
    with pytest.raises(errors.InvalidSchedule) as caught:
        cadence.every(value)
    assert caught.value.field == "every"


def test_a_schedule_instant_is_before_the_year_9000() -> None:
    with pytest.raises(errors.InvalidSchedule) as caught:
        cadence.once("9999-12-31T23:59:59+00:00")
    assert caught.value.field == "at"


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e308, 0, -1])
def test_an_http_job_timeout_is_bounded(value: Any) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        definitions.parse({"name": "h", "kind": "http", "url": "http://x/", "timeout": value})
    assert caught.value.errors[0]["loc"] == ["timeout"]


@pytest.mark.parametrize("value", BAD)
def test_a_retry_asked_by_a_job_is_bounded_where_it_is_written(value: float) -> None:
    with pytest.raises(ValueError, match=r"Retry\(delay=\.\.\.\) must be"):
        errors.Retry("the API said to wait", delay=value)
    assert errors.Retry("later", delay=bounds.MAX_BACKOFF).delay == bounds.MAX_BACKOFF
    assert errors.Retry("later").delay is None


def test_a_priority_is_a_whole_number_from_0_to_9() -> None:
    assert [bounds.priority(p) for p in range(10)] == [None] * 10
    for bad in (-1, 10, 5.0, "5", True, None):
        assert bounds.priority(bad) is not None, bad
    assert bounds.LOWEST_PRIORITY < bounds.DEFAULT_PRIORITY < bounds.HIGHEST_PRIORITY
