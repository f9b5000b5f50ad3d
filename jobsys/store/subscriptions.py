"""Webhook subscriptions and their durable outbox.

A subscription (``jobsys_subscriptions``) belongs to a tenant and covers the runs of one job,
one schedule, one workflow (its step runs) or the whole tenant (``scope``), for some events:
``completed``, ``failed``, ``cancelled``, ``retrying`` and ``progress`` (a run's progress
crossing 25, 50, 75 or 100 %). Its signing secret is kept sealed with the installation's key.

Deliveries come from the run history (``events.py``), which the database writes in the
transaction of each change: ``fan_out`` reads the events past the notifier's cursor
(``jobsys_notify_cursor``) and inserts one delivery per matching subscription and event,
keyed ``<subscription>-<event id>`` (the delivery id a subscriber deduplicates by); the insert
ignores a key already there, so two notifiers, or one reading an event twice, make one
delivery. A run's own path writes nothing for this: the events are already written.

The cursor moves only over events it has seen in an unbroken line of ids. An id missing
between two (a transaction that took it and has not committed yet, on PostgreSQL) holds the
cursor there until ``GAP_SECONDS`` after the event that follows it; the events past it are
read again on each pass, their deliveries already made. So an event committed late is not
skipped, and an id never used (a rolled back transaction) holds nothing up for long.

Delivering: ``claim`` takes due deliveries (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on
SQLite one guarded ``UPDATE``), moving their ``next_at`` past a lease so that no other
notifier takes them while they are sent, and a notifier that died lets them come due again.
``record`` writes an attempt's outcome: delivered, or a later ``next_at`` (the backoff), or
failed after the last attempt (kept, with its log).
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import database, schema

S = schema.subscriptions
D = schema.deliveries
C = schema.notify_cursor
E = schema.run_events
R = schema.runs
W = schema.workflow_runs

SCOPES = ("job", "schedule", "workflow", "tenant")
EVENTS = ("completed", "failed", "cancelled", "retrying", "progress")
"""The events a subscription may ask for."""
STATE_EVENTS = frozenset(EVENTS) - {"progress"}
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
CURSOR = "events"
GAP_SECONDS = 60.0
"""How long a missing event id holds the cursor (a transaction not yet committed)."""
LOG_KEPT = 20
"""Attempts kept in a delivery's log (its newest)."""


@dataclasses.dataclass(frozen=True)
class Subscription:
    """One subscription; ``secret`` is its sealed signing secret (never shown)."""

    id: str
    tenant: str
    scope: str
    target: str | None
    url: str
    events: tuple[str, ...]
    secret: str = dataclasses.field(repr=False)
    created_by: str
    created_at: float
    after_event: int = 0
    """The newest run event when it was made: it is told of the events after it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "scope": self.scope,
            "target": self.target,
            "url": self.url,
            "events": list(self.events),
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
        }

    def covers(self, event: str, row: Any, workflow: str | None) -> bool:
        """Whether this subscription asked for ``event`` of ``row``, a run event (``id``) joined
        to its run (``tenant``, ``job``, ``schedule_id``) and ``workflow``, its workflow's name."""
        if event not in self.events or row.tenant != self.tenant or row.id <= self.after_event:
            return False
        if self.scope == "job":
            return bool(row.job == self.target)
        if self.scope == "schedule":
            return bool(row.schedule_id == self.target)
        if self.scope == "workflow":
            return workflow == self.target
        return True


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One notification of one subscription: its payload, state and the log of its attempts."""

    id: str
    subscription_id: str
    event: str
    run_id: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    next_at: float | None
    event_at: float
    created_at: float
    delivered_at: float | None
    last_status: int | None
    last_error: str | None
    log: builtins.list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription_id": self.subscription_id,
            "event": self.event,
            "run_id": self.run_id,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_at) if self.state == PENDING else None,
            "event_at": _iso(self.event_at),
            "created_at": _iso(self.created_at),
            "delivered_at": _iso(self.delivered_at),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "log": self.log,
            "payload": self.payload,
        }


def _iso(at: float | None) -> str | None:
    return None if at is None else dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


def new_id() -> str:
    return "sub_" + uuid.uuid4().hex[:24]


IDLE_MOVE = 60.0
"""With no subscription, seconds between two moves of the cursor past the events written
meanwhile (so that a first subscription's fan-out starts near its creation, not at the
oldest event); every other pass of an idle notifier only reads."""


class SubscriptionStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._idle_moved_at: float | None = None

    def any(self) -> bool:
        """Whether any subscription exists (a read, no lock: an idle notifier's pass)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(S.c.id).limit(1)).first() is not None

    # --- subscriptions ---------------------------------------------------------------------

    def create(
        self,
        tenant: str,
        scope: str,
        target: str | None,
        url: str,
        events: Sequence[str],
        sealed_secret: str,
        created_by: str,
    ) -> Subscription:
        sub = Subscription(
            id=new_id(),
            tenant=tenant,
            scope=scope,
            target=target,
            url=url,
            events=tuple(events),
            secret=sealed_secret,
            created_by=created_by,
            created_at=time.time(),
        )
        with self.engine.begin() as conn:
            top = conn.execute(sa.select(sa.func.max(E.c.id))).scalar()
            sub = dataclasses.replace(sub, after_event=int(top or 0))
            conn.execute(
                S.insert().values(
                    after_event=sub.after_event,
                    id=sub.id,
                    tenant=tenant,
                    scope=scope,
                    target=target,
                    url=url,
                    events=list(sub.events),
                    secret=sealed_secret,
                    created_by=created_by,
                    created_at=sub.created_at,
                )
            )
        return sub

    def get(self, subscription_id: str, tenant: str | None) -> Subscription:
        """The subscription; another tenant's (``tenant`` given) is not found."""
        query = sa.select(S).where(S.c.id == subscription_id)
        if tenant is not None:
            query = query.where(S.c.tenant == tenant)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise errors.SubscriptionNotFound(subscription_id)
        return _subscription(row)

    def list(self, tenant: str | None) -> list[Subscription]:
        """The subscriptions of ``tenant`` (every tenant's for ``None``), oldest first."""
        query = sa.select(S).order_by(S.c.created_at, S.c.id)
        if tenant is not None:
            query = query.where(S.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_subscription(r) for r in conn.execute(query)]

    def delete(self, subscription_id: str, tenant: str | None) -> Subscription:
        """Delete the subscription and its deliveries (those not sent are dropped)."""
        sub = self.get(subscription_id, tenant)
        with self.engine.begin() as conn:
            conn.execute(D.delete().where(D.c.subscription_id == sub.id))
            conn.execute(S.delete().where(S.c.id == sub.id))
        return sub

    # --- deliveries ------------------------------------------------------------------------

    def deliveries(
        self, subscription_id: str, state: str | None = None, limit: int = 100
    ) -> builtins.list[Delivery]:
        """The subscription's deliveries, newest first."""
        query = (
            sa.select(D)
            .where(D.c.subscription_id == subscription_id)
            .order_by(D.c.created_at.desc(), D.c.id.desc())
            .limit(limit)
        )
        if state:
            query = query.where(D.c.state == state)
        with self.engine.connect() as conn:
            return [_delivery(r) for r in conn.execute(query)]

    def add_test(self, sub: Subscription) -> Delivery:
        """A ``test`` delivery of ``sub``, due now (it goes through the outbox like any)."""
        now = time.time()
        delivery_id = f"{sub.id}-test-{uuid.uuid4().hex[:12]}"
        payload = {
            "id": delivery_id,
            "event": "test",
            "subscription_id": sub.id,
            "at": _iso(now),
            "run": None,
        }
        values = _delivery_row(delivery_id, sub.id, None, "test", None, payload, now, now)
        with self.engine.begin() as conn:
            conn.execute(D.insert().values(**values))
        return _delivery(_Values(values))

    def _idle_skip(self, now: float, listening: bool) -> bool:
        """Whether this pass does nothing: nobody listens, and the cursor moved less than
        ``IDLE_MOVE`` ago (no write, but now and then a move of the cursor)."""
        if listening:
            return False
        if self._idle_moved_at is not None and now - self._idle_moved_at < IDLE_MOVE:
            return True
        self._idle_moved_at = now
        return False

    def fan_out(
        self,
        batch: int = 1000,
        pages: int = 10,
        now: float | None = None,
        listening: bool | None = None,
    ) -> int:
        """Turn the run events past the cursor into deliveries; the number made (or already
        there). One pass reads at most ``pages`` pages of ``batch`` events, each read outside
        a write transaction and its deliveries inserted in one (a short hold of SQLite's
        lock). ``listening``: whether any subscription exists, if the caller just read it."""
        now = time.time() if now is None else now
        if self._idle_skip(now, self.any() if listening is None else listening):
            return 0
        with self.engine.begin() as conn:
            cursor = conn.execute(sa.select(C.c.event_id).where(C.c.name == CURSOR)).scalar()
            subs = [_subscription(r) for r in conn.execute(sa.select(S))]
            if cursor is None:
                conn.execute(
                    database.insert(conn, C)
                    .values(name=CURSOR, event_id=0)
                    .on_conflict_do_nothing()
                )
            start = int(cursor or 0)
            if not subs:  # nobody listens: every event so far is done with
                top = conn.execute(sa.select(sa.func.max(E.c.id))).scalar()
                if top is not None and int(top) > start:
                    _move(conn, start, int(top))
                return 0
        seen: list[Any] = []
        made = 0
        after = start
        for _ in range(pages):
            with self.engine.connect() as conn:
                rows = conn.execute(_EVENTS, {"after": after, "batch": batch}).all()
            new = [
                _new_delivery(sub, event, row, now)
                for row in rows
                if (event := _event_name(row)) is not None and row.tenant is not None
                for sub in subs
                if sub.covers(event, row, row.workflow)
            ]
            if new:
                with self.engine.begin() as conn:
                    conn.execute(database.insert(conn, D).on_conflict_do_nothing(), new)
            seen.extend(rows)
            made += len(new)
            if len(rows) < batch:
                break
            after = int(rows[-1].id)
        end = _advance(start, seen, now)
        if end > start:
            with self.engine.begin() as conn:
                _move(conn, start, end)
        return made

    def claim(self, limit: int, lease: float, now: float | None = None) -> builtins.list[Delivery]:
        """Take up to ``limit`` due deliveries for ``lease`` seconds, oldest due first."""
        now = time.time() if now is None else now
        due = (
            sa.select(D.c.id)
            .where(D.c.state == PENDING, D.c.next_at <= now)
            .order_by(D.c.next_at)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            rows = conn.execute(
                D.update()
                .where(D.c.id.in_(due.scalar_subquery()), D.c.state == PENDING, D.c.next_at <= now)
                .values(next_at=now + lease)
                .returning(*D.c)
            ).all()
        return sorted((_delivery(r) for r in rows), key=lambda d: d.event_at)

    def prune(self, before: float, batch: int = 1000) -> int:
        """Delete up to ``batch`` deliveries that ended (delivered or failed) before
        ``before``; how many."""
        ended = sa.select(D.c.id).where(D.c.state != PENDING, D.c.ended_at < before).limit(batch)
        with self.engine.begin() as conn:
            done = conn.execute(D.delete().where(D.c.id.in_(ended.scalar_subquery())))
        return int(done.rowcount or 0)

    def secrets_of(self, ids: Sequence[str]) -> dict[str, Subscription]:
        """The subscriptions of these ids (those still there)."""
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(S).where(S.c.id.in_(list(set(ids)))))
            return {r.id: _subscription(r) for r in rows}

    def record(self, attempts: Sequence[Attempt], now: float | None = None) -> None:
        """Write the outcome of attempts, in one transaction: each delivery delivered (a 2xx
        ``status``, no ``error``), due again at its ``retry_at``, or failed for good
        (``retry_at`` ``None``). A delivery no longer pending (deleted, or sent again by
        another notifier after a lease ran out) is left as it is."""
        if not attempts:
            return
        now = time.time() if now is None else now
        rows = [_outcome(a, now) for a in attempts]
        statement = (
            D.update()
            .where(D.c.id == sa.bindparam("b_id"), D.c.state == PENDING)
            .values({k: sa.bindparam(f"b_{k}") for k in rows[0] if k != "id"})
        )
        with self.engine.begin() as conn:
            conn.execute(statement, [{f"b_{k}": v for k, v in r.items()} for r in rows])


@dataclasses.dataclass(frozen=True)
class Attempt:
    """How one attempt of a delivery went: ``status`` (the answer's, if any), ``error``
    (``None``: delivered), how long it took, and when to try again (``None``: never)."""

    delivery: Delivery
    status: int | None
    error: str | None
    seconds: float
    retry_at: float | None


def _outcome(a: Attempt, now: float) -> dict[str, Any]:
    d = a.delivery
    entry = {
        "attempt": d.attempts + 1,
        "at": _iso(now),
        "status": a.status,
        "error": a.error,
        "seconds": round(a.seconds, 3),
    }
    row: dict[str, Any] = {
        "id": d.id,
        "attempts": d.attempts + 1,
        "last_status": a.status,
        "last_error": a.error,
        "log": [*d.log, entry][-LOG_KEPT:],
        "state": PENDING,
        "delivered_at": None,
        "ended_at": None,
        "next_at": a.retry_at,
    }
    if a.error is None:
        row.update(state=DELIVERED, delivered_at=now, ended_at=now, next_at=None)
    elif a.retry_at is None:
        row.update(state=FAILED, ended_at=now)
    return row


class _Values:
    """A dict read as a row (attribute access), for a delivery just built."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


_EVENTS = (
    sa.select(
        E.c.id,
        E.c.run_id,
        E.c.at,
        E.c.kind,
        E.c.to_state,
        E.c.attempt,
        E.c.error,
        E.c.detail,
        R.c.job,
        R.c.tenant,
        R.c.schedule_id,
        R.c.workflow_id,
        W.c.workflow,
    )
    .select_from(E.outerjoin(R, R.c.id == E.c.run_id).outerjoin(W, W.c.id == R.c.workflow_id))
    .where(E.c.id > sa.bindparam("after"))
    .order_by(E.c.id)
    .limit(sa.bindparam("batch"))
)
"""The run events past ``after``, with what a subscription matches them on."""


def _event_name(row: Any) -> str | None:
    if row.kind == "progress":
        return "progress"
    if row.kind == "state" and row.to_state in STATE_EVENTS:
        return str(row.to_state)
    return None


def _advance(start: int, rows: Sequence[Any], now: float) -> int:
    """The new cursor: past every event read in an unbroken line of ids from ``start``, and
    past a gap once the event after it is ``GAP_SECONDS`` old."""
    end = start
    for row in rows:
        if row.id != end + 1 and row.at > now - GAP_SECONDS:
            break
        end = int(row.id)
    return end


def _move(conn: sa.Connection, start: int, end: int) -> None:
    conn.execute(C.update().where(C.c.name == CURSOR, C.c.event_id == start).values(event_id=end))


def _new_delivery(sub: Subscription, event: str, row: Any, now: float) -> dict[str, Any]:
    delivery_id = f"{sub.id}-{row.id}"
    run: dict[str, Any] = {
        "id": row.run_id,
        "job": row.job,
        "tenant": row.tenant,
        "attempt": int(row.attempt or 0),
        "schedule_id": row.schedule_id,
        "workflow_id": row.workflow_id,
        "workflow": row.workflow,
    }
    payload: dict[str, Any] = {
        "id": delivery_id,
        "event": event,
        "subscription_id": sub.id,
        "at": _iso(float(row.at)),
        "run": run,
    }
    error = _json(row.error)
    if event != "progress" and error:
        payload["error"] = {"type": error.get("type"), "message": error.get("message")}
    if event == "progress":
        payload["progress"] = {"milestone": (_json(row.detail) or {}).get("milestone")}
    return _delivery_row(delivery_id, sub.id, int(row.id), event, row.run_id, payload, row.at, now)


def _delivery_row(
    delivery_id: str,
    subscription_id: str,
    event_id: int | None,
    event: str,
    run_id: str | None,
    payload: dict[str, Any],
    event_at: float,
    now: float,
) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "subscription_id": subscription_id,
        "event_id": event_id,
        "event": event,
        "run_id": run_id,
        "payload": payload,
        "state": PENDING,
        "attempts": 0,
        "next_at": now,
        "event_at": float(event_at),
        "created_at": now,
        "delivered_at": None,
        "ended_at": None,
        "last_status": None,
        "last_error": None,
        "log": [],
    }


def _json(value: Any) -> dict[str, Any] | None:
    from jobsys.store import events

    return events._json(value)


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row.id,
        tenant=row.tenant,
        scope=row.scope,
        target=row.target,
        url=row.url,
        events=tuple(_list(row.events)),
        secret=row.secret,
        created_by=row.created_by,
        created_at=float(row.created_at),
        after_event=int(row.after_event),
    )


def _list(value: Any) -> list[Any]:
    if isinstance(value, str | bytes):
        import json

        loaded = json.loads(value)
        return list(loaded) if isinstance(loaded, list) else []
    return list(value or [])


def _delivery(row: Any) -> Delivery:
    payload = row.payload
    if isinstance(payload, str | bytes):
        import json

        payload = json.loads(payload)
    return Delivery(
        id=row.id,
        subscription_id=row.subscription_id,
        event=row.event,
        run_id=row.run_id,
        payload=dict(payload),
        state=row.state,
        attempts=int(row.attempts),
        next_at=None if row.next_at is None else float(row.next_at),
        event_at=float(row.event_at),
        created_at=float(row.created_at),
        delivered_at=None if row.delivered_at is None else float(row.delivered_at),
        last_status=row.last_status,
        last_error=row.last_error,
        log=_list(row.log),
    )
