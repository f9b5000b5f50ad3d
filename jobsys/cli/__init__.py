"""The ``jobsys`` command line: a thin adapter over the service layer (``jobsys.service``).

``base`` holds the ``main`` group, the shared options and helpers, and the core commands. The
command groups kept in modules of their own are imported here, in one place, so their
decorators register them on ``main``; then every command gets the ``--token`` option.
"""

from jobsys.cli import (
    access,
    bench,
    definitions,
    flower,
    mcp,
    runs,
    schedules,
    serve,
    workers,
    workflows,
)
from jobsys.cli.base import add_token_option, main

_COMMAND_MODULES = (
    access,
    bench,
    definitions,
    flower,
    mcp,
    runs,
    schedules,
    serve,
    workers,
    workflows,
)
add_token_option(main)

__all__ = ["main"]
