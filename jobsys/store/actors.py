"""Runs done by an outside actor (an agent, a person, a service): taking a run, the run token
that comes with it, renewing its lease, and handing it back for another attempt.

An external job's runs are never published (``engine/publishing.py``): they wait ``pending``
with ``waiting = ACTOR_WAITING`` until an actor takes one. Taking is the same guarded move as
a worker's claim (pending -> running, attempt + 1, a lease), with ``worker`` set to
``actor:<principal id>``, so the reaper treats a silent actor as a lost worker
(``run_recovery.py``: another attempt waiting for an actor, or failed as timed out).

A run token is ``jsr_<run id>_<secret>``; ``jobsys_run_tokens`` keeps one row per run (the
attempt it was given for) with the SHA-256 of the secret, and the id of the API token that
took the run (none for the local admin). It is valid while that attempt holds the run and its
lease runs, and while that API token is valid: a later attempt, an ended run, an expired
lease, or the API token revoked or expired refuse it (the run, no longer renewed, goes back
when its lease runs out, as a silent actor's does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import events, schema
from jobsys.store.records import RunRecord, record, utcnow
from jobsys.store.rows import actor_waiting as waiting
from jobsys.store.run_states import RunState

T = schema.runs
K = schema.run_tokens
A = schema.tokens
PREFIX = "jsr_"
ACTOR_PREFIX = "actor:"
"""A run's ``worker`` while an outside actor holds it: ``actor:<principal id>``."""
NOTE_PREFIX = "note: "
"""A note is a log line that starts so: the next attempt's actor is given them."""
TAKE_TRIES = 5
"""Candidates a take tries when others take them first (SQLite, which cannot skip locks)."""

__all__ = ["ActorStore", "Taken", "split_token", "waiting"]


@dataclasses.dataclass(frozen=True)
class Taken:
    """A run an actor took: its record (running, this attempt) and its run token."""

    record: RunRecord
    token: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _still_held(held: RunRecord) -> tuple[sa.ColumnElement[bool], ...]:
    """The conditions under which ``held``'s attempt is still the one running."""
    return (
        T.c.id == held.id,
        T.c.state == RunState.RUNNING.value,
        T.c.attempts == held.attempts,
    )


def _live(
    found: str | None, revoked_at: dt.datetime | None, expires_at: dt.datetime | None
) -> bool:
    """The API token is still there (``found``: its id), neither revoked nor expired."""
    if found is None or revoked_at is not None:
        return False
    if expires_at is None:
        return True
    at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=dt.UTC)
    return at > utcnow()


def split_token(token: str) -> tuple[str, str]:
    """(run id, secret) of a run token; ``Unauthenticated`` if it is not one."""
    run_id, _, secret = token.removeprefix(PREFIX).rpartition("_")
    if not token.startswith(PREFIX) or not run_id or not secret:
        raise errors.Unauthenticated(
            "not a run token: send the `run_token` the take answered (jsr_...)"
        )
    return run_id, secret


class ActorStore:
    """Takes, run tokens and leases of the runs of external jobs."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def next_pending(self, job: str, tenant: str, now: dt.datetime) -> list[str]:
        """The ids of runs of ``job`` an actor may take now, in the order to take them:
        highest priority, then oldest (a few, for when others take the first ones)."""
        query = (
            sa.select(T.c.id)
            .where(
                T.c.job == job,
                T.c.tenant == tenant,
                T.c.state == RunState.PENDING.value,
                sa.or_(T.c.next_attempt_at.is_(None), T.c.next_attempt_at <= now),
            )
            .order_by(T.c.priority.desc(), T.c.created_at)
            .limit(TAKE_TRIES)
        )
        with self.engine.connect() as conn:
            return [str(i) for (i,) in conn.execute(query)]

    def take(
        self,
        run_id: str,
        actor: dict[str, Any],
        lease: float,
        timeout: float,
        now: dt.datetime | None = None,
        token_id: str | None = None,
    ) -> Taken | None:
        """pending -> running for an actor: attempt + 1, ``worker`` ``actor:<id>``, a lease
        of ``lease`` seconds, a deadline ``timeout`` seconds ahead, and a new run token (the
        previous attempt's no longer works), bound to the API token ``token_id`` that takes
        it (``None``: none, the local admin). ``None`` if the run is not pending and due (on
        PostgreSQL a run another actor is taking is skipped, not waited for)."""
        now = now or utcnow()
        token_secret = secrets.token_hex(24)
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(T.c.attempts)
                .where(
                    T.c.id == run_id,
                    T.c.state == RunState.PENDING.value,
                    sa.or_(T.c.next_attempt_at.is_(None), T.c.next_attempt_at <= now),
                )
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            attempt = int(row.attempts) + 1
            moved = conn.execute(
                T.update()
                .where(
                    T.c.id == run_id,
                    T.c.state == RunState.PENDING.value,
                    T.c.attempts == row.attempts,
                )
                .values(
                    state=RunState.RUNNING.value,
                    attempts=attempt,
                    worker=f"{ACTOR_PREFIX}{actor['id']}"[:255],
                    worker_pid=None,
                    started_at=now,
                    lease_expires_at=now + dt.timedelta(seconds=lease),
                    deadline_at=now + dt.timedelta(seconds=timeout),
                    next_attempt_at=None,
                    waiting=None,
                    cancel_requested=False,
                )
            ).rowcount
            if moved != 1:
                return None
            conn.execute(K.delete().where(K.c.run_id == run_id))
            conn.execute(
                K.insert().values(
                    run_id=run_id,
                    attempt=attempt,
                    secret_hash=_digest(token_secret),
                    actor=actor,
                    created_at=now,
                    token_id=token_id,
                )
            )
            events.action(conn, run_id, attempt, str(actor["id"]), {"action": "taken"})
            current = conn.execute(sa.select(T).where(T.c.id == run_id)).one()
        return Taken(record(current), f"{PREFIX}{run_id}_{token_secret}")

    def holder(self, token: str) -> tuple[RunRecord, dict[str, Any]]:
        """The run a run token is for, while the token's attempt holds it with its lease
        running, and the actor (a principal as JSON) it was given to. ``Unauthenticated``
        for an unknown or superseded token, or one whose API token (the one that took the run)
        was revoked or expired since; ``InvalidTransition`` once the run has moved on."""
        run_id, secret = split_token(token)
        with self.engine.connect() as conn:
            kept = conn.execute(
                sa.select(K, A.c.id.label("api_token"), A.c.revoked_at, A.c.expires_at)
                .outerjoin(A, A.c.id == K.c.token_id)
                .where(K.c.run_id == run_id)
            ).first()
            row = conn.execute(sa.select(T).where(T.c.id == run_id)).first()
        if (
            kept is None
            or row is None
            or not hmac.compare_digest(kept.secret_hash, _digest(secret))
        ):
            raise errors.Unauthenticated(
                "unknown or superseded run token: take the run again for a new one"
            )
        if kept.token_id is not None and not _live(
            kept.api_token, kept.revoked_at, kept.expires_at
        ):
            raise errors.Unauthenticated(
                f"the API token that took run {run_id} (id {kept.token_id}) was revoked or has "
                "expired, so its run token no longer works; the run goes back when its lease "
                "runs out: take it again with a valid API token (`jobsys tokens create`)"
            )
        current = record(row)
        if current.state is not RunState.RUNNING or current.attempts != kept.attempt:
            raise errors.InvalidTransition(run_id, current.state.value, "report on")
        lease = current.lease_expires_at
        if lease is None or lease < utcnow():
            raise errors.InvalidTransition(
                run_id, "running (its lease expired: take it again)", "report on"
            )
        return current, dict(kept.actor)

    def renew(self, held: RunRecord, lease: float, now: dt.datetime | None = None) -> bool:
        """Renew the lease of the attempt that holds ``held``, never past its deadline."""
        now = now or utcnow()
        until = now + dt.timedelta(seconds=lease)
        if held.deadline_at is not None:
            until = min(until, held.deadline_at)
        with self.engine.begin() as conn:
            n = conn.execute(
                T.update().where(*_still_held(held)).values(lease_expires_at=until)
            ).rowcount
        return n == 1

    def hand_back(
        self, held: RunRecord, error: dict[str, Any], due: dt.datetime, now: dt.datetime
    ) -> bool:
        """running -> pending for another actor, due at ``due``, keeping ``error`` (the
        actor gave up and asked for another attempt)."""
        with self.engine.begin() as conn:
            n = conn.execute(
                T.update()
                .where(*_still_held(held))
                .values(
                    state=RunState.PENDING.value,
                    error=error,
                    dispatch=T.c.dispatch + 1,
                    lease_expires_at=None,
                    next_attempt_at=due,
                    published_at=now,
                    waiting=waiting(now),
                )
            ).rowcount
            conn.execute(K.delete().where(K.c.run_id == held.id))
        return n == 1

    def forget(self, run_id: str) -> None:
        """Drop a run's token (its run ended)."""
        with self.engine.begin() as conn:
            conn.execute(K.delete().where(K.c.run_id == run_id))
