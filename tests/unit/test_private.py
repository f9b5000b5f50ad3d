"""Files and folders jobsys keeps under JOBSYS_HOME are private, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobsys.base import private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A process that did not go through an edge: everything it makes is world-readable."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def test_files_and_folders_are_made_private_under_any_umask(
    tmp_path: Path, open_umask: None
) -> None:
    written = private.write_file(tmp_path / "home" / "redis" / "password", "x\n")
    assert written.read_text() == "x\n" and mode(written) == 0o600
    assert mode(tmp_path / "home" / "redis") == 0o700
    os.close(private.open_append(tmp_path / "home" / "logs" / "worker1.log"))
    assert mode(tmp_path / "home" / "logs" / "worker1.log") == 0o600
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["logs", "redis"]


def test_an_older_home_is_tightened_but_not_the_users_own_files(
    tmp_path: Path, open_umask: None
) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True, mode=0o755)
    (home / "redis").mkdir(mode=0o755)
    made = [home / "jobsys.db", home / "jobsys.db-wal", home / "services.json"]
    made += [home / "logs" / "beat.log", home / "redis" / "appendonly.aof"]
    own = home / "notes.txt"
    for path in [*made, own]:
        path.write_text("x")
        path.chmod(0o644)
    home.chmod(0o755)
    private.tighten_home(home)
    assert mode(home) == mode(home / "logs") == mode(home / "redis") == 0o700
    assert {p.name: mode(p) for p in made} == {p.name: 0o600 for p in made}
    assert mode(own) == 0o644  # not jobsys's: unreachable by others now, its mode untouched
