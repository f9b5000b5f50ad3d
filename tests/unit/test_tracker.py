"""The worker's tracker of logs and progress, with a stand-in store (no database)."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from jobsys.store import runs
from jobsys.worker import context


class SlowStore:
    """Records writes; a progress write waits until ``release`` is set."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.writing = threading.Event()
        self.release = threading.Event()

    def write_logs(self, lines: list[dict[str, Any]]) -> None:
        pass

    def write_progress(self, run_id: str, value: dict[str, Any]) -> None:
        self.writing.set()
        assert self.release.wait(10)
        self.events.append(f"progress {value['pct']} written")


def writing_in_background(pct: float) -> tuple[SlowStore, context.Tracker, threading.Thread]:
    """A tracker whose background flush is in the middle of writing a run's progress."""
    store = SlowStore()
    tracker = context.Tracker(cast(runs.RunStore, store), lease=30, heartbeat=5, cancel_grace=5)
    tracker.set_progress("r1", {"pct": pct})
    background = threading.Thread(target=tracker.flush)
    background.start()
    assert store.writing.wait(10)
    return store, tracker, background


def test_the_flush_that_ends_a_run_waits_for_one_already_writing() -> None:
    """The background thread's flush took the run's last progress and is writing it; the
    flush at the end of the body must not return (and the run complete) before that write:
    the write, guarded on a running run, would be lost (seen: a completed run at 90 %)."""
    store, tracker, background = writing_in_background(100.0)

    def end_of_body() -> None:
        tracker.flush()
        store.events.append("run ended")

    ending = threading.Thread(target=end_of_body)
    ending.start()
    time.sleep(0.2)  # time for it to return early, if it could
    store.release.set()
    background.join(10)
    ending.join(10)
    assert store.events == ["progress 100.0 written", "run ended"]


def test_a_flush_that_cannot_start_in_time_gives_up() -> None:
    store, tracker, background = writing_in_background(50.0)
    tracker.flush(timeout=0.05)  # as the hard time limit does before ending the process
    assert store.events == []
    store.release.set()
    background.join(10)
    assert store.events == ["progress 50.0 written"]
