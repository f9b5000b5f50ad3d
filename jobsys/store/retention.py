"""Retention: the deletes of the pruner (ended runs past their age, a batch at a time) and the
archive flag of runs and schedules.

A ``Rule`` says which ended runs may go: those of one state (``completed``, ``failed`` or
``cancelled``) that ended before a cutoff, of one job (or of every job but those with rules of
their own), keeping the newest ``keep_last`` ended runs of each job whatever their age.
Never pruned, whatever the rule: a run not ended, an archived run, a run another run that has
not ended waits for (``jobsys_run_deps``), a step of a workflow run still running.

``RetentionStore.prune`` takes the oldest matching runs ``batch`` at a time, by
``(created_at, id)`` on the ``(state, created_at)`` index, and deletes each batch in a
transaction of its own with its log lines, search entries and dependency rows (its events go
by trigger, ``events.py``), pausing between two batches as long as the last one took, so that
the store's other writers (the workers' claims and ends) get at least half of the time. On
PostgreSQL the batch is selected ``FOR UPDATE SKIP LOCKED`` in the transaction that deletes
it: pruners of several workers at once each take other rows. On SQLite the batch is read,
then deleted by statements that check each run again (state, not archived) in one short write
transaction: whichever pruner comes second deletes none of the same rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.base import config
from jobsys.declare import spec as declared
from jobsys.store import run_states, schema, search, semantic

T = schema.runs
D = schema.run_deps
L = schema.run_logs
W = schema.workflow_runs
S = schema.schedules

ENDED = tuple(run_states.values(run_states.TERMINAL))
MIN_PAUSE = 0.01
"""The shortest pause between two batches (seconds)."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """Ended runs of ``state`` that ended before ``cutoff`` may go; of ``job`` only, or (``job``
    ``None``) of every job but ``others``; the newest ``keep_last`` of each job stay."""

    state: str
    cutoff: dt.datetime
    keep_last: int = 0
    job: str | None = None
    others: tuple[str, ...] = ()


@dataclasses.dataclass
class PruneResult:
    """What a prune did (a dry run: would do)."""

    dry_run: bool = False
    runs: int = 0
    """Runs deleted (with their logs, search entries, dependency rows and events)."""
    by_state: Counter[str] = dataclasses.field(default_factory=Counter)
    workflow_runs: int = 0
    """Ended workflow runs deleted (past their age, with none of their steps' runs left)."""
    batches: int = 0
    longest_batch: float = 0.0
    """Seconds the longest batch's transaction took."""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "runs": self.runs,
            "by_state": dict(sorted(self.by_state.items())),
            "workflow_runs": self.workflow_runs,
            "batches": self.batches,
            "longest_batch_seconds": round(self.longest_batch, 4),
            "seconds": round(self.seconds, 3),
        }


MAX_OLDER_THAN = 100 * 365 * 86400.0
"""The largest ``older_than`` a prune takes (100 years): an age past it would name a time
before any date (and no run is that old anyway)."""


def older_than_problem(value: float | None) -> str | None:
    """Why ``value`` is no ``older_than`` for a prune (``None`` if it is one): it must be a
    positive, finite duration of at most ``MAX_OLDER_THAN``."""
    if value is None:
        return None
    if not value > 0:
        return f"must be a positive duration like 30d, got {value!r}"
    if not value <= MAX_OLDER_THAN:
        return f"must be at most {MAX_OLDER_THAN / 86400:.0f}d (100 years), got {value!r} seconds"
    return None


AGE_SETTING = {
    "completed": "keep_completed",
    "failed": "keep_failed",
    "cancelled": "keep_cancelled",
}
"""The age option (a setting, a job's ``@job`` option) of each ended state."""


def policy_rules(
    settings: config.Settings,
    specs: Iterable[declared.JobSpec],
    now: dt.datetime,
    older_than: float | None = None,
    job: str | None = None,
) -> list[Rule]:
    """The rules of the retention policies: a job's own options (``@job(keep_completed=...)``)
    for its runs, the settings (``JOBSYS_KEEP_*``) for every other job's. ``older_than``
    (seconds): every ended run older than that instead of the ages (``keep_last`` still
    holds); ``job``: that job's runs only."""
    own = {s.name: s.retention for s in specs if s.retention is not None}
    out: list[Rule] = []

    def add(state: str, age: float | None, keep_last: int, name: str | None) -> None:
        if older_than is not None:
            age = older_than
        if age is None or age == float("inf"):
            return
        cutoff = now - dt.timedelta(seconds=age)
        others = () if name is not None else tuple(sorted(own))
        out.append(Rule(state, cutoff, keep_last, name, others))

    for state, option in AGE_SETTING.items():
        default_age: float | None = getattr(settings, option)
        if job is None or job not in own:
            add(state, default_age, settings.keep_last, job)
        for name, kept in own.items():
            if job is not None and name != job:
                continue
            age = getattr(kept, option)
            keep = kept.keep_last if kept.keep_last is not None else settings.keep_last
            add(state, default_age if age is None else age, keep, name)
    return out


def workflow_cutoffs(
    settings: config.Settings, now: dt.datetime, older_than: float | None = None
) -> dict[str, dt.datetime]:
    """Ended workflow runs of each state go after the global age of that state."""
    out = {}
    for state, option in AGE_SETTING.items():
        age = older_than if older_than is not None else getattr(settings, option)
        if age is not None:
            out[state] = now - dt.timedelta(seconds=age)
    return out


class RetentionStore:
    """The pruner's reads and deletes, and archiving, for one engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # --- pruning ----------------------------------------------------------------------------

    def prune(
        self,
        rules: Sequence[Rule],
        *,
        batch: int = 1000,
        tenant: str | None = None,
        dry_run: bool = False,
        stop: threading.Event | None = None,
        workflow_cutoffs: dict[str, dt.datetime] | None = None,
    ) -> PruneResult:
        """Apply ``rules`` (see the module), ``batch`` runs per transaction; of ``tenant``'s
        runs only, when given. ``workflow_cutoffs``: ended workflow runs of a state (a key)
        that ended before its cutoff go too, once none of their steps' runs is left. A dry run
        counts what would go, deleting nothing: the runs, and the workflow runs whose steps'
        runs would all go. ``stop`` set: ends after the batch at hand."""
        result = PruneResult(dry_run=dry_run)
        started = time.monotonic()
        steps_going: Counter[str] = Counter()  # a dry run's: runs that would go per workflow
        for rule in rules:
            self._prune_rule(rule, batch, tenant, dry_run, stop, result, steps_going)
        for state, cutoff in (workflow_cutoffs or {}).items():
            if dry_run:
                self._count_workflows(state, cutoff, batch, tenant, steps_going, result)
            else:
                self._prune_workflows(state, cutoff, batch, tenant, stop, result)
        result.seconds = time.monotonic() - started
        return result

    def _prune_rule(
        self,
        rule: Rule,
        size: int,
        tenant: str | None,
        dry_run: bool,
        stop: threading.Event | None,
        result: PruneResult,
        steps_going: Counter[str],
    ) -> None:
        thresholds: dict[tuple[str, str], dt.datetime | None] = {}
        after: tuple[dt.datetime, frozenset[str]] | None = None
        while not (stop is not None and stop.is_set()):
            t0 = time.monotonic()
            if dry_run or self.engine.dialect.name != "postgresql":
                with self.engine.connect() as conn:
                    page = self._candidates(conn, rule, size, tenant, after, lock=False)
                    kept = self._kept(conn, rule, page, thresholds)
                gone = 0
                if page and not dry_run:
                    going = [p[0] for p in page if p[0] not in kept]
                    with self.engine.begin() as conn:
                        gone = self._delete(conn, rule.state, going)
            else:
                with self.engine.begin() as conn:
                    page = self._candidates(conn, rule, size, tenant, after, lock=True)
                    kept = self._kept(conn, rule, page, thresholds)
                    gone = self._delete(conn, rule.state, [p[0] for p in page if p[0] not in kept])
            if dry_run:
                gone = len(page) - len(kept)
                steps_going.update(p[4] for p in page if p[4] is not None and p[0] not in kept)
            took = time.monotonic() - t0
            if not page:
                return
            result.batches += 1
            result.longest_batch = max(result.longest_batch, took)
            result.runs += gone
            result.by_state[rule.state] += gone
            last = page[-1][3]
            at_last = frozenset(p[0] for p in page if p[3] == last)
            after = (last, after[1] | at_last if after and after[0] == last else at_last)
            if len(page) < size:
                return
            if not dry_run:
                time.sleep(max(MIN_PAUSE, took))

    def _candidates(
        self,
        conn: sa.Connection,
        rule: Rule,
        size: int,
        tenant: str | None,
        after: tuple[dt.datetime, frozenset[str]] | None,
        lock: bool,
    ) -> list[tuple[str, str, str, dt.datetime, str | None]]:
        """The oldest runs ``rule`` may take (id, tenant, job, created_at, workflow id), from
        ``after``
        (made then or later, but not those ids made then, read before).

        Ordered by ``created_at`` alone, the order of the ``(state, created_at)`` index: the
        scan starts at ``after`` (past the rows deleted before, dead until vacuumed) and stops
        at the batch's size. Ordered by ``(created_at, id)``, PostgreSQL read every matching
        run and sorted them, 1.5 s a batch on 1,000,000 runs."""
        r = T.alias("r")
        waiter = T.alias("w")
        conditions: list[Any] = [
            r.c.state == rule.state,
            r.c.created_at < rule.cutoff,
            r.c.finished_at < rule.cutoff,
            r.c.archived_at.is_(None),
            # never a run that a run not ended waits for
            sa.or_(
                r.c.has_dependents.is_not(True),
                ~sa.exists()
                .select_from(D.join(waiter, waiter.c.id == D.c.run_id))
                .where(D.c.depends_on == r.c.id, waiter.c.state.not_in(ENDED)),
            ),
            # never a step of a workflow run still going
            sa.or_(
                r.c.workflow_id.is_(None),
                ~sa.exists().where(W.c.id == r.c.workflow_id, W.c.state == "running"),
            ),
        ]
        if rule.job is not None:
            conditions.append(r.c.job == rule.job)
        if rule.others:
            conditions.append(r.c.job.not_in(rule.others))
        if tenant is not None:
            conditions.append(r.c.tenant == tenant)
        if after is not None:
            conditions.append(r.c.created_at >= after[0])
            if after[1]:
                conditions.append(r.c.id.not_in(sorted(after[1])))
        query = (
            sa.select(r.c.id, r.c.tenant, r.c.job, r.c.created_at, r.c.workflow_id)
            .where(*conditions)
            .order_by(r.c.created_at)
            .limit(size)
        )
        if lock:
            query = query.with_for_update(skip_locked=True, of=r)
        return [
            (str(i), str(t), str(j), c, None if w is None else str(w))
            for i, t, j, c, w in conn.execute(query)
        ]

    def _kept(
        self,
        conn: sa.Connection,
        rule: Rule,
        page: list[tuple[str, str, str, dt.datetime, str | None]],
        thresholds: dict[tuple[str, str], dt.datetime | None],
    ) -> set[str]:
        """The ids of ``page`` among the newest ``keep_last`` ended runs of their job (in
        their tenant)."""
        if rule.keep_last <= 0:
            return set()
        kept = set()
        for run_id, tenant, job, created, _ in page:
            if (tenant, job) not in thresholds:
                thresholds[tenant, job] = self._newest_kept(conn, tenant, job, rule.keep_last)
            limit = thresholds[tenant, job]
            if limit is None or created >= limit:
                kept.add(run_id)
        return kept

    def _newest_kept(
        self, conn: sa.Connection, tenant: str, job: str, keep_last: int
    ) -> dt.datetime | None:
        """When the ``keep_last``-th newest ended run of ``job`` in ``tenant`` was made (runs
        made before it may go); ``None``: it has no more ended runs than that (all stay)."""
        query = (
            sa.select(T.c.created_at)
            .where(T.c.job == job, T.c.tenant == tenant, T.c.state.in_(ENDED))
            .order_by(T.c.created_at.desc())
            .offset(keep_last - 1)
            .limit(1)
        )
        found = conn.execute(query).scalar()
        return found if isinstance(found, dt.datetime) else None

    def _delete(self, conn: sa.Connection, state: str, run_ids: list[str]) -> int:
        """Delete runs (still of ``state``, not archived) with their logs, search entries and
        dependency rows; their events go by trigger. Returns how many went."""
        if not run_ids:
            return 0
        # The state checked through a function: left bare, SQLite (no statistics) looked the
        # rows up by the state's index, every run of the state for each batch (0.8 s for 1,000
        # of 1,000,000), instead of by id.
        still = sa.func.coalesce(T.c.state, "") == state
        gone = [
            str(i)
            for (i,) in conn.execute(
                T.delete()
                .where(T.c.id.in_(run_ids), still, T.c.archived_at.is_(None))
                .returning(T.c.id)
            )
        ]
        if gone:
            conn.execute(L.delete().where(L.c.run_id.in_(gone)))
            conn.execute(D.delete().where(sa.or_(D.c.run_id.in_(gone), D.c.depends_on.in_(gone))))
            conn.execute(
                sa.text(f"DELETE FROM {search.TABLE} WHERE run_id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"ids": gone},
            )
            semantic.delete_runs(conn, gone)
        return len(gone)

    def _prune_workflows(
        self,
        state: str,
        cutoff: dt.datetime,
        size: int,
        tenant: str | None,
        stop: threading.Event | None,
        result: PruneResult,
    ) -> None:
        while not (stop is not None and stop.is_set()):
            t0 = time.monotonic()
            chosen = (
                sa.select(W.c.id)
                .where(
                    W.c.state == state,
                    W.c.finished_at < cutoff,
                    ~sa.exists().where(T.c.workflow_id == W.c.id),
                    *([W.c.tenant == tenant] if tenant is not None else []),
                )
                .limit(size)
            )
            with self.engine.begin() as conn:
                gone = conn.execute(W.delete().where(W.c.id.in_(chosen.scalar_subquery()))).rowcount
            took = time.monotonic() - t0
            result.workflow_runs += gone
            result.longest_batch = max(result.longest_batch, took)
            if gone < size:
                return
            time.sleep(max(MIN_PAUSE, took))

    def _count_workflows(
        self,
        state: str,
        cutoff: dt.datetime,
        size: int,
        tenant: str | None,
        steps_going: Counter[str],
        result: PruneResult,
    ) -> None:
        """What ``_prune_workflows`` would delete after the runs a dry run counted went: the
        ended workflow runs with no step run left, and those whose step runs would all go."""
        ended = [
            W.c.state == state,
            W.c.finished_at < cutoff,
            *([W.c.tenant == tenant] if tenant is not None else []),
        ]
        empty = sa.select(sa.func.count()).where(
            *ended, ~sa.exists().where(T.c.workflow_id == W.c.id)
        )
        ids = sorted(steps_going)
        with self.engine.connect() as conn:
            result.workflow_runs += int(conn.execute(empty).scalar_one())
            for i in range(0, len(ids), size):
                left = (
                    sa.select(W.c.id, sa.func.count(T.c.id))
                    .join(T, T.c.workflow_id == W.c.id)
                    .where(*ended, W.c.id.in_(ids[i : i + size]))
                    .group_by(W.c.id)
                )
                result.workflow_runs += sum(
                    1 for wid, n in conn.execute(left) if steps_going[str(wid)] >= int(n)
                )

    # --- archiving --------------------------------------------------------------------------

    def archive_runs(
        self, run_ids: Sequence[str], tenant: str | None, archived: bool, now: dt.datetime
    ) -> list[str]:
        """Archive (or unarchive) runs of ``tenant`` (any tenant's: ``None``); returns the ids
        changed (one already so, or not found, is left out)."""
        return self._archive(T, run_ids, tenant, archived, now)

    def archive_schedules(
        self, ids: Sequence[str], tenant: str | None, archived: bool, now: dt.datetime
    ) -> list[str]:
        """Archive (or unarchive) schedules; archiving pauses an active one (it fires no more
        until unarchived and resumed)."""
        changed = self._archive(S, ids, tenant, archived, now, pause=archived)
        return changed

    def _archive(
        self,
        table: sa.Table,
        ids: Sequence[str],
        tenant: str | None,
        archived: bool,
        now: dt.datetime,
        pause: bool = False,
    ) -> list[str]:
        if not ids:
            return []
        where: list[Any] = [table.c.id.in_(list(ids))]
        flag = table.c.archived_at
        where.append(flag.is_(None) if archived else flag.is_not(None))
        if tenant is not None:  # (through a function: looked up by id, see ``_delete``)
            where.append(sa.func.coalesce(table.c.tenant, "") == tenant)
        values: dict[str, Any] = {"archived_at": now if archived else None}
        with self.engine.begin() as conn:
            changed = [
                str(i)
                for (i,) in conn.execute(
                    table.update().where(*where).values(**values).returning(table.c.id)
                )
            ]
            if pause and changed:
                conn.execute(
                    table.update()
                    .where(table.c.id.in_(changed), table.c.state == "active")
                    .values(state="paused", updated_at=now)
                )
        return changed
