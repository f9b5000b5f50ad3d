"""``jobsys flower``: Celery's Flower dashboard over a jobsys cluster, basic auth always on.

Flower lists each run as a task named after its job, whose id is the run id (the runs of
jobs registered at runtime all run as the Celery task ``jobsys.dynamic``). It learns them
from the workers' task events: it asks every worker to send them (Celery's ``enable_events``
remote-control command, broadcast when it starts and every 5 s after, so workers started
later are covered too) and jobsys workers, which keep remote control on, comply. When Flower
stops, the workers are told to stop sending them again (unless ``JOBSYS_TASK_EVENTS=1``).

Nothing of a run's input reaches Flower: a jobsys message carries only the run id and a
dispatch token (shown as ``kwargs {'run_id': ...}``), and the outputs and errors in task
events are redacted of secret input values like the run record's.

Settings, read from the environment through ``config.Settings`` like every jobsys process:

- ``JOBSYS_FLOWER_BASIC_AUTH``: ``user:password[,user2:password2]``. When unset, a random
  password is made for the user ``admin`` and printed once at start. Flower never runs open.
- ``JOBSYS_FLOWER_URL_PREFIX``: serve under ``/<prefix>/`` (behind a reverse proxy);
  ``--url-prefix`` wins.
- the broker of the workers: ``JOBSYS_BROKER_URL``, or the running ``jobsys up`` of
  ``JOBSYS_HOME``; results from ``JOBSYS_RESULT_URL`` (default: database 1 of the broker).
"""

from __future__ import annotations

import contextlib
import errno
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click
from tornado import netutil

from jobsys.base import config, errors
from jobsys.cli.base import handle_errors, main
from jobsys.declare import catalog

if TYPE_CHECKING:
    from jobsys.engine import celery_api

AUTH_ENV = "JOBSYS_FLOWER_BASIC_AUTH"
PREFIX_ENV = "JOBSYS_FLOWER_URL_PREFIX"
DEFAULT_USER = "admin"


def parse_basic_auth(text: str) -> list[str]:
    """``user:password[,user2:password2]`` -> ``["user:password", ...]``, or ConfigError."""
    found = []
    for item in text.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user.strip() or not password:
            raise errors.ConfigError(
                f"{AUTH_ENV} must be user:password[,user2:password2] (no commas in passwords); "
                f"got an entry {_masked(item.strip())!r}"
            )
        found.append(f"{user.strip()}:{password}")
    return found


def _masked(item: str) -> str:
    user, sep, _ = item.partition(":")
    return f"{user}:***" if sep else "***"


def credentials(given: str | None) -> tuple[list[str], str | None]:
    """The basic-auth credentials Flower accepts (``given``: the setting
    ``JOBSYS_FLOWER_BASIC_AUTH``), and the password made up for ``admin`` when it is unset
    (``None`` when it is set)."""
    given = (given or "").strip()
    if given:
        return parse_basic_auth(given), None
    password = secrets.token_urlsafe(18)
    return [f"{DEFAULT_USER}:{password}"], password


def flower_argv(
    address: str,
    port: int,
    basic_auth: Sequence[str],
    url_prefix: str | None = None,
    read_only: bool = True,
) -> list[str]:
    """The ``celery flower`` command line jobsys runs. Flower runs inside the ``jobsys flower``
    process (``Celery.start``), so this line, passwords included, is in no process list."""
    if not basic_auth:
        raise errors.ConfigError(f"Flower never runs without authentication: set {AUTH_ENV}")
    argv = [
        "flower",
        f"--address={address}",
        f"--port={port}",
        f"--basic-auth={','.join(basic_auth)}",
        # Task state lives in the run store; Flower's own copy is a view, kept in memory.
        "--persistent=False",
        "--enable-events=True",
        f"--read-only={read_only}",
    ]
    if url_prefix:
        argv.append(f"--url-prefix={url_prefix.strip('/')}")
    return argv


def make_app(settings: config.Settings) -> celery_api.Celery:
    """The Celery app Flower watches through: a producer's app (broker, result backend and
    serializers of the workers, one task per job of the catalog), without worker hooks.

    It talks to Redis through kombu's own transport: jobsys's (``jobsys.engine.transport``) saves
    work per message, which Flower does not send, and Flower's broker page (queue lengths)
    knows brokers by their URL scheme.
    """
    from jobsys.engine import broker  # (Celery loads when a command needs it: Submitting.app)

    app = broker.make_celery(settings, catalog.load_registry(settings.catalog))
    app.conf.broker_transport = None
    # Flower reads results through Celery's current app (its executor threads included).
    app.set_default()
    app.set_current()
    return app


def _disable_task_events(app: celery_api.Celery) -> None:
    with contextlib.suppress(Exception):  # the broker may be gone; workers restart without
        app.control.disable_events()


@main.command("flower")
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option(
    "--url-prefix",
    default=None,
    help=f"Serve under /PREFIX/, behind a reverse proxy (default: ${PREFIX_ENV}).",
)
@click.option(
    "--allow-control",
    is_flag=True,
    help="Enable Flower's revoke, apply, rate-limit, pool and shutdown actions. Off by "
    "default: they bypass the run records (cancel and retry with jobsys instead).",
)
@handle_errors
def flower(address: str, port: int, url_prefix: str | None, allow_control: bool) -> None:
    """Run Flower, Celery's monitoring UI, on the cluster's broker with basic auth.

    Runs show under their job names, their run ids as task ids; inputs never reach Flower.
    Credentials come from JOBSYS_FLOWER_BASIC_AUTH (user:password[,user2:password2]); when it
    is unset, a password for the user admin is made up and printed once.
    """
    settings = config.Settings.from_env()
    basic_auth, generated = credentials(settings.flower_basic_auth)
    url_prefix = url_prefix or settings.flower_url_prefix
    app = make_app(settings)
    argv = flower_argv(address, port, basic_auth, url_prefix, read_only=not allow_control)
    _check_listen(address, port)
    try:
        # At once: Flower's own broadcast comes only 5 s after it starts.
        app.control.enable_events()
    except Exception as exc:
        from jobsys.engine import celery_api

        url = celery_api.sanitize_url(settings.resolved_broker_url())
        raise errors.BrokerUnavailable(
            f"cannot reach the broker {url} ({str(exc).rstrip('.')}): start `jobsys up`, or "
            "set JOBSYS_BROKER_URL to the Redis the workers use"
        ) from None
    if generated is not None:
        click.echo(f"user {DEFAULT_USER}, password {generated}  (set {AUTH_ENV} to choose)")
    try:
        code = app.start(argv)
    except OSError as exc:
        if exc.errno not in LISTEN_ERRORS:
            raise
        raise _cannot_listen(address, port, exc) from None
    # Stopped (SIGTERM, Ctrl-C): events cost the workers a round trip each, and no one reads
    # them now. Another Flower still watching switches them on again within 5 s.
    if not settings.task_events:
        _disable_task_events(app)
    if code:
        raise SystemExit(code)


LISTEN_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def _check_listen(address: str, port: int) -> None:
    """Fail before touching the workers when the address cannot be listened on."""
    try:
        sockets = netutil.bind_sockets(port, address=address)
    except OSError as exc:  # taken, not an address of this machine, not allowed
        raise _cannot_listen(address, port, exc) from None
    for sock in sockets:
        sock.close()


def _cannot_listen(address: str, port: int, exc: OSError) -> errors.ConfigError:
    return errors.ConfigError(
        f"Flower cannot listen on {address}:{port} ({exc.strerror or exc}): "
        "pick another with --port or --address"
    )
