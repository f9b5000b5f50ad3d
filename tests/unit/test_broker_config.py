"""The Celery settings jobsys insists on, and the submit options it refuses."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from jobsys import Registry, job
from jobsys.base import config, errors
from jobsys.engine import broker
from jobsys.service import client


class In(pydantic.BaseModel):
    pass


def settings(tmp_path: Path, **env: str) -> config.Settings:
    return config.Settings.from_env(
        {"JOBSYS_HOME": str(tmp_path), "JOBSYS_BROKER_URL": "redis://127.0.0.1:1/0", **env}
    )


def test_celery_is_configured_for_safety(tmp_path: Path) -> None:
    conf = broker.celery_config(settings(tmp_path))
    assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    # the run store is the ledger of delivery (leases, the reconciler), not kombu's unacked hash
    assert conf["broker_transport_options"]["ack_emulation"] is False
    assert "visibility_timeout" not in conf["broker_transport_options"]
    assert conf["enable_utc"] and conf["timezone"] == "UTC"
    # events cost a round trip each: Flower turns them on while it watches, or the setting
    assert not conf["worker_send_task_events"] and not conf["task_send_sent_event"]
    always = broker.celery_config(settings(tmp_path, JOBSYS_TASK_EVENTS="1"))
    assert always["worker_send_task_events"] and always["task_send_sent_event"]
    assert conf["result_backend"] == "redis://127.0.0.1:1/1"
    assert conf["result_expires"] == 86400 and conf["result_extended"] is False


def test_a_countdown_past_the_limit_is_refused_before_anything_is_recorded(
    tmp_path: Path,
) -> None:
    noop = job("t.noop", input=In, output=In)(lambda d: In())
    c = client.Client(settings(tmp_path), Registry([noop]))
    try:
        too_late = client.SubmitOptions(countdown=client.MAX_COUNTDOWN_SECONDS + 1)
        limit = "countdown: must be between 0 and 31622400 s"
        with pytest.raises(errors.InvalidInput, match=limit):
            c.submit("t.noop", {}, too_late)
        assert c.list() == []
    finally:
        c.close()


def test_a_higher_priority_is_a_lower_kombu_step() -> None:
    """kombu's Redis consumers read the step lists lowest first: priority 9 is step 0."""
    assert [broker.broker_priority(p) for p in range(10)] == list(range(9, -1, -1))
