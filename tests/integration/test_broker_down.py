"""A producer whose broker is down: submits keep their runs (not yet queued) at once, and a
publish that retries (``require_queued``) does not make the others retry too."""

from __future__ import annotations

import dataclasses

import pytest

from jobsys.base import errors
from jobsys.service.client import Client, SubmitOptions
from tests.cluster import Cluster

pytestmark = pytest.mark.integration


def test_a_publish_with_retries_leaves_every_other_publish_failing_at_once(
    shared: Cluster,
) -> None:
    """kombu's own publish retry writes its policy (``max_retries`` 5 ...) into the transport
    options every connection of the app shares; after one ``require_queued`` submit, every
    other submit then retried for 5 s against the dead broker before keeping its run (seen
    as a producer stalled for 5 s when the broker died and again when it came back)."""
    down = dataclasses.replace(shared.settings, broker_url="redis://127.0.0.1:1/0")
    producer = Client(down, shared.registry)
    shared_options = producer.app.pool.connection.transport_options  # (every clone's)
    before = dict(shared_options)
    assert before["max_retries"] == 0
    with pytest.raises(errors.BrokerUnavailable, match="not kept"):
        producer.submit("examples.add", {"a": 1, "b": 2}, SubmitOptions(require_queued=True))
    assert shared_options == before
    producer.submit("examples.add", {"a": 1, "b": 2})  # kept for the outbox, not refused
    assert len(producer.outbox) == 1
    producer.outbox.close()  # (the shared cluster's reconciler publishes the run)
