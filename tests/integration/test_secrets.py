"""A secret sentinel submitted as input is found nowhere: not in the database, the logs,
any Redis key or value, the task events Flower would show, or the CLI's output; while the
job body, and a retry of the run, still get the real value."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from jobsys import RunState
from jobsys.declare import cadence
from tests import cli_runner
from tests.cluster import Cluster, cluster
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def read_key(r: redis.Redis, key: bytes) -> Any:
    kind = r.type(key).decode()
    if kind == "string":
        return r.get(key)
    if kind == "list":
        return r.lrange(key, 0, -1)
    if kind == "hash":
        return r.hgetall(key)
    if kind == "set":
        return r.smembers(key)
    if kind == "zset":
        return r.zrange(key, 0, -1)
    return None


def everything_in_redis(r: redis.Redis) -> str:
    return "\n".join(f"{key!r} {read_key(r, key)!r}" for key in r.scan_iter("*"))


def everything_in_the_database(c: Cluster) -> str:
    parts = []
    with c.store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            parts.extend(repr(row) for row in conn.exec_driver_sql(f"SELECT * FROM {table}"))
    return "\n".join(parts)


class Events:
    """Celery task events, as Flower receives them."""

    def __init__(self, c: Cluster) -> None:
        self.seen: list[dict[str, Any]] = []
        self.app = c.client.app
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        patterns = int(c.redis.pubsub_numpat())
        self._thread.start()
        # Listening is a pattern subscription (the events' fanout exchange) on the broker.
        eventually(
            lambda: int(c.redis.pubsub_numpat()) > patterns,
            10,
            0.05,
            what="the event receiver to subscribe",
        )

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            receiver = self.app.events.Receiver(conn, handlers={"*": self.seen.append})
            while not self._stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:  # no event for 0.5 s: look at the stop flag again
                    continue

    def stop(self) -> str:
        self._stop.set()
        return json.dumps(self.seen, default=str)

    def join(self) -> None:
        self._thread.join(timeout=5)


def test_a_secret_is_found_nowhere_but_the_body_gets_it(
    tmp_path: Any, redis_url: str, database_url: str | None
) -> None:
    secret, key = f"S3NT1NEL-{uuid.uuid4().hex}", f"APIKEY-{uuid.uuid4().hex}"
    with cluster(tmp_path, redis_url, database_url, JOBSYS_TASK_EVENTS="1") as c:
        c.start_worker("w", concurrency=1)
        events = Events(c)
        ids = {
            mode: c.client.submit(
                "tests.uses_secret", {"token": secret, "api_key": key, "mode": mode}
            )
            for mode in ("ok", "echo", "fail")
        }
        records = {m: c.wait_all([i], timeout=30)[0] for m, i in ids.items()}
        assert records["ok"].state is RunState.COMPLETED
        assert records["fail"].state is RunState.FAILED
        retried = c.client.retry(ids["fail"])
        assert c.wait_all([retried], timeout=30)[0].state is RunState.FAILED
        schedule = c.client.schedules.create(
            "tests.uses_secret", cadence.once("2100-01-01T00:00:00Z", input={"token": secret})
        )
        time.sleep(1)  # (not observable) time for the last events to reach the receiver
        seen_events = events.stop()
        events.join()

        # The body got the real values, each time (including the retry).
        digest = hashlib.sha256(f"{secret}|{key}".encode()).hexdigest()
        for run_id in [*ids.values(), retried]:
            assert digest in (c.effects / run_id).read_text()

        # What was stored and shown is redacted, not dropped.
        record = c.client.status(ids["echo"])
        assert record.input["token"] == "**********" and record.input["api_key"] == "**********"
        assert record.output == {"said": "token was **********"}
        assert "the API refused **********" in (records["fail"].error or {})["message"]
        assert any("**********" in line.message for line in c.client.logs(ids["ok"]))

        shown: list[str] = []

        def cli(*args: str) -> str:
            """A CLI command: the first as a real ``python -m jobsys``, the rest in-process
            (the same click commands, without a process's second of start-up each)."""
            done = cli_runner.run(c.env, args, process=not shown)
            return done.stdout + done.stderr

        shown.append(cli("runs", "list", "--json"))
        shown.extend(cli("runs", "show", i, "--json") for i in ids.values())
        shown.extend(cli("runs", "logs", i) for i in ids.values())
        shown.append(cli("runs", "result", ids["echo"]))
        shown.append(cli("schedules", "show", schedule.id, "--json"))
        places = {
            "database": everything_in_the_database(c),
            "broker redis": everything_in_redis(c.redis),
            "result redis": everything_in_redis(c.results),
            "worker log": c.log("w"),
            "task events": seen_events,
            "cli output": "\n".join(shown),
        }
        assert '"task-succeeded"' in seen_events or "task-succeeded" in seen_events
        for name, text in places.items():
            assert secret not in text, f"the secret leaked into the {name}"
            assert key not in text, f"the api key leaked into the {name}"
