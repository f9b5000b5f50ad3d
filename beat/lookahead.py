"""The fires due next: read, and their messages built, before their time.

At a burst (every ``* * * * *`` schedule at each minute) beat has thousands of fires to make
in the same second. Reading those schedules and building their messages is half of that work,
and none of it depends on the moment of the fire: a fire's run id is known beforehand
(``firing.fire_run_id``). So beat reads, a page at a time, the schedules due within
``HORIZON`` seconds and builds their messages (``broker.hold``): while it idles, and between
fires when what it has read runs short. At their time it only writes the fires and pushes the
messages.

What is read ahead may change before its time. A schedule fired by another beat, paused,
edited, or whose metadata its last run merged, fails the write's guard and is not fired from
the copy read here. One changed to fire sooner than the page it was read on is not here at
all. Both are found by the read of the store that a tick makes when nothing read ahead is due.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import Celery

from jobsys.declare import jobs
from jobsys.engine import broker, transport
from jobsys.scheduling import firing
from jobsys.store.schedules import ScheduleRecord, ScheduleStore

log = logging.getLogger("jobsys.beat")

HORIZON = 5.0
"""Seconds ahead that schedules are read."""
PAGE = 200
"""Schedules read (and messages built) at once: a page delays a fire due meanwhile by tens of
milliseconds at most."""
CAP = 10_000
"""Schedules kept read ahead at most (with a message of about 1 KiB each)."""


class Lookahead:
    """The schedules read ahead, in the order they are due, and their messages."""

    def __init__(self, app: Celery, schedules: ScheduleStore, registry: jobs.Registry) -> None:
        self.app, self.schedules, self.registry = app, schedules, registry
        self._records: list[ScheduleRecord] = []
        """Read ahead, in the order of (next fire, id)."""
        self._after: tuple[dt.datetime, str] | None = None
        """The (next fire, id) of the last schedule read."""
        self._covered: dt.datetime | None = None
        """Every schedule due by then was read (as it was when read)."""
        self.held: dict[str, tuple[jobs.JobSpec, int, transport.Held]] = {}
        """The messages built ahead, by run id, with the job spec and the priority each was
        built with."""

    def take(self, now: dt.datetime) -> list[ScheduleRecord]:
        """The schedules read ahead that are due by ``now``, no longer kept here."""
        due = 0
        for record in self._records:
            if record.next_fire_at is None or record.next_fire_at > now:
                break
            due += 1
        taken, self._records = self._records[:due], self._records[due:]
        return taken

    def messages(
        self, items: list[tuple[jobs.JobSpec, dict[str, Any]]]
    ) -> dict[str, transport.Held]:
        """The messages built ahead for these runs (a job spec and a run row each), by run id;
        not one built from another spec than the run's (its job was redefined meanwhile) or
        at another priority (its schedule's priority changed)."""
        found = {}
        for spec, row in items:
            entry = self.held.get(row["id"])
            if entry is not None and entry[0] is spec and entry[1] == row["priority"]:
                found[row["id"]] = entry[2]
        return found

    def release(self, records: list[ScheduleRecord]) -> None:
        """Forget the messages of schedules taken (each was pushed, or its fire not made)."""
        for r in records:
            if r.nominal_at is not None:
                self.held.pop(firing.fire_run_id(r.id, r.nominal_at), None)

    def short(self, now: dt.datetime) -> bool:
        """Whether less than half the horizon is read ahead."""
        half = now + dt.timedelta(seconds=HORIZON / 2)
        return self._covered is None or self._covered < half

    def read(self, now: dt.datetime) -> bool:
        """Read one page more of the schedules due within the horizon and build their
        messages; ``True`` if there may be more to read."""
        if len(self._records) >= CAP:
            return False
        until = now + dt.timedelta(seconds=HORIZON)
        page = self.schedules.upcoming(until, self._after, PAGE)
        if len(page) < PAGE:
            self._covered = until
        if not page:
            return False
        last = page[-1]
        assert last.next_fire_at is not None
        self._after = (last.next_fire_at, last.id)
        if len(page) == PAGE:
            self._covered = last.next_fire_at
        self._records.extend(page)
        specs, priorities = {}, {}
        for r in page:
            if r.job in self.registry.scoped(r.tenant) and r.nominal_at is not None:
                run_id = firing.fire_run_id(r.id, r.nominal_at)
                specs[run_id] = spec = self.registry.scoped(r.tenant).get(r.job)
                given = r.definition.options.priority
                priorities[run_id] = spec.priority if given is None else given
        try:
            built = broker.hold(
                self.app, [(spec, run_id) for run_id, spec in specs.items()], priorities
            )
            self.held.update(
                (run_id, (specs[run_id], priorities[run_id], m)) for run_id, m in built.items()
            )
        except Exception:
            # Not fatal: messages not held are built when they are sent.
            log.exception("jobsys beat: building messages ahead failed")
        return len(page) == PAGE
