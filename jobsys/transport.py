"""kombu's Redis transport, with one command client per channel.

kombu builds a new ``redis.Redis`` client (with its tables of response callbacks) for every
publish and every acknowledgement; that construction was the largest single cost of a
message on the worker after the round trips themselves. A ``redis.Redis`` client is
thread-safe and takes its connections from the channel's pool, so one per channel serves.
Selected through Celery's ``broker_transport`` setting; nothing of kombu is patched.

Batched publishing (``Producer.batch()``: one pipelined round trip for many messages) is
allowed even though the connections retry on timeout. kombu refuses it then because a
replayed pipeline could push a message twice; a jobsys worker claims a run with its dispatch
token, so a second copy of a message is dropped as a duplicate (nothing runs twice).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _command_client: Any = None
    supports_batch_publish = True  # duplicates are harmless: see the module's docstring

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._command_client
        if client is None or client.connection_pool is not self.pool:
            client = self._command_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
    supports_batch_publish = True
