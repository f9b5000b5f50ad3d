"""jobsys: typed, reliable, observable background jobs on Celery + Redis.

The public names: declare jobs with ``job`` or ``Job``, submit them with ``Client``. They are
imported on first use, so light processes (the worker supervisor) do not load Celery,
SQLAlchemy and pydantic for nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobsys.cadence import cron, every, once, ongoing
    from jobsys.client import Client, SubmitOptions
    from jobsys.config import Settings
    from jobsys.context import JobContext
    from jobsys.errors import (
        Fatal,
        InvalidInput,
        JobDeclarationError,
        JobsysError,
        PermissionDenied,
        Retry,
        RunCancelled,
        RunFailed,
        RunNotFound,
        ScheduleNotFound,
        UnknownJob,
    )
    from jobsys.jobs import Job, JobSpec, Registry, RetryPolicy, job, load_registry
    from jobsys.permissions import Principal, Rule
    from jobsys.runs import RunRecord, RunState
    from jobsys.schedules import ScheduleRecord, ScheduleState

_WHERE = {
    "cron": "cadence",
    "every": "cadence",
    "ongoing": "cadence",
    "once": "cadence",
    "ScheduleNotFound": "errors",
    "PermissionDenied": "errors",
    "Rule": "permissions",
    "ScheduleRecord": "schedules",
    "ScheduleState": "schedules",
    "Client": "client",
    "SubmitOptions": "client",
    "Settings": "config",
    "JobContext": "context",
    "Fatal": "errors",
    "InvalidInput": "errors",
    "JobDeclarationError": "errors",
    "JobsysError": "errors",
    "Retry": "errors",
    "RunCancelled": "errors",
    "RunFailed": "errors",
    "RunNotFound": "errors",
    "UnknownJob": "errors",
    "Job": "jobs",
    "JobSpec": "jobs",
    "Registry": "jobs",
    "RetryPolicy": "jobs",
    "job": "jobs",
    "load_registry": "jobs",
    "Principal": "permissions",
    "RunRecord": "runs",
    "RunState": "runs",
}

__all__ = [
    "Client",
    "Fatal",
    "InvalidInput",
    "Job",
    "JobContext",
    "JobDeclarationError",
    "JobSpec",
    "JobsysError",
    "PermissionDenied",
    "Principal",
    "Registry",
    "Retry",
    "RetryPolicy",
    "Rule",
    "RunCancelled",
    "RunFailed",
    "RunNotFound",
    "RunRecord",
    "RunState",
    "ScheduleNotFound",
    "ScheduleRecord",
    "ScheduleState",
    "Settings",
    "SubmitOptions",
    "UnknownJob",
    "cron",
    "every",
    "job",
    "load_registry",
    "once",
    "ongoing",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jobsys' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"jobsys.{module}"), name)
    globals()[name] = value
    return value
