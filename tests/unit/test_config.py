"""Settings come from the environment once, with clear errors for bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobsys.base import config, errors


def test_defaults_use_the_home_folder(tmp_path: Path) -> None:
    s = config.Settings.from_env({"JOBSYS_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.database_url == f"sqlite:///{tmp_path / 'jobsys.db'}"
    assert s.catalog == ("workers.examples",)
    assert s.prefetch == 1 and s.reconcile_seconds == 300


def test_values_are_parsed_and_checked(tmp_path: Path) -> None:
    s = config.Settings.from_env(
        {
            "JOBSYS_HOME": str(tmp_path),
            "JOBSYS_BROKER_URL": "redis://h:1/3",
            "JOBSYS_CATALOG": "a.b, c.d,",
            "JOBSYS_LEASE_SECONDS": "2.5",
        }
    )
    assert s.catalog == ("a.b", "c.d") and s.lease_seconds == 2.5
    assert s.resolved_result_url() == "redis://h:1/1"
    with pytest.raises(errors.ConfigError, match="JOBSYS_LEASE_SECONDS='soon'"):
        config.Settings.from_env({"JOBSYS_LEASE_SECONDS": "soon"})
    with pytest.raises(errors.ConfigError, match="must not be negative"):
        config.Settings.from_env({"JOBSYS_PREFETCH": "-1"})


def test_broker_is_found_through_the_running_up(tmp_path: Path) -> None:
    s = config.Settings.from_env({"JOBSYS_HOME": str(tmp_path)})
    with pytest.raises(errors.BrokerUnavailable, match="jobsys up"):
        s.resolved_broker_url()
    config.write_services(tmp_path, {"pid": os.getpid(), "broker_url": "redis://x:9/0"})
    assert s.resolved_broker_url() == "redis://x:9/0"
    config.write_services(tmp_path, {"pid": 2**22 + 12345, "broker_url": "redis://x:9/0"})
    with pytest.raises(errors.BrokerUnavailable):
        s.resolved_broker_url()
