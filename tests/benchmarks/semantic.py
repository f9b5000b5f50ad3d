"""Semantic search on a large store: how fast the indexer embeds, and what a query costs;
prints figures (README "Semantic search"). Not part of the suite (which runs a small
version: tests/integration/test_semantic.py).

    .venv/bin/python -m tests.benchmarks.semantic [--runs 100000] [--dimensions 8]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/test]

Records ``--runs`` failed runs of ``examples.fail`` with one keyword-index entry each (their
error), embeds them all with the indexer's code (``SemanticStore.index_runs``, 2048 texts
per call, random vectors of ``--dimensions``: no embedder), then
times ``RunStore.nearest`` for a tenant's runs (the window of the newest 2,000 vectors).
Without ``--database``, a SQLite file in a temporary folder; with one, a database of its own
on that server, dropped at the end.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from jobsys.declare import catalog
from jobsys.store import runs, search, semantic, stores
from jobsys.store.records import RunFilter
from jobsys.store.rows import new_run
from tests.cluster import Database

QUERIES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--dimensions", type=int, default=8)
    parser.add_argument("--database", default=None, help="an admin URL of a PostgreSQL server")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp), a.database)
        store = stores.Store.open(db.url)
        try:
            run(store, a.runs, a.dimensions)
        finally:
            store.close()
            db.drop()


def run(store: stores.Store, n: int, dims: int) -> None:
    rng = random.Random(1)
    spec = catalog.load_registry(("workers.examples",)).get("examples.fail")
    now, ids = runs.utcnow(), [uuid.uuid4().hex for _ in range(n)]
    for start in range(0, n, 10_000):
        part = ids[start : start + 10_000]
        store.insert(
            [
                new_run(
                    spec,
                    {},
                    principal={"id": "b"},
                    principal_id="b",
                    tenant="default",
                    now=now,
                    run_id=i,
                )
                for i in part
            ]
        )
        with store.engine.begin() as conn:
            search.index(conn, [(i, f"error {i} connection refused") for i in part])

    def embed(texts: list[str]) -> list[list[float]]:
        return [[rng.gauss(0, 1) for _ in range(dims)] for _ in texts]

    started, done = time.perf_counter(), 0
    while done < n:  # (the first pass only sees the entries: they are taken the next one)
        done += store.semantic.index_runs(embed, 2048, "bench")
    took = time.perf_counter() - started
    if store.engine.dialect.name == "postgresql":  # as autovacuum would, in time
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    print(f"{store.engine.dialect.name}, {n} runs, {dims} dimensions")
    print(
        f"  indexed {done} texts in {took:.2f} s ({done / took:.0f}/s, with making random vectors)"
    )
    where, query = RunFilter(tenant="default", limit=50), embed(["q"])[0]
    store.nearest(where, query, 0.0)
    started = time.perf_counter()
    for _ in range(QUERIES):
        found = store.nearest(where, query, 0.0)
    each = (time.perf_counter() - started) / QUERIES
    print(f"  a query over the newest {semantic.WINDOW} vectors: {each * 1000:.0f} ms")
    assert len(found) == 50
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(semantic.E)).scalar() == n


if __name__ == "__main__":
    main()
