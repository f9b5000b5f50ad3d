"""What a running job sees (``JobContext``) and the per-process ``Tracker`` behind it.

The tracker is one background thread per worker process. It keeps the leases of the runs the
process executes alive (the heartbeat), writes their buffered logs and progress, and notices
cancellation requests. Job bodies never wait on the database to log or report progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from jobsys.base import errors, sealing
from jobsys.declare import permissions
from jobsys.store import runs

log = logging.getLogger("jobsys.context")

MAX_LOG_CHARS = 10_000
CANCEL_SIGNAL = signal.SIGUSR2
HARD_LIMIT_EXIT = 70
"""Exit status of a worker process ended by a job's hard time limit."""


@dataclasses.dataclass(eq=False)
class JobContext:
    """Handed to a job body: who and what this run is, and how to report back."""

    run_id: str
    job: str
    attempt: int
    """1 on the first attempt."""
    principal: permissions.Principal
    """Who asked: the submitter, or for a scheduled run the schedule's creator."""
    metadata: dict[str, Any]
    schedule_id: str | None = None
    """The schedule that made this run, if one did."""
    fire_at: dt.datetime | None = None
    """The fire (the cadence's time, UTC) this run belongs to."""
    trigger: str | None = None
    """``scheduled``, ``manual`` or ``catch-up``."""
    dependencies: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The outputs of the runs this one depended on, by run id."""
    _schedules: ScheduleControl | None = dataclasses.field(default=None, repr=False)
    _tracker: Tracker | None = dataclasses.field(default=None, repr=False)
    _redact: sealing.Redactor = dataclasses.field(default=sealing.NOTHING, repr=False)
    """Replaces the run's secret input values in what it logs and reports."""
    _cancel_requested_at: float | None = dataclasses.field(default=None, repr=False)

    def log(self, message: str) -> None:
        """Store a timestamped line with the run (visible in ``jobsys runs logs``)."""
        line = {
            "run_id": self.run_id,
            "attempt": self.attempt,
            "at": runs.utcnow(),
            "message": runs.without_nul(self._redact.text(str(message))[:MAX_LOG_CHARS]),
        }
        if self._tracker is not None:
            self._tracker.add_log(line)

    def logs(self) -> list[runs.LogLine]:
        """This run's log lines so far, of every attempt, oldest first: what ``jobsys runs
        logs`` shows, with the lines this attempt logged until now (they are written first).
        A resumed or retried attempt reads what the ones before it noted."""
        if self._tracker is None:
            return []
        self._tracker.flush()
        return self._tracker.store.logs(self.run_id)

    def progress(self, pct: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress: ``pct`` from 0 to 100, optionally of ``total`` items, with a note."""
        value = {
            "pct": max(0.0, min(100.0, float(pct))),
            "total": total,
            "message": runs.without_nul(self._redact.text(message)) if message else message,
            "at": runs.utcnow().isoformat(),
        }
        if self._tracker is not None:
            self._tracker.set_progress(self.run_id, value)

    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel this run; stop soon, or be interrupted."""
        return self._cancel_requested_at is not None

    def check_cancelled(self) -> None:
        """Raise ``RunCancelled`` if this run was cancelled (a convenient place to stop)."""
        if self.cancelled:
            raise errors.RunCancelled(f"run {self.run_id} was cancelled")

    # --- for runs a schedule made ----------------------------------------------------------

    def update_metadata(self, **changes: Any) -> None:
        """Merge ``changes`` into this run's metadata and into the schedule's, so that the
        next fire's run starts with them (state carried from one fire to the next)."""
        schedule_id, control = self._schedule("update_metadata")
        control.merge_metadata(schedule_id, changes)
        self.metadata.update(changes)

    def deactivate(self) -> None:
        """Pause this run's schedule: no further fires until someone resumes it."""
        schedule_id, control = self._schedule("deactivate")
        control.pause(schedule_id)

    def done(self, result: Any = None) -> None:
        """End this run's schedule as completed (an ``ongoing`` schedule's job found what it
        was waiting for); ``result`` is kept with the schedule."""
        schedule_id, control = self._schedule("done")
        control.finish(schedule_id, result)

    def _schedule(self, action: str) -> tuple[str, ScheduleControl]:
        if self.schedule_id is None or self._schedules is None:
            raise errors.NotScheduled(
                f"{action}() needs a run made by a schedule; run {self.run_id} was submitted"
            )
        return self.schedule_id, self._schedules


class ScheduleControl(Protocol):
    """What a scheduled run may do to its schedule (``schedules.ScheduleStore``)."""

    def merge_metadata(self, schedule_id: str, changes: dict[str, Any]) -> None: ...
    def pause(self, schedule_id: str, tenant: str | None = None) -> Any: ...
    def finish(self, schedule_id: str, result: Any = None) -> None: ...


class Tracker:
    """Heartbeats, buffered logs and progress, and cancellation for one process's runs."""

    def __init__(
        self,
        store: runs.RunStore,
        lease: float,
        heartbeat: float,
        cancel_grace: float,
        tick: float = 0.25,
    ) -> None:
        self.store, self.lease, self.heartbeat_every = store, lease, heartbeat
        self.cancel_grace, self.tick = cancel_grace, tick
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._held: dict[str, JobContext] = {}
        self._logs: list[dict[str, Any]] = []
        self._progress: dict[str, dict[str, Any]] = {}
        self._current: str | None = None
        self._main = threading.main_thread().ident
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_beat = 0.0
        self._last_renew = 0.0
        self._hard_deadline: tuple[str, float, float] | None = None
        self._hand_back_at: float | None = None
        self._handing_back = False

    # --- used by the executing thread ------------------------------------------------------

    @contextlib.contextmanager
    def holding(self, ctx: JobContext, hard_limit: float | None = None) -> Iterator[None]:
        """Keep ``ctx``'s run alive while the body runs; flush its logs and progress after.

        With ``hard_limit`` (seconds), a body still running that long after it started ends
        this whole process: the job ignored its soft limit, and only a new process is safe.
        """
        ctx._tracker = self
        self._ensure_thread()
        with self._lock:
            self._held[ctx.run_id] = ctx
            self._current = ctx.run_id
            if hard_limit is not None:
                self._hard_deadline = (ctx.run_id, time.monotonic() + hard_limit, hard_limit)
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(ctx.run_id, None)
                self._current = None
                self._hard_deadline = None
            self.flush()

    def add_log(self, line: dict[str, Any]) -> None:
        with self._lock:
            self._logs.append(line)

    def set_progress(self, run_id: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._progress[run_id] = value

    def install_cancel_handler(self) -> None:
        """Let the tracker interrupt the main thread of this process to stop a cancelled run."""
        signal.signal(CANCEL_SIGNAL, self._on_cancel_signal)

    def _on_cancel_signal(self, signum: int, frame: Any) -> None:
        current = self._current
        ctx = self._held.get(current) if current else None
        if ctx is not None and self._handing_back:
            raise errors.HandBack(f"run {ctx.run_id}: its worker is stopping")
        if ctx is not None and ctx.cancelled:
            raise errors.RunCancelled(f"run {ctx.run_id} was cancelled")

    def stop_within(self, grace: float) -> None:
        """This process is stopping: a run it still executes ``grace`` seconds from now is
        interrupted (``HandBack`` in the body), to be handed back. Safe in a signal handler."""
        if self._hand_back_at is None:
            self._hand_back_at = time.monotonic() + grace

    # --- the background thread -------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="jobsys-tracker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            self._enforce_hard_limit()
            self._enforce_hand_back()
            try:
                self.flush()
                if time.monotonic() - self._last_beat >= min(self.heartbeat_every, 1.0):
                    self.beat()
                self.store.checkpoint()
            except Exception:  # the database may be briefly away; keep trying
                log.exception(
                    "jobsys tracker: heartbeat failed", extra={"action": "heartbeat_error"}
                )

    def _enforce_hard_limit(self) -> None:
        hard = self._hard_deadline
        if hard is None or time.monotonic() < hard[1]:
            return
        run_id, _, seconds = hard
        log.error(
            "jobsys: Hard time limit (%g s) exceeded by run %s; ending worker process %d",
            seconds,
            run_id,
            os.getpid(),
            extra={"action": "hard_time_limit", "run_id": run_id},
        )
        with contextlib.suppress(Exception):
            self.flush(timeout=1.0)  # (not stuck behind a flush that hangs)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(HARD_LIMIT_EXIT)

    def _enforce_hand_back(self) -> None:
        at = self._hand_back_at
        if at is None or self._handing_back or time.monotonic() < at:
            return
        with self._lock:
            current = self._current
        if current is None or self._main is None:
            return
        log.warning(
            "jobsys: shutdown grace over; handing back run %s",
            current,
            extra={"action": "hand_back", "run_id": current},
        )
        self._handing_back = True
        signal.pthread_kill(self._main, CANCEL_SIGNAL)

    def flush(self, timeout: float = -1) -> None:
        """Write the buffered logs and progress; one flush at a time. The flush that ends a
        run waits for one the background thread is in the middle of: that one may hold the
        run's last progress, whose write (guarded on a running run) would otherwise come
        after the run completed, and be lost. ``timeout``: give up waiting after that long."""
        if not self._flushing.acquire(timeout=timeout):
            return
        try:
            with self._lock:
                lines, self._logs = self._logs, []
                progress, self._progress = self._progress, {}
            try:
                self.store.write_logs(lines)
                for run_id, value in progress.items():
                    self.store.write_progress(run_id, value)
            except Exception:
                with self._lock:  # put them back for the next tick
                    self._logs[:0] = lines
                    for run_id, value in progress.items():
                        self._progress.setdefault(run_id, value)
                raise
        finally:
            self._flushing.release()

    def beat(self, now: dt.datetime | None = None) -> None:
        """Renew leases; mark cancelled runs; interrupt one past its cancel grace."""
        self._last_beat = time.monotonic()
        renew = self._last_beat - self._last_renew >= self.heartbeat_every
        with self._lock:
            held = [(c.run_id, c.attempt) for c in self._held.values()]
        cancel = self.store.heartbeat(held, self.lease if renew else None, now)
        if renew:
            self._last_renew = self._last_beat
        for run_id in cancel:
            ctx = self._held.get(run_id)
            if ctx is None:
                continue
            if ctx._cancel_requested_at is None:
                ctx._cancel_requested_at = time.monotonic()
            elif time.monotonic() - ctx._cancel_requested_at >= self.cancel_grace:
                self._interrupt(run_id)

    def _interrupt(self, run_id: str) -> None:
        if self._current == run_id and self._main is not None:
            signal.pthread_kill(self._main, CANCEL_SIGNAL)
