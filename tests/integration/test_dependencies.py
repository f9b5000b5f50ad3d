"""Dependencies between single runs: wait for them, see their outputs, fail with them (or
run anyway), from the client and the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobsys import RunState, SubmitOptions
from tests.cluster import ROOT, Cluster

pytestmark = pytest.mark.integration


def test_a_run_waits_for_its_dependencies_and_gets_their_outputs(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=2)
    c = fresh.client
    first = c.submit("tests.effect", {"seconds": 1.5})
    second = c.submit("examples.add", {"a": 2, "b": 3})
    waiting = c.submit("tests.sees_dependencies", {}, SubmitOptions(depends_on=(first, second)))
    assert c.status(waiting).state is RunState.BLOCKED
    record = fresh.wait_all([waiting], timeout=30)[0]
    assert record.state is RunState.COMPLETED
    assert record.started_at is not None
    assert record.started_at >= c.status(first).finished_at  # type: ignore[operator]
    outputs = record.output["outputs"]
    assert outputs[second] == 5 and outputs[first]["pid"] > 0


def test_a_failed_dependency_fails_the_run_unless_it_runs_anyway(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=2)
    c = fresh.client
    failing = c.submit("examples.fail", {"message": "upstream broke"})
    blocked = c.submit("tests.sees_dependencies", {}, SubmitOptions(depends_on=(failing,)))
    anyway = c.submit(
        "tests.sees_dependencies", {}, SubmitOptions(depends_on=(failing,), run_anyway=True)
    )
    failed, ran = fresh.wait_all([blocked, anyway], timeout=30)
    assert failed.state is RunState.FAILED and failed.error is not None
    assert failed.error["reason"] == "dependency" and fresh.executions(blocked) == 0
    assert ran.state is RunState.COMPLETED and fresh.executions(anyway) == 1
    # Cancelling a waiting dependency releases what waits for it.
    parked = c.submit("tests.effect", {"seconds": 0}, SubmitOptions(countdown=600))
    after = c.submit("tests.sees_dependencies", {}, SubmitOptions(depends_on=(parked,)))
    c.cancel(parked)
    assert fresh.wait_all([after], timeout=30)[0].error["reason"] == "dependency"  # type: ignore[index]


def test_depends_on_from_the_cli(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=1)
    first = fresh.client.submit("examples.add", {"a": 1, "b": 1})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobsys",
            "submit",
            "tests.sees_dependencies",
            "--input",
            "{}",
            "--depends-on",
            first,
            "--wait",
        ],
        env=fresh.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f'"{first}": 2' in done.stdout


def test_an_idempotent_submit_with_dependencies_answers_the_recorded_run(fresh: Cluster) -> None:
    """A second submit under the same idempotency key, waiting for the same runs, answers
    the run recorded first (not an id that was never recorded), and leaves no dependency
    rows of its own behind."""
    c = fresh.client
    first = c.submit("examples.add", {"a": 1, "b": 1})
    options = SubmitOptions(depends_on=[first], idempotency_key="after-first")
    one = c.submit("examples.add", {"a": 2, "b": 2}, options)
    again = c.submit("examples.add", {"a": 2, "b": 2}, options)
    assert again == one
    assert c.status(again).state is RunState.BLOCKED
    assert fresh.store.dependents(first) == [one]
