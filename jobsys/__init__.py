"""jobsys: typed, reliable, observable background jobs on Celery + Redis.

The public names: declare jobs with ``job`` or ``Job``, submit them with ``Client``.
"""

from jobsys.client import Client, SubmitOptions
from jobsys.config import Settings
from jobsys.context import JobContext
from jobsys.errors import (
    Fatal,
    InvalidInput,
    JobDeclarationError,
    JobsysError,
    Retry,
    RunCancelled,
    RunFailed,
    RunNotFound,
    UnknownJob,
)
from jobsys.jobs import Job, JobSpec, Registry, RetryPolicy, job, load_registry
from jobsys.permissions import Principal
from jobsys.runs import RunRecord, RunState

__all__ = [
    "Client",
    "Fatal",
    "InvalidInput",
    "Job",
    "JobContext",
    "JobDeclarationError",
    "JobSpec",
    "JobsysError",
    "Principal",
    "Registry",
    "Retry",
    "RetryPolicy",
    "RunCancelled",
    "RunFailed",
    "RunNotFound",
    "RunRecord",
    "RunState",
    "Settings",
    "SubmitOptions",
    "UnknownJob",
    "job",
    "load_registry",
]
