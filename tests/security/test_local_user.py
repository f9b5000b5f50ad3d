"""Another local user against ``jobsys up``: the embedded Redis refuses them, nothing under
``JOBSYS_HOME`` is theirs to read, and the Redis password is in no command line or log.

``jobsys up`` runs as this (root) test process in a home whose parent everyone may traverse,
so only what jobsys itself does keeps the home private. The home starts as an older jobsys left
it (0755 folder, 0644 store and log) to show ``jobsys up`` tightens it. The other user is
``nobody``, reached by dropping privileges with ``setpriv`` (or ``runuser``); the tests skip,
saying why, where this machine cannot. The run store is the default SQLite file in the home
(the file this is about), whatever ``JOBSYS_TEST_DATABASE_URL`` says.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from jobsys.base import config, embedded, running
from jobsys.declare import catalog
from jobsys.engine import broker
from tests.cluster import ROOT
from tests.e2e.test_cli import Up
from tests.servers import free_port

# Its own `jobsys up` (embedded Redis, SQLite in the home): JOBSYS_TEST_* play no part.
pytestmark = [pytest.mark.e2e, pytest.mark.backend_independent]

NOBODY = "nobody"

RAW_REDIS = r"""
import json, socket, sys
port, commands = json.load(sys.stdin)
answers = []
for parts in commands:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        data = [p.encode() for p in parts]
        s.sendall(b"*%d\r\n" % len(data) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in data))
        answers.append(s.makefile("rb").readline().decode().strip())
print(json.dumps(answers))
"""
"""Sends each command on a fresh connection; prints the first line of each answer."""

READ_PATHS = r"""
import json, os, sys
answers = {}
for path, kind in json.load(sys.stdin):
    try:
        if kind == "dir":
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        answers[path] = "read"
    except PermissionError:
        answers[path] = "denied"
    except OSError as exc:
        answers[path] = type(exc).__name__
print(json.dumps(answers))
"""
"""Tries to list each folder and read each file given; prints what happened to each."""

PROCESS_VIEW = r"""
import json, sys
seen = {}
for pid in json.load(sys.stdin):
    entry = {}
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            entry["cmdline"] = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError as exc:
        entry["cmdline"] = type(exc).__name__
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            entry["environ"] = f.read().decode(errors="replace")
    except PermissionError:
        entry["environ"] = "denied"
    except OSError as exc:
        entry["environ"] = type(exc).__name__
    seen[str(pid)] = entry
print(json.dumps(seen))
"""
"""What ``ps`` shows another user of each process: its command line, and its environment."""


def _drop_privileges_argv() -> list[str] | None:
    """The command prefix that runs a program as ``nobody``, or None where there is none."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(NOBODY)
    except KeyError:
        return None
    if shutil.which("setpriv"):
        return [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
        ]
    if shutil.which("runuser"):
        return ["runuser", "-u", NOBODY, "--"]
    return None


def as_nobody(python: Sequence[str], script: str, given: Any) -> Any:
    """Run ``script`` (Python, standard library only) as ``nobody`` with ``given`` as JSON on
    its standard input; its JSON answer."""
    done = subprocess.run(
        [*python, "-I", "-c", script],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def nobody() -> list[str]:
    """A Python interpreter running as ``nobody``, checked to be in effect. It is started
    through ``env`` so that it is looked up with nobody's own permissions (setpriv still holds
    root's capabilities while it starts its program), and the first interpreter nobody may run
    is taken (this one may live under a folder private to root)."""
    prefix = _drop_privileges_argv()
    if prefix is None:
        pytest.skip(
            reason="dropping privileges to `nobody` needs root and setpriv or runuser, and a "
            "`nobody` user; this machine has not all of them"
        )
    uid, said = str(pwd.getpwnam(NOBODY).pw_uid), []
    for python in dict.fromkeys((shutil.which("python3", path=os.defpath), sys.executable)):
        if python is None:
            continue
        argv = [*prefix, "env", python]
        probe = subprocess.run(
            [*argv, "-I", "-c", "import os; print(os.geteuid(), os.getegid(), os.getgroups())"],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=60,
        )
        if probe.returncode == 0 and probe.stdout.split()[0] == uid:
            return argv
        said.append(f"{python}: {probe.stdout.strip()} {probe.stderr.strip()}")
    pytest.skip(reason=f"cannot run Python as `nobody` here: {'; '.join(said)}")


class Home:
    """A running ``jobsys up`` and what it recorded in its home."""

    def __init__(self, up: Up) -> None:
        self.up = up
        self.services = running.read_services(up.home) or {}
        kept = up.home / "redis" / embedded.PASSWORD_FILE
        self.password = kept.read_text().strip() if kept.exists() else "(none)"
        self.port = int(str(self.services["broker_url"]).rsplit(":", 1)[1].split("/")[0])

    def tree(self) -> list[tuple[Path, str]]:
        """Every folder and file under the home (the home included), with its kind."""
        found: list[tuple[Path, str]] = [(self.up.home, "dir")]
        for root, dirs, files in os.walk(self.up.home):
            found += [(Path(root, d), "dir") for d in dirs]
            found += [(Path(root, f), "file") for f in files]
        return found

    def pids(self) -> list[int]:
        up = psutil.Process(self.up.proc.pid)
        return [up.pid] + [p.pid for p in up.children(recursive=True)]


def _older_home(home: Path) -> None:
    """A home as an older jobsys left it: readable by everyone."""
    (home / "logs").mkdir(parents=True)
    (home / "jobsys.db").touch()
    (home / "logs" / "worker1.log").write_text("an older worker's log\n")
    for path, mode in ((home, 0o755), (home / "logs", 0o755)):
        path.chmod(mode)
    for path in (home / "jobsys.db", home / "logs" / "worker1.log"):
        path.chmod(0o644)


@pytest.fixture(scope="module")
def home() -> Iterator[Home]:
    base = Path(tempfile.mkdtemp(prefix="jobsys-local-user-"))
    base.chmod(0o755)  # another user may reach the home: only the home's own modes protect it
    _older_home(base / ".jobsys")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(
        JOBSYS_HOME=str(base / ".jobsys"),
        PYTHONPATH=str(ROOT),
        JOBSYS_HTTP_PORT=str(free_port()),
        JOBSYS_CATALOG="workers.examples,tests.jobs",
    )
    runner = Up(base / ".jobsys", env)
    try:
        runner.wait_ready()
        # A run with a secret: the store, its WAL and the sealing key all have something in them.
        runner.jobsys(
            "submit",
            "tests.uses_secret",
            "--input",
            json.dumps({"token": "local-user-sentinel"}),
            "--wait",
            check=True,
        )
        yield Home(runner)
    finally:
        with contextlib.suppress(ProcessLookupError):
            runner.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            runner.proc.wait(30)
        if runner.proc.poll() is None:
            runner.proc.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_another_user_gets_noauth_from_the_embedded_redis(home: Home, nobody: list[str]) -> None:
    commands = [
        ["PING"],
        ["KEYS", "*"],
        ["CONFIG", "GET", "dir"],
        ["CONFIG", "SET", "dir", "/tmp"],
        ["PUBLISH", "celery.pidbox", "{}"],  # the road of Celery remote control
        ["AUTH", "guessed"],
    ]
    ping, keys, config_get, config_set, publish, auth = as_nobody(
        nobody, RAW_REDIS, [home.port, commands]
    )
    assert [ping, keys, publish] == ["-NOAUTH Authentication required."] * 3
    for answer in (config_get, config_set):  # renamed away: unknown even before AUTH
        assert answer.startswith("-ERR unknown command `CONFIG`"), answer
    assert auth.startswith("-WRONGPASS"), auth


def test_another_user_can_read_and_list_nothing_under_the_home(
    home: Home, nobody: list[str]
) -> None:
    tree = home.tree()
    names = {str(p.relative_to(home.up.home)) for p, _ in tree}
    expected = {
        "jobsys.db",
        "jobsys.db-wal",
        "secret.key",
        "services.json",
        "redis/password",
        "redis/redis.conf",
        "redis/appendonly.aof",
        "redis/redis.log",
        "logs/worker1.log",
        "logs/beat.log",
    }
    assert expected <= names, sorted(names)
    answers = as_nobody(nobody, READ_PATHS, [[str(p), kind] for p, kind in tree])
    assert answers == {str(p): "denied" for p, _ in tree}


def test_every_folder_is_0700_and_every_file_0600(home: Home) -> None:
    modes = {}
    for path, _ in home.tree():
        with contextlib.suppress(FileNotFoundError):  # a temporary file gone meanwhile
            st = path.lstat()
            modes[str(path)] = (stat.S_ISDIR(st.st_mode), stat.S_IMODE(st.st_mode))
    wrong = {
        path: oct(mode)
        for path, (is_dir, mode) in modes.items()
        if mode != (0o700 if is_dir else 0o600)
    }
    assert not wrong


def test_with_the_password_the_commands_that_reach_outside_redis_are_refused(home: Home) -> None:
    client = redis.Redis.from_url(str(home.services["broker_url"]))
    refused = [
        ("CONFIG", "SET", "dir", "/tmp"),
        ("CONFIG", "GET", "dir"),
        ("SAVE",),
        ("BGSAVE",),
        ("BGREWRITEAOF",),
        ("DEBUG", "SLEEP", "0"),
        ("MODULE", "LIST"),
        ("SHUTDOWN", "NOSAVE"),
        ("REPLICAOF", "NO", "ONE"),
        ("SLAVEOF", "NO", "ONE"),
        ("ACL", "WHOAMI"),
        ("MIGRATE", "127.0.0.1", "1", "k", "0", "100"),
    ]
    try:
        assert client.ping()
        for command in refused:
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(*command)
        assert client.ping()  # still up: SHUTDOWN did nothing
    finally:
        client.close()


def test_the_password_is_in_no_command_line_or_log(home: Home, nobody: list[str]) -> None:
    pids = home.pids()
    assert home.services["redis_pid"] in pids and len(pids) >= 6  # up, redis, roles, workers
    seen = as_nobody(nobody, PROCESS_VIEW, pids)
    leaked = {pid: e["cmdline"] for pid, e in seen.items() if home.password in e["cmdline"]}
    assert not leaked
    assert {e["environ"] for e in seen.values()} == {"denied"}  # JOBSYS_BROKER_URL is there
    logs = [home.up.log] + [p for p, kind in home.tree() if p.suffix == ".log"]
    assert all(home.password not in p.read_text(errors="replace") for p in logs)
    assert "redis://:**@127.0.0.1" in home.up.log.read_text()


def test_the_cluster_itself_uses_the_authenticated_broker_with_no_flags(home: Home) -> None:
    listed = home.up.jobsys("runs", "list", "--json", check=True)
    assert [r["job"] for r in json.loads(listed.stdout)] == ["tests.uses_secret"]
    # Celery remote control (what Flower and `jobsys bench` use) reaches the workers.
    settings = config.Settings.from_env(home.up.env)
    app = broker.make_celery(settings, catalog.load_registry(settings.catalog))
    try:
        assert app.control.ping(timeout=10, limit=1)
    finally:
        app.close()


def test_a_restarted_embedded_redis_keeps_its_password_and_its_data(tmp_path: Path) -> None:
    first = embedded.RedisServer(tmp_path / "redis").start()
    try:
        with redis.Redis.from_url(first.url) as client:
            client.set("kept", "yes")
    finally:
        first.stop()  # SIGTERM: the append-only file is flushed
    second = embedded.RedisServer(tmp_path / "redis").start()
    try:
        assert second.password == first.password and len(second.password) >= 40
        with redis.Redis.from_url(second.url) as client:
            assert client.get("kept") == b"yes"
        with redis.Redis(port=second.port) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        second.stop()
    password_file = tmp_path / "redis" / embedded.PASSWORD_FILE
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "redis").stat().st_mode) == 0o700
