"""What a running ``jobsys up`` leaves for the other commands (``services.json`` under
``JOBSYS_HOME``), and whether a process is alive."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from jobsys.base import errors, private

SERVICES_FILE = "services.json"


def write_services(home: Path, info: Mapping[str, object]) -> Path:
    """Record where a running ``jobsys up`` put its services, for the other commands. The
    file is private (0600): the broker URL in it holds the embedded Redis's password."""
    return private.write_file(home / SERVICES_FILE, json.dumps(dict(info), indent=2))


def read_services(home: Path) -> dict[str, object] | None:
    """The services of the ``jobsys up`` running in ``home``, or ``None`` if none runs."""
    path = home / SERVICES_FILE
    try:
        info = json.loads(path.read_text())
    except PermissionError:
        raise errors.ConfigError(
            f"cannot read {path}: JOBSYS_HOME={home} is private to the user who runs "
            "`jobsys up` there; run this command as that user, or set JOBSYS_HOME to a "
            "home of your own"
        ) from None
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or not alive(pid):
        return None
    return dict(info)


def alive(pid: int, signal_to: Callable[[int, int], None] = os.kill) -> bool:
    """Whether process ``pid`` (or, with ``os.killpg``, process group ``pid``) still exists,
    even if it belongs to another user."""
    try:
        signal_to(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
