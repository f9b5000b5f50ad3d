"""Schedules in the store, fired deterministically (explicit clocks, no beat process): the
misfire and overlap policies, limits, versions, racing beats, declared schedules."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from jobsys import Principal, Registry
from jobsys.base import errors, sealing
from jobsys.declare import cadence, jobs
from jobsys.declare.workflow_checks import check
from jobsys.declare.workflows import Step, workflow
from jobsys.scheduling import firing
from jobsys.store import runs, schedules, schema
from jobsys.store.schedules import ScheduleState
from tests import jobs as test_jobs

pytestmark = pytest.mark.integration
T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
ALICE = Principal(id="alice", roles=("ops",), tenant="acme")
REGISTRY = Registry([test_jobs.effect, test_jobs.countdown, test_jobs.declared])


def secs(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


@pytest.fixture
def sched(store: runs.RunStore) -> schedules.ScheduleStore:
    return store.schedules


def fire(sched: schedules.ScheduleStore, now: dt.datetime) -> list[dict[str, object]]:
    return [f.run for f in firing.Firing(sched).fire_due(REGISTRY, now)]


def finish(store: runs.RunStore, run_id: str) -> None:
    assert store.claim(run_id, 1, lease=5, timeout=60) is not None
    assert store.complete(run_id, 1, {"pid": 1})


def test_interval_fires_on_cadence_as_its_creator(
    store: runs.RunStore, sched: schedules.ScheduleStore
) -> None:
    s = sched.create("tests.effect", cadence.every(10, input={"seconds": 0}), ALICE, now=T0)
    assert s.state is ScheduleState.ACTIVE and s.next_fire_at == T0 and s.version == 1
    assert fire(sched, T0 - secs(1)) == []  # not due yet
    (run,) = fire(sched, T0 + secs(0.5))
    assert fire(sched, T0 + secs(0.6)) == []  # the same fire never makes a second run
    finish(store, str(run["id"]))
    (second,) = fire(sched, T0 + secs(10.2))
    record = store.get(str(second["id"]))
    assert record.schedule_id == s.id and record.schedule_version == 1
    assert record.fire_at == T0 + secs(10) and record.trigger == "scheduled"
    assert record.principal["id"] == "alice" and record.tenant == "acme"
    after = sched.get(s.id)
    assert after.run_count == 2 and after.next_fire_at == T0 + secs(20)
    assert after.last_run_id == second["id"] and after.last_state == "pending"


def test_misfire_runs_once_to_catch_up_or_skips(sched: schedules.ScheduleStore) -> None:
    catch_up = sched.create("tests.effect", cadence.every(10, grace=5), ALICE, now=T0)
    skip = sched.create("tests.effect", cadence.every(10, grace=5, misfire="skip"), ALICE, now=T0)
    made = fire(sched, T0 + secs(95))  # down for 95 s: nine fires missed
    assert [(r["schedule_id"], r["trigger"]) for r in made] == [(catch_up.id, "catch-up")]
    for s in (catch_up, skip):
        assert sched.get(s.id).next_fire_at == T0 + secs(100)  # back on the cadence


def test_overlap_skip_and_queue(store: runs.RunStore, sched: schedules.ScheduleStore) -> None:
    skip = sched.create("tests.effect", cadence.every(10), ALICE, now=T0)
    queue = sched.create("tests.effect", cadence.every(10, overlap="queue"), ALICE, now=T0)
    first = {r["schedule_id"]: r["id"] for r in fire(sched, T0)}
    assert set(first) == {skip.id, queue.id}
    assert fire(sched, T0 + secs(10)) == []  # both previous runs still waiting
    assert sched.get(queue.id).queued_fire_at == T0 + secs(10)
    assert fire(sched, T0 + secs(20)) == []  # one held fire at most; this one is skipped
    finish(store, str(first[queue.id]))
    (released,) = fire(sched, T0 + secs(21))
    assert released["schedule_id"] == queue.id and released["fire_at"] == T0 + secs(10)
    assert sched.get(queue.id).queued_fire_at is None


def test_max_runs_and_end_complete_the_schedule(sched: schedules.ScheduleStore) -> None:
    twice = sched.create(
        "tests.effect", cadence.every(10, max_runs=2, overlap="allow"), ALICE, now=T0
    )
    once = sched.create("tests.effect", cadence.once(T0 + secs(5)), ALICE, now=T0)
    assert len(fire(sched, T0 + secs(5))) == 2
    assert sched.get(once.id).state is ScheduleState.COMPLETED
    assert len(fire(sched, T0 + secs(10))) == 1
    done = sched.get(twice.id)
    assert done.state is ScheduleState.COMPLETED and done.run_count == 2
    assert done.next_fire_at is None
    assert fire(sched, T0 + secs(60)) == []


def test_racing_beats_make_one_run_per_fire(sched: schedules.ScheduleStore) -> None:
    for _ in range(20):
        sched.create("tests.effect", cadence.every(10, overlap="allow"), ALICE, now=T0)
    made: list[list[dict[str, object]]] = [[], [], []]

    def beat(i: int) -> None:
        made[i] = fire(sched, T0 + secs(1))

    threads = [threading.Thread(target=beat, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [r["fire_key"] for m in made for r in m]
    assert len(keys) == 20 and len(set(keys)) == 20


def test_a_batch_read_before_others_fired_it_fires_only_what_is_left(
    sched: schedules.ScheduleStore,
) -> None:
    """Schedules read ahead (as beat does before a burst) that another beat fired or that
    were paused meanwhile fail their guard and are left out: each of the others fires exactly
    once."""
    for _ in range(6):
        sched.create("tests.effect", cadence.every(10, overlap="allow"), ALICE, now=T0)
    now = T0 + secs(1)
    stale = sched.due(now)
    assert len(stale) == 6
    f = firing.Firing(sched)
    early = [m for batch in f.batches(REGISTRY, now, ahead=stale[:2]) for m in batch]
    assert [m.run["schedule_id"] for m in early if m.run] == [s.id for s in stale[:2]]
    sched.pause(stale[2].id, tenant="acme")
    late = [m for batch in f.batches(REGISTRY, now, ahead=stale) for m in batch]
    assert sorted(m.run["schedule_id"] for m in late if m.run) == sorted(s.id for s in stale[3:])
    for s in stale:
        after = sched.get(s.id)
        assert after.run_count == (0 if s.id == stale[2].id else 1)
    assert fire(sched, now) == []  # nothing left due
    # read once more, all fired already: the batch makes nothing and yields no batch
    assert list(f.batches(REGISTRY, now, ahead=stale)) == []


def test_a_schedule_changed_after_it_was_read_fires_as_it_is_now(
    store: runs.RunStore, sched: schedules.ScheduleStore
) -> None:
    """A fire is made from the schedule as it is: one whose metadata was merged (by its last
    run) after beat read it is left out of that read's batch, then fired from the store with
    the new metadata. The run's id is the fire's own, known before the fire."""
    made = [sched.create("tests.effect", cadence.every(10), ALICE, now=T0) for _ in range(3)]
    now = T0 + secs(1)
    stale = sched.due(now)
    sched.merge_metadata(made[0].id, {"n": 1})
    f = firing.Firing(sched)
    first = [m.run for batch in f.batches(REGISTRY, now, ahead=stale) for m in batch if m.run]
    assert sorted(r["schedule_id"] for r in first) == sorted(s.id for s in made[1:])
    (late,) = fire(sched, now)
    assert late["schedule_id"] == made[0].id and late["meta"] == {"n": 1}
    for run in [*first, late]:
        assert run["id"] == firing.fire_run_id(str(run["schedule_id"]), T0)
        assert store.get(str(run["id"])).fire_at == T0


def test_a_fire_that_already_has_its_run_makes_no_second_one(
    store: runs.RunStore, sched: schedules.ScheduleStore
) -> None:
    """The run of a fire exists while its schedule still stands at that fire (the batch's
    insert finds the fire key taken): the batch is rolled back and written one schedule at a
    time, where that fire advances its schedule and makes nothing; the others fire once."""
    made = [sched.create("tests.effect", cadence.every(10), ALICE, now=T0) for _ in range(3)]
    now = T0 + secs(1)
    read = sched.due(now)
    (taken,) = [r for r in read if r.id == made[1].id]
    (run,) = [m.run for b in firing.Firing(sched).batches(REGISTRY, now, ahead=[taken]) for m in b]
    with store.engine.begin() as conn:  # its schedule back at the fire, its run kept
        conn.execute(
            schema.schedules.update()
            .where(schema.schedules.c.id == taken.id)
            .values(
                nominal_at=taken.nominal_at,
                next_fire_at=taken.next_fire_at,
                updated_at=taken.updated_at,
                run_count=0,
            )
        )
    made_now = fire(sched, now)
    assert sorted(r["schedule_id"] for r in made_now) == sorted([made[0].id, made[2].id])
    assert sched.get(taken.id).next_fire_at == T0 + secs(10)  # advanced past the fire
    with store.engine.connect() as conn:
        keys = conn.execute(
            sa.select(schema.runs.c.fire_key).where(schema.runs.c.schedule_id == taken.id)
        ).all()
    assert len(keys) == 1 and run is not None and keys[0][0] == run["fire_key"]


def test_updates_are_versioned_and_change_the_cadence(sched: schedules.ScheduleStore) -> None:
    s = sched.create("tests.effect", cadence.every(10), ALICE, now=T0)
    changed = sched.update(s.id, cadence.every(60, input={"seconds": 1}), ALICE, now=T0)
    assert changed.version == 2 and changed.input == {"seconds": 1}
    assert [v["version"] for v in sched.versions(s.id)] == [1, 2]
    assert sched.versions(s.id)[0]["definition"]["cadence"]["every"] == 10
    (run,) = fire(sched, T0)
    assert run["schedule_version"] == 2


def test_a_schedule_gives_its_runs_its_priority(
    store: runs.RunStore, sched: schedules.ScheduleStore
) -> None:
    """A schedule's priority is stored with it (a new version when it changes) and is the
    priority of every run it makes, fired or triggered; without one, its job's."""
    urgent = sched.create("tests.effect", cadence.every(10, priority=8), ALICE, now=T0)
    plain = sched.create("tests.effect", cadence.every(10, overlap="allow"), ALICE, now=T0)
    assert urgent.options["priority"] == 8 and urgent.definition.options.priority == 8
    assert "priority" not in plain.options  # (definitions from before stay as they were)
    made = {run["schedule_id"]: run["priority"] for run in fire(sched, T0)}
    assert made == {urgent.id: 8, plain.id: test_jobs.effect.priority}
    again = cadence.every(10, overlap="allow", priority=1)
    changed = sched.update(plain.id, again, ALICE, now=T0)
    assert changed.version == 2 and changed.options["priority"] == 1
    triggered = firing.Firing(sched).trigger(plain.id, REGISTRY, tenant="acme")
    assert store.get(triggered.id).priority == 1
    (later,) = fire(sched, T0 + secs(10))  # (urgent's previous run still waits: skipped)
    assert (later["schedule_id"], later["priority"]) == (plain.id, 1)
    with pytest.raises(errors.InvalidSchedule) as caught:
        cadence.every(10, priority=10)
    assert caught.value.field == "priority"


def test_a_schedule_of_a_workflow_gives_its_steps_its_priority(
    sched: schedules.ScheduleStore,
) -> None:
    """A workflow's fire runs the steps that give no priority of their own at the
    schedule's."""
    registry = Registry([test_jobs.effect])
    flow = workflow(
        "tests.prio_flow",
        [Step("own", "tests.effect", {"seconds": 0}, priority=9), Step("plain", "tests.effect")],
    )
    registry.add_workflow(flow, check)
    sched.create("tests.prio_flow", cadence.every(10, priority=2), ALICE, now=T0)
    (fired,) = firing.Firing(sched).fire_due(registry, T0)
    assert fired.workflow is not None
    steps = {s["name"]: s.get("priority") for s in fired.workflow["definition"]["steps"]}
    assert steps == {"own": 9, "plain": 2}


def test_pause_resume_delete_and_tenancy(sched: schedules.ScheduleStore) -> None:
    s = sched.create("tests.effect", cadence.every(10), ALICE, now=T0)
    sched.pause(s.id, tenant="acme")
    assert fire(sched, T0 + secs(100)) == []
    resumed = sched.resume(s.id, tenant="acme", now=T0 + secs(101))
    assert resumed.next_fire_at == T0 + secs(110)  # missed fires are not replayed
    with pytest.raises(errors.ScheduleNotFound):
        sched.get(s.id, tenant="other")  # another tenant's id answers "not found"
    with pytest.raises(errors.InvalidTransition):
        sched.resume(s.id, tenant="acme")
    sched.cancel(s.id, tenant="acme")
    assert fire(sched, T0 + secs(500)) == []
    assert sched.get(s.id).state is ScheduleState.CANCELLED


def test_trigger_fires_now_without_moving_the_cadence(sched: schedules.ScheduleStore) -> None:
    s = sched.create("tests.effect", cadence.every(3600), ALICE, now=T0)
    fired = firing.Firing(sched).trigger(s.id, REGISTRY, tenant="acme")
    assert fired.run["trigger"] == "manual" and fired.run["fire_key"] is None
    after = sched.get(s.id)
    assert after.next_fire_at == s.next_fire_at and after.run_count == 1


def test_declared_schedules_are_seeded_and_keep_runtime_edits(
    sched: schedules.ScheduleStore,
) -> None:
    assert sched.seed(REGISTRY, now=T0) == ["code:tests.declared"]
    seeded = sched.get("code:tests.declared")
    assert seeded.source == "code" and seeded.meta == {"v": 1}
    edited = sched.update(seeded.id, cadence.every(60, metadata={"v": 2}), ALICE, now=T0)
    assert sched.seed(REGISTRY, now=T0) == []  # a restart keeps the edit
    assert sched.get(seeded.id).meta == {"v": 2} and edited.version == 2
    changed = Registry(
        [
            jobs.make_spec(
                **{
                    **{f: getattr(test_jobs.declared, f) for f in ("name", "fn")},
                    "input_model": test_jobs.declared.input_model,
                    "output_model": test_jobs.declared.output_model,
                    "schedule": cadence.every(7200, metadata={"v": 3}),
                }
            )
        ]
    )
    assert sched.seed(changed, now=T0) == ["code:tests.declared"]  # the code changed
    assert sched.get(seeded.id).meta == {"v": 3}


def test_a_declared_schedule_keeps_its_secrets_sealed(
    sched: schedules.ScheduleStore, store: runs.RunStore
) -> None:
    sealer = sealing.Sealer(Fernet.generate_key())
    secret = f"declared-{uuid.uuid4().hex}"
    marked = test_jobs.secret_marked
    spec = jobs.make_spec(
        name=marked.name,
        fn=marked.fn,
        input_model=marked.input_model,
        output_model=marked.output_model,
        schedule=cadence.every(3600, input={"token": secret}),
    )
    registry = Registry([spec])
    assert sched.seed(registry, now=T0, sealer=sealer) == [f"code:{spec.name}"]
    seeded = sched.get(f"code:{spec.name}")
    assert seeded.input == {"token": sealing.REDACTED}
    assert sealing.merge(seeded.input, sealer.open(seeded.sealed)) == {"token": secret}
    assert sched.seed(registry, now=T0, sealer=sealer) == []  # the code did not change
    fired = firing.Firing(sched).trigger(seeded.id, registry)
    assert fired.run is not None and fired.run["sealed"] == seeded.sealed
    with store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).all()
            assert secret not in repr(rows), f"the secret is in {table}"
