"""Side by side: bare Celery and jobsys, on the same Redis, with the same number of worker
processes and the same delivery guarantees (late acks, results stored), alternating, several
repetitions. Prints medians and the ratio jobsys / bare Celery for each figure.

    python -m tests.benchmarks.compare [--jobs 10000] [--reps 3] [--roundtrips 500]

Runs against the embedded Redis and a scratch SQLite file unless JOBSYS_BROKER_URL /
JOBSYS_DATABASE_URL are set. This is a benchmark (it prints figures), not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import redis
from celery import Celery

from jobsys.base import config, embedded
from jobsys.ops import bench
from tests.cluster import ROOT, with_db


@dataclasses.dataclass
class BareTarget:
    broker_url: str
    result_url: str
    name: str = "celery"
    queue: str = "celery"
    node_prefix: str = "bare"
    _app: Celery | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            os.environ["BARE_BROKER_URL"], os.environ["BARE_RESULT_URL"] = (
                self.broker_url,
                self.result_url,
            )
            from tests.benchmarks.bare_app import app

            self._app = app
        return self._app

    def start_workers(self, processes: int, log: Path) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BARE_BROKER_URL": self.broker_url,
            "BARE_RESULT_URL": self.result_url,
        }
        with log.open("ab") as out:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.benchmarks.bare_app",
                    "worker",
                    "-c",
                    str(processes),
                    "-n",
                    f"{self.node_prefix}@%h",
                    "-l",
                    "WARNING",
                    "-Q",
                    bench.PARKING_QUEUE,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=embedded.die_with_parent,
            )

    def nodes(self, processes: int) -> int:
        return 1  # prefork: one node whatever the number of processes

    def enqueue(self, n: int) -> list[str]:
        noop = self.app.tasks["bare.noop"]
        return [noop.delay().id for _ in range(n)]

    def enqueue_batch(self, n: int) -> list[str]:
        noop = self.app.tasks["bare.noop"]
        with self.app.producer_or_acquire() as producer:
            return [noop.apply_async(producer=producer).id for _ in range(n)]

    def roundtrip(self) -> None:
        self.app.tasks["bare.noop"].delay().get(timeout=30)

    def result_redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.result_url)

    def reset(self) -> None:
        redis.Redis.from_url(self.broker_url).delete("celery")


SCENARIOS = ("throughput", "latency", "batch")


def measure(
    targets: dict[str, bench.Target], args: argparse.Namespace, work: Path, base: str
) -> dict[str, dict[str, list[dict[str, float]]]]:
    figures: dict[str, dict[str, list[dict[str, float]]]] = {t: {} for t in targets}
    for _ in range(args.reps):
        for name, target in targets.items():  # alternate, so drift hits both alike
            runs = figures[name]
            for processes in (1, 2) if "throughput" in args.only else ():
                runs.setdefault(f"throughput_{processes}", []).append(
                    bench.throughput(target, args.jobs, processes, work)
                )
            if "latency" in args.only:
                latency = bench.latency(target, args.roundtrips, work)
                runs.setdefault("latency_ms", []).append(latency)
            if "batch" in args.only:
                batch = bench.batch_enqueue(target, args.jobs)
                runs.setdefault("batch_enqueue", []).append(batch)
            for db in (2, 3, 4, 5):
                redis.Redis.from_url(with_db(base, db)).flushdb()
    return figures


def report(
    figures: dict[str, dict[str, list[dict[str, float]]]], args: argparse.Namespace
) -> dict[str, object]:
    out: dict[str, dict[str, object]] = {}
    for scenario in figures["jobsys"]:
        celery = bench.median_of(figures["celery"][scenario])
        jobsys = bench.median_of(figures["jobsys"][scenario])
        out[scenario] = {
            k: {
                "celery": celery[k],
                "jobsys": jobsys[k],
                "ratio": round(jobsys[k] / celery[k], 2) if celery[k] else None,
            }
            for k in celery
        }
    return {"machine": bench.machine(), "jobs": args.jobs, "reps": args.reps, "figures": out}


def print_table(result: dict[str, object], args: argparse.Namespace) -> None:
    machine = result["machine"]
    assert isinstance(machine, dict)
    print(
        " ".join(f"{k}={v}" for k, v in machine.items()),
        f"jobs={args.jobs} reps={args.reps} (medians)",
    )
    print(f"{'scenario':<16}{'figure':<18}{'celery':>12}{'jobsys':>12}{'ratio':>8}")
    figures = result["figures"]
    assert isinstance(figures, dict)
    for scenario, values in figures.items():
        for k, v in values.items():
            print(f"{scenario:<16}{k:<18}{v['celery']:>12}{v['jobsys']:>12}{v['ratio']!s:>8}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--roundtrips", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="scenarios to run (default: all)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="jobsys-compare-"))
    server = None
    base = os.environ.get("JOBSYS_BROKER_URL")
    if not base:
        server = embedded.RedisServer(work / "redis", persist=False).start()
        base = server.url
    env = {
        "JOBSYS_HOME": str(work / "home"),
        "JOBSYS_BROKER_URL": with_db(base, 2),
        "JOBSYS_RESULT_URL": with_db(base, 3),
        "JOBSYS_DATABASE_URL": os.environ.get("JOBSYS_DATABASE_URL")
        or f"sqlite:///{work / 'runs.db'}",
    }
    os.environ.update(env)
    targets: dict[str, bench.Target] = {
        "celery": BareTarget(with_db(base, 4), with_db(base, 5)),
        "jobsys": bench.JobsysTarget(config.Settings.from_env(env)),
    }
    try:
        figures = measure(targets, args, work, base)
    finally:
        if server is not None:
            server.stop()
    result = report(figures, args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result, args)


if __name__ == "__main__":
    main()
