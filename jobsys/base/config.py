"""Settings: read once at the edge of each process from the environment, then passed down.

Each setting is declared once, as a field of ``Settings``: its type, its default, its
environment variable and its one-line documentation (the field's ``metadata``). From them
come ``Settings.from_env`` (parsing by type), ``jobsys config`` and the README's
configuration table (``jobsys config --markdown``; a unit test keeps the README up to date).

Nothing in jobsys reads ``JOBSYS_*`` variables anywhere else: ``Settings.from_env()`` is the
only constructor that looks at ``os.environ``. (Processes that start others pass the whole
environment on to them: that is not reading a setting.)
"""

from __future__ import annotations

import dataclasses
import os
import typing
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from jobsys.base import envtext, errors, running


def meta(
    env: str,
    doc: str,
    *,
    shown: str | None = None,
    unset: str | None = None,
    derive: Callable[[dict[str, Any]], Any] | None = None,
    floor: float | None = None,
    maximum: float | None = None,
    lower: bool = False,
    duration: bool = False,
) -> dict[str, Any]:
    """The metadata of one setting's field.

    ``env``: its environment variable; ``doc``: one line for the README table and
    ``jobsys config``; ``shown``: the default as the table shows it, when the value alone
    would not say it; ``unset``: the text parsed when the variable is unset (fields without a
    default); ``derive``: the value when unset, from the settings read before it; ``floor``:
    a smaller number is raised to it; ``maximum``: a larger number is refused; ``lower``:
    items of a list are lower-cased; ``duration``: a number of seconds or a duration such as
    ``7d`` (``never``: none).
    """
    return {
        "env": env,
        "doc": doc,
        "shown": shown,
        "unset": unset,
        "derive": derive,
        "floor": floor,
        "maximum": maximum,
        "lower": lower,
        "duration": duration,
    }


def _default_database(values: dict[str, Any]) -> str:
    return f"sqlite:///{values['home'] / 'jobsys.db'}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a jobsys process needs to know. Durations are in seconds.

    Each field's ``metadata`` (see ``meta``) names its environment variable and documents it.
    """

    home: Path = dataclasses.field(
        metadata=meta(
            "JOBSYS_HOME",
            "files of the embedded default (private to their owner): SQLite database, Redis "
            "data and password, logs, `services.json`",
            shown="`./.jobsys`",
            unset=".jobsys",
        )
    )
    broker_url: str | None = dataclasses.field(
        metadata=meta(
            "JOBSYS_BROKER_URL",
            "Redis URL of the broker, e.g. `redis://:password@redis:6379/0`, "
            "`rediss://user:password@redis:6380/0`",
            shown="the Redis of the running `jobsys up`",
        )
    )
    result_url: str | None = dataclasses.field(
        metadata=meta(
            "JOBSYS_RESULT_URL",
            "Redis URL of Celery's result backend",
            shown="the broker's Redis, database 1 (same password and TLS options)",
        )
    )
    database_url: str = dataclasses.field(
        metadata=meta(
            "JOBSYS_DATABASE_URL",
            "run store; `postgresql+psycopg://user:pass@host/db` for a cluster",
            shown="`sqlite:///$JOBSYS_HOME/jobsys.db`",
            derive=_default_database,
        )
    )
    catalog: tuple[str, ...] = dataclasses.field(
        default=("workers.examples",),
        metadata=meta("JOBSYS_CATALOG", "comma-separated modules whose jobs are loaded"),
    )
    lease_seconds: float = dataclasses.field(
        default=30.0,
        metadata=meta("JOBSYS_LEASE_SECONDS", "a running run not renewed for this long is lost"),
    )
    heartbeat_seconds: float = dataclasses.field(
        default=10.0,
        metadata=meta("JOBSYS_HEARTBEAT_SECONDS", "how often workers renew leases"),
    )
    reaper_seconds: float = dataclasses.field(
        default=15.0,
        metadata=meta("JOBSYS_REAPER_SECONDS", "how often each worker looks for lost runs"),
    )
    reconcile_seconds: float = dataclasses.field(
        default=300.0,
        metadata=meta(
            "JOBSYS_RECONCILE_SECONDS",
            "a waiting run whose message is older than this is published again",
        ),
    )
    delay_horizon_seconds: float = dataclasses.field(
        default=60.0,
        metadata=meta(
            "JOBSYS_DELAY_HORIZON_SECONDS",
            "a run due later than this (`countdown`, `start_at`) waits in the run store, not on "
            "the broker; a worker's reaper queues it when it is due within this (keep it above "
            "`JOBSYS_REAPER_SECONDS`, so that it starts on time)",
            floor=0.0,
        ),
    )
    parked_check_seconds: float = dataclasses.field(
        default=2.0,
        metadata=meta(
            "JOBSYS_PARKED_CHECK_SECONDS",
            "how often each worker looks for parked messages of the jobs it runs (one Redis "
            'command; see "Workers with different catalogs"); at least 0.1',
            floor=0.1,
        ),
    )
    beat_interval: float = dataclasses.field(
        default=1.0,
        metadata=meta(
            "JOBSYS_BEAT_INTERVAL", "longest sleep of beat between two looks at the schedules"
        ),
    )
    token: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata=meta(
            "JOBSYS_TOKEN",
            "the API token the CLI and `Client.from_settings` act with; none: the local admin",
        ),
    )
    admin_roles: tuple[str, ...] = dataclasses.field(
        default=("admin",),
        metadata=meta(
            "JOBSYS_ADMIN_ROLES",
            "comma-separated roles allowed every action on every job of their tenant, and its "
            "tokens and audit log",
        ),
    )
    superadmin_roles: tuple[str, ...] = dataclasses.field(
        default=("superadmin",),
        metadata=meta(
            "JOBSYS_SUPERADMIN_ROLES",
            "comma-separated roles that also administer every tenant (tokens of any tenant, "
            "every tenant's tokens and audit log); empty: the local admin only",
        ),
    )
    secret_key: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata=meta(
            "JOBSYS_SECRET_KEY",
            "Fernet key sealing secret input fields; the same on every machine of a cluster",
            shown="a key in `$JOBSYS_HOME/secret.key`",
        ),
    )
    max_deliveries: int = dataclasses.field(
        default=3,
        metadata=meta(
            "JOBSYS_MAX_DELIVERIES",
            "a run whose worker is lost this many times ends failed (`worker_lost`)",
        ),
    )
    cancel_grace_seconds: float = dataclasses.field(
        default=5.0,
        metadata=meta(
            "JOBSYS_CANCEL_GRACE_SECONDS",
            "a cancelled running job may stop by itself this long before it is interrupted",
        ),
    )
    hard_timeout_grace_seconds: float = dataclasses.field(
        default=10.0,
        metadata=meta(
            "JOBSYS_HARD_TIMEOUT_GRACE_SECONDS", "a job past its timeout is killed this much later"
        ),
    )
    shutdown_grace_seconds: float = dataclasses.field(
        default=10.0,
        metadata=meta(
            "JOBSYS_SHUTDOWN_GRACE_SECONDS",
            "a stopping worker (SIGTERM, Ctrl-C of `jobsys up`) lets its running jobs finish "
            "this long, then hands their runs back (pending again, for the next worker)",
        ),
    )
    result_expires: int = dataclasses.field(
        default=86400,
        metadata=meta(
            "JOBSYS_RESULT_EXPIRES", "seconds results stay in Redis (the run record keeps them)"
        ),
    )
    prefetch: int = dataclasses.field(
        default=1,
        metadata=meta("JOBSYS_PREFETCH", "messages reserved per worker process"),
    )
    http_port: int = dataclasses.field(
        default=8000,
        metadata=meta(
            "JOBSYS_HTTP_PORT",
            "port of the server `jobsys up` starts (`0`: none; `--http-port` wins); "
            "`jobsys serve --host --port` for a cluster",
            maximum=65535,
        ),
    )
    http_job_hosts: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=meta(
            "JOBSYS_HTTP_JOB_HOSTS",
            "comma-separated `host` or `host:port` that HTTP-call jobs registered at runtime "
            "may call",
            lower=True,
        ),
    )
    stats_cache_seconds: float = dataclasses.field(
        default=10.0,
        metadata=meta(
            "JOBSYS_STATS_CACHE_SECONDS",
            "a server answers `/api/v1/stats` and `/metrics` from what it computed this "
            "recently (on a large run table they cost a scan)",
        ),
    )
    metrics_public: bool = dataclasses.field(
        default=False,
        metadata=meta(
            "JOBSYS_METRICS_PUBLIC",
            "`1` serves `/metrics` without a token (for a scraper inside the cluster)",
        ),
    )
    flower_basic_auth: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata=meta(
            "JOBSYS_FLOWER_BASIC_AUTH",
            "`user:password[,user2:password2]` for `jobsys flower`",
            shown="a password printed at start",
        ),
    )
    flower_url_prefix: str | None = dataclasses.field(
        default=None,
        metadata=meta(
            "JOBSYS_FLOWER_URL_PREFIX",
            "Flower behind a proxy at a path (`--url-prefix` wins)",
        ),
    )
    task_events: bool = dataclasses.field(
        default=False,
        metadata=meta(
            "JOBSYS_TASK_EVENTS",
            "`1` sends Celery task events all the time; otherwise Flower switches them on "
            "while it watches (each event is a broker round trip per job)",
        ),
    )

    keep_completed: float | None = dataclasses.field(
        default=None,
        metadata=meta(
            "JOBSYS_KEEP_COMPLETED",
            "completed runs older than this (`7d`, `12h`) are pruned with their logs and "
            "history, unless their job says otherwise (`@job(keep_completed=...)`); `never` "
            'keeps them (see "Retention and archiving")',
            shown="`never`",
            duration=True,
        ),
    )
    keep_failed: float | None = dataclasses.field(
        default=None,
        metadata=meta(
            "JOBSYS_KEEP_FAILED",
            "failed runs older than this are pruned (`never`: kept)",
            shown="`never`",
            duration=True,
        ),
    )
    keep_cancelled: float | None = dataclasses.field(
        default=None,
        metadata=meta(
            "JOBSYS_KEEP_CANCELLED",
            "cancelled runs older than this are pruned (`never`: kept)",
            shown="`never`",
            duration=True,
        ),
    )
    keep_last: int = dataclasses.field(
        default=10,
        metadata=meta(
            "JOBSYS_KEEP_LAST",
            "the pruner keeps at least the newest this many ended runs of each job, whatever "
            "their age",
        ),
    )
    prune_seconds: float = dataclasses.field(
        default=300.0,
        metadata=meta(
            "JOBSYS_PRUNE_SECONDS",
            "how often each worker's pruner applies the retention policies (`0`: never; "
            "`jobsys runs prune` still does)",
        ),
    )
    prune_batch: int = dataclasses.field(
        default=1000,
        metadata=meta(
            "JOBSYS_PRUNE_BATCH",
            "runs the pruner deletes per transaction (it pauses between two as long as the "
            "last one took)",
            floor=1,
            maximum=100000,
        ),
    )

    embedder: str | None = dataclasses.field(
        default=None,
        metadata=meta(
            "JOBSYS_EMBEDDER",
            "what turns texts into vectors for semantic search: "
            "`openai:https://host/v1/embeddings` (an OpenAI-compatible endpoint) or "
            "`python:module:callable`; none: semantic search is off (keyword only; see "
            '"Semantic search")',
        ),
    )
    embedder_model: str = dataclasses.field(
        default="text-embedding-3-small",
        metadata=meta(
            "JOBSYS_EMBEDDER_MODEL", "the `model` an `openai:` embedder asks the endpoint for"
        ),
    )
    embedder_key: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata=meta(
            "JOBSYS_EMBEDDER_KEY",
            "the API key an `openai:` embedder sends (`Authorization: Bearer`); none: no header",
        ),
    )
    embed_seconds: float = dataclasses.field(
        default=10.0,
        metadata=meta(
            "JOBSYS_EMBED_SECONDS",
            "how often each worker's indexer embeds the new errors, log batches and job "
            "descriptions, when an embedder is set (`0`: never)",
        ),
    )
    embed_batch: int = dataclasses.field(
        default=64,
        metadata=meta(
            "JOBSYS_EMBED_BATCH",
            "texts the indexer sends the embedder per call",
            floor=1,
            maximum=2048,
        ),
    )
    semantic_min_score: float = dataclasses.field(
        default=0.3,
        metadata=meta(
            "JOBSYS_SEMANTIC_MIN_SCORE",
            "semantic search leaves out what is less similar to the query than this (a "
            "cosine, 0 to 1)",
            maximum=1.0,
        ),
    )
    webhook_hosts: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=meta(
            "JOBSYS_WEBHOOK_HOSTS",
            "comma-separated `host` or `host:port` that webhook subscriptions may deliver to "
            "(checked when one is created and again before each delivery)",
            shown="`JOBSYS_HTTP_JOB_HOSTS`",
            derive=lambda values: values["http_job_hosts"],
            lower=True,
        ),
    )
    notify_seconds: float = dataclasses.field(
        default=1.0,
        metadata=meta(
            "JOBSYS_NOTIFY_SECONDS",
            "how often each worker's notifier turns new run events into webhook deliveries "
            "and sends those due (`0`: never; deliveries wait in the outbox)",
        ),
    )
    webhook_attempts: int = dataclasses.field(
        default=12,
        metadata=meta(
            "JOBSYS_WEBHOOK_ATTEMPTS",
            "attempts of one webhook delivery before it is marked failed (and kept)",
            floor=1,
            maximum=100,
        ),
    )
    webhook_backoff_seconds: float = dataclasses.field(
        default=2.0,
        metadata=meta(
            "JOBSYS_WEBHOOK_BACKOFF_SECONDS",
            "wait after a webhook delivery's first failed attempt, doubled after each "
            "failure up to `JOBSYS_WEBHOOK_BACKOFF_MAX_SECONDS`",
            floor=0.1,
        ),
    )
    webhook_backoff_max_seconds: float = dataclasses.field(
        default=600.0,
        metadata=meta(
            "JOBSYS_WEBHOOK_BACKOFF_MAX_SECONDS",
            "the longest wait between two attempts of a webhook delivery",
            floor=0.1,
        ),
    )
    keep_deliveries: float | None = dataclasses.field(
        default=7 * 86400.0,
        metadata=meta(
            "JOBSYS_KEEP_DELIVERIES",
            "webhook deliveries delivered or failed longer ago than this are deleted with "
            "their log by the notifier (`never`: kept)",
            shown="`7d`",
            duration=True,
        ),
    )
    webhook_timeout_seconds: float = dataclasses.field(
        default=10.0,
        metadata=meta(
            "JOBSYS_WEBHOOK_TIMEOUT_SECONDS",
            "how long one webhook attempt may take (connect, send, answer) before it counts "
            "as failed",
            floor=0.1,
            maximum=300,
        ),
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``JOBSYS_*`` variables (see README "Configuration").

        An unset or empty variable means the default, except a list's: empty is no items.
        A bad value raises ``ConfigError`` naming the variable and the value.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f, kind in fields():
            raw = env.get(f.metadata["env"])
            if raw is not None and raw.strip() == "" and not envtext.is_list(kind):
                raw = None
            if raw is None:
                raw = f.metadata["unset"]
            if raw is None:
                if f.metadata["derive"] is not None:
                    values[f.name] = f.metadata["derive"](values)
                elif f.default is not dataclasses.MISSING:
                    values[f.name] = f.default
                else:  # an optional field without a default: broker_url, result_url
                    values[f.name] = None
                continue
            values[f.name] = envtext.parse(f, kind, raw)
        return cls(**values)

    def resolved_broker_url(self) -> str:
        """The broker URL, from the setting or from the running ``jobsys up`` in ``home``."""
        if self.broker_url:
            return self.broker_url
        services = running.read_services(self.home)
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


def fields() -> Iterator[tuple[dataclasses.Field[Any], Any]]:
    """Each setting's field with its type (``str | None`` and the like, resolved)."""
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        yield f, hints[f.name]


def shown_default(f: dataclasses.Field[Any]) -> str:
    """A setting's default as the README table and ``jobsys config`` show it."""
    if f.metadata["shown"] is not None:
        return str(f.metadata["shown"])
    value = f.default
    if value is None or value == ():
        return "(none)"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"


def markdown_table() -> str:
    """The README's configuration table, one row per setting (``jobsys config --markdown``)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f, _ in fields():
        rows.append(f"| `{f.metadata['env']}` | {shown_default(f)} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"
