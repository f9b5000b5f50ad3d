"""What every ``jobsys`` command shares: the ``main`` group, the consoles, the error handling
(``handle_errors``), the client of ``--token`` (``make_client``) and the parsing of typed
options. The commands are in the other modules of ``jobsys.cli``.

Human tables by default, ``--json`` on every read command. Exit code 0 on success, 1 when a run
failed or a service is unreachable, 2 for bad input or unknown names and ids, 3 when the
principal may not (permission denied, or a token unknown, revoked or expired), each with a
one-line error on stderr (the codes come from ``jobsys.base.errors.ANSWERS``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from jobsys.base import config, errors, private, timeparse

if TYPE_CHECKING:
    from jobsys.service import client as client_mod

NOT_A_TERMINAL_WIDTH = 1_000_000
"""Columns of output that is not a terminal (a pipe, a file): enough that tables are never
cut or wrapped to fit a width no one is looking at."""
out = Console(
    highlight=False,
    soft_wrap=True,
    width=None if sys.stdout.isatty() else NOT_A_TERMINAL_WIDTH,
)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> None:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn jobsys errors into a one-line message and an exit code (``errors.ANSWERS``, the
    table the HTTP API and MCP answer from too)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.JobsysError as exc:
            fail(str(exc), errors.answer(exc).exit_code)

    return wrapper  # type: ignore[return-value]


def make_client() -> client_mod.Client:
    """A client acting as the ``--token`` given (or ``JOBSYS_TOKEN``), else the local admin."""
    from jobsys.service import client as client_mod

    settings = config.Settings.from_env()
    ctx = click.get_current_context(silent=True)
    token = ctx.meta.get(TOKEN_KEY) if ctx is not None else None
    if token:
        settings = dataclasses.replace(settings, token=token)
    return client_mod.Client.from_settings(settings)


TOKEN_KEY = "jobsys.token"


def _remember_token(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[TOKEN_KEY] = value


def add_token_option(command: click.Command) -> None:
    """Give ``command`` (every command of a group) ``--token``, acting as that token's
    principal; called once a command's modules are loaded (``CommandsOnDemand``)."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_token_option(sub)
    elif not any(p.name == "token" for p in command.params):
        command.params.append(
            click.Option(
                ["--token"],
                expose_value=False,
                callback=_remember_token,
                help="Act as this API token's principal (default: $JOBSYS_TOKEN).",
            )
        )


class Duration(click.ParamType):
    """Seconds, typed as people type them: ``90``, ``30s``, ``5m``, ``1h30m``, ``2d``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return timeparse.parse_seconds(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


class CommandsOnDemand(click.Group):
    """The ``main`` group: a command's module is imported when that command is asked for, so
    ``jobsys worker`` does not load the HTTP server, nor ``jobsys runs`` the scheduler's
    previews. ``modules`` maps each top-level command to the modules that define it and add to
    it (``jobsys/cli/__init__.py``); ``load_all`` imports every one (for ``--help`` and for
    tests that walk every command)."""

    modules: Mapping[str, tuple[str, ...]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.modules) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def load_all(self) -> None:
        for name in self.modules:
            self._load(name)

    def _load(self, name: str) -> click.Command | None:
        # every module of the command, even when another module's import already registered
        # it: `jobs` gets `jobs pause` from queues.py and `jobs register` from definitions.py
        for module in self.modules.get(name, ()):
            importlib.import_module(module)
        command = self.commands.get(name)
        if command is not None:
            add_token_option(command)
        return command


@click.group(cls=CommandsOnDemand)
@click.version_option(package_name="jobsys")
def main() -> None:
    """jobsys: typed, reliable background jobs on Celery + Redis.

    Settings come from JOBSYS_* environment variables: `jobsys config` lists them.
    """
    # Before anything is written: every file under JOBSYS_HOME (and of the processes this one
    # starts) is private to this user.
    private.restrict_umask()


def parse_input(text: str, option: str = "--input") -> Any:
    """The JSON given to ``option``; exit 2 saying where it stops being JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(
            f"{option} is not valid JSON: {exc.msg[0].lower()}{exc.msg[1:]} at line {exc.lineno}, "
            f"column {exc.colno} of {text[:60]!r}",
            2,
        )
    raise AssertionError("unreachable")


# --- times typed in options (``--since``, ``--expires``) ----------------------------------


def parse_since(text: str | None) -> dt.datetime | None:
    """``30m``, ``2h``, ``1d`` ago, or an ISO time."""
    return _parse_time(text, -1, "--since")


def parse_since_future(text: str | None) -> dt.datetime | None:
    """``30m``, ``12h``, ``30d`` from now, or an ISO time."""
    return _parse_time(text, 1, "--expires")


def _parse_time(text: str | None, sign: int, option: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        return timeparse.parse_instant(text, sign)
    except ValueError as exc:
        raise errors.InvalidInput(
            option.strip("-"),
            [{"loc": [option], "type": "value_error", "msg": f"{exc}"}],
            "option",
        ) from None
