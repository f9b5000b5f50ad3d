"""Settings come from the environment once, with clear errors for bad values."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobsys import cli
from jobsys.base import config, errors, running


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
    running.write_services(tmp_path, {"pid": os.getpid(), "broker_url": "redis://x:9/0"})
    assert s.resolved_broker_url() == "redis://x:9/0"
    running.write_services(tmp_path, {"pid": 2**22 + 12345, "broker_url": "redis://x:9/0"})
    with pytest.raises(errors.BrokerUnavailable):
        s.resolved_broker_url()


def test_the_stats_cache_setting_takes_effect(tmp_path: Path) -> None:
    """``JOBSYS_STATS_CACHE_SECONDS`` is documented and set by the test clusters: it is read."""
    s = config.Settings.from_env({"JOBSYS_HOME": str(tmp_path), "JOBSYS_STATS_CACHE_SECONDS": "0"})
    assert s.stats_cache_seconds == 0
    s = config.Settings.from_env({"JOBSYS_STATS_CACHE_SECONDS": "2.5"})
    assert s.stats_cache_seconds == 2.5
    from jobsys.http.app import create_app

    env = {"JOBSYS_HOME": str(tmp_path), "JOBSYS_BROKER_URL": "redis://127.0.0.1:1/0"}
    app = create_app(config.Settings.from_env({**env, "JOBSYS_STATS_CACHE_SECONDS": "0"}))
    assert app.state.summaries.seconds == 0 and app.state.scrapes.seconds == 0
    assert create_app(config.Settings.from_env(env)).state.scrapes.seconds == 10


README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
NOT_SETTINGS = {
    # the test suite's
    "JOBSYS_TEST_BROKER_URL",
    "JOBSYS_TEST_DATABASE_URL",
    "JOBSYS_TEST_CHROMIUM",
    "JOBSYS_REQUIRE_BROWSER",
    # docker-compose.yml's, for its Redis
    "JOBSYS_REDIS_PASSWORD",
    # an outside actor's run token for `jobsys runs report|complete|fail` (`--run-token`): the
    # credential of one run's commands, read by those commands only, never a process setting
    "JOBSYS_RUN_TOKEN",
}


def test_the_readme_table_is_the_one_the_settings_make() -> None:
    """Each setting's variable, default and meaning are declared once, in ``config``; the
    README's table is made from them (``jobsys config --markdown``)."""
    section = README.split("### Configuration", 1)[1].split("\n### ", 1)[0]
    table = section[section.index("| variable |") :].split("\n\n", 1)[0] + "\n"
    assert table == config.markdown_table(), "run `jobsys config --markdown` into the README"
    documented = set(re.findall(r"\bJOBSYS_[A-Z_]+\b", README)) - NOT_SETTINGS
    declared = {f.metadata["env"] for f, _ in config.fields()}
    assert documented <= declared, f"the README names unknown variables {documented - declared}"


def test_every_setting_is_declared_with_a_variable_and_a_parser() -> None:
    names = [f.metadata["env"] for f, _ in config.fields()]
    assert len(names) == len(set(names)) and all(n.startswith("JOBSYS_") for n in names)
    for f, _ in config.fields():
        assert f.metadata["doc"] and "\n" not in f.metadata["doc"], f.name
    env = {
        "JOBSYS_HOME": "h",
        "JOBSYS_BROKER_URL": "redis://b:1/0",
        "JOBSYS_RESULT_URL": "redis://b:1/5",
        "JOBSYS_DATABASE_URL": "sqlite:///x.db",
        "JOBSYS_CATALOG": "m1",
        "JOBSYS_LEASE_SECONDS": "1",
        "JOBSYS_HEARTBEAT_SECONDS": "2",
        "JOBSYS_REAPER_SECONDS": "3",
        "JOBSYS_RECONCILE_SECONDS": "4",
        "JOBSYS_DELAY_HORIZON_SECONDS": "5",
        "JOBSYS_PARKED_CHECK_SECONDS": "0.5",
        "JOBSYS_BEAT_INTERVAL": "6",
        "JOBSYS_TOKEN": "tok",
        "JOBSYS_ADMIN_ROLES": "ops",
        "JOBSYS_SUPERADMIN_ROLES": "",
        "JOBSYS_SECRET_KEY": "key",
        "JOBSYS_MAX_DELIVERIES": "7",
        "JOBSYS_CANCEL_GRACE_SECONDS": "8",
        "JOBSYS_HARD_TIMEOUT_GRACE_SECONDS": "9",
        "JOBSYS_SHUTDOWN_GRACE_SECONDS": "11",
        "JOBSYS_RESULT_EXPIRES": "12",
        "JOBSYS_PREFETCH": "13",
        "JOBSYS_HTTP_PORT": "0",
        "JOBSYS_HTTP_JOB_HOSTS": "API.example.com:443, b",
        "JOBSYS_STATS_CACHE_SECONDS": "14",
        "JOBSYS_METRICS_PUBLIC": "yes",
        "JOBSYS_FLOWER_BASIC_AUTH": "u:p",
        "JOBSYS_FLOWER_URL_PREFIX": "flower",
        "JOBSYS_TASK_EVENTS": "true",
        "JOBSYS_KEEP_COMPLETED": "7d",
        "JOBSYS_KEEP_FAILED": "1h30m",
        "JOBSYS_KEEP_CANCELLED": "3600",
        "JOBSYS_KEEP_LAST": "3",
        "JOBSYS_PRUNE_SECONDS": "60",
        "JOBSYS_PRUNE_BATCH": "50",
        "JOBSYS_EMBEDDER": "python:m:f",
        "JOBSYS_EMBEDDER_MODEL": "small",
        "JOBSYS_EMBEDDER_KEY": "sk-1",
        "JOBSYS_EMBED_SECONDS": "2",
        "JOBSYS_EMBED_BATCH": "16",
        "JOBSYS_SEMANTIC_MIN_SCORE": "0.5",
        "JOBSYS_WEBHOOK_HOSTS": "hooks.example.com",
        "JOBSYS_NOTIFY_SECONDS": "0.5",
        "JOBSYS_WEBHOOK_ATTEMPTS": "4",
        "JOBSYS_WEBHOOK_BACKOFF_SECONDS": "0.25",
        "JOBSYS_WEBHOOK_BACKOFF_MAX_SECONDS": "30",
        "JOBSYS_WEBHOOK_TIMEOUT_SECONDS": "2",
        "JOBSYS_KEEP_DELIVERIES": "never",
    }
    assert set(env) == set(names), "a new setting: give it a value here"
    s = config.Settings.from_env(env)
    defaults = config.Settings.from_env({})
    for f, _ in config.fields():
        assert getattr(s, f.name) != getattr(defaults, f.name), f"{f.name} is not read"
    assert s.home == Path("h").resolve() and s.superadmin_roles == ()
    assert s.webhook_hosts == ("hooks.example.com",)
    # Unset, the webhook hosts are the HTTP jobs' hosts; set empty, none.
    derived = config.Settings.from_env({"JOBSYS_HTTP_JOB_HOSTS": "a.example.com"})
    assert derived.webhook_hosts == ("a.example.com",)
    none = {"JOBSYS_HTTP_JOB_HOSTS": "a.example.com", "JOBSYS_WEBHOOK_HOSTS": ""}
    assert config.Settings.from_env(none).webhook_hosts == ()
    assert s.http_job_hosts == ("api.example.com:443", "b") and s.metrics_public is True
    assert "tok" not in repr(s) and "u:p" not in repr(s) and "key" not in repr(s)
    assert "sk-1" not in repr(s)
    assert (s.keep_completed, s.keep_failed, s.keep_cancelled) == (7 * 86400, 5400, 3600)
    assert config.Settings.from_env({"JOBSYS_KEEP_FAILED": "never"}).keep_failed is None


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("JOBSYS_LEASE_SECONDS", "abc", "JOBSYS_LEASE_SECONDS='abc' is not a number"),
        ("JOBSYS_PREFETCH", "1.5", "JOBSYS_PREFETCH='1.5' is not a whole number"),
        ("JOBSYS_REAPER_SECONDS", "nan", "JOBSYS_REAPER_SECONDS='nan' is not a finite number"),
        ("JOBSYS_MAX_DELIVERIES", "-2", "JOBSYS_MAX_DELIVERIES='-2' must not be negative"),
        ("JOBSYS_HTTP_PORT", "70000", "JOBSYS_HTTP_PORT='70000' must be at most 65535"),
        ("JOBSYS_TASK_EVENTS", "maybe", "JOBSYS_TASK_EVENTS='maybe' is not a boolean"),
        ("JOBSYS_KEEP_COMPLETED", "a week", "JOBSYS_KEEP_COMPLETED='a week': 'a week' is not"),
        ("JOBSYS_KEEP_FAILED", "0", "JOBSYS_KEEP_FAILED='0' must be a positive duration"),
    ],
)
def test_a_bad_value_is_named_with_its_variable(name: str, raw: str, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=re.escape(message)):
        config.Settings.from_env({name: raw})


def test_empty_means_the_default_except_for_lists(tmp_path: Path) -> None:
    s = config.Settings.from_env(
        {
            "JOBSYS_HOME": "",
            "JOBSYS_LEASE_SECONDS": "",
            "JOBSYS_TASK_EVENTS": " ",
            "JOBSYS_DATABASE_URL": "",
            "JOBSYS_CATALOG": "",
            "JOBSYS_PARKED_CHECK_SECONDS": "0",
        }
    )
    assert s.home == Path(".jobsys").resolve() and s.lease_seconds == 30
    assert s.task_events is False and s.database_url.endswith("jobsys.db")
    assert s.catalog == () and s.parked_check_seconds == 0.1


def test_jobsys_config_lists_the_settings_and_hides_secrets() -> None:
    env = {"JOBSYS_TOKEN": "tok-123", "JOBSYS_BROKER_URL": "redis://:pw-456@h:1/0"}
    result = CliRunner().invoke(cli.main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    for f, _ in config.fields():
        assert f"\n{f.metadata['env']}=" in "\n" + result.output
    assert "tok-123" not in result.output and "pw-456" not in result.output
    assert "JOBSYS_TOKEN=***" in result.output
    result = CliRunner().invoke(cli.main, ["config", "--markdown"])
    assert result.output == config.markdown_table()
    shown = CliRunner().invoke(cli.main, ["config", "--json"], env={"JOBSYS_PREFETCH": "4"})
    (prefetch,) = [s for s in json.loads(shown.output) if s["variable"] == "JOBSYS_PREFETCH"]
    assert prefetch["value"] == "4" and prefetch["default"] == "`1`"
