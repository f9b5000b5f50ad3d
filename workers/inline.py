"""One inline worker process: Celery's worker on the solo pool, jobs run in this process.

Started by the jobsys supervisor (``jobsys worker``), one per unit of concurrency. It starts
the worker through ``app.Worker`` rather than Celery's command line, which would load 9 MiB of
shell, completion and REPL modules into every process for nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from celery.utils.nodenames import default_nodename, host_format


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
