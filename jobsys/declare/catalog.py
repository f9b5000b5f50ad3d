"""Loading a catalog: importing the job modules ``JOBSYS_CATALOG`` names and collecting their
jobs and workflows into a new ``Registry``.

It sits above the declarations it collects (``jobs``, ``workflows``, ``workflow_checks``), so
none of them imports another to find out what a module declares."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import types
from collections.abc import Iterable

from jobsys.base import errors
from jobsys.declare import jobs, workflow_checks, workflows


def specs_in(module: types.ModuleType) -> list[jobs.JobSpec]:
    """The job specs a module declares, in both styles."""
    found = []
    for value in vars(module).values():
        if isinstance(value, jobs.JobSpec):
            found.append(value)
        elif isinstance(value, type) and issubclass(value, jobs.Job) and value is not jobs.Job:
            found.append(value.spec)
    return [s for s in found if s.module == module.__name__]


def load_registry(modules: Iterable[str]) -> jobs.Registry:
    """Import each catalog module and collect its jobs into a new ``Registry``.

    Catalog modules are found first in the working directory, then on ``sys.path``, in every
    process alike: the processes ``jobsys up`` and ``jobsys worker`` start run as
    ``python -m ...``, which puts the working directory first on ``sys.path``; the ``jobsys``
    command (a console script) does not, so it is put there here."""
    _search_working_directory()
    registry = jobs.Registry()
    loaded = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise errors.ConfigError(
                f"cannot import job module {name!r} from JOBSYS_CATALOG: {exc}"
            ) from exc
        for spec in specs_in(module):
            registry.add(spec)
        loaded.append(module)
    # The workflows are checked once every job is known.
    for module in loaded:
        for value in vars(module).values():
            if isinstance(value, workflows.Workflow):
                registry.add_workflow(value, workflow_checks.check)
    return registry


def _search_working_directory() -> None:
    """Put the working directory first on ``sys.path``, as ``python -m`` does (once)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def digest(registry: jobs.Registry) -> str:
    """A stable hash of the jobs a catalog declares: each job's name, version, queue and input
    and output schemas (the jobs registered at runtime, which every process shares through the
    store, are left out). Two processes with the same hash run the same jobs."""
    described = [
        {
            "name": spec.name,
            "version": spec.version,
            "queue": spec.queue,
            "input": spec.input_schema(),
            "output": spec.output_schema(),
        }
        for spec in registry.catalog()
    ]
    text = json.dumps(described, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
