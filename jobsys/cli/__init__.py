"""The ``jobsys`` command line: a thin adapter over the service layer (``jobsys.service``).

``base`` holds the ``main`` group and the shared options and helpers; each other module holds
commands (``roles``: worker, beat, up, config; ``jobs``: jobs list/show and submit; ...), which
their decorators register on ``main``. A command's modules are imported only when it runs
(``base.CommandsOnDemand``): ``COMMANDS`` says which modules make each top-level command,
including the modules that add subcommands to another module's group.
"""

from jobsys.cli.base import main

_C = "jobsys.cli."
COMMANDS: dict[str, tuple[str, ...]] = {
    "audit": (_C + "access",),
    "beat": (_C + "roles",),
    "bench": (_C + "bench",),
    "config": (_C + "roles",),
    "flower": (_C + "flower",),
    "jobs": (_C + "jobs", _C + "definitions", _C + "queues"),
    "mcp": (_C + "mcp",),
    "queues": (_C + "queues",),
    "runs": (_C + "runs", _C + "prune"),
    "schedules": (_C + "schedules", _C + "prune"),
    "secret-key": (_C + "access",),
    "serve": (_C + "serve",),
    "submit": (_C + "jobs",),
    "subscriptions": (_C + "subscriptions",),
    "tokens": (_C + "access",),
    "up": (_C + "roles",),
    "worker": (_C + "roles",),
    "workers": (_C + "workers",),
    "workflows": (_C + "workflows",),
}
main.modules = COMMANDS

__all__ = ["COMMANDS", "main"]
