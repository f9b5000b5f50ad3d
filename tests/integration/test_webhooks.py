"""Webhook notifications (README "Notifications: webhooks and job hooks") through real workers
and a real HTTP receiver: a receiver that is down (its port closed) for 30 s, then up, gets
every event once by delivery id (from two workers' notifiers), each signature checks out with
the README's snippet, and the runs took their normal time; bad subscriptions are refused with
errors that say why."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobsys.base import errors
from jobsys.store import schema, subscriptions
from jobsys.store.runs import RunState
from jobsys.store.subscriptions import Attempt
from tests.cluster import ROOT, Cluster, cluster
from tests.integration.test_store import run_row
from tests.servers import free_port
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

DOWN_SECONDS = 30.0
"""How long the receiver is down (the scenario of issue 20: 30 s)."""
FAST_WEBHOOKS = {
    "JOBSYS_NOTIFY_SECONDS": "0.2",
    "JOBSYS_WEBHOOK_BACKOFF_SECONDS": "0.5",
    "JOBSYS_WEBHOOK_BACKOFF_MAX_SECONDS": "2",
    "JOBSYS_WEBHOOK_ATTEMPTS": "60",
    "JOBSYS_WEBHOOK_TIMEOUT_SECONDS": "5",
}


def readme_verify() -> Any:
    """The README's verification snippet (the block written as ``verify_webhook.py``)."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"readme-test: file verify_webhook\.py -->\n```python\n(.*?)```", text, re.S)
    assert found, "the README's verification snippet is gone"
    scope: dict[str, Any] = {}
    exec(found.group(1), scope)
    return scope["verify"]


class Receiver:
    """A small threaded HTTP server that keeps every request it gets, answering 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.status = 200

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.got.append(
                        {"headers": dict(self.headers), "body": body, "at": time.time()}
                    )
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def ids(self) -> list[str]:
        with self._lock:
            return [g["headers"]["Jobsys-Delivery"] for g in self.got]


@contextlib.contextmanager
def hooked(tmp: Path, redis_url: str, database_url: str | None) -> Iterator[tuple[Cluster, int]]:
    port = free_port()
    env = {**FAST_WEBHOOKS, "JOBSYS_WEBHOOK_HOSTS": f"127.0.0.1:{port}"}
    with cluster(tmp, redis_url, database_url, **env) as c:
        yield c, port


def test_a_receiver_down_for_30_s_then_up_gets_every_event_once_signed(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    verify = readme_verify()
    with hooked(tmp_path, redis_url, database_url) as (c, port):
        url = f"http://127.0.0.1:{port}/hook"
        receiver = Receiver(port)  # not started: the port is closed
        client = c.client
        made = client.subscribe(
            url, ["completed", "failed", "retrying", "progress"], job="tests.fail_once"
        )
        chatty = client.subscribe(url, ["completed", "progress"], job="tests.chatty")
        assert made.secret.startswith("whsec_") and chatty.secret != made.secret
        # Two workers: two notifiers share the outbox (each delivery claimed by one).
        c.start_worker("w1", concurrency=1)
        c.start_worker("w2", concurrency=1)
        down_since = time.monotonic()

        # Baseline: how long a run takes with no receiver to deliver to.
        runs = [client.submit("tests.fail_once", {"seconds": 0}) for _ in range(5)]
        runs += [client.submit("tests.chatty", {"seconds": 0.6}) for _ in range(2)]
        records = [client.wait(r, 60) for r in runs]
        assert all(r.state is RunState.COMPLETED for r in records), records

        # Every event is in the outbox, tried and not delivered while the receiver is down.
        subs = client.subscriptions

        def all_tried() -> bool | NotYet:
            found = subs.deliveries(made.subscription.id) + subs.deliveries(chatty.subscription.id)
            tried = [d for d in found if d.attempts >= 1 and d.state == "pending"]
            return len(tried) >= 12 or NotYet([(d.event, d.state, d.attempts) for d in found])

        eventually(all_tried, 30, what="every delivery tried at least once")
        assert receiver.ids() == []
        # (the scenario: the receiver stays down DOWN_SECONDS in all)
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_since)))
        pending = subs.deliveries(made.subscription.id) + subs.deliveries(chatty.subscription.id)
        assert {d.state for d in pending} == {"pending"}
        assert max(d.attempts for d in pending) >= 3, [d.attempts for d in pending]
        expected = {d.id for d in pending}
        # fail_once: retrying then completed, each run; chatty: completed and progress milestones
        events = sorted(d.event for d in subs.deliveries(made.subscription.id))
        assert events == ["completed"] * 5 + ["retrying"] * 5
        chatty_events = [d.event for d in subs.deliveries(chatty.subscription.id)]
        assert chatty_events.count("completed") == 2 and "progress" in chatty_events

        receiver.start()
        try:

            def all_delivered() -> bool | NotYet:
                left = [
                    d
                    for s in (made, chatty)
                    for d in subs.deliveries(s.subscription.id)
                    if d.state != "delivered"
                ]
                return not left or NotYet([(d.id, d.attempts, d.last_error) for d in left])

            eventually(all_delivered, 30, what="every delivery delivered")
            ids = receiver.ids()
            assert sorted(ids) == sorted(expected), "each event once, by its delivery id"
            secrets = {made.subscription.id: made.secret, chatty.subscription.id: chatty.secret}
            for got in receiver.got:
                body = json.loads(got["body"])
                secret = secrets[body["subscription_id"]]
                assert verify(secret, got["body"], got["headers"]["Jobsys-Signature"])
                assert not verify("whsec_wrong", got["body"], got["headers"]["Jobsys-Signature"])
                assert body["id"] == got["headers"]["Jobsys-Delivery"]
                assert body["event"] == got["headers"]["Jobsys-Event"]
                assert body["run"]["id"] in runs
                if body["event"] == "retrying":
                    assert body["error"]["message"] == "first attempt fails"
                if body["event"] == "progress":
                    assert body["progress"]["milestone"] in (25, 50, 75, 100)
            # A replayed request (its signature 10 minutes old) fails the snippet's window.
            first = receiver.got[0]
            t = int(first["headers"]["Jobsys-Signature"].split(",")[0][2:])
            old = first["headers"]["Jobsys-Signature"].replace(f"t={t}", f"t={t - 600}")
            assert not verify(made.secret, first["body"], old)
        finally:
            receiver.stop()
        # The runs took their normal time, the receiver down or not: no run waited on it.
        for r in records:
            assert r.duration is not None and r.duration < 5, r
        # The log of one delivery: its failed attempts, then its success.
        one = subs.deliveries(made.subscription.id)[0]
        assert one.log[-1]["status"] == 200 and one.log[-1]["error"] is None
        assert all(e["error"] for e in one.log[:-1]) and len(one.log) == one.attempts


def test_subscriptions_refuse_bad_input_with_errors_that_say_why(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    with hooked(tmp_path, redis_url, database_url) as (c, port):
        client = c.client
        allowed = f"http://127.0.0.1:{port}/hook"
        cases: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"url": "ftp://127.0.0.1/x"}, errors.InvalidInput, "must be an http:// or https://"),
            ({"url": "not a url"}, errors.InvalidInput, "http:// or https://"),
            (
                {"url": "http://evil.example.com/hook"},
                errors.InvalidInput,
                "not on the allow-list (127.0.0.1:",
            ),
            ({"events": ["finished"]}, errors.InvalidInput, "unknown event 'finished'"),
            ({"events": []}, errors.InvalidInput, "give at least one event"),
            ({"job": "tests.no_such_job"}, errors.UnknownJob, "tests.no_such_job"),
            ({"schedule": "sch_missing"}, errors.ScheduleNotFound, "sch_missing"),
            (
                {"job": "tests.effect", "workflow": "tests.operated_flow"},
                errors.InvalidInput,
                "give one of job, schedule or workflow",
            ),
        ]
        for given, kind, words in cases:
            args: dict[str, Any] = {"url": allowed, "events": ["completed"], "job": "tests.effect"}
            args.update(given)
            if "schedule" in given or "workflow" in given:
                args["job"] = given.get("job")
            with pytest.raises(kind) as caught:
                client.subscribe(**args)
            assert words in str(caught.value), (given, str(caught.value))
        with pytest.raises(errors.InvalidInput, match="JOBSYS_WEBHOOK_HOSTS"):
            client.subscribe("http://evil.example.com/x")
        assert client.subscriptions.list() == []

        # A URL allowed when made and taken off the list since is refused at send time.
        made = client.subscribe(allowed, ["completed"], job="tests.effect")
        listed = client.subscriptions.list()
        assert [s.id for s in listed] == [made.subscription.id]
        assert "secret" not in json.dumps([s.to_json() for s in listed])
        assert made.secret not in json.dumps([s.to_json() for s in listed])
        c.env["JOBSYS_WEBHOOK_HOSTS"] = "elsewhere.example.com"
        c.start_worker("w1", concurrency=1)
        run_id = client.submit("tests.effect", {})
        client.wait(run_id, 60)

        def refused() -> bool | NotYet:
            found = client.subscriptions.deliveries(made.subscription.id)
            return (bool(found) and found[0].attempts >= 1) or NotYet(found)

        eventually(refused, 30, what="the delivery tried")
        last = client.subscriptions.deliveries(made.subscription.id)[0]
        assert last.state == "pending" and last.last_status is None
        assert last.last_error and "not on the allow-list" in last.last_error
        # Deleting it drops what it had not sent.
        client.subscriptions.delete(made.subscription.id)
        with pytest.raises(errors.SubscriptionNotFound):
            client.subscriptions.deliveries(made.subscription.id)


def test_the_delivery_log_records_each_attempt_and_old_ended_deliveries_are_pruned(
    store: Any,
) -> None:
    subs = store.subscriptions
    sub = subs.create("t1", "tenant", None, "http://127.0.0.1:1/x", ["completed"], "sealed", "me")
    first, second, third = (subs.add_test(sub) for _ in range(3))
    claimed = {d.id: d for d in subs.claim(10, lease=60)}
    assert set(claimed) == {first.id, second.id, third.id}
    assert subs.claim(10, lease=60) == []  # leased: no other notifier takes them
    long_ago = time.time() - 10 * 86400
    subs.record(
        [
            Attempt(claimed[first.id], 200, None, 0.01, None),
            Attempt(claimed[second.id], 500, "answered HTTP 500", 0.02, None),
            Attempt(claimed[third.id], None, "ConnectError", 0.03, time.time() + 3600),
        ],
        now=long_ago,
    )
    by_id = {d.id: d for d in subs.deliveries(sub.id)}
    assert (by_id[first.id].state, by_id[first.id].last_status) == ("delivered", 200)
    assert (by_id[second.id].state, by_id[second.id].last_error) == ("failed", "answered HTTP 500")
    assert (by_id[third.id].state, by_id[third.id].attempts) == ("pending", 1)
    assert by_id[third.id].log == [
        {
            "attempt": 1,
            "at": by_id[third.id].log[0]["at"],
            "status": None,
            "error": "ConnectError",
            "seconds": 0.03,
        }
    ]
    # Ended ones past the age go; the pending one stays, however old.
    assert subs.prune(time.time() - 7 * 86400) == 2
    assert [d.id for d in subs.deliveries(sub.id)] == [third.id]


def test_the_outbox_makes_one_delivery_per_event_and_waits_on_a_young_gap(store: Any) -> None:
    subs = store.subscriptions
    sub = subs.create("default", "tenant", None, "http://127.0.0.1:1/x", ["completed"], "s", "me")
    rows = [run_row() for _ in range(3)]
    ids = [r["id"] for r in rows]
    store.insert(rows)
    with store.engine.begin() as conn:
        conn.execute(schema.runs.update().values(state="completed"))
        events = [r.id for r in conn.execute(sa.select(schema.run_events.c.id).order_by("id"))]
        # An id taken by a transaction not committed yet (or rolled back): a gap.
        conn.execute(schema.run_events.delete().where(schema.run_events.c.id == events[1]))

    def cursor() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.select(schema.notify_cursor.c.event_id)).scalar())

    assert subs.fan_out() == 3 and subs.fan_out() == 3  # read twice, made once
    assert sorted(d.run_id for d in subs.deliveries(sub.id)) == sorted(ids)
    assert cursor() == events[0]  # held at the gap
    assert subs.fan_out(now=time.time() + subscriptions.GAP_SECONDS + 1) == 3
    assert cursor() == events[-1]  # the gap is old: passed
    assert len(subs.deliveries(sub.id)) == 3
    assert subs.fan_out() == 0  # nothing new


def test_with_no_subscription_the_cursor_moves_only_now_and_then(store: Any) -> None:
    """An idle notifier's pass reads only: the cursor moves past what was written meanwhile
    once per IDLE_MOVE, so a first subscription starts near its creation."""
    subs = store.subscriptions

    def cursor() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.select(schema.notify_cursor.c.event_id)).scalar() or 0)

    def newest() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(schema.run_events.c.id))).scalar())

    store.insert([run_row()])
    now = time.time()
    assert subs.fan_out(now=now) == 0 and cursor() == newest()  # the first pass moves it
    store.insert([run_row()])
    assert subs.fan_out(now=now + 1) == 0 and cursor() < newest()  # then passes only read
    assert subs.fan_out(now=now + subscriptions.IDLE_MOVE + 1) == 0 and cursor() == newest()


def test_a_receiver_that_keeps_failing_gets_the_last_attempt_then_the_delivery_is_failed(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    port = free_port()
    env = {
        **FAST_WEBHOOKS,
        "JOBSYS_WEBHOOK_ATTEMPTS": "3",
        "JOBSYS_WEBHOOK_HOSTS": f"127.0.0.1:{port}",
    }
    receiver = Receiver(port)
    receiver.status = 500
    receiver.start()
    try:
        with cluster(tmp_path, redis_url, database_url, **env) as c:
            made = c.client.subscribe(f"http://127.0.0.1:{port}/hook", ["completed"])
            c.start_worker("w1", concurrency=1)
            run_id = c.client.submit("tests.effect", {})
            assert c.client.wait(run_id, 60).state is RunState.COMPLETED
            subs = c.client.subscriptions

            def failed() -> Any:
                found = subs.deliveries(made.subscription.id)
                return (found and found[0].state == "failed" and found[0]) or NotYet(found)

            gave_up = eventually(failed, 60, what="the delivery failed after its attempts")
            assert gave_up.attempts == 3 and gave_up.last_status == 500
            assert [e["status"] for e in gave_up.log] == [500, 500, 500]
            assert gave_up.last_error == "answered HTTP 500"
            assert receiver.ids() == [gave_up.id] * 3  # the same delivery id each time
            # Kept, and never tried again.
            assert subs.deliveries(made.subscription.id, state="failed") == [gave_up]
    finally:
        receiver.stop()
