"""Run priorities on a real broker and real ``jobsys worker`` processes: 0 (lowest) to 9
(highest), the higher first, then in the order submitted (README "Priorities").

Each test queues a mixed backlog (priorities 0, 2, 5, 8 and 9, four runs each, submitted in a
shuffled order) while no worker takes anything: none runs yet, or each worker process is held
busy by a ``tests.gated`` run until the test opens the gate. Priority 5 is ``tests.effect``'s
default and 8 ``tests.urgent``'s (``@job(priority=8)``); the others are given per submit. The
order is read from when each run's body started (``tests.jobs.record_effect``: one line per
execution, with the process that ran it).

A worker process (inline pool) takes one message at a time (``JOBSYS_PREFETCH=1``) and takes
the next only once the run it holds has ended; a busy process holds only its running run, so
nothing of the backlog is prefetched before the gate opens.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobsys.service.client import SubmitOptions
from jobsys.store.runs import RunState
from tests.cluster import Cluster, cluster
from tests.waiting import NotYet, eventually

PRIORITIES = (0, 2, 5, 8, 9)
PER_PRIORITY = 4


@pytest.fixture
def graceful(tmp_path: Path, redis_url: str, database_url: str | None) -> Iterator[Cluster]:
    """A cluster whose workers hand their runs back soon after they are asked to stop."""
    with cluster(tmp_path, redis_url, database_url, JOBSYS_SHUTDOWN_GRACE_SECONDS="0.5") as c:
        yield c


def backlog(c: Cluster, seed: int, seconds: float = 0.0) -> list[tuple[str, int]]:
    """Submit ``PER_PRIORITY`` runs of each priority in a shuffled order: (run id, priority)
    of each, in the order submitted."""
    order = [p for p in PRIORITIES for _ in range(PER_PRIORITY)]
    random.Random(seed).shuffle(order)
    made = []
    for p in order:
        if p == 5:  # tests.effect's own (the default)
            run_id = c.client.submit("tests.effect", {"seconds": seconds})
        elif p == 8:  # tests.urgent's own
            run_id = c.client.submit("tests.urgent", {"seconds": seconds})
        else:
            options = SubmitOptions(priority=p)
            run_id = c.client.submit("tests.effect", {"seconds": seconds}, options)
        made.append((run_id, p))
    return made


def by_priority(made: list[tuple[str, int]]) -> list[str]:
    """The order the runs must start in: the higher priority first, then first submitted."""
    return [run_id for run_id, _ in sorted(made, key=lambda m: -m[1])]


def executions(c: Cluster, run_ids: list[str]) -> list[tuple[float, str, int, int]]:
    """Every execution of these runs, in the order their bodies started: (time, run id,
    attempt, process id)."""
    found = []
    for run_id in run_ids:
        path = c.effects / run_id
        for line in path.read_text().splitlines() if path.exists() else []:
            attempt, pid, at, *_ = line.split()
            found.append((float(at), run_id, int(attempt), int(pid)))
    return sorted(found)


def started(c: Cluster, run_ids: list[str]) -> list[str]:
    return [run_id for _, run_id, _, _ in executions(c, run_ids)]


def shown(order: list[str], made: list[tuple[str, int]]) -> str:
    """An order as each run's priority and place in the submission (``9#3``: the fourth run
    submitted, at priority 9): what a failure shows."""
    place = {run_id: (p, i) for i, (run_id, p) in enumerate(made)}
    return " ".join(f"{place[r][0]}#{place[r][1]}" if r in place else r[:8] for r in order)


def assert_order(observed: list[str], expected: list[str], made: list[tuple[str, int]]) -> None:
    assert observed == expected, (
        f"\nstarted  {shown(observed, made)}\nexpected {shown(expected, made)}"
    )


def gate_closed(c: Cluster, tmp: Path, count: int, priority: int = 5) -> tuple[Path, list[str]]:
    """``count`` runs of ``tests.gated``, each holding a worker process until the gate opens
    (the gate's path, and their run ids); returns once all of them run."""
    gate = tmp / "gate"
    options = SubmitOptions(priority=priority)
    blockers = [c.client.submit("tests.gated", {"path": str(gate)}, options) for _ in range(count)]
    eventually(
        lambda: (
            all(c.store.get(r).state is RunState.RUNNING for r in blockers)
            or NotYet({r: c.store.get(r).state.value for r in blockers})
        ),
        60,
        what="every worker process to be busy",
    )
    return gate, blockers


def test_each_priority_has_its_list_the_highest_read_first(fresh: Cluster) -> None:
    """kombu's Redis transport reads a queue's lists lowest step first (``jobs``, then
    ``jobs\\x06\\x161`` ... ``jobs\\x06\\x169``): priority 9 is step 0, the default 5 step 4,
    0 step 9."""
    for p in (0, 5, 9):
        fresh.client.submit("tests.effect", {}, SubmitOptions(priority=p))
    fresh.client.submit("tests.urgent", {})  # its job's own priority, 8
    lists = {k.decode(): int(fresh.redis.llen(k)) for k in fresh.redis.scan_iter(b"jobs*")}
    assert lists == {"jobs": 1, "jobs\x06\x161": 1, "jobs\x06\x164": 1, "jobs\x06\x169": 1}


def test_one_node_drains_a_backlog_by_priority_then_in_order(fresh: Cluster) -> None:
    """A backlog queued while no worker runs, drained by one worker process: exactly by
    priority, then in the order submitted."""
    made = backlog(fresh, seed=1)
    ids = [r for r, _ in made]
    assert fresh.queue_length() == len(made)  # all of it waits in Redis
    fresh.start_worker("w1", concurrency=1)
    fresh.wait_all(ids, timeout=90)
    assert_order(started(fresh, ids), by_priority(made), made)


def test_two_nodes_drain_a_backlog_by_priority(fresh: Cluster, tmp_path: Path) -> None:
    """Two worker nodes (one process each), busy while the backlog is queued, drain it by
    priority. Both take the highest message waiting each time they take one, so the order
    in which the runs *leave Redis* is exactly by priority then submission; the order in
    which they *start* may differ from it only where the two processes took messages at
    nearly the same time (one took the next message while the other had taken its own but
    not yet started it). Asserted:

    - each process started its runs exactly in the order by priority then submission;
    - every run started within one place (nodes - 1) of its place in that order: no run of
      priority p started after a run of lower priority queued at the same time, except the
      one run the other process took meanwhile;
    - both processes took part.

    Each run's body lasts 0.2 s, so a process that took a message starts it well before the
    other one can finish a run and take another."""
    fresh.start_worker("w1", concurrency=1)
    fresh.start_worker("w2", concurrency=1)
    gate, _ = gate_closed(fresh, tmp_path, 2)
    made = backlog(fresh, seed=2, seconds=0.2)
    ids = [r for r, _ in made]
    assert fresh.queue_length() == len(made)  # nothing of it prefetched by the busy processes
    gate.touch()
    fresh.wait_all(ids, timeout=90)
    expected = by_priority(made)
    runs = executions(fresh, ids)
    observed = [run_id for _, run_id, _, _ in runs]
    processes = {pid for _, _, _, pid in runs}
    assert len(processes) == 2, f"one process ran everything: {runs}"
    for pid in processes:
        mine = [run_id for _, run_id, _, p in runs if p == pid]
        assert_order(mine, [r for r in expected if r in mine], made)
    places = {run_id: i for i, run_id in enumerate(expected)}
    moved = [shown([r], made) for i, r in enumerate(observed) if abs(places[r] - i) > 1]
    assert not moved, (
        f"\nstarted  {shown(observed, made)}\nexpected {shown(expected, made)}\n"
        f"more than one place away: {moved}"
    )


def test_a_retried_run_keeps_its_priority(fresh: Cluster) -> None:
    """A run submitted at priority 9 (its job's default is 5) fails its first attempt; its
    retry (no backoff) is queued at priority 9 again: behind the runs of priority 9 waiting
    then, as a new message of that priority, and ahead of every lower one."""
    flaky = fresh.client.submit("tests.fail_once", {}, SubmitOptions(priority=9))
    made = backlog(fresh, seed=3)
    ids = [flaky, *(r for r, _ in made)]
    fresh.start_worker("w1", concurrency=1)
    records = fresh.wait_all(ids, timeout=90)
    assert records[0].state is RunState.COMPLETED and records[0].attempts == 2
    assert records[0].priority == 9
    observed = started(fresh, ids)  # (the flaky run twice: both its attempts)
    nines = [r for r in by_priority(made) if dict(made)[r] == 9]
    lower = [r for r in by_priority(made) if dict(made)[r] < 9]
    assert_order(observed, [flaky, *nines, flaky, *lower], [(flaky, 9), *made])


def test_a_run_requeued_by_the_reaper_keeps_its_priority(fresh: Cluster, tmp_path: Path) -> None:
    """A run at priority 9 (its job's default is 5) whose worker is killed is requeued by the
    reaper once its lease expires, at priority 9 and at the front of that priority's list: it
    runs before the backlog queued meanwhile, priority 9 included."""
    fresh.start_worker("w1", concurrency=1)
    fresh.start_worker("w2", concurrency=1)
    gate, (one, two) = gate_closed(fresh, tmp_path, 2, priority=9)
    made = backlog(fresh, seed=4)
    victim, blocker = one, two  # the one whose node is killed; the one that keeps its node
    node = str(fresh.store.get(victim).worker).split("@")[0].rsplit("-", 1)[0]
    survivor = "w2" if node == "w1" else "w1"
    fresh.kill(node)
    requeued = eventually(
        lambda: (
            ((r := fresh.store.get(victim)).state is RunState.PENDING and r.attempts == 1) or None
        ),
        30,
        what="the reaper to requeue the run of the killed worker",
    )
    assert requeued
    gate.touch()
    ids = [blocker, victim, *(r for r, _ in made)]
    records = fresh.wait_all(ids, timeout=90)
    assert {r.state for r in records} == {RunState.COMPLETED}
    assert records[1].priority == 9 and records[1].worker.startswith(survivor)
    runs = [(run_id, attempt) for _, run_id, attempt, _ in executions(fresh, ids[1:])]
    assert runs[0] == (victim, 1)  # on the killed node
    observed = [r for r, _ in runs[1:]]
    assert_order(observed, [victim, *by_priority(made)], [(victim, 9), *made])


def test_a_handed_back_run_keeps_its_priority(graceful: Cluster, tmp_path: Path) -> None:
    """A worker asked to stop hands its running run back (pending again, a new message): at
    the run's own priority (9; its job's default is 5), so it runs before the backlog."""
    c = graceful
    c.start_worker("w1", concurrency=1)
    gate, (handed,) = gate_closed(c, tmp_path, 1, priority=9)
    made = backlog(c, seed=5)
    c.stop("w1")  # SIGTERM: the run gets the grace (0.5 s), then is handed back
    record = c.wait_state(handed, RunState.PENDING, timeout=30)
    assert record.priority == 9
    gate.touch()
    c.start_worker("w2", concurrency=1)
    ids = [handed, *(r for r, _ in made)]
    c.wait_all(ids, timeout=90)
    runs = [(run_id, attempt) for _, run_id, attempt, _ in executions(c, ids)]
    assert runs[0] == (handed, 1)  # the attempt that was handed back
    assert_order([r for r, _ in runs[1:]], [handed, *by_priority(made)], [(handed, 9), *made])
