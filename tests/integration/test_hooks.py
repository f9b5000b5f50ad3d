"""Job hooks (README "Notifications: webhooks and job hooks"): ``@job(on_completed=...,
on_failed=..., on_retrying=...)`` called in the worker with the run's record once its state is
committed; a hook that raises is logged and the run is unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsys import RunState, job
from jobsys.base import errors
from tests.cluster import CATALOG, Cluster, cluster
from tests.hook_jobs import Done, Plan
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hooked(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("hooks")
    with cluster(tmp, redis_url, database_url, JOBSYS_CATALOG=f"{CATALOG},tests.hook_jobs") as c:
        c.start_worker("w1", concurrency=2)
        yield c


def calls(c: Cluster, event: str, run_id: str) -> list[dict[str, Any]]:
    path = c.effects / f"hook-{event}-{run_id}"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hooks_see_the_committed_state_of_each_end(hooked: Cluster) -> None:
    c = hooked.client
    ok = c.submit("hooks.watched", {"fail_attempts": 1})
    bad = c.submit("hooks.watched", {"give_up": True})
    assert c.wait(ok, 60).state is RunState.COMPLETED
    assert c.wait(bad, 60).state is RunState.FAILED

    def called() -> bool | NotYet:
        seen = {
            (e, r): len(calls(hooked, e, r))
            for e in ("completed", "failed", "retrying")
            for r in (ok, bad)
        }
        want = {
            ("completed", ok): 1,
            ("retrying", ok): 1,
            ("failed", bad): 1,
            ("retrying", bad): 2,
        }
        return all(seen[k] == n for k, n in want.items()) or NotYet(seen)

    eventually(called, 30, what="each hook called once per end")
    assert calls(hooked, "completed", bad) == [] and calls(hooked, "failed", ok) == []
    done = calls(hooked, "completed", ok)[0]
    # The hook saw the record as committed: completed, at its second attempt, finished.
    assert done["state"] == "completed" and done["attempt"] == 2
    assert done["finished_at"] is not None and done["at"] >= done["finished_at"]
    assert [r["state"] for r in calls(hooked, "retrying", bad)] == ["retrying", "retrying"]
    assert calls(hooked, "failed", bad)[0]["state"] == "failed"


def test_a_hook_that_raises_is_logged_and_the_run_is_unchanged(hooked: Cluster) -> None:
    c = hooked.client
    run_id = c.submit("hooks.broken", {})
    record = c.wait(run_id, 60)
    assert record.state is RunState.COMPLETED and record.output == {"attempt": 1}

    def logged() -> bool | NotYet:
        log = hooked.log("w1")
        return f"the hook of {run_id} is broken" in log or NotYet(log[-2000:])

    eventually(logged, 30, what="the hook's error in the worker's log")
    assert "on_completed hook of job hooks.broken failed" in hooked.log("w1")
    # The worker goes on: the next run completes too.
    assert c.wait(c.submit("hooks.broken", {}), 60).state is RunState.COMPLETED


def test_a_class_style_job_hook_is_a_method(hooked: Cluster) -> None:
    c = hooked.client
    run_id = c.submit("hooks.class_style", {})
    assert c.wait(run_id, 60).state is RunState.COMPLETED
    eventually(lambda: calls(hooked, "completed", run_id), 30, what="the method hook called")
    assert calls(hooked, "completed", run_id)[0]["state"] == "completed"


@pytest.mark.backend_independent
def test_a_hook_that_is_not_a_function_is_refused_at_declaration(tmp_path: Path) -> None:
    with pytest.raises(errors.JobDeclarationError) as caught:

        @job("hooks.bad", on_completed="tell_billing")  # type: ignore[arg-type]
        def bad(data: Plan) -> Done: ...

    assert "on_completed" in str(caught.value) and "must be a function" in str(caught.value)
