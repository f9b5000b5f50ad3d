"""A PostgreSQL server that crashes: what a run store keeps and what it may forget.

Every statement of the store waits for its commit to reach the disk, except a worker's claim
of a run (``hotsql._NO_FLUSH_WAIT``). These tests crash a private PostgreSQL server of their
own (every process SIGKILLed, as an out-of-memory kill or a power cut leaves it) while the
claim's WAL is still in the server's memory, its WAL writer held stopped so that nothing else
writes it, and check the promise README.md makes: submits and ends survive, a forgotten claim
leaves its run waiting (never lost), the attempt that lost it cannot end it, and the
reconciler's pass runs it again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from jobsys.store import runs, stores
from jobsys.store.runs import RunState
from tests.cluster.services import free_port
from tests.integration.test_store import make_run
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration


def _bindir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _unavailable() -> str | None:
    if not (os.environ.get("JOBSYS_TEST_DATABASE_URL") or "").startswith("postgresql"):
        return (
            "PostgreSQL's own behaviour: runs with JOBSYS_TEST_DATABASE_URL set to a "
            "postgresql URL (.ci/run's PostgreSQL run)"
        )
    if os.geteuid() != 0:
        return "starts a PostgreSQL server as the postgres user: needs root"
    if _bindir() is None:
        return "needs PostgreSQL's server binaries (initdb, postgres)"
    return None


class Server:
    """A PostgreSQL server of this test's own, run as the ``postgres`` user."""

    def __init__(self) -> None:
        bindir = _bindir()
        assert bindir is not None
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="jobsys-pgcrash-"))
        shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"
        self.port = free_port("127.0.0.1")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust"])
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_postgres(self, argv: list[str]) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True
        )

    def start(self) -> None:
        command = [
            str(self.bindir / "postgres"),
            "-D", str(self.data),
            "-c", f"port={self.port}",
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.dir}",
            "-c", "autovacuum=off",  # (nothing but the test commits meanwhile)
            "-c", "fsync=on",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def accepting() -> bool | NotYet:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"postgres exited ({self.proc.returncode})")
            engine = sa.create_engine(self.url)
            try:
                with engine.connect() as conn:
                    return conn.execute(sa.text("SELECT true")).scalar_one()
            except sa.exc.OperationalError as exc:
                return NotYet(f"the server does not answer yet: {exc}")
            finally:
                engine.dispose()

        eventually(accepting, timeout=30)

    def postmaster(self) -> psutil.Process:
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return psutil.Process(pid)

    def hold_wal_writer(self) -> None:
        """Stop the WAL writer (SIGSTOP): a commit that does not wait for its flush stays
        in the server's memory until something else flushes the WAL."""
        (writer,) = [
            p for p in self.postmaster().children() if "walwriter" in " ".join(p.cmdline())
        ]
        writer.send_signal(signal.SIGSTOP)

    def crash(self) -> None:
        """SIGKILL every process of the server at once: its memory is gone."""
        postmaster = self.postmaster()
        family = [postmaster, *postmaster.children(recursive=True)]
        for process in family:
            process.send_signal(signal.SIGKILL)
        psutil.wait_procs(family, timeout=10)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, psutil.Error, ValueError):
                self.crash()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[Server]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason=reason)
    made = Server()
    try:
        made.start()
        yield made
    finally:
        made.stop()


def test_a_crash_keeps_submits_and_ends_and_a_forgotten_claim_runs_again(server: Server) -> None:
    store = stores.Store.open(server.url)
    try:
        ended = make_run(store).id
        claim = store.claim(ended, dispatch=1, lease=30, timeout=10)
        assert claim is not None and store.complete(ended, claim.attempt, {"done": True})
        claimed = make_run(store).id
        submitted = make_run(store).id
        server.hold_wal_writer()
        claim = store.claim(claimed, dispatch=1, lease=30, timeout=10)
        assert claim is not None and claim.attempt == 1
        assert store.get(claimed).state is RunState.RUNNING
        server.crash()
    finally:
        store.close()
    server.start()
    store = stores.Store.open(server.url)
    try:
        done = store.get(ended)
        assert (done.state, done.output, done.attempts) == (RunState.COMPLETED, {"done": True}, 1)
        assert store.get(submitted).state is RunState.PENDING
        # The claim made just before the crash is forgotten: the run waits again, as if its
        # message had never been taken, and the attempt that held it cannot end it.
        forgotten = store.get(claimed)
        assert (forgotten.state, forgotten.attempts) == (RunState.PENDING, 0)
        assert forgotten.worker is None and forgotten.lease_expires_at is None
        assert not store.complete(claimed, 1, {"done": "by the attempt that lost its claim"})
        # The reconciler finds it (its message counts as lost) and sends it again; it runs.
        later = runs.utcnow() + dt.timedelta(hours=1)
        stale = store.claim_stale(later, older_than=300)
        (resent,) = [r for r in stale if r.id == claimed]
        again = store.claim(claimed, dispatch=resent.dispatch, lease=30, timeout=10)
        assert again is not None and again.attempt == 1
        assert store.complete(claimed, again.attempt, {"done": "again"})
        assert store.get(claimed).output == {"done": "again"}
    finally:
        store.close()
