"""Workflows on real workers: the diamond with a fan-out, fail-fast, timeouts, a worker
killed between steps; and declarations refused with the step and field named."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pydantic
import pytest

from jobsys import Registry, RunState, job
from jobsys.base import errors
from jobsys.declare import cadence
from jobsys.declare.workflow_checks import check
from jobsys.declare.workflows import Step, WorkflowState, workflow
from tests.cluster import Cluster, cluster
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration


def test_the_diamond_fans_out_and_passes_data_through(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=2)
    wf_id = fresh.client.workflows.submit("examples.diamond", {"count": 10, "bonus": 5})
    record = fresh.client.workflows.wait(wf_id, timeout=60)
    assert record.state is WorkflowState.COMPLETED, record.error
    steps = fresh.client.workflows.steps(wf_id)
    assert {n: s.state for n, s in steps.items()} == dict.fromkeys(
        ("numbers", "squares", "offset", "total"), "succeeded"
    )
    assert len(steps["squares"].runs) == 10
    assert sorted(r.output["n"] for r in steps["squares"].runs) == [n * n for n in range(1, 11)]
    assert steps["offset"].runs[0].output == 15
    assert record.output["total"] == {"total": 385 + 15, "parts": 10}
    assert all(r.workflow_id == wf_id for s in steps.values() for r in s.runs)


def test_fail_fast_cancels_what_is_pending_and_runs_the_failure_branch(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=2)
    wf_id = fresh.client.workflows.submit("tests.fail_fast")
    record = fresh.client.workflows.wait(wf_id, timeout=60)
    assert record.state is WorkflowState.FAILED
    assert record.error is not None and "'boom' failed" in record.error["message"]
    steps = fresh.client.workflows.steps(wf_id)
    assert steps["boom"].state == "failed"
    slow = steps["slow"].runs[0]
    assert fresh.wait_all([slow.id], timeout=30)[0].state is RunState.CANCELLED
    assert steps["after_slow"].runs == []  # never started


def test_a_per_step_retry_override_recovers_a_failing_step(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=2)
    wf_id = fresh.client.workflows.submit("tests.recovering")
    record = fresh.client.workflows.wait(wf_id, timeout=60)
    steps = fresh.client.workflows.steps(wf_id)
    (retried,) = steps["retried"].runs
    (plain,) = steps["plain"].runs
    assert retried.state is RunState.COMPLETED and retried.attempts == 2
    assert plain.state is RunState.FAILED and plain.attempts == 1  # the job's own policy
    assert record.state is WorkflowState.FAILED  # "continue": the other branch still ran
    assert fresh.executions(retried.id) == 2 and fresh.executions(plain.id) == 1


def test_a_workflow_past_its_timeout_is_cancelled_with_its_steps(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=1)
    wf_id = fresh.client.workflows.submit("tests.too_slow")
    record = fresh.client.workflows.wait(wf_id, timeout=30)
    assert record.state is WorkflowState.CANCELLED
    assert record.error is not None and record.error["message"] == "timeout"
    (long_run,) = fresh.client.workflows.steps(wf_id)["long"].runs
    assert fresh.wait_all([long_run.id], timeout=30)[0].state is RunState.CANCELLED
    assert fresh.client.workflows.steps(wf_id)["next"].runs == []


def test_a_worker_killed_between_steps_stalls_nothing_and_no_step_runs_twice(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    with cluster(tmp_path, redis_url, database_url, JOBSYS_RECONCILE_SECONDS="2") as c:
        c.start_worker("a", concurrency=1)
        wf_id = c.client.workflows.submit("tests.chain")
        eventually(
            lambda: c.client.workflows.steps(wf_id)["second"].runs,
            30,
            0.05,
            what="the step 'second' to have a run",
        )
        # "second" is published with a 3 s delay: worker a holds it, and dies.
        c.kill("a", signal.SIGKILL)
        c.start_worker("b", concurrency=1)
        record = c.client.workflows.wait(wf_id, timeout=60)
        assert record.state is WorkflowState.COMPLETED, record.error
        steps = c.client.workflows.steps(wf_id)
        for name in ("first", "second", "third"):
            (run,) = steps[name].runs  # one run per step
            assert c.executions(run.id) == 1, name  # and one execution


def test_a_workflow_scheduled_on_an_interval_runs_once_per_tick(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=2)
    fresh.start_beat()
    schedule = fresh.client.schedules.create("tests.pair", cadence.every(1, overlap="allow"))
    time.sleep(4.5)  # (scenario) four or five ticks of the 1 s interval
    fresh.client.schedules.pause(schedule.id)
    time.sleep(0.5)  # (scenario) a fire already in flight lands
    ticks = fresh.client.schedules.get(schedule.id).run_count
    made = [w for w in fresh.client.workflows.list(limit=100) if w.workflow == "tests.pair"]
    assert ticks >= 4 and len(made) == ticks  # one workflow run per tick
    for record in made:
        assert fresh.client.workflows.wait(record.id, timeout=30).state is WorkflowState.COMPLETED
        steps = fresh.client.workflows.steps(record.id)
        assert all(len(s.runs) == 1 and fresh.executions(s.runs[0].id) == 1 for s in steps.values())
    manual = fresh.client.schedules.trigger(schedule.id)
    assert fresh.client.workflows.wait(manual, timeout=30).state is WorkflowState.COMPLETED


def test_a_workflow_given_as_data_runs_and_cancelling_one_stops_its_steps(
    fresh: Cluster,
) -> None:
    fresh.start_worker("w", concurrency=2)
    adhoc = {
        "name": "adhoc.sum",
        "steps": [
            {"name": "a", "job": "examples.add", "input": {"a": "$input.x", "b": 1}},
            {
                "name": "b",
                "job": "examples.add",
                "input": {"a": "$steps.a.output", "b": 10},
                "depends_on": ["a"],
            },
        ],
    }
    wf_id = fresh.client.workflows.submit(adhoc, {"x": 5})
    record = fresh.client.workflows.wait(wf_id, timeout=30)
    assert record.state is WorkflowState.COMPLETED and record.output["b"] == 16
    with pytest.raises(errors.WorkflowDeclarationError):
        fresh.client.workflows.submit({"name": "bad", "steps": [{"name": "a", "job": "no.such"}]})
    slow = {
        "name": "adhoc.slow",
        "steps": [
            {"name": "long", "job": "tests.effect", "input": {"seconds": 20}},
            {
                "name": "next",
                "job": "tests.effect",
                "input": {"seconds": 0},
                "depends_on": ["long"],
            },
        ],
    }
    slow_id = fresh.client.workflows.submit(slow)

    def long_running() -> bool | NotYet:
        runs_ = fresh.client.workflows.steps(slow_id)["long"].runs
        return (bool(runs_) and runs_[0].state is RunState.RUNNING) or NotYet(runs_)

    eventually(long_running, 20, what="the step 'long' to be running")
    assert fresh.client.workflows.cancel(slow_id).state is WorkflowState.CANCELLED
    (long_run,) = fresh.client.workflows.steps(slow_id)["long"].runs
    assert fresh.wait_all([long_run.id], timeout=30)[0].state is RunState.CANCELLED
    assert fresh.client.workflows.steps(slow_id)["next"].runs == []


def test_steps_run_at_their_own_priority_or_the_workflow_run_s(fresh: Cluster) -> None:
    """A step's ``priority`` replaces its job's; a workflow run submitted at a priority runs
    the steps that give none at it, including those started later (by the worker that ends
    the step before), from the copy of the workflow the run keeps."""
    fresh.start_worker("w", concurrency=1)
    steps = [
        {"name": "own", "job": "examples.add", "input": {"a": 1, "b": 1}, "priority": 8},
        {"name": "plain", "job": "examples.add", "input": {"a": 1, "b": 2}},
        {
            "name": "after",
            "job": "examples.add",
            "input": {"a": "$steps.own.output", "b": 1},
            "depends_on": ["own"],
        },
        {
            "name": "last",
            "job": "examples.add",
            "input": {"a": "$steps.after.output", "b": 1},
            "depends_on": ["after"],
            "priority": 0,
        },
    ]
    flow = {"name": "adhoc.prio", "steps": steps}
    job_default = fresh.registry.get("examples.add").priority
    for given, expected in [
        (None, {"own": 8, "plain": job_default, "after": job_default, "last": 0}),
        (2, {"own": 8, "plain": 2, "after": 2, "last": 0}),
    ]:
        wf_id = fresh.client.workflows.submit(flow, {}, priority=given)
        record = fresh.client.workflows.wait(wf_id, timeout=60)
        assert record.state is WorkflowState.COMPLETED, record.error
        ran = fresh.client.workflows.steps(wf_id)
        assert {name: s.runs[0].priority for name, s in ran.items()} == expected
    with pytest.raises(errors.InvalidInput) as caught:
        fresh.client.workflows.submit(flow, {}, priority=12)
    assert caught.value.errors[0]["loc"] == ["priority"]


class In(pydantic.BaseModel):
    n: int
    label: str = ""


class Out(pydantic.BaseModel):
    n: int
    words: list[str] = []


@job("wf.t.double", input=In, output=Out)
def double(data: In) -> Out:
    return Out(n=data.n * 2)


REGISTRY = Registry([double])


@pytest.mark.parametrize(
    ("steps", "where"),
    [
        ([Step("a", "wf.t.nope", {"n": 1})], ("a", "job")),
        (
            [
                Step("a", "wf.t.double", {"n": 1}, depends_on=["b"]),
                Step("b", "wf.t.double", {"n": 1}, depends_on=["a"]),
            ],
            ("a", "depends_on"),
        ),
        ([Step("a", "wf.t.double", {})], ("a", "input.n")),
        ([Step("a", "wf.t.double", {"n": 1, "m": 2})], ("a", "input.m")),
        (
            [
                Step("a", "wf.t.double", {"n": 1}),
                Step("b", "wf.t.double", {"n": "$steps.a.output.missing"}, depends_on=["a"]),
            ],
            ("b", "input.n"),
        ),
        (
            [
                Step("a", "wf.t.double", {"n": 1}),
                Step("b", "wf.t.double", {"n": "$steps.a.output.words"}, depends_on=["a"]),
            ],
            ("b", "input.n"),
        ),
        (
            [
                Step("a", "wf.t.double", {"n": 1}),
                Step("b", "wf.t.double", {"n": "$steps.a.output.n"}),
            ],
            ("b", "input.n"),
        ),
        ([Step("a", "wf.t.double", {"n": "$item"})], ("a", "input.n")),
        ([Step("a", "wf.t.double", {"n": 1}, priority=10)], ("a", "priority")),
    ],
    ids=[
        "unknown job",
        "cycle",
        "missing field",
        "no such field",
        "no such output",
        "type mismatch",
        "not upstream",
        "item without for_each",
        "priority out of range",
    ],
)
def test_bad_declarations_name_the_step_and_field(
    steps: list[Step], where: tuple[str, str]
) -> None:
    with pytest.raises(errors.WorkflowDeclarationError) as caught:
        check(workflow("wf.t.bad", steps), REGISTRY)
    assert (caught.value.step, caught.value.field) == where


@pytest.mark.backend_independent
def test_a_good_declaration_passes() -> None:
    check(
        workflow(
            "wf.t.good",
            [
                Step("a", "wf.t.double", {"n": 1}),
                Step("b", "wf.t.double", {"n": "$steps.a.output.n"}, depends_on=["a"]),
            ],
        ),
        REGISTRY,
    )
