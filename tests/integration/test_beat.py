"""Beat's scheduler in process, on a real Redis and store: its read-ahead (``beat.lookahead``:
the schedules due next, read and their messages built before their time), the held messages
themselves, and how it closes. Beat as a process is tested in ``test_schedules.py``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import pytest
import redis

from beat import lookahead
from beat.scheduler import StoreScheduler
from jobsys.declare import cadence
from jobsys.engine import broker
from jobsys.scheduling import firing
from jobsys.store import runs, schema
from tests.cluster import Cluster
from tests.integration.test_schedule_store import ALICE

pytestmark = pytest.mark.integration


def drain(r: redis.Redis) -> list[tuple[str, dict[str, Any]]]:
    """Every message on the broker's lists (queue key, decoded payload), removed."""
    found = []
    for key in r.scan_iter():
        if r.type(key) == b"list":
            found += [(key.decode(), json.loads(p)) for p in r.lrange(key, 0, -1)]
            r.delete(key)
    return found


def test_a_held_message_is_the_message_publish_sends(fresh: Cluster) -> None:
    app = broker.make_celery(fresh.settings, fresh.registry)
    spec = fresh.registry.get("tests.effect")
    run_id = uuid.uuid4().hex
    held = broker.hold(app, [(spec, run_id)])
    assert list(held) == [run_id]
    assert drain(fresh.redis) == []  # built, not sent
    broker.publish_many(app, [(spec, {"id": run_id, "priority": spec.priority})], held=held)
    (pushed,) = drain(fresh.redis)
    broker.publish(app, spec, run_id, 1, priority=spec.priority)
    (sent,) = drain(fresh.redis)
    for _, message in (pushed, sent):  # a fresh tag per message, by kombu
        assert message["properties"].pop("delivery_tag")
    assert pushed == sent
    assert pushed[1]["headers"]["id"] == run_id and pushed[0].startswith(spec.queue)


def test_nothing_is_held_when_sending_also_announces_the_message(fresh: Cluster) -> None:
    app = broker.make_celery(fresh.settings, fresh.registry)
    app.conf.task_send_sent_event = True  # the "task-sent" event would come too early
    assert broker.hold(app, [(fresh.registry.get("tests.effect"), uuid.uuid4().hex)]) == {}


def test_a_message_read_ahead_is_built_at_its_schedule_s_priority(fresh: Cluster) -> None:
    """A schedule's priority is its fire's message's (kombu's step 9 - p); a message built at
    another priority than the run's is not used (its schedule changed since)."""
    schedules = fresh.store.schedules
    now = runs.utcnow()
    at = now + dt.timedelta(seconds=2)
    urgent = schedules.create("tests.effect", cadence.every(60, start_at=at, priority=9), ALICE)
    plain = schedules.create("tests.effect", cadence.every(60, start_at=at), ALICE)
    app = broker.make_celery(fresh.settings, fresh.registry)
    ahead = lookahead.Lookahead(app, schedules, fresh.registry)
    ahead.read(now)
    spec = fresh.registry.get("tests.effect")
    rows = {
        s.id: {"id": firing.fire_run_id(s.id, at), "priority": p}
        for s, p in ((urgent, 9), (plain, spec.priority))
    }
    items = [(spec, row) for row in rows.values()]
    assert set(ahead.messages(items)) == {row["id"] for row in rows.values()}
    changed = [(spec, {**rows[urgent.id], "priority": 1})]
    assert ahead.messages(changed) == {}
    broker.publish_many(app, items, held=ahead.messages(items))
    lists = {m["headers"]["id"]: key for key, m in drain(fresh.redis)}
    assert lists == {rows[urgent.id]["id"]: "jobs", rows[plain.id]["id"]: "jobs\x06\x164"}


def test_each_schedule_due_within_the_horizon_is_read_once(
    fresh: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages end in the middle of schedules due at the same instant, and the next page goes on
    after the last one read: each is read once; one due past the horizon is not read."""
    monkeypatch.setattr(lookahead, "PAGE", 3)
    schedules = fresh.store.schedules
    now = runs.utcnow()
    at = now + dt.timedelta(seconds=2)
    burst = {
        schedules.create("tests.effect", cadence.every(3600, start_at=at), ALICE, now=now).id
        for _ in range(7)
    }
    later = now + dt.timedelta(seconds=lookahead.HORIZON + 60)
    schedules.create("tests.effect", cadence.every(3600, start_at=later), ALICE, now=now)
    ahead = lookahead.Lookahead(
        broker.make_celery(fresh.settings, fresh.registry), schedules, fresh.registry
    )
    assert ahead.short(now)
    pages = 1
    while ahead.read(now):
        pages += 1
    assert pages == 3 and not ahead.short(now)
    assert ahead.take(now) == []  # none due yet
    taken = ahead.take(at)
    assert {r.id for r in taken} == burst and len(taken) == 7
    assert ahead.take(at + dt.timedelta(seconds=1)) == []
    fire_ids = {firing.fire_run_id(r.id, at) for r in taken}
    assert set(ahead.held) == fire_ids
    spec = fresh.registry.get("tests.effect")
    rows = [{"id": i, "priority": spec.priority} for i in fire_ids]
    assert set(ahead.messages([(spec, row) for row in rows])) == fire_ids
    redefined = dataclasses.replace(spec, queue="elsewhere")  # a message of the old spec: not used
    assert ahead.messages([(redefined, row) for row in rows]) == {}
    ahead.release(taken)
    assert ahead.held == {}
    assert drain(fresh.redis) == []  # nothing was sent


def test_a_stop_in_the_middle_of_a_write_leaves_closing_to_the_end_of_the_tick(
    fresh: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery beat's SIGTERM handler calls ``close`` (then raises ``SystemExit``) wherever the
    tick is, a write transaction open included, and calls it again once its loop ended. The
    first call must not write: on SQLite it waited for the open transaction's lock for 30 s."""
    app = broker.make_celery(fresh.settings, fresh.registry)
    scheduler = StoreScheduler(app, settings=fresh.settings, registry=fresh.registry)
    scheduler._published = [("r" * 32, runs.utcnow())]  # published, not yet stamped
    seen = {}

    def batches_until_the_signal(*args: Any, **kwargs: Any) -> Any:
        with scheduler.store.engine.begin() as conn:
            S = schema.schedules
            conn.execute(S.update().where(S.c.id == "none").values(updated_at=runs.utcnow()))
            scheduler.close()  # the signal handler
            seen["left to stamp"] = len(scheduler._published)
            raise SystemExit
        yield []

    monkeypatch.setattr(scheduler.firing, "batches", batches_until_the_signal)
    with pytest.raises(SystemExit):
        scheduler.tick()
    assert seen == {"left to stamp": 1}
    scheduler.close()  # the end of beat's loop
    assert scheduler._published == []
    scheduler.close()  # once only
