"""Settings: read once at the edge of each process from the environment, then passed down.

Nothing in jobsys reads the environment anywhere else. ``Settings.from_env()`` is the only
constructor that looks at ``os.environ``; tests build ``Settings`` directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from jobsys.base import errors, private

SERVICES_FILE = "services.json"
T = TypeVar("T", int, float)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a jobsys process needs to know. Durations are in seconds."""

    home: Path
    """Where the embedded default keeps its files (``JOBSYS_HOME``, default ``./.jobsys``)."""
    broker_url: str | None
    """Redis URL of the broker; ``None`` means "find the running ``jobsys up``"."""
    result_url: str | None
    """Redis URL of Celery's result backend; defaults to the broker's Redis, database 1."""
    database_url: str
    """SQLAlchemy URL of the run store; default a SQLite file in ``home``."""
    catalog: tuple[str, ...] = ("workers.examples",)
    """Modules whose jobs are loaded (``JOBSYS_CATALOG``, comma separated)."""
    lease_seconds: float = 30.0
    """A running run whose lease is not renewed for this long is treated as lost."""
    heartbeat_seconds: float = 10.0
    """How often a worker renews the leases of the runs it executes."""
    reaper_seconds: float = 15.0
    """How often each worker looks for lost runs and unpublished ones."""
    reconcile_seconds: float = 300.0
    """A pending run older than this with no worker is published again (lost message)."""
    parked_check_seconds: float = 2.0
    """How often each worker looks for parked messages of the jobs it knows (messages that
    a worker without the job set aside: ``parking.py``); one Redis command each time."""
    admin_roles: tuple[str, ...] = ("admin",)
    """Roles allowed every action on every job of their tenant, and its tokens and audit log
    (``JOBSYS_ADMIN_ROLES``, comma separated)."""
    superadmin_roles: tuple[str, ...] = ("superadmin",)
    """Roles that also administer every tenant: tokens for any tenant, every tenant's tokens
    and audit log (``JOBSYS_SUPERADMIN_ROLES``, comma separated; empty: the local admin only)."""
    secret_key: str | None = None
    """Key that seals secret input fields (``JOBSYS_SECRET_KEY``); none: one kept in home."""
    token: str | None = None
    """The API token the CLI and clients act with (``JOBSYS_TOKEN``); none: the local admin."""
    beat_interval: float = 1.0
    """Longest sleep of beat between two looks at the store (a change takes effect within it)."""
    result_expires: int = 86400
    """Results in Redis expire after this long; the run record keeps them for good."""
    prefetch: int = 1
    """Messages reserved per worker process (Celery's prefetch multiplier)."""
    cancel_grace_seconds: float = 5.0
    """After a cancel, a running job has this long to stop by itself before it is interrupted."""
    hard_timeout_grace_seconds: float = 10.0
    """A job past its timeout + this grace is killed (the hard time limit)."""
    shutdown_grace_seconds: float = 10.0
    """A stopping worker (SIGTERM, Ctrl-C of ``jobsys up``) lets its running jobs finish for
    this long; a job still running then is interrupted and handed back (pending again, and
    published again for the next worker)."""
    max_deliveries: int = 3
    """A run whose worker is lost this many times ends failed (poison message cap)."""
    task_events: bool = False
    """Send Celery task events always (``JOBSYS_TASK_EVENTS=1``); Flower turns them on anyway."""
    stats_cache_seconds: float = 10.0
    """How long a server serves the same statistics and metrics again (``/api/v1/stats``,
    ``/metrics``): on a large run table they cost a scan."""
    http_job_hosts: tuple[str, ...] = ()
    """Hosts (``host`` or ``host:port``) that HTTP-call jobs registered at runtime may call
    (``JOBSYS_HTTP_JOB_HOSTS``, comma separated); none: no HTTP-call jobs."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``JOBSYS_*`` variables (see README "Configuration")."""
        env = os.environ if env is None else env
        home = Path(env.get("JOBSYS_HOME", ".jobsys")).resolve()
        catalog = tuple(m.strip() for m in env.get("JOBSYS_CATALOG", "workers.examples").split(","))
        return cls(
            home=home,
            broker_url=env.get("JOBSYS_BROKER_URL") or None,
            result_url=env.get("JOBSYS_RESULT_URL") or None,
            database_url=env.get("JOBSYS_DATABASE_URL") or f"sqlite:///{home / 'jobsys.db'}",
            catalog=tuple(m for m in catalog if m),
            lease_seconds=_num(env, "JOBSYS_LEASE_SECONDS", 30.0, float),
            heartbeat_seconds=_num(env, "JOBSYS_HEARTBEAT_SECONDS", 10.0, float),
            reaper_seconds=_num(env, "JOBSYS_REAPER_SECONDS", 15.0, float),
            reconcile_seconds=_num(env, "JOBSYS_RECONCILE_SECONDS", 300.0, float),
            parked_check_seconds=max(0.1, _num(env, "JOBSYS_PARKED_CHECK_SECONDS", 2.0, float)),
            admin_roles=_roles(env.get("JOBSYS_ADMIN_ROLES", "admin")),
            superadmin_roles=_roles(env.get("JOBSYS_SUPERADMIN_ROLES", "superadmin")),
            token=env.get("JOBSYS_TOKEN") or None,
            secret_key=env.get("JOBSYS_SECRET_KEY") or None,
            beat_interval=_num(env, "JOBSYS_BEAT_INTERVAL", 1.0, float),
            result_expires=_num(env, "JOBSYS_RESULT_EXPIRES", 86400, int),
            prefetch=_num(env, "JOBSYS_PREFETCH", 1, int),
            cancel_grace_seconds=_num(env, "JOBSYS_CANCEL_GRACE_SECONDS", 5.0, float),
            hard_timeout_grace_seconds=_num(env, "JOBSYS_HARD_TIMEOUT_GRACE_SECONDS", 10.0, float),
            shutdown_grace_seconds=_num(env, "JOBSYS_SHUTDOWN_GRACE_SECONDS", 10.0, float),
            max_deliveries=_num(env, "JOBSYS_MAX_DELIVERIES", 3, int),
            task_events=env.get("JOBSYS_TASK_EVENTS", "0").lower() in ("1", "true", "yes"),
            http_job_hosts=tuple(
                h.strip().lower()
                for h in env.get("JOBSYS_HTTP_JOB_HOSTS", "").split(",")
                if h.strip()
            ),
        )

    def resolved_broker_url(self) -> str:
        """The broker URL, from the setting or from the running ``jobsys up`` in ``home``."""
        if self.broker_url:
            return self.broker_url
        services = read_services(self.home)
        if services is None:
            raise errors.BrokerUnavailable(
                f"no broker: nothing is running under JOBSYS_HOME={self.home}. "
                "Start `jobsys up` there, or set JOBSYS_BROKER_URL=redis://host:6379/0"
            )
        return str(services["broker_url"])

    def resolved_result_url(self) -> str:
        """The result backend URL: the setting, or database 1 of the broker's Redis."""
        if self.result_url:
            return self.result_url
        parts = urllib.parse.urlsplit(self.resolved_broker_url())
        head, _, tail = parts.path.rpartition("/")
        path = f"{head}/1" if tail.isdigit() else parts.path.rstrip("/") + "/1"
        return urllib.parse.urlunsplit(parts._replace(path=path))  # the query (TLS) kept


def _roles(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in text.split(",") if h.strip())


def _num(env: Mapping[str, str], name: str, default: T, kind: type[T]) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise errors.ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise errors.ConfigError(f"{name}={raw!r} must not be negative")
    return value


def write_services(home: Path, info: Mapping[str, object]) -> Path:
    """Record where a running ``jobsys up`` put its services, for the other commands. The
    file is private (0600): the broker URL in it holds the embedded Redis's password."""
    return private.write_file(home / SERVICES_FILE, json.dumps(dict(info), indent=2))


def read_services(home: Path) -> dict[str, object] | None:
    """The services of the ``jobsys up`` running in ``home``, or ``None`` if none runs."""
    path = home / SERVICES_FILE
    try:
        info = json.loads(path.read_text())
    except PermissionError:
        raise errors.ConfigError(
            f"cannot read {path}: JOBSYS_HOME={home} is private to the user who runs "
            "`jobsys up` there; run this command as that user, or set JOBSYS_HOME to a "
            "home of your own"
        ) from None
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return dict(info)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
