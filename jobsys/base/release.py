"""The version of jobsys this process runs (what ``jobsys --version`` prints)."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed


@functools.cache
def version() -> str:
    """The installed jobsys distribution's version; ``0`` when it is not installed."""
    try:
        return _installed("jobsys")
    except PackageNotFoundError:
        return "0"
