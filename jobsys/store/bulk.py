"""Runs matched by a filter, a batch at a time, and the batched writes of bulk actions.

``BulkFilter`` is what ``jobsys runs cancel|retry|delete --where ...`` match (``service/
bulk.py`` parses it and decides per run); ``BulkStore`` reads the matching runs of one tenant in
batches (keyset pages by id: each page is one short read, nothing stays locked between them)
and writes each batch in a transaction of its own:

- ``cancel``: the runs not started yet end cancelled at once (the same values as a single
  cancel, ``terminal.TerminalWriter.cancel_waiting_many``), running ones are asked to stop;
- ``delete``: ended runs are removed with their log lines, search entries and dependency
  rows.

Retries are new runs, inserted by the client's submit path (``service/bulk.py``). A run made
after the bulk action started (its ``cutoff``) is never matched: a retry does not meet its
own new runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.store import events, run_states, schema, search, semantic
from jobsys.store.records import RunRecord, record
from jobsys.store.run_states import RunState
from jobsys.store.terminal import TerminalWriter

T = schema.runs
W = schema.workflow_runs
BATCH = 500
"""Runs read and written per transaction."""


@dataclasses.dataclass(frozen=True)
class BulkFilter:
    """The runs a bulk action is about (every condition must hold); empty fields match all."""

    job: str | None = None
    states: tuple[RunState, ...] = ()
    tag: str | None = None
    schedule_id: str | None = None
    workflow_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    error: str | None = None
    """Text contained (case-insensitively) in the error's message or type."""
    exhausted: bool | None = None
    """``True``: runs that used all their attempts (``attempts >= max_attempts``)."""
    priority: int | None = None
    principal_id: str | None = None

    def conditions(self, dialect: str) -> list[Any]:
        """This filter in SQL, for a dialect."""
        out: list[Any] = []
        for column, value in (
            (T.c.job, self.job),
            (T.c.schedule_id, self.schedule_id),
            (T.c.workflow_id, self.workflow_id),
            (T.c.priority, self.priority),
            (T.c.principal_id, self.principal_id),
        ):
            if value is not None:
                out.append(column == value)
        if self.states:
            out.append(T.c.state.in_(run_states.values(self.states)))
        if self.since is not None:
            out.append(T.c.created_at >= self.since)
        if self.until is not None:
            out.append(T.c.created_at < self.until)
        if self.tag is not None:
            out.append(_has_tag(dialect, self.tag))
        if self.error is not None:
            needle = self.error.lower()
            out.append(
                sa.or_(
                    sa.func.lower(T.c.error["message"].as_string()).contains(
                        needle, autoescape=True
                    ),
                    sa.func.lower(T.c.error["type"].as_string()).contains(needle, autoescape=True),
                )
            )
        if self.exhausted is not None:
            used = T.c.attempts >= T.c.max_attempts
            out.append(used if self.exhausted else sa.not_(used))
        return out

    def to_json(self) -> dict[str, Any]:
        """The filter by the keys it is given with (``state``, ``schedule``, ...), as it is
        given back to the caller and written to the audit log."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or value == ():
                continue
            if field.name == "states":
                value = [s.value for s in value]
            elif isinstance(value, dt.datetime):
                value = value.isoformat()
            out[_KEYS.get(field.name, field.name)] = value
        return out


_KEYS = {
    "states": "state",
    "schedule_id": "schedule",
    "workflow_id": "workflow",
    "principal_id": "principal",
}
"""The keys of a filter (``service/bulk.py``) whose field is named otherwise."""


class BulkStore:
    """The reads and writes of bulk actions, for one engine."""

    def __init__(self, engine: sa.Engine, end: TerminalWriter) -> None:
        self.engine = engine
        self._end = end

    def batches(
        self, where: BulkFilter, tenant: str, cutoff: dt.datetime, size: int | None = None
    ) -> Iterator[list[RunRecord]]:
        """The runs of ``tenant`` that match ``where`` and were made by ``cutoff``, ``size``
        (``BATCH``) at a time, by id. Each page is read when the one before has been dealt
        with."""
        size = size or BATCH
        base = [
            T.c.tenant == tenant,
            T.c.created_at <= cutoff,
            *where.conditions(self.engine.dialect.name),
        ]
        after = ""
        while True:
            query = sa.select(T).where(*base, T.c.id > after).order_by(T.c.id).limit(size)
            with self.engine.connect() as conn:
                page = [record(r) for r in conn.execute(query)]
            if not page:
                return
            yield page
            if len(page) < size:
                return
            after = page[-1].id

    def retried(self, run_ids: Sequence[str]) -> set[str]:
        """Those of ``run_ids`` that were retried already (a run was made from them)."""
        if not run_ids:
            return set()
        query = sa.select(T.c.parent_id).where(T.c.parent_id.in_(list(run_ids))).distinct()
        with self.engine.connect() as conn:
            return {str(p) for (p,) in conn.execute(query)}

    def in_running_workflows(self, run_ids: Sequence[str]) -> set[str]:
        """Those of ``run_ids`` that are steps of a workflow run still running (its next
        steps read their outputs)."""
        if not run_ids:
            return set()
        query = (
            sa.select(T.c.id)
            .join(W, W.c.id == T.c.workflow_id)
            .where(T.c.id.in_(list(run_ids)), W.c.state == "running")
        )
        with self.engine.connect() as conn:
            return {str(i) for (i,) in conn.execute(query)}

    def cancel(
        self,
        run_ids: Sequence[str],
        now: dt.datetime,
        actor: str | None = None,
        attempts: Mapping[str, int] | None = None,
    ) -> tuple[list[str], list[str]]:
        """Cancel runs in one transaction: those not started end cancelled at once, running
        ones are asked to stop. Returns (cancelled, asked to stop); a run that ended
        meanwhile is in neither. ``actor``: who asked, kept in each run's history (with the
        run's attempt from ``attempts``)."""
        if not run_ids:
            return [], []
        with self.engine.begin() as conn:
            if actor is not None:
                detail = {"action": "cancel_requested", "bulk": True}
                events.actions(
                    conn, [(i, (attempts or {}).get(i, 0), detail) for i in run_ids], actor
                )
            cancelled = self._end.cancel_waiting_many(conn, run_ids, now)
            rest = [i for i in run_ids if i not in set(cancelled)]
            stopping = (
                [
                    str(i)
                    for (i,) in conn.execute(
                        T.update()
                        .where(T.c.id.in_(rest), T.c.state == RunState.RUNNING.value)
                        .values(cancel_requested=True)
                        .returning(T.c.id)
                    )
                ]
                if rest
                else []
            )
        return cancelled, stopping

    def record_retries(self, retried: Mapping[str, tuple[int, str]], actor: str) -> None:
        """Keep in each old run's history that ``actor`` retried it, as which new run
        (``{old id: (its attempt, new id)}``)."""
        with self.engine.begin() as conn:
            events.actions(
                conn,
                [
                    (old, attempt, {"action": "retried", "run_id": new, "bulk": True})
                    for old, (attempt, new) in retried.items()
                ],
                actor,
            )

    def delete(self, run_ids: Sequence[str]) -> list[str]:
        """Remove ended runs with their log lines, search entries and dependency rows, in
        one transaction. Returns the ids removed (a run not ended is kept)."""
        if not run_ids:
            return []
        ended = run_states.values(run_states.TERMINAL)
        L, D = schema.run_logs, schema.run_deps
        with self.engine.begin() as conn:
            gone = [
                str(i)
                for (i,) in conn.execute(
                    T.delete()
                    .where(T.c.id.in_(list(run_ids)), T.c.state.in_(ended))
                    .returning(T.c.id)
                )
            ]
            if gone:
                conn.execute(L.delete().where(L.c.run_id.in_(gone)))
                conn.execute(D.delete().where(D.c.run_id.in_(gone)))
                # A blocked run keeps what it waits for (its release reads it).
                blocked = sa.select(T.c.id).where(T.c.state == RunState.BLOCKED.value)
                conn.execute(D.delete().where(D.c.depends_on.in_(gone), D.c.run_id.not_in(blocked)))
                conn.execute(
                    sa.text(f"DELETE FROM {search.TABLE} WHERE run_id IN :ids").bindparams(
                        sa.bindparam("ids", expanding=True)
                    ),
                    {"ids": gone},
                )
                semantic.delete_runs(conn, gone)
        return gone


def _has_tag(dialect: str, tag: str) -> Any:
    """The run's tags contain ``tag`` (as ``run_reads.select``'s tag filter)."""
    if dialect == "postgresql":
        return sa.text("jobsys_runs.tags @> CAST(:bulk_tag AS jsonb)").bindparams(
            bulk_tag=json.dumps([tag])
        )
    return sa.text(
        "EXISTS (SELECT 1 FROM json_each(jobsys_runs.tags) WHERE json_each.value = :bulk_tag)"
    ).bindparams(bulk_tag=tag)
