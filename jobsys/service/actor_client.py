"""``Client.actors``: runs driven from outside. An outside actor (an AI agent, a person,
another service) takes a run of an external job (``@job(..., external=True)``), gets its
input, the notes and log lines of the attempts before (continuity) and a run token, then
reports with that token: heartbeats, progress, log lines, notes, and finally a result
(checked against the job's output model) or a failure.

Who may: taking needs ``execute`` on the job, in the run's tenant (another tenant's run is
not found). Reporting needs the run token of the attempt that holds the run: it names the
run, and the actor it was given to is who acts (the history and the audit log say so). The run
token is bound to the API token that took the run (``Client.token_id``): once that one is
revoked or expires, the run token is refused too (``Unauthenticated``), and the run goes back
when its lease runs out.
Every report renews the lease (``spec.lease``); an actor that goes silent past it loses the
run to the reaper: another attempt waits for an actor, or, its attempts used up, the run
fails as timed out (``store/run_recovery.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import TYPE_CHECKING, Any

import pydantic

from jobsys.base import errors
from jobsys.declare import jobs, permissions
from jobsys.declare.spec import DEFAULT_LEASE
from jobsys.store import actors, rows, runs
from jobsys.store.actors import NOTE_PREFIX

if TYPE_CHECKING:
    from jobsys.service.client import Client

MAX_TEXT = 10_000
"""Characters of a log line, a note, a progress message or an error an actor may send."""
CONTINUITY_LINES = 200
"""The newest log lines of the attempts before that a take hands over (notes: all of them)."""


@dataclasses.dataclass(frozen=True)
class Taken:
    """What an actor gets when it takes a run: everything to do the work and report it."""

    record: runs.RunRecord
    token: str
    lease: float
    notes: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    output_schema: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "run_id": r.id,
            "job": r.job,
            "input": r.input,
            "attempt": r.attempts,
            "max_attempts": r.max_attempts,
            "run_token": self.token,
            "lease": self.lease,
            "lease_expires_at": _iso(r.lease_expires_at),
            "deadline_at": _iso(r.deadline_at),
            "previous_error": r.error,
            "notes": self.notes,
            "logs": self.logs,
            "output_schema": self.output_schema,
        }


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _line(line: runs.LogLine) -> dict[str, Any]:
    text = line.message.removeprefix(NOTE_PREFIX)
    return {"attempt": line.attempt, "at": line.at.isoformat(), "message": text}


def _text(field: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise errors.InvalidInput(
            "report",
            [{"loc": [field], "msg": f"at most {MAX_TEXT} characters", "type": "too_long"}],
            "report",
        )
    return runs.without_nul(value)


def _nonfinite_errors(value: Any) -> list[dict[str, Any]]:
    """Field errors for each NaN or infinity in ``value`` (no JSON: a database refuses it)."""
    out: list[dict[str, Any]] = []
    todo: list[tuple[Any, list[Any]]] = [(value, [])]
    while todo:
        item, loc = todo.pop()
        if isinstance(item, float) and not math.isfinite(item):
            msg = f"{item} is not JSON: use null or a finite number"
            out.append({"loc": loc, "type": "value_error", "msg": msg})
        elif isinstance(item, dict):
            todo.extend((v, [*loc, k]) for k, v in item.items())
        elif isinstance(item, list):
            todo.extend((v, [*loc, i]) for i, v in enumerate(item))
    return out


class ActorClient:
    """Take runs of external jobs and report on them, as ``c``'s principal."""

    def __init__(self, c: Client) -> None:
        self.c = c
        self.store = actors.ActorStore(c.store.engine)

    # --- taking ----------------------------------------------------------------------------

    def take_job(self, job: str) -> Taken:
        """Take the next run of external job ``job`` that waits (highest priority, then
        oldest); ``RunNotFound``-like ``InvalidTransition`` when none waits."""
        spec = self._external(self.c.registry.get(job))
        self.c.allow("execute", spec, target=job)
        now = runs.utcnow()
        for run_id in self.store.next_pending(spec.name, self.c.principal.tenant, now):
            taken = self._take(spec, run_id, now)
            if taken is not None:
                return taken
        raise errors.NothingToTake(spec.name)

    def take_run(self, run_id: str) -> Taken:
        """Take run ``run_id`` (of an external job, waiting for an actor)."""
        record = self.c.store.get(run_id, self.c.principal.tenant)
        spec = self._external(self.c.registry.get(record.job))
        self.c.allow("execute", spec, record.input, target=run_id)
        taken = self._take(spec, run_id, runs.utcnow())
        if taken is None:
            current = self.c.store.get(run_id)
            raise errors.InvalidTransition(run_id, current.state.value, "take")
        return taken

    def _take(self, spec: jobs.JobSpec, run_id: str, now: dt.datetime) -> Taken | None:
        lease = spec.lease or DEFAULT_LEASE
        actor = self.c.principal.model_dump(mode="json")
        got = self.store.take(run_id, actor, lease, spec.timeout, now, self.c.token_id)
        if got is None:
            return None
        earlier = [line for line in self.c.store.logs(run_id) if line.attempt < got.record.attempts]
        notes = [_line(x) for x in earlier if x.message.startswith(NOTE_PREFIX)]
        logs = [_line(x) for x in earlier[-CONTINUITY_LINES:]]
        self.c.audit.record(self.c.principal, "take", run_id, "allowed", f"job {spec.name}")
        return Taken(got.record, got.token, lease, notes, logs, spec.output_schema())

    def _external(self, spec: jobs.JobSpec) -> jobs.JobSpec:
        if not spec.external:
            raise errors.NotExternal(spec.name)
        return spec

    # --- reporting (with the run token) -----------------------------------------------------

    def _holder(self, run_id: str, token: str) -> tuple[runs.RunRecord, jobs.JobSpec, str]:
        """The run a token holds (it must be ``run_id``), its job, and the actor's id."""
        held, actor = self.store.holder(token)
        if held.id != run_id:
            raise errors.PermissionDenied(
                str(actor.get("id")),
                "report on",
                held.job,
                f"the run token is for run {held.id}, not {run_id}",
            )
        who = permissions.Principal.model_validate(actor)
        spec = self.c.registry.scoped(held.tenant).get(held.job)
        return held, spec, who.id

    def report(
        self,
        run_id: str,
        token: str,
        pct: float | None = None,
        message: str | None = None,
        log: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """A heartbeat, with any of: progress (``pct`` 0-100, ``message``), a log line, a
        note (a log line the next attempt's actor is given). Renews the lease."""
        held, spec, _ = self._holder(run_id, token)
        lines = []
        if log is not None:
            lines.append(_text("log", log))
        if note is not None:
            lines.append(NOTE_PREFIX + _text("note", note))
        if lines:
            now = runs.utcnow()
            self.c.store.write_logs(
                [
                    {"run_id": run_id, "attempt": held.attempts, "at": now, "message": m}
                    for m in lines
                ]
            )
        if pct is not None or message is not None:
            progress: dict[str, Any] = {"pct": pct}
            if message is not None:
                progress["message"] = _text("message", message)
            self.c.store.write_progress(run_id, progress)
        return self._renewed(held, spec)

    def _renewed(self, held: runs.RunRecord, spec: jobs.JobSpec) -> dict[str, Any]:
        self.store.renew(held, spec.lease or DEFAULT_LEASE)
        now = self.c.store.get(held.id)
        return {
            "run_id": held.id,
            "state": now.state.value,
            "attempt": held.attempts,
            "lease_expires_at": _iso(now.lease_expires_at),
            "cancel_requested": now.cancel_requested,
        }

    def complete(self, run_id: str, token: str, output: Any) -> runs.RunRecord:
        """running -> completed with ``output``, checked against the job's output model: a
        bad one is refused (``InvalidInput`` naming the field) and the run stays running."""
        held, spec, _ = self._holder(run_id, token)
        try:
            model = spec.output_model.model_validate(output)
        except pydantic.ValidationError as exc:
            self.store.renew(held, spec.lease or DEFAULT_LEASE)
            raise errors.InvalidInput(spec.name, errors.field_errors(exc), "output") from None
        data = model.model_dump(mode="json")
        problems = runs.nul_errors(data) + _nonfinite_errors(data)
        if problems:
            raise errors.InvalidInput(spec.name, problems, "output")
        if not self.c.store.complete(run_id, held.attempts, data):
            raise errors.InvalidTransition(run_id, self.c.store.get(run_id).state.value, "complete")
        self._ended(run_id, "SUCCESS", data)
        return self.c.store.get(run_id)

    def fail(self, run_id: str, token: str, error: str, retry: bool = False) -> runs.RunRecord:
        """The actor gave up: with ``retry`` and attempts left, the run waits for another
        actor (after the job's retry backoff); otherwise it ends failed."""
        held, spec, actor = self._holder(run_id, token)
        text = _text("error", error)
        now = runs.utcnow()
        err = rows.run_error("exception", "ActorFailed", f"{actor}: {text}")
        if retry and held.attempts < held.max_attempts:
            due = now + dt.timedelta(seconds=spec.retry.next_delay(held.attempts))
            if not self.store.hand_back(held, err, due, now):
                raise errors.InvalidTransition(run_id, self.c.store.get(run_id).state.value, "fail")
            return self.c.store.get(run_id)
        if not self.c.store.fail(run_id, held.attempts, err):
            raise errors.InvalidTransition(run_id, self.c.store.get(run_id).state.value, "fail")
        self._ended(run_id, "FAILURE", None)
        return self.c.store.get(run_id)

    def _ended(self, run_id: str, state: str, result: Any) -> None:
        """After a run's end: its token dropped, waiters woken, runs that wait for it
        released (a reaper's pass does the last two if the broker does not answer)."""
        self.store.forget(run_id)
        released = self.c.store.release_dependents(run_id, self.c.settings.delay_horizon_seconds)
        from jobsys.engine import broker  # (see ``Submitting.app``)

        try:
            value = result if state == "SUCCESS" else None
            broker.store_result(self.c.app, run_id, state, value, retry=False)
            broker.republish(self.c.app, self.c.registry, released, front=False)
        except Exception:  # the record is the truth; waiters poll it
            pass
