"""Files and folders under ``JOBSYS_HOME`` are private to the user who runs jobsys.

The home holds the run store (every tenant's runs and token hashes), the Redis password and
data, the key that seals secrets, and the logs, so no other local user may read any of it:
folders are made ``0700``, files ``0600``. Every jobsys process sets the umask ``077`` at its
edge (the ``jobsys`` command, ``celery -A workers.app``) before it writes anything, and the
processes it starts inherit it (workers, beat, the HTTP server, ``redis-server``), so files
written by libraries (SQLite's ``-wal``/``-shm``, Redis's append-only file and log) are
private too. The helpers below set the modes explicitly as well, for processes that did not
go through an edge (a test harness, a library caller).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def restrict_umask() -> None:
    """Make every file and folder this process (and its children) creates private."""
    os.umask(UMASK)


def make_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as a private folder; tighten it if it exists."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)
    return path


def write_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, readable by its owner only."""
    make_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), FILE_MODE)  # an old tmp file may have another mode
            f.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def open_append(path: Path) -> int:
    """A private file opened for appending (a log): its descriptor."""
    make_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)
    return fd


HOME_ENTRIES = (
    "jobsys.db",
    "jobsys.db-wal",
    "jobsys.db-shm",
    "jobsys.db-journal",
    "services.json",
    "secret.key",
    "logs",
    "redis",
)
"""What jobsys keeps in a home; only these are tightened (a home may be a folder that also
holds files of the user's own, whose modes are theirs to choose)."""


def tighten_home(home: Path) -> None:
    """Take group and other access away from ``home`` and what jobsys keeps in it, where this
    user owns them (a home made by an older jobsys had 0755 folders and 0644 files)."""
    make_dir(home)
    for name in HOME_ENTRIES:
        path = home / name
        if path.is_dir() and not path.is_symlink():
            _tighten_tree(path)
        else:
            _tighten(path, FILE_MODE)


def _tighten_tree(folder: Path) -> None:
    _tighten(folder, DIR_MODE)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            _tighten(Path(root, name), DIR_MODE)
        for name in files:
            _tighten(Path(root, name), FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return  # not ours to change (and a link's target is not under the home)
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
