"""Webhook signatures: what a subscriber checks to know a notification came from jobsys, unchanged
and recently.

Each delivery is a POST of a JSON body with two headers: ``Jobsys-Delivery``, the delivery's id
(the same on every attempt: a subscriber that has seen it already ignores it), and
``Jobsys-Signature: t=<unix seconds>,v1=<hex>``, where ``<hex>`` is
``HMAC-SHA256(secret, f"{t}.{body}")`` with the subscription's signing secret. The time is part
of what is signed, so a captured request replayed later fails the subscriber's tolerance window
(``TOLERANCE_SECONDS``); the README shows the check in ten lines of plain Python.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "Jobsys-Signature"
DELIVERY_HEADER = "Jobsys-Delivery"
EVENT_HEADER = "Jobsys-Event"
TOLERANCE_SECONDS = 300
"""How old a signature a subscriber should accept, at most (replay safety)."""
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A new signing secret (shown once, when a subscription is made)."""
    return SECRET_PREFIX + secrets.token_hex(24)


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The ``Jobsys-Signature`` header's value for ``body`` sent at ``at`` (now if ``None``)."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, within ``tolerance`` seconds of now."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))
