"""One inline worker process: Celery's worker on the solo pool, jobs run in this process.

Forked by the jobsys supervisor (``jobsys worker``), one per unit of concurrency, which calls
``preload`` once before forking and ``main`` in each child; ``python -m workers.inline`` runs
one on its own. It starts the worker through ``app.Worker`` rather than Celery's command line,
which would load 9 MiB of shell, completion and REPL modules into every process for nothing.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from celery.utils.nodenames import default_nodename, host_format

from jobsys.store import database

PRELOADED = (
    "celery.apps.worker",
    "celery.backends.redis",
    "celery.concurrency.solo",
    "celery.worker",
    "kombu.transport.redis",
    "jobsys.engine.broker",
    "jobsys.worker.execute",
)
"""Library modules every worker process imports; none of them connects to anything, starts a
thread or reads a setting when imported."""


POSTGRESQL = ("psycopg", "psycopg.types.json", "sqlalchemy.dialects.postgresql.psycopg")
"""The driver and dialect of a run store on PostgreSQL (9 MiB of a process's own memory when
each worker process imports them)."""


def preload(database_url: str) -> None:
    """Import the libraries of a worker process (in the supervisor, before it forks), the
    database driver of ``database_url`` among them."""
    postgresql = POSTGRESQL if database.is_postgresql(database_url) else ()
    for module in PRELOADED + postgresql:
        importlib.import_module(module)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.inline")
    parser.add_argument("--hostname", default=None, help="node name, e.g. worker1-1@%%h")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--queues", default=None, help="comma-separated queues (default all)")
    args = parser.parse_args(argv)

    from workers.app import app

    worker = app.Worker(
        hostname=host_format(default_nodename(args.hostname)),
        pool_cls="solo",
        loglevel=args.loglevel,
        queues=args.queues.split(",") if args.queues else None,
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
    )
    worker.start()
    return int(worker.exitcode or 0)


if __name__ == "__main__":
    raise SystemExit(main())
