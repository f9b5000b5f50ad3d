"""Side by side: jobsys on SQLite and on PostgreSQL, bare Celery (prefork ``-c N``, and N
solo workers), Dramatiq and Huey, every one storing results in Redis, on one private Redis
that this script starts, with the same number of worker processes (1 and 2), interleaved,
several repetitions. Prints medians, the ratios jobsys / each other system and issue 18's
targets, met or not.

    python -m tests.benchmarks.compare [--jobs 10000] [--reps 3] [--roundtrips 500]
        [--systems jobsys-sqlite jobsys-pg ...] [--pg-url URL] [--json]

jobsys on PostgreSQL runs in a database created for the run and dropped after it (on the
server of ``--pg-url``); it is left out, with a note, when that server cannot be reached.
This is a benchmark (it prints figures), not a test. Dramatiq and Huey come with the
``bench`` extra (``pip install -e '.[test,bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery.exceptions import DuplicateTaskNameWarning

from jobsys.base import config, embedded
from jobsys.ops import bench
from jobsys.store import stores
from tests.benchmarks import harness, report
from tests.benchmarks.celery_systems import BareCelery, Jobsys
from tests.benchmarks.harness import System
from tests.benchmarks.rival_systems import Dramatiq, Huey
from tests.cluster import Database, with_db

SYSTEMS = ("jobsys-sqlite", "jobsys-pg", "celery-prefork", "celery-solo", "dramatiq", "huey")
WITHOUT_HISTORY = ("jobsys-sqlite-nohistory", "jobsys-pg-nohistory")
"""jobsys on a run store whose history triggers are dropped (``jobsys/store/events.py``): not
a setting of jobsys, only what the history costs, measured beside the same store with it."""
SCENARIOS = ("throughput", "latency", "batch")
PROCESSES = (1, 2)
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def default_pg_url() -> str:
    url = os.environ.get("JOBSYS_TEST_DATABASE_URL", "")
    return url if url.startswith("postgres") else DEFAULT_PG


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per drain and batch")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians)")
    parser.add_argument("--roundtrips", type=int, default=500, help="round trips per rep")
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS + WITHOUT_HISTORY, default=list(SYSTEMS)
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--pg-url", default=default_pg_url(), help="PostgreSQL server (admin)")
    parser.add_argument("--dramatiq-threads", type=int, default=8, help="threads per process")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser.parse_args()


def jobsys_settings(work: Path, name: str, broker: str, result: str, db: str) -> config.Settings:
    return config.Settings.from_env(
        {
            "JOBSYS_HOME": str(work / f"home-{name}"),
            "JOBSYS_BROKER_URL": broker,
            "JOBSYS_RESULT_URL": result,
            "JOBSYS_DATABASE_URL": db,
            "JOBSYS_CATALOG": bench.BENCH_MODULE,
        }
    )


def make_systems(
    args: argparse.Namespace, work: Path, base: str, databases: list[Database]
) -> dict[str, System]:
    """The systems chosen, each on Redis databases of its own; ``databases`` collects the
    run-store databases made here, for the caller to drop."""
    made: dict[str, System] = {}
    for name in args.systems:
        if name.startswith("jobsys-sqlite"):
            bare = name.endswith("-nohistory")
            url = f"sqlite:///{work / ('runs-bare.db' if bare else 'runs.db')}"
            redis_db = 12 if bare else 2
            settings = jobsys_settings(
                work, name, with_db(base, redis_db), with_db(base, redis_db + 1), url
            )
            title = "jobsys, SQLite" + (", no history" if bare else "")
            made[name] = Jobsys(name, title, settings)
        elif name.startswith("jobsys-pg"):
            bare = name.endswith("-nohistory")
            try:
                database = Database(work / name, args.pg_url)
            except (sa.exc.SQLAlchemyError, ImportError) as e:
                print(f"{name} left out: {args.pg_url} unreachable ({e})", file=sys.stderr)
                continue
            databases.append(database)
            redis_db = 14 if bare else 4
            settings = jobsys_settings(
                work, name, with_db(base, redis_db), with_db(base, redis_db + 1), database.url
            )
            title = "jobsys, PostgreSQL" + (", no history" if bare else "")
            made[name] = Jobsys(name, title, settings)
        else:
            made.update(rival(name, base, args))
        if name in WITHOUT_HISTORY:
            drop_history(made[name].settings.database_url)  # type: ignore[attr-defined]
    return made


def drop_history(url: str) -> None:
    """Make the run store at ``url`` (migrated) and drop its history triggers."""
    store = stores.Store.open(url)
    try:
        with store.engine.begin() as conn:
            for trigger in ("created", "state", "deleted"):
                on = " ON jobsys_runs" if conn.dialect.name == "postgresql" else ""
                conn.exec_driver_sql(f"DROP TRIGGER jobsys_run_events_{trigger}{on}")
    finally:
        store.close()


def rival(name: str, base: str, args: argparse.Namespace) -> dict[str, System]:
    """One of the other systems, on Redis databases of its own."""
    if name == "celery-prefork":
        return {name: BareCelery(with_db(base, 6), with_db(base, 7), pool="prefork")}
    if name == "celery-solo":
        return {name: BareCelery(with_db(base, 8), with_db(base, 9), pool="solo")}
    if name == "dramatiq":
        return {name: Dramatiq(with_db(base, 10), threads=args.dramatiq_threads)}
    return {name: Huey(with_db(base, 11))}


def measure(
    systems: dict[str, System], args: argparse.Namespace, work: Path
) -> dict[str, report.Runs]:
    """Every scenario for every system, one system after the other within a scenario, the
    order rotated each repetition, so drift on a shared machine hits all alike."""
    raw: dict[str, report.Runs] = {name: {} for name in systems}
    names = list(systems)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for processes in PROCESSES if "throughput" in args.only else ():
            for name in order:
                figures = harness.drain(systems[name], args.jobs, processes, work)
                raw[name].setdefault(f"drain_{processes}", []).append(figures)
        for name in order if "latency" in args.only else ():
            figures = harness.roundtrip(systems[name], args.roundtrips, work)
            raw[name].setdefault("roundtrip_ms", []).append(figures)
        for name in order if "batch" in args.only else ():
            batch = harness.batch_enqueue(systems[name], args.jobs)
            raw[name].setdefault("batch", []).extend([batch] if batch else [])
    return raw


def main() -> None:
    args = parse_args()
    # Two jobsys clients in one process (one per run store) register the same task names
    # with Celery, which warns about the second; a client only sends, so it is harmless here.
    warnings.filterwarnings("ignore", category=DuplicateTaskNameWarning)
    if args.reps < 3:
        print(
            f"note: {args.reps} repetition(s): a smoke check; figures need --reps 3 or more",
            file=sys.stderr,
        )
    work = Path(tempfile.mkdtemp(prefix="jobsys-compare-"))
    server = embedded.RedisServer(work / "redis", persist=False).start()
    databases: list[Database] = []
    redis_version = bench.redis_version(server.url)
    try:
        systems = make_systems(args, work, server.url, databases)
        raw = measure(systems, args, work)
    finally:
        server.stop()
        for database in databases:
            database.drop()
    meta: dict[str, Any] = {
        "machine": {**bench.machine(), "redis": redis_version},
        "jobs": args.jobs,
        "reps": args.reps,
        "roundtrips": args.roundtrips,
    }
    result = report.build(raw, dict(systems), meta)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report.print_table(result)


if __name__ == "__main__":
    main()
