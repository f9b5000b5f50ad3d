"""Times people type: an ISO 8601 instant, or a duration such as ``30m``, ``2h``, ``7d``.

One parser for the CLI (``--since``, ``--expires``) and the HTTP API (``since``, ``until``);
each turns its ``ValueError`` into its own error naming the option or field.
"""

from __future__ import annotations

import datetime as dt
import re

DURATION = re.compile(r"^(\d{1,9}(?:\.\d{1,6})?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FORMS = "an ISO 8601 time like 2026-11-25T09:00 or a duration like 30m, 2h, 7d"


def parse_instant(text: str, sign: int = -1, now: dt.datetime | None = None) -> dt.datetime:
    """The instant ``text`` names, in UTC: an ISO time (UTC if it names no offset), or a
    duration counted from ``now``, back (``sign`` -1: "since 2h") or ahead (+1: "expires in
    7d"). ``ValueError`` if it is neither."""
    text = text.strip()
    now = now or dt.datetime.now(dt.UTC)
    try:
        if match := DURATION.match(text):
            return now + sign * dt.timedelta(seconds=float(match[1]) * UNITS[match[2]])
        value = dt.datetime.fromisoformat(text)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{text[:60]!r} is not {FORMS}") from None
