"""Webhook signatures (``base/webhooks.py``) and the README's verification snippet agree: a
signature made by jobsys verifies with the snippet; a changed body, another secret, or a
signature older than the window does not. And the notifier's cursor over the run events never
moves past an id it has not seen unless that gap is old (``subscriptions._advance``)."""

from __future__ import annotations

import re
import time
import types
from typing import Any

from jobsys.base import webhooks
from jobsys.store import subscriptions
from tests.cluster import ROOT


def readme_verify() -> Any:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"readme-test: file verify_webhook\.py -->\n```python\n(.*?)```", text, re.S)
    assert found, "the README's verification snippet is gone"
    scope: dict[str, Any] = {}
    exec(found.group(1), scope)
    return scope["verify"]


def test_a_jobsys_signature_verifies_with_the_readme_snippet_and_nothing_else() -> None:
    verify = readme_verify()
    secret = webhooks.new_secret()
    body = b'{"id":"sub_1-7","event":"completed"}'
    header = webhooks.sign(secret, body)
    assert verify(secret, body, header) and webhooks.verify(secret, body, header)
    assert not verify(secret, body + b" ", header)
    assert not verify(webhooks.new_secret(), body, header)
    assert not verify(secret, body, "t=1,v1=00")
    assert not verify(secret, body, "garbage")
    stale = webhooks.sign(secret, body, at=int(time.time()) - 301)
    assert not verify(secret, body, stale) and not webhooks.verify(secret, body, stale)
    fresh = webhooks.sign(secret, body, at=int(time.time()) - 299)
    assert verify(secret, body, fresh)


def _rows(*pairs: tuple[int, float]) -> list[Any]:
    return [types.SimpleNamespace(id=i, at=at) for i, at in pairs]


def test_the_cursor_stops_at_a_young_gap_and_passes_an_old_one() -> None:
    now = 1000.0
    # An unbroken line: past all of it.
    assert subscriptions._advance(10, _rows((11, now), (12, now), (13, now)), now) == 13
    # Id 12 missing, its follower young: a transaction may still commit it.
    assert subscriptions._advance(10, _rows((11, now), (13, now)), now) == 11
    # The follower older than GAP_SECONDS: 12 was never used (rolled back).
    old = now - subscriptions.GAP_SECONDS - 1
    assert subscriptions._advance(10, _rows((11, old), (13, old), (14, now)), now) == 14
    assert subscriptions._advance(10, [], now) == 10
