"""The ``jobsys`` command line: a thin adapter over the service layer (``jobsys.service``).

``base`` holds the ``main`` group and the shared options and helpers; each other module holds
commands (``roles``: worker, beat, up, config; ``jobs``: jobs list/show and submit; ...). They
are imported here, in one place, so their decorators register them on ``main``; then every
command gets the ``--token`` option.
"""

from jobsys.cli import (
    access,
    bench,
    definitions,
    flower,
    jobs,
    mcp,
    prune,
    queues,
    roles,
    runs,
    schedules,
    serve,
    subscriptions,
    workers,
    workflows,
)
from jobsys.cli.base import add_token_option, main

_COMMAND_MODULES = (
    access,
    bench,
    definitions,
    flower,
    jobs,
    mcp,
    prune,
    queues,
    roles,
    runs,
    schedules,
    serve,
    subscriptions,
    workers,
    workflows,
)
add_token_option(main)

__all__ = ["main"]
