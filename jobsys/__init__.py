"""jobsys: typed, reliable, observable background jobs on Celery + Redis.

The public names: declare jobs with ``job`` or ``Job``, submit them with ``Client``. They are
imported on first use, so light processes (the worker supervisor) do not load Celery,
SQLAlchemy and pydantic for nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobsys.base.config import Settings
    from jobsys.base.errors import (
        BackOff,
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
    from jobsys.declare.cadence import cron, every, once, ongoing
    from jobsys.declare.catalog import load_registry
    from jobsys.declare.jobs import Job, JobSpec, Registry, RetryPolicy, job
    from jobsys.declare.permissions import Principal, Rule
    from jobsys.service.client import Client
    from jobsys.service.submitting import SubmitOptions
    from jobsys.store.records import RunRecord
    from jobsys.store.run_states import RunState
    from jobsys.store.schedule_records import ScheduleRecord, ScheduleState
    from jobsys.worker.context import JobContext

_WHERE = {
    "cron": "declare.cadence",
    "every": "declare.cadence",
    "ongoing": "declare.cadence",
    "once": "declare.cadence",
    "ScheduleNotFound": "base.errors",
    "PermissionDenied": "base.errors",
    "Rule": "declare.permissions",
    "ScheduleRecord": "store.schedule_records",
    "ScheduleState": "store.schedule_records",
    "Client": "service.client",
    "SubmitOptions": "service.submitting",
    "Settings": "base.config",
    "JobContext": "worker.context",
    "BackOff": "base.errors",
    "Fatal": "base.errors",
    "InvalidInput": "base.errors",
    "JobDeclarationError": "base.errors",
    "JobsysError": "base.errors",
    "Retry": "base.errors",
    "RunCancelled": "base.errors",
    "RunFailed": "base.errors",
    "RunNotFound": "base.errors",
    "UnknownJob": "base.errors",
    "Job": "declare.jobs",
    "JobSpec": "declare.jobs",
    "Registry": "declare.jobs",
    "RetryPolicy": "declare.jobs",
    "job": "declare.jobs",
    "load_registry": "declare.catalog",
    "Principal": "declare.permissions",
    "RunRecord": "store.records",
    "RunState": "store.run_states",
}

__all__ = [
    "BackOff",
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
