"""Times people type: an ISO 8601 instant, or a duration such as ``30m``, ``2h``, ``7d``,
``1h30m`` (or a plain number of seconds, where seconds are taken).

One parser for the CLI (``--since``, ``--expires``, ``--every``, ``--timeout`` ...), the HTTP
API (``since``, ``until``, ``every``, ``countdown`` ...) and the MCP tools; each turns its
``ValueError`` into its own error naming the option or field.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

import pydantic

UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
PART = r"(\d{1,9}(?:\.\d{1,6})?)"
DURATION = re.compile("^" + "".join(f"(?:{PART}{unit})?" for unit in UNITS) + "$")
"""``2d``, ``1h30m``, ``90s``, ``1.5h``: parts largest unit first, each unit at most once."""
NUMBER = re.compile(r"^\d{1,12}(?:\.\d{1,9})?$")
FORMS = "an ISO 8601 time like 2026-11-25T09:00 or a duration like 30m, 2h, 7d"
DURATION_FORMS = "a number of seconds or a duration like 30s, 5m, 1h30m, 2d"


def duration_match(text: str) -> float | None:
    """The seconds a duration such as ``1h30m`` names; ``None`` if ``text`` is not one."""
    match = DURATION.match(text.strip().lower())
    if match is None or not any(match.groups()):
        return None
    return sum(
        float(part) * UNITS[u] for part, u in zip(match.groups(), UNITS, strict=True) if part
    )


def parse_seconds(value: str | float) -> float:
    """Seconds, from a number (``90``, ``"90"``, ``"2.5"``) or a duration as people type it
    (``30s``, ``5m``, ``1h30m``, ``2d``, ``1w``). ``ValueError`` naming the forms otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {DURATION_FORMS}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if NUMBER.match(text):
        return float(text)
    seconds = duration_match(text)
    if seconds is None:
        raise ValueError(f"{text[:60]!r} is not {DURATION_FORMS}")
    return seconds


def describe_seconds(seconds: float) -> str:
    """``5400`` as ``1h30m``, ``90`` as ``1m30s``, ``2.5`` as ``2.5s``."""
    if seconds != int(seconds) or seconds <= 0:
        return f"{seconds:g}s"
    left, parts = int(seconds), []
    for unit, size in UNITS.items():
        if unit == "w":
            continue
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_instant(text: str, sign: int = -1, now: dt.datetime | None = None) -> dt.datetime:
    """The instant ``text`` names, in UTC: an ISO time (UTC if it names no offset), or a
    duration counted from ``now``, back (``sign`` -1: "since 2h") or ahead (+1: "expires in
    7d"). ``ValueError`` if it is neither."""
    text = text.strip()
    now = now or dt.datetime.now(dt.UTC)
    try:
        if (seconds := duration_match(text)) is not None:
            return now + sign * dt.timedelta(seconds=seconds)
        value = dt.datetime.fromisoformat(text)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{text[:60]!r} is not {FORMS}") from None


def _seconds_field(value: Any) -> Any:
    """A pydantic "before" check: a duration string (``"5m"``) becomes its seconds; a number,
    or a string of one, is left to the field's own type (strict models, the MCP arguments,
    refuse ``"60"`` for 60 as they did)."""
    if isinstance(value, str) and not NUMBER.match(value.strip()):
        return parse_seconds(value)
    return value


DurationSeconds = Annotated[
    float,
    pydantic.BeforeValidator(_seconds_field, json_schema_input_type=float | str),
]
"""A field of seconds (HTTP bodies, MCP arguments) that also takes ``"30s"``, ``"1h30m"``..."""
