"""Shared fixtures. Integration tests talk to a real Redis (the embedded ``redis-server`` by
default, ``JOBSYS_TEST_BROKER_URL`` if set) and a real database (a SQLite file by default,
``JOBSYS_TEST_DATABASE_URL`` if set), through real ``jobsys worker`` processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobsys.base import embedded
from jobsys.store import runs, stores
from tests.cluster import Cluster, Database, cluster


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("JOBSYS_TEST_BROKER_URL")
    if url:
        yield url
        return
    server = embedded.RedisServer(tmp_path_factory.mktemp("redis"), persist=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url() -> str | None:
    """The admin URL of the PostgreSQL server to test against, or None for SQLite files."""
    return os.environ.get("JOBSYS_TEST_DATABASE_URL") or None


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> Iterator[runs.RunStore]:
    """A fresh, migrated run store on the configured backend."""
    db = Database(tmp_path, database_url)
    s = stores.Store.open(db.url)
    try:
        yield s
    finally:
        s.close()
        db.drop()


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    """One cluster with one running worker, shared by the tests of a module."""
    with cluster(tmp_path_factory.mktemp("cluster"), redis_url, database_url) as c:
        c.start_worker("w1", concurrency=2)
        yield c


@pytest.fixture
def fresh(tmp_path: Path, redis_url: str, database_url: str | None) -> Iterator[Cluster]:
    """A cluster of a test's own, with no process started yet."""
    with cluster(tmp_path, redis_url, database_url) as c:
        yield c


UNIT = Path(__file__).parent / "unit"


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests use no run store and no broker: all of them are ``backend_independent``."""
    for item in items:
        if item.path.is_relative_to(UNIT):
            item.add_marker(pytest.mark.backend_independent)
