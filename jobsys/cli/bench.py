"""``jobsys bench``: measure an installation (throughput, latency, queries, schedules)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from jobsys.base import config
from jobsys.cli.base import emit_json, handle_errors, main, out

SCENARIOS = ("throughput", "latency", "batch", "queries", "schedules")


@main.command()
@click.option(
    "--jobs",
    "n_jobs",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="No-op jobs per throughput run.",
)
@click.option("--roundtrips", type=click.IntRange(1), default=500, show_default=True)
@click.option(
    "--schedules",
    "n_schedules",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Active schedules of the schedule-lag scenario (it runs beat for 75 s).",
)
@click.option(
    "--rows",
    type=click.IntRange(1),
    default=1_000_000,
    show_default=True,
    help="Run records in the query benchmark's table.",
)
@click.option(
    "--query-db",
    "query_dbs",
    multiple=True,
    help="Database URL for the query scenario (rows are inserted: use a scratch "
    "database). Default: a scratch SQLite file.",
)
@click.option(
    "--only", "only", multiple=True, type=click.Choice(SCENARIOS), help="Run only these scenarios."
)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def bench(
    n_jobs: int,
    roundtrips: int,
    n_schedules: int,
    rows: int,
    query_dbs: tuple[str, ...],
    only: tuple[str, ...],
    as_json: bool,
) -> None:
    """Measure throughput, latency, batch enqueue, record queries and worker memory."""
    import tempfile
    from pathlib import Path

    from jobsys.ops import bench as b  # on first use: only `jobsys bench` needs them
    from jobsys.ops import bench_queries as bq

    settings = config.Settings.from_env()
    target = b.JobsysTarget(settings)
    chosen = only or SCENARIOS
    report: dict[str, Any] = {"machine": b.machine()}
    if set(chosen) - {"queries"}:  # the query scenario needs no broker
        report["machine"]["redis"] = b.redis_version(settings.resolved_broker_url())
        report["machine"]["database"] = bq.database_version(settings.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="jobsys-bench-"))
    if "throughput" in chosen:
        report["throughput"] = {str(p): b.throughput(target, n_jobs, p, workdir) for p in (1, 2)}
    if "latency" in chosen:
        report["latency_ms"] = b.latency(target, roundtrips, workdir)
    if "batch" in chosen:
        report["batch_enqueue"] = b.batch_enqueue(target, n_jobs)
    if "schedules" in chosen:
        report["schedule_lag"] = b.schedule_lag(target, n_schedules, workdir)
    if "queries" in chosen:
        report["queries_ms"] = {
            bq.database_version(url): bq.queries(url, rows)
            for url in (query_dbs or (bq.sqlite_scratch(),))
        }
    if as_json:
        emit_json(report)
        return
    _print_bench(report)


def _print_bench(report: dict[str, Any]) -> None:
    out.print(" ".join(f"{k}={v}" for k, v in report["machine"].items()))
    for section, value in report.items():
        if section == "machine":
            continue
        rows = value if all(isinstance(v, dict) for v in value.values()) else {"": value}
        columns = list(next(iter(rows.values())))
        cells = [v for row in rows.values() for v in row.values() if isinstance(v, dict)]
        # Cells that are figures of their own (a query's p50 and p99) show as "a / b".
        title = f"{section} ({' / '.join(cells[0])})" if cells else section
        table = Table(title=title)
        table.add_column("")
        for c in columns:
            table.add_column(c, justify="right")
        for name, row in rows.items():
            table.add_row(name, *(_cell(row[c]) for c in columns))
        out.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return " / ".join(str(v) for v in value.values())
    return str(value)
