"""Waiting in tests: ``eventually`` polls a condition until it holds, instead of a fixed sleep.

A fixed ``time.sleep`` is either too short on a loaded machine (a flaky failure) or longer than
needed everywhere else (a slow suite); a hand-written polling loop tends to fail with a bare
``assert`` that says neither what it waited for nor what it saw last. ``eventually`` returns as
soon as the condition holds, and on timeout fails saying what was awaited and the last value.

A ``time.sleep`` that remains in the tests is part of a scenario (time passing to show that
something does *not* happen, a producer's pace, a job body's work) and says so in a comment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["NotYet", "eventually"]


class NotYet:
    """A falsy answer of a condition that says what it saw: ``NotYet({"run": "pending"})``
    keeps ``eventually`` waiting, and its failure message shows the detail (a string as it
    is, so that a log's tail keeps its lines)."""

    def __init__(self, detail: object) -> None:
        self.detail = detail

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        shown = self.detail if isinstance(self.detail, str) else repr(self.detail)
        return f"not yet: {shown}"


def eventually(
    condition: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    *,
    what: str | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``condition`` every ``interval`` s until it returns a truthy value, and return that
    (a condition may answer ``NotYet(detail)`` to say what it saw instead).

    After ``timeout`` s, raise ``AssertionError`` naming ``what`` was awaited (the condition's
    name if not given) and the last value it returned. Exceptions of the types in ``ignoring``
    count as "not yet" (the last one is reported); any other exception propagates at once, so
    a condition can fail early (a process that exited, say) by raising.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            value = condition()
        except ignoring as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            awaited = what or getattr(condition, "__qualname__", repr(condition))
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {awaited}; last value: {last!r}"
            )
        time.sleep(interval)
