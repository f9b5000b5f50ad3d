"""The servers the hosts share, in the host's namespace on the bridge's address.

- ``BrokerServer``: a private ``redis-server`` (the one bundled for jobsys's embedded mode),
  bound to the bridge's address, keeping nothing on disk: ``stop`` and ``start`` again is a
  broker that comes back empty.
- ``Forwarder``: the path from the bridge to the machine's PostgreSQL (``forward.py`` in a
  process of its own); ``cut`` kills it (every connection drops), ``start`` brings it back.
- ``Database``: a fresh PostgreSQL database ``jobsys_cluster_<random>``, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from jobsys.base import embedded
from jobsys.store import database
from tests.waiting import NotYet, eventually

FORWARD = Path(__file__).with_name("forward.py")


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def listening(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
        return True
    return False


class _Process:
    """A server process of ours, started again on the same address and port."""

    def __init__(self, folder: Path, name: str, address: str) -> None:
        self.folder = folder
        self.name = name
        self.address = address
        self.port = free_port(address)
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        assert self.proc is None, f"{self.name} is running"
        with (self.folder / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = self.proc

        def up() -> bool | NotYet:
            if proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {proc.returncode}; see its log")
            return listening(self.address, self.port) or NotYet("not listening")

        eventually(up, 15, 0.05, what=f"{self.name} to listen on {self.address}:{self.port}")

    def stop(self) -> None:
        """SIGKILL: a crash, not a shutdown (nothing is saved, every connection drops)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None


class BrokerServer(_Process):
    """``redis-server`` on ``address`` (no password: only the bridge reaches it), no
    persistence: started again after ``stop``, it is empty."""

    def __init__(self, folder: Path, address: str) -> None:
        super().__init__(folder, "redis", address)

    def argv(self) -> list[str]:
        return [
            embedded.redis_server_binary(),
            *("--bind", self.address, "--port", str(self.port)),
            *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
            *("--dir", str(self.folder), "--maxclients", "2000"),
        ]

    def url(self, db: int) -> str:
        return f"redis://{self.address}:{self.port}/{db}"


class Forwarder(_Process):
    """``forward.py`` from ``address`` to PostgreSQL's ``target`` (host, port)."""

    def __init__(self, folder: Path, address: str, target: tuple[str, int]) -> None:
        super().__init__(folder, "pg-forwarder", address)
        self.target = target

    def argv(self) -> list[str]:
        host, port = self.target
        return [sys.executable, str(FORWARD), self.address, str(self.port), host, str(port)]

    def cut(self) -> None:
        self.stop()


class Database:
    """A database of its own on the PostgreSQL server of ``admin_url``."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"jobsys_cluster_{uuid.uuid4().hex[:10]}"
        self._admin(f'CREATE DATABASE "{self.name}"')
        self.url_parts = sa.engine.make_url(admin_url).set(database=self.name)
        self.url = self.url_parts.render_as_string(hide_password=False)

    @property
    def target(self) -> tuple[str, int]:
        """PostgreSQL's own address and port."""
        return self.url_parts.host or "127.0.0.1", self.url_parts.port or 5432

    def url_through(self, address: str, port: int) -> str:
        """The database's URL by way of a forwarder on ``address:port``."""
        moved = self.url_parts.set(host=address, port=port)
        return moved.render_as_string(hide_password=False)

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        admin = database.make_engine(self.admin_url).execution_options(isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(statement))
        finally:
            admin.dispose()
