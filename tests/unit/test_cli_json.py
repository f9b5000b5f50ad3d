"""Every ``jobsys`` command that prints has ``--json``: the click group is walked, so a new
command without it fails here (or is listed below, with the reason it has none)."""

from __future__ import annotations

import json

import click
from click.testing import CliRunner

from jobsys.cli import main

WITHOUT_JSON = {
    "worker": "a process role: runs until stopped, prints only its log",
    "beat": "a process role: runs until stopped, prints only its log",
    "up": "starts the local services and runs until Ctrl-C; prints only how to reach them",
    "serve": "starts the HTTP server (whose answers are JSON); prints only its log",
    "flower": "starts Flower; prints only its log",
    "mcp": "serves MCP over stdio: its standard output is the protocol itself",
}


def commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(command, (*prefix, name))
            else:
                found[" ".join((*prefix, name))] = command

    main.load_all()
    walk(main, ())
    return found


def test_every_printing_command_has_json() -> None:
    every = commands()
    lacking = [
        name
        for name, command in every.items()
        if name not in WITHOUT_JSON
        and not any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params)
    ]
    assert lacking == [], f"commands without --json (add it, or say why in WITHOUT_JSON): {lacking}"
    assert set(WITHOUT_JSON) <= set(every), "WITHOUT_JSON names commands the CLI lacks"
    for name in WITHOUT_JSON:
        options = {o for p in every[name].params if isinstance(p, click.Option) for o in p.opts}
        assert "--json" not in options, f"{name} has --json now: take it out of WITHOUT_JSON"


def test_json_is_json() -> None:
    runner = CliRunner()
    key = runner.invoke(main, ["secret-key", "--json"])
    assert key.exit_code == 0, key.output
    assert len(json.loads(key.stdout)["secret_key"]) == 44
    argv = ["schedules", "preview", "--every", "1h30m", "-n", "3", "--json"]
    shown = runner.invoke(main, argv)
    assert shown.exit_code == 0, shown.output
    fires = json.loads(shown.stdout)["fires"]
    assert len(fires) == 3
    import datetime as dt

    first, second = (dt.datetime.fromisoformat(f["at"]) for f in fires[:2])
    assert second - first == dt.timedelta(hours=1, minutes=30)
