"""The filter of a bulk action (``service/bulk.py``): ``KEY=VALUE`` conditions, from the
CLI's repeated ``--where`` or a mapping (an HTTP body, MCP arguments), parsed into the store's
``BulkFilter``; every bad key is named (``InvalidFilter``), and a filter with no condition is
refused unless it says ``all``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jobsys.base import bounds, errors, timeparse
from jobsys.store.bulk import BulkFilter
from jobsys.store.run_states import RunState

__all__ = ["WHERE_KEYS", "parse_where"]

WHERE_KEYS: dict[str, str] = {
    "job": "the job's name",
    "state": "a state, or several (state=failed,cancelled or the key again): "
    + ", ".join(s.value for s in RunState),
    "tag": "a tag the run has",
    "schedule": "the schedule that made the run (sch_...)",
    "workflow": "the workflow run the run is a step of (wf_...)",
    "since": "made at or after: a duration ago (30m, 2h, 7d) or an ISO time",
    "until": "made before: a duration ago or an ISO time",
    "error": "text the error's message or type contains (any case)",
    "exhausted": "true: the run used all its attempts; false: it did not",
    "priority": f"the run's priority, {bounds.LOWEST_PRIORITY} to {bounds.HIGHEST_PRIORITY}",
    "principal": "the id of the principal that submitted it",
    "all": "every run of the tenant (alone: a filter must name at least one condition)",
}
"""The keys of a filter (``--where KEY=VALUE``, the HTTP body's ``where``) and what each
matches."""

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def parse_where(where: Mapping[str, Any] | Iterable[str], what: str) -> BulkFilter:
    """A filter from ``KEY=VALUE`` strings (the CLI's repeated ``--where``) or a mapping (an
    HTTP body, MCP arguments); ``what`` names the command in errors. Raises
    ``InvalidFilter`` naming each bad key, and when there is no condition and no ``all``."""
    problems: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    states: list[RunState] = []
    for key, raw in _pairs(where, problems):
        if key not in WHERE_KEYS:
            keys = ", ".join(WHERE_KEYS)
            problems.append(_problem(key, f"unknown key; the keys are {keys}", "unknown_key"))
            continue
        try:
            if key == "state":
                states += _states(raw)
            elif key in values:
                raise ValueError("given twice (only `state` may be given several times)")
            else:
                values[key] = _boolean(raw) if key == "all" else _value(key, raw)
        except ValueError as exc:
            problems.append(_problem(key, str(exc), "value_error"))
    if problems:
        raise errors.InvalidFilter(what, problems)
    found = BulkFilter(
        job=values.get("job"),
        states=tuple(dict.fromkeys(states)),
        tag=values.get("tag"),
        schedule_id=values.get("schedule"),
        workflow_id=values.get("workflow"),
        since=values.get("since"),
        until=values.get("until"),
        error=values.get("error"),
        exhausted=values.get("exhausted"),
        priority=values.get("priority"),
        principal_id=values.get("principal"),
    )
    if not found.to_json() and not values.get("all"):
        raise errors.InvalidFilter(
            what,
            [
                _problem(
                    "where",
                    "no condition: name at least one (job=..., state=...), or `all` to act "
                    "on every run of your tenant",
                    "missing",
                )
            ],
        )
    return found


def _pairs(
    where: Mapping[str, Any] | Iterable[str], problems: list[dict[str, Any]]
) -> list[tuple[str, Any]]:
    """(key, value) pairs of a mapping (a list value: the key again for each item) or of
    ``KEY=VALUE`` strings (a bare ``all`` is ``all=true``)."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(where, Mapping):
        for key, value in where.items():
            values = value if isinstance(value, list | tuple) else [value]
            pairs += [(str(key), v) for v in values]
        return pairs
    for item in where:
        key, sep, value = item.partition("=")
        if not sep and key.strip() != "all":
            problems.append(
                _problem(key.strip(), "write KEY=VALUE (or `all` for every run)", "format")
            )
            continue
        pairs.append((key.strip(), value.strip() if sep else True))
    return pairs


def _problem(key: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["where", key], "msg": msg, "type": kind}


def _text(raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError("must be a text")
    text = str(raw).strip()
    if not text:
        raise ValueError("must not be empty")
    if "\x00" in text or len(text) > 500:
        raise ValueError("must be at most 500 characters, without NUL")
    return text


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("must be true or false")


def _states(raw: Any) -> list[RunState]:
    out = []
    for part in _text(raw).split(","):
        try:
            out.append(RunState(part.strip()))
        except ValueError:
            choices = ", ".join(s.value for s in RunState)
            raise ValueError(f"{part.strip()!r} is not a state; one of {choices}") from None
    return out


def _value(key: str, raw: Any) -> Any:
    if key == "exhausted":
        return _boolean(raw)
    if key == "priority":
        try:
            value = int(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or not bounds.LOWEST_PRIORITY <= value <= bounds.HIGHEST_PRIORITY:
            raise ValueError(
                f"must be an integer from {bounds.LOWEST_PRIORITY} to {bounds.HIGHEST_PRIORITY}"
            )
        return value
    text = _text(raw)
    if key in ("since", "until"):
        return timeparse.parse_instant(text)
    return text
