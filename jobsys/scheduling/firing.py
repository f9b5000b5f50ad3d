"""Firing due schedules: which fires are due, what each makes, and the schedule's next fire.

A due fire is planned first (``_decide``: run it, skip a misfire, or hold it while the
previous run is active), then a batch of plans is written by the store (``fires.py``: the
schedules advanced, guarded by the fire each was read at, and their runs inserted, in one
transaction; of several beats racing for the same fire one wins). The runs are built by
``rows.new_run``, the workflow runs by ``rows.new_workflow_run``.

``Firing.batches`` yields each batch after its commit, so the beat publishes it at once and
then stamps ``published_at``; a beat that dies in between leaves waiting runs that the
reconciler publishes. Nothing here imports Celery or writes SQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from jobsys.base import errors
from jobsys.declare import jobs, workflows
from jobsys.declare.cadence import Misfire, Overlap, ScheduleSpec, next_after, next_fire
from jobsys.store import rows, run_states, runs
from jobsys.store.fires import Advance, Fired, FireStore
from jobsys.store.schedules import ScheduleRecord, ScheduleState, ScheduleStore

__all__ = ["FIRE_BATCH", "Fired", "Firing", "Plan", "fire_run_id", "known", "versioned"]

FIRE_BATCH = 250
"""Due schedules written per transaction: a few statements each, the write lock held briefly."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do with one due fire, decided before the write."""

    record: ScheduleRecord
    definition: ScheduleSpec
    trigger: str | None
    """The trigger of the run to make; ``None``: no run (skipped misfire or overlap)."""
    following: dt.datetime | None
    """The cadence's next fire after this one; ``None``: the schedule is over."""
    hold: bool
    """Hold this fire until the previous run ends (overlap ``queue``)."""


class Firing:
    """Fires the due schedules of a ``ScheduleStore``; used by beat and by ``trigger``."""

    def __init__(self, schedules: ScheduleStore) -> None:
        self.schedules = schedules
        self.engine = schedules.engine
        self.store = FireStore(schedules.engine)

    def fire_due(self, registry: jobs.Registry, now: dt.datetime, limit: int = 500) -> list[Fired]:
        """Fire every due schedule (and every held fire whose previous run ended)."""
        return [f for batch in self.batches(registry, now, limit) for f in batch]

    def batches(
        self,
        registry: jobs.Registry,
        now: dt.datetime,
        limit: int = 500,
        ahead: Sequence[ScheduleRecord] | None = None,
    ) -> Iterator[list[Fired]]:
        """Fire up to ``limit`` due schedules, yielding what each committed batch made.
        ``ahead``: the due schedules, read before they were due, instead of reading them now
        (all of them are fired; a schedule changed since it was read fails the write's guard
        and is not fired from it)."""
        released = []
        for record in self.schedules.queued(limit):
            made = self._fire_queued(record, registry, now)
            if made:
                released.append(made)
        if released:
            yield released
        # A target no process here knows is left for a beat whose catalog has it.
        if ahead is None:
            ahead = self.schedules.due(now, limit)
        due = [r for r in ahead if known(registry, r.tenant, r.job) and _due(r, now)]
        for start in range(0, len(due), FIRE_BATCH):
            chunk = [(r, r.definition) for r in due[start : start + FIRE_BATCH]]
            # Reads first, writes in their own transaction: a SQLite transaction that reads
            # and then writes fails outright when another process wrote in between. The state
            # of the previous run matters only to a schedule that may not overlap it.
            watched = [r.last_run_id for r, d in chunk if r.last_run_id and _no_overlap(d)]
            last = self.store.run_states(watched)
            plans = [_decide(r, d, now, last) for r, d in chunk]
            batch = self.store.write([self._advance(p, registry, now) for p in plans])
            if batch:  # (nothing when another beat fired them all)
                yield batch

    def trigger(
        self,
        schedule_id: str,
        registry: jobs.Registry,
        tenant: str | None = None,
        version: int | None = None,
    ) -> Fired:
        """Fire once now (trigger ``manual``), leaving the cadence as it is; ``version``: with
        the input and metadata of that version of the schedule (its run records the version)."""
        record = self.schedules.get(schedule_id, tenant)
        if record.state in (ScheduleState.CANCELLED,):
            raise errors.InvalidTransition(schedule_id, record.state.value, "trigger", "schedule")
        if version is not None and version != record.version:
            record = versioned(self.schedules, record, version)
        now = runs.utcnow()
        # (a run is published by the caller right after the commit)
        made = _made(record, registry, now, "manual", now, key=None, published=True)
        self.store.trigger(schedule_id, made, now)
        return made

    def _advance(self, plan: Plan, registry: jobs.Registry, now: dt.datetime) -> Advance:
        """The schedule's new values after this fire, and what the fire makes."""
        s, d = plan.record, plan.definition
        assert s.nominal_at is not None
        count = s.run_count + (1 if plan.trigger else 0)
        following = plan.following
        over = following is None or (d.options.max_runs is not None and count >= d.options.max_runs)
        values: dict[str, Any] = {
            "nominal_at": None if over else following,
            "next_fire_at": None if over else self.schedules.jittered(following, d.options),
            "updated_at": now,
        }
        if over and not plan.hold:
            values["state"] = ScheduleState.COMPLETED.value
        if plan.hold:
            values["queued_fire_at"] = s.nominal_at
        if not plan.trigger:
            return Advance(s, values, None)
        made = _made(s, registry, s.nominal_at, plan.trigger, now, _fire_key(s.id, s.nominal_at))
        values.update(run_count=count, last_run_id=made.id, last_fire_at=s.nominal_at)
        return Advance(s, values, made)

    # --- held fires ------------------------------------------------------------------------

    def _fire_queued(
        self, s: ScheduleRecord, registry: jobs.Registry, now: dt.datetime
    ) -> Fired | None:
        """Release a held fire (overlap ``queue``) once the previous run has ended."""
        assert s.queued_fire_at is not None
        registry = registry.scoped(s.tenant)
        if s.job not in registry:  # ("queue" holds job fires only)
            return None
        spec = registry.get(s.job)
        if s.last_run_id and _active(self.store.run_states([s.last_run_id]).get(s.last_run_id)):
            return None
        key = _fire_key(s.id, s.queued_fire_at)
        row = _run_row(s, spec, s.queued_fire_at, "scheduled", now, key)
        if not self.store.release_held(s, row, now):
            return None
        return Fired(row, spec)


def _decide(s: ScheduleRecord, d: ScheduleSpec, now: dt.datetime, last: dict[str, str]) -> Plan:
    """For a due fire: whether and how it runs, the following fire, and whether to hold it
    until the previous run ends."""
    assert s.nominal_at is not None and s.next_fire_at is not None
    trigger: str | None = "scheduled"
    if (now - s.next_fire_at).total_seconds() > d.options.grace:  # a misfire
        following = next_after(d.cadence, s.nominal_at, now)
        trigger = "catch-up" if d.options.misfire is Misfire.RUN_ONCE else None
    else:
        following = next_fire(d.cadence, s.nominal_at)
    hold = False
    overlap = trigger and d.options.overlap is not Overlap.ALLOW and s.last_run_id
    if overlap and _active(last.get(str(s.last_run_id))):
        hold = d.options.overlap is Overlap.QUEUE and s.queued_fire_at is None
        trigger = None
    return Plan(s, d, trigger, following, hold)


def _active(state: str | None) -> bool:
    """The previous run of a schedule is not over (a fire that may not overlap it waits)."""
    return state in run_states.ACTIVE


def _fire_key(schedule_id: str, fire_at: dt.datetime) -> str:
    return f"{schedule_id}@{fire_at.astimezone(dt.UTC).isoformat()}"


_FIRE_IDS = uuid.UUID("6b1f7a8e-3c1d-4f0e-9a57-1f2e0c9d4b21")


def fire_run_id(schedule_id: str, fire_at: dt.datetime) -> str:
    """The id of the run a schedule's fire makes, known before the fire: beat builds the
    messages of the fires due next ahead of their time. (Whichever beat makes the fire, and
    whether it runs on time or as a catch-up, the run has this id.)"""
    return uuid.uuid5(_FIRE_IDS, _fire_key(schedule_id, fire_at)).hex


def _no_overlap(d: ScheduleSpec) -> bool:
    return d.options.overlap is not Overlap.ALLOW


def _due(s: ScheduleRecord, now: dt.datetime) -> bool:
    return s.next_fire_at is not None and s.next_fire_at <= now


def known(registry: jobs.Registry, tenant: str, target: str) -> bool:
    """Whether this process can fire a schedule of ``tenant`` whose target is ``target`` (a
    job or workflow it has, in that tenant)."""
    mine = registry.scoped(tenant)
    return target in mine or target in mine.workflows


def versioned(store: ScheduleStore, record: ScheduleRecord, version: int) -> ScheduleRecord:
    """The schedule as its ``version`` was (its input and metadata), to fire. A schedule with
    secret input fires only its current version: the secrets of older ones are not kept."""
    old = store.version(record.id, version)
    if old is None:
        problem = f"schedule {record.id} has versions 1 to {record.version}"
        raise errors.InvalidSchedule("version", problem)
    if record.sealed:
        problem = (
            "this schedule's input holds secrets, which are kept for its current version only "
            f"({record.version}): trigger that one, or update it"
        )
        raise errors.InvalidSchedule("version", problem)
    definition = old["definition"]
    return dataclasses.replace(
        record,
        input=definition.get("input", {}),
        meta=definition.get("metadata", {}),
        version=version,
    )


def _made(
    s: ScheduleRecord,
    registry: jobs.Registry,
    fire_at: dt.datetime,
    trigger: str,
    now: dt.datetime,
    key: str | None,
    published: bool = False,
) -> Fired:
    """The run (or workflow run) a fire of ``s`` makes; its target resolves in the schedule's
    tenant. ``published``: its message is sent right after the commit (a manual fire)."""
    registry = registry.scoped(s.tenant)
    if s.job in registry:
        spec = registry.get(s.job)
        return Fired(_run_row(s, spec, fire_at, trigger, now, key, published), spec)
    # The steps that give no priority of their own run at the schedule's.
    wf = registry.workflow(s.job).at_priority(s.definition.options.priority)
    # The id comes from the fire key: one workflow run per fire, whichever beat makes it.
    digest = hashlib.sha256((key or uuid.uuid4().hex).encode()).hexdigest()[:24]
    row = rows.new_workflow_run(
        wf,
        workflows.run_copy(wf, registry),
        s.input,
        principal=s.principal,
        principal_id=s.principal_id,
        tenant=s.tenant,
        now=now,
        workflow_id=f"wf_{digest}",
        sealed=s.sealed,
    )
    return Fired(None, None, row)


def _run_row(
    s: ScheduleRecord,
    spec: jobs.JobSpec,
    fire_at: dt.datetime,
    trigger: str,
    now: dt.datetime,
    key: str | None,
    published: bool = False,
) -> dict[str, Any]:
    """The run of a fire, at the schedule's priority (the job's if it has none); until the
    beat has published it (``published_at`` stamped by ``RunStore.mark_published_many``),
    the reconciler would publish it if the beat died."""
    return rows.new_run(
        spec,
        s.input,
        principal=s.principal,
        principal_id=s.principal_id,
        tenant=s.tenant,
        now=now,
        run_id=runs.new_run_id() if key is None else fire_run_id(s.id, fire_at),
        meta=dict(s.meta),
        sealed=s.sealed,
        priority=s.definition.options.priority,
        published=published,
        fire=rows.Fire(s.id, s.version, fire_at, trigger, key),
    )
