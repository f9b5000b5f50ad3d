"""Schedules fired by real ``jobsys beat`` processes and run by a real worker: runtime changes
without restarts, ongoing jobs, several beats at once, a beat killed mid-stream."""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from jobsys import RunState, ScheduleState
from jobsys.declare import cadence
from jobsys.store import runs
from tests.cluster import ROOT, Cluster
from tests.servers import free_port
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration


def scheduled_runs(c: Cluster, schedule_id: str) -> list[runs.RunRecord]:
    """The runs a schedule made, in fire order (manual ones last)."""
    query = sa.select(runs.T.c.id).where(runs.T.c.schedule_id == schedule_id)
    with c.store.engine.connect() as conn:
        ids = [r.id for r in conn.execute(query)]
    made = [c.store.get(i) for i in ids]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(made, key=lambda r: r.fire_at or far)


def test_runtime_changes_take_effect_without_a_restart(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=2)
    fresh.start_beat()
    # Beat seeds the declared schedules as it starts (just after it logs "Starting").
    eventually(
        lambda: any(s.id == "code:tests.declared" for s in fresh.client.schedules.list()),
        10,
        what="the declared schedule to be seeded",
    )
    declared = fresh.client.schedules.get("code:tests.declared")
    assert declared.source == "code" and declared.state is ScheduleState.ACTIVE
    s = fresh.client.schedules.create("tests.effect", cadence.every(1, input={"seconds": 0}))
    eventually(lambda: len(scheduled_runs(fresh, s.id)) >= 3, 20, what="three fires")
    fresh.client.schedules.pause(s.id)
    time.sleep(0.5)  # (scenario) a fire already in flight lands
    paused_at = len(scheduled_runs(fresh, s.id))
    time.sleep(2.5)  # (scenario) ticks in which the paused schedule must not fire
    assert len(scheduled_runs(fresh, s.id)) == paused_at  # paused: no fire
    fresh.client.schedules.resume(s.id)
    changed = fresh.client.schedules.update(s.id, input={"seconds": 0.01})
    assert changed.version == 2
    eventually(
        lambda: any(r.schedule_version == 2 for r in scheduled_runs(fresh, s.id)),
        20,
        what="a fire of version 2",
    )
    fresh.client.schedules.delete(s.id)
    time.sleep(0.5)  # (scenario) a fire already in flight lands
    deleted_at = len(scheduled_runs(fresh, s.id))
    time.sleep(2)  # (scenario) ticks in which the deleted schedule must not fire
    assert len(scheduled_runs(fresh, s.id)) == deleted_at
    made = scheduled_runs(fresh, s.id)
    records = fresh.wait_all([r.id for r in made], timeout=30)
    assert all(r.state is RunState.COMPLETED and r.trigger == "scheduled" for r in records)
    assert all(fresh.executions(r.id) == 1 for r in records)
    assert records[0].principal["id"] == "local"
    # Beat stamps when it published each fire (while idle, after the fire).
    assert all(r.published_at is not None and r.published_at >= r.fire_at for r in records)


def test_ongoing_schedule_carries_metadata_until_the_job_says_done(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=1)
    fresh.start_beat()
    s = fresh.client.schedules.create("tests.countdown", cadence.ongoing(1, input={"until": 3}))
    eventually(
        lambda: fresh.client.schedules.get(s.id).state is ScheduleState.COMPLETED,
        30,
        what="the ongoing schedule to complete",
    )
    final = fresh.client.schedules.get(s.id)
    assert final.result == {"n": 3} and final.meta["n"] == 3
    time.sleep(1.5)  # (scenario) a tick in which the completed schedule must not fire
    made = scheduled_runs(fresh, s.id)
    assert len(made) == 3  # nothing after done()
    outputs = [r.output for r in fresh.wait_all([r.id for r in made], timeout=30)]
    assert outputs == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_trigger_now_and_a_job_that_stops_its_own_schedule(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=1)
    fresh.start_beat()
    hourly = fresh.client.schedules.create(
        "tests.effect",
        cadence.every(3600, start_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),
    )
    run_id = fresh.client.schedules.trigger(hourly.id)
    record = fresh.wait_all([run_id], timeout=30)[0]
    assert record.state is RunState.COMPLETED and record.trigger == "manual"
    assert fresh.client.schedules.get(hourly.id).next_fire_at == hourly.next_fire_at
    stopper = fresh.client.schedules.create("tests.self_stop", cadence.every(1))
    eventually(
        lambda: fresh.client.schedules.get(stopper.id).state is ScheduleState.PAUSED,
        20,
        what="the job to pause its schedule",
    )
    time.sleep(2)  # (scenario) ticks in which the paused schedule must not fire
    assert len(scheduled_runs(fresh, stopper.id)) == 1


def test_two_beats_fire_each_tick_once_and_survive_one_being_killed(fresh: Cluster) -> None:
    fresh.start_worker("w", concurrency=2)
    fresh.start_beat("beat1")
    fresh.start_beat("beat2")
    ids = [
        fresh.client.schedules.create(
            "tests.effect", cadence.every(1, overlap="allow", input={"seconds": 0})
        ).id
        for _ in range(3)
    ]

    def fired(at_least: dict[str, int]) -> dict[str, int] | NotYet:
        counts = {i: len(scheduled_runs(fresh, i)) for i in ids}
        return counts if all(counts[i] >= at_least[i] for i in ids) else NotYet(counts)

    # Both beats up for three ticks; then beat2 alone (beat1 killed) fires three more.
    before_kill = eventually(lambda: fired(dict.fromkeys(ids, 3)), 20, what="3 fires each")
    fresh.kill("beat1", signal.SIGKILL)
    eventually(
        lambda: fired({i: n + 3 for i, n in before_kill.items()}),
        20,
        what="3 fires each after beat1 was killed",
    )
    for schedule_id in ids:
        fresh.client.schedules.pause(schedule_id)
    time.sleep(0.5)  # (scenario) a fire already in flight lands
    for schedule_id in ids:
        made = scheduled_runs(fresh, schedule_id)
        fires = [r.fire_at for r in made]
        assert len(fires) == len(set(fires))  # one run per fire
        gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fires)}
        assert gaps == {1.0}, f"a fire was lost or doubled: {gaps}"  # none lost across the kill
        assert len(fires) >= 6
        records = fresh.wait_all([r.id for r in made], timeout=60)
        assert all(fresh.executions(r.id) == 1 for r in records)


def test_a_beat_waiting_for_its_database_stops_when_asked(fresh: Cluster) -> None:
    """SIGTERM to a beat still waiting for an unreachable run store ends it at once (it used
    to wait for the store again inside its signal handler, until killed)."""
    if fresh.database.admin_url is None:
        pytest.skip(reason="a SQLite file cannot be unreachable: needs PostgreSQL")
    url = sa.engine.make_url(fresh.database.url).set(host="127.0.0.1", port=free_port())
    fresh._spawn("beat", ["beat"], env={"JOBSYS_DATABASE_URL": url.render_as_string(False)})
    fresh.wait_for_log("beat", "the run store cannot be reached", timeout=60)
    began = time.monotonic()
    fresh.stop("beat", timeout=20)
    assert time.monotonic() - began < 20, "beat ignored SIGTERM and was killed"


def test_beat_started_before_its_database_waits_for_it(fresh: Cluster) -> None:
    """A beat whose PostgreSQL cannot be reached when it starts (starting beside it, or cut
    off for a moment) keeps trying, saying so, and starts once the database answers."""
    if fresh.database.admin_url is None:
        pytest.skip(reason="a SQLite file cannot be unreachable: needs PostgreSQL")
    port = free_port()
    url = sa.engine.make_url(fresh.database.url).set(host="127.0.0.1", port=port)
    env = {"JOBSYS_DATABASE_URL": url.render_as_string(hide_password=False)}
    beat = fresh._spawn("beat", ["beat"], env=env)
    fresh.wait_for_log("beat", "the run store cannot be reached", timeout=60)
    assert beat.poll() is None
    target = sa.engine.make_url(fresh.database.url)
    forward = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.forward", "127.0.0.1", str(port),
         target.host or "127.0.0.1", str(target.port or 5432)],
        cwd=ROOT,
    )  # fmt: skip
    try:  # (Celery logs "beat: Starting" before its scheduler opens the store)
        fresh.wait_for_log("beat", "declared schedule code:tests.declared created", timeout=60)
        assert beat.poll() is None
    finally:
        forward.kill()
        forward.wait()
    # Cut off again: it still stops at once when asked (its handler makes no scheduler).
    began = time.monotonic()
    fresh.stop("beat", timeout=20)
    assert beat.returncode is not None and time.monotonic() - began < 20
