"""What the multi-host scenarios assert, from outside jobsys.

A ``Watcher`` samples the run records of a scenario (every run made since it started) every
0.2 s over a connection of its own, straight to PostgreSQL (not through the cut-able path the
hosts use), and keeps each run's history of changes. From it, and from the nodes' execution
ledgers (``tests.cluster.jobs``), ``Outcome`` tells:

- **lost**: a run that did not end ``completed``, or whose completion no execution wrote (no
  ``end`` in the ledger of the node and attempt its record names);
- **stuck**: a run not finished when the scenario stopped waiting;
- **double terminal**: a record that changed after it was first seen finished;
- **regressions**: a state change the state machine cannot make (even in several steps), or
  attempts or the message token going down;
- **same attempt twice**: one attempt of a run executed twice (two ``start`` lines);
- executions per run, and the time to recover: from the end of the fault to the last finish.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import json
import re
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobsys.store import database, runs

FIELDS = ("state", "attempts", "dispatch", "lost", "worker", "finished_at", "output", "error")


def _reachable() -> dict[str, set[str]]:
    reach: dict[str, set[str]] = {}
    for start in runs.RunState:
        seen, todo = set(), [start]
        while todo:
            for nxt in runs.ALLOWED[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start.value] = {s.value for s in seen}
    return reach


REACHABLE = _reachable()


class Watcher:
    """Samples the records of runs made at or after ``since`` until ``stop``."""

    def __init__(self, url: str, since: dt.datetime, interval: float = 0.2) -> None:
        self.engine = database.make_engine(url)
        self.since = since
        self.interval = interval
        self.history: dict[str, list[tuple[Any, ...]]] = collections.defaultdict(list)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        columns = [runs.T.c.id, *(runs.T.c[f] for f in FIELDS)]
        query = sa.select(*columns).where(runs.T.c.created_at >= self.since)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
        except sa.exc.SQLAlchemyError as exc:  # noted; the next sample tries again
            self.errors.append(str(exc).splitlines()[0])
            return
        for row in rows:
            seen = tuple(row[1:])
            history = self.history[row[0]]
            if not history or history[-1] != seen:
                history.append(seen)

    def stop(self) -> None:
        """Stop sampling, after one last sample (once; later calls do nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        self.sample()
        self.engine.dispose()

    def double_terminal(self) -> list[str]:
        """Runs whose record changed after it was first seen finished."""
        return [
            run_id
            for run_id, history in self.history.items()
            if any(h[0] in {s.value for s in runs.TERMINAL} for h in history[:-1])
        ]

    def regressions(self) -> list[str]:
        """``run: before -> after`` for each impossible change between two samples."""
        found = []
        for run_id, history in self.history.items():
            for a, b in itertools.pairwise(history):
                state_back = b[0] != a[0] and b[0] not in REACHABLE[a[0]]
                if state_back or b[1] < a[1] or b[2] < a[2]:
                    found.append(f"{run_id}: {a[:3]} -> {b[:3]}")
        return found


@dataclasses.dataclass
class Entry:
    """One ledger line."""

    run_id: str
    node: str
    attempt: int
    event: str
    at: float


def read_ledgers(folder: Path) -> list[Entry]:
    entries = []
    for path in sorted(folder.glob("*.ledger")):
        for line in path.read_text().splitlines():
            run_id, node, attempt, event, at = line.split()
            entries.append(Entry(run_id, node, int(attempt), event, float(at)))
    return entries


@dataclasses.dataclass
class Outcome:
    """A scenario's figures; ``violations`` lists what broke an invariant (empty: passed)."""

    scenario: str
    runs: int
    executions: dict[str, int]
    """Run id -> executions (``start`` lines in the ledgers)."""
    lost: list[str]
    stuck: list[str]
    double_terminal: list[str]
    regressions: list[str]
    same_attempt_twice: list[str]
    recovery_s: float | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def per_run(self) -> dict[int, int]:
        """Executions per run -> how many runs had that many."""
        return dict(sorted(collections.Counter(self.executions.values()).items()))

    @property
    def violations(self) -> dict[str, list[str]]:
        found = {
            "lost": self.lost,
            "stuck": self.stuck,
            "double terminal": self.double_terminal,
            "regressions": self.regressions,
            "same attempt executed twice": self.same_attempt_twice,
        }
        return {k: v for k, v in found.items() if v}

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "runs": self.runs,
            "executions_per_run": {str(k): v for k, v in self.per_run.items()},
            "lost": len(self.lost),
            "stuck": len(self.stuck),
            "double_terminal": len(self.double_terminal),
            "regressions": len(self.regressions),
            "same_attempt_twice": len(self.same_attempt_twice),
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "extra": self.extra,
            "violations": {k: v[:10] for k, v in self.violations.items()},
        }

    def report(self, folder: Path, test: str, passed: bool) -> dict[str, Any]:
        """Print the figures and write them to ``folder/cluster-report.json``; ``test``: the
        test's node id, ``passed``: its result. Returns them."""
        summary = {"test": test, "passed": passed, **self.summary()}
        (folder / "cluster-report.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\n[cluster] {json.dumps(summary)}")
        return summary

    def assert_clean(self) -> None:
        assert not self.violations, f"{self.scenario}: {self.violations}"


def node_of(worker: str | None) -> str:
    """The node of a record's ``worker`` (``n1-2@host`` or ``n1@host`` -> ``n1``)."""
    return re.split("[-@]", worker or "")[0]


def _completed_by_its_attempt(record: runs.RunRecord, ends: set[tuple[str, str, int]]) -> bool:
    """Completed, and the ledger of the node and attempt the record names has an ``end``."""
    done = record.state is runs.RunState.COMPLETED
    return done and (record.id, node_of(record.worker), record.attempts) in ends


def outcome(
    scenario: str,
    records: list[runs.RunRecord],
    stuck: list[str],
    watcher: Watcher,
    ledger: list[Entry],
    fault_cleared: dt.datetime | None,
) -> Outcome:
    """The figures of a scenario from its final records, the watcher's history and the
    ledgers; ``fault_cleared``: when the fault ended (None: no fault)."""
    starts = collections.Counter((e.run_id, e.attempt) for e in ledger if e.event == "start")
    ends = {(e.run_id, e.node, e.attempt) for e in ledger if e.event == "end"}
    executions = {r.id: sum(n for (i, _), n in starts.items() if i == r.id) for r in records}
    lost = [r.id for r in records if r.id not in stuck and not _completed_by_its_attempt(r, ends)]
    finished = [r.finished_at for r in records if r.finished_at is not None]
    recovery = None
    if fault_cleared is not None and finished:
        recovery = max(0.0, (max(finished) - fault_cleared).total_seconds())
    return Outcome(
        scenario=scenario,
        runs=len(records),
        executions=executions,
        lost=lost,
        stuck=stuck,
        double_terminal=watcher.double_terminal(),
        regressions=watcher.regressions(),
        same_attempt_twice=[f"{i} attempt {a}" for (i, a), n in starts.items() if n > 1],
        recovery_s=recovery,
    )
