"""A producer with many threads holds a bounded number of database connections: the pool's
and the per-job statements' own (``hotsql``), never one per calling thread."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from jobsys.service.client import Client
from tests.cluster import Cluster

pytestmark = pytest.mark.integration

THREADS = 256
APP = "jobsys-producer-pool-test"


def test_256_producer_threads_stay_within_the_pool(
    shared: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not shared.settings.database_url.startswith("postgresql"):
        pytest.skip(reason="counts server sessions: needs PostgreSQL (JOBSYS_TEST_DATABASE_URL)")
    monkeypatch.setenv("PGAPPNAME", APP)  # libpq names this client's sessions
    producer = Client(shared.settings, shared.registry)
    engine = producer.store.engine
    limit = engine.pool.size() + engine.pool._max_overflow + producer.store._hot.size  # type: ignore[attr-defined]
    seen: list[int] = []
    done = threading.Event()
    url = sa.engine.make_url(engine.url)
    watcher = sa.create_engine(url, connect_args={"application_name": "pool-watcher"})

    def watch() -> None:
        with watcher.connect() as conn:
            while not done.is_set():
                seen.append(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"
                        ),
                        {"a": APP},
                    ).scalar_one()
                )
                done.wait(0.02)

    sampler = threading.Thread(target=watch)
    sampler.start()
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            ids = list(
                pool.map(
                    lambda i: producer.submit("examples.add", {"a": i, "b": 1}), range(THREADS * 2)
                )
            )
    finally:
        done.set()
        sampler.join(10)
        producer.close()
        watcher.dispose()
    assert len(set(ids)) == THREADS * 2
    for run_id in ids[:5]:
        assert shared.client.wait(run_id, timeout=60).output is not None
    assert seen and max(seen) <= limit, f"{max(seen)} sessions open at once, pool allows {limit}"
    # the sampler saw the producer's sessions at all (how many at once depends on how the
    # threads happened to overlap: on a busy machine one session may serve them all in turn)
    assert max(seen) >= 1
