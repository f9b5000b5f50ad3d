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

A channel can also *hold* the messages published through it (``holding``): each is built by
kombu as usual and its final Redis command kept instead of sent, to be pushed later in one
pipelined round trip (``push``). Beat builds the messages of the fires due next ahead of
their time, and at their time only pushes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

Held = tuple[str, str]
"""A message held back: the Redis list it goes to and its payload."""


class Channel(kombu_redis.Channel):
    _command_client: Any = None
    _held: list[Held] | None = None
    supports_batch_publish = True  # duplicates are harmless: see the module's docstring

    @contextlib.contextmanager
    def holding(self) -> Iterator[list[Held]]:
        """Hold the messages published through this channel meanwhile (in the list given)."""
        held: list[Held] = []
        self._held = held
        try:
            yield held
        finally:
            self._held = None

    def push(self, held: Sequence[Held], front: bool = False) -> None:
        """Send held messages, in one pipelined round trip; ``front``: at the head of their
        lists (taken next, before what already waits there at the same priority), in the
        order given."""
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            # Consumers pop from the right of a list (BRPOP): the back of the line is the
            # left; a message pushed on the right is taken first.
            for key, payload in reversed(held) if front else held:
                (pipe.rpush if front else pipe.lpush)(key, payload)
            pipe.execute()

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        # (jobsys declares no queue with an expiry, which kombu would also set on send)
        if self._held is None or kwargs.get("_publish_batch"):
            super()._put(queue, message, **kwargs)
            return
        # The list of the message's priority step, as kombu's ``_put`` picks it (the step
        # ``publishing.broker_priority`` gave it): pushed later, it keeps its priority.
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        self._held.append((key, dumps(message)))

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
