"""The ``jobsys`` CLI as the tests run it: in-process by default (click's runner: the same
commands a ``jobsys`` process runs, without its second of start-up), or as a real
``python -m jobsys`` process where the process itself is under test (exit codes and stderr
as a shell sees them, environment, signals). Either way the answer is a
``subprocess.CompletedProcess``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from click.testing import CliRunner

from jobsys.cli import main
from tests.cluster import ROOT


def run(
    env: Mapping[str, str], args: Sequence[str], process: bool = False
) -> subprocess.CompletedProcess[str]:
    """``jobsys ARGS`` with exactly ``env`` as its environment."""
    if process:
        return subprocess.run(
            [sys.executable, "-m", "jobsys", *args],
            env=dict(env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    # The runner sets ``env`` over this process's environment: unset what ``env`` lacks.
    unset: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    result = CliRunner(env={**unset, **env}).invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)
