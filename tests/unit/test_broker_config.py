"""The Celery settings jobsys insists on, and the start-up check of the visibility timeout."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from jobsys import Registry, RetryPolicy, broker, config, errors, job


class In(pydantic.BaseModel):
    pass


def settings(tmp_path: Path, **env: str) -> config.Settings:
    return config.Settings.from_env(
        {"JOBSYS_HOME": str(tmp_path), "JOBSYS_BROKER_URL": "redis://127.0.0.1:1/0", **env}
    )


def test_celery_is_configured_for_safety(tmp_path: Path) -> None:
    conf = broker.celery_config(settings(tmp_path, JOBSYS_VISIBILITY_TIMEOUT="900"))
    assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == 900
    assert conf["result_backend_transport_options"]["visibility_timeout"] == 900
    assert conf["visibility_timeout"] == 900
    assert conf["enable_utc"] and conf["timezone"] == "UTC"
    # events cost a round trip each: Flower turns them on while it watches, or the setting
    assert not conf["worker_send_task_events"] and not conf["task_send_sent_event"]
    always = broker.celery_config(settings(tmp_path, JOBSYS_TASK_EVENTS="1"))
    assert always["worker_send_task_events"] and always["task_send_sent_event"]
    assert conf["result_backend"] == "redis://127.0.0.1:1/1"
    assert conf["result_expires"] == 86400 and conf["result_extended"] is False


def test_a_job_outliving_the_visibility_timeout_is_refused_at_start(tmp_path: Path) -> None:
    long = job("t.long", input=In, output=In, timeout=1000)(lambda d: In())
    with pytest.raises(errors.ConfigError, match=r"'t\.long'.*JOBSYS_VISIBILITY_TIMEOUT=600"):
        broker.check_visibility(
            settings(tmp_path, JOBSYS_VISIBILITY_TIMEOUT="600"), Registry([long])
        )
    broker.check_visibility(settings(tmp_path), Registry([long]))
    slow_retry = job("t.backoff", input=In, output=In, retry=RetryPolicy(max_backoff=400))(
        lambda d: In()
    )
    with pytest.raises(errors.ConfigError, match="max_backoff"):
        broker.check_visibility(
            settings(tmp_path, JOBSYS_VISIBILITY_TIMEOUT="600"), Registry([slow_retry])
        )
