"""Bulk actions (``runs cancel|retry|delete --where``) as an attacker would try them: another
tenant's runs are never matched nor counted, and each run is checked against its job's rule
(with its own input, for a retry), skipped and counted when the caller may not, through the
Python client, the CLI and the HTTP API. (The access matrix leaves bulk actions to this file:
they are never refused as a whole.)"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobsys import Principal, RunState
from jobsys.service import client
from jobsys.store import rows, runs
from tests import cli_runner
from tests.cluster import Cluster
from tests.servers import Serve

pytestmark = pytest.mark.integration

ADA = Principal(id="ada", roles=("admin",), tenant="b1")
"""An admin of tenant b1."""
OPAL = Principal(id="opal", roles=("operator",), tenant="b1")
"""May execute, update and delete runs of ``tests.operated``, nothing of admin-only jobs."""
VIC = Principal(id="vic", roles=(), tenant="b1")
PAYER = Principal(id="pam", scopes=("pay",), tenant="b1")
"""May execute ``tests.small_pay`` for less than 100 cents only (its rule's guard)."""
BOB = Principal(id="bob", roles=("admin",), tenant="b2")


def as_(c: Cluster, who: Principal) -> client.Client:
    return client.Client(c.settings, c.registry, principal=who, store=c.store, app=c.client.app)


def failed_runs(
    c: Cluster, who: Principal, job: str, inputs: list[dict[str, Any]], tag: str
) -> list[str]:
    """Runs of ``job`` that ended failed, made by ``who`` in its tenant (through the store)."""
    spec = c.registry.get(job)
    now = runs.utcnow()
    made = []
    for payload in inputs:
        row = rows.new_run(
            spec,
            payload,
            principal=who.model_dump(mode="json"),
            principal_id=who.id,
            tenant=who.tenant,
            now=now,
            tags=[tag],
        )
        row.update(state=RunState.FAILED.value, error={"type": "Boom", "message": "boom"})
        made.append(row)
    c.store.insert(made)
    return [r["id"] for r in made]


@pytest.fixture
def world(shared: Cluster) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """A tag, and runs under it: b1's of ``tests.operated`` and ``examples.admin_only``, and
    b2's of ``tests.operated``."""
    tag = f"sec-{uuid.uuid4().hex[:8]}"
    made = {
        "b1 operated": failed_runs(shared, ADA, "tests.operated", [{"seconds": 0}] * 2, tag),
        "b1 admin_only": failed_runs(shared, ADA, "examples.admin_only", [{}] * 2, tag),
        "b2 operated": failed_runs(shared, BOB, "tests.operated", [{"seconds": 0}] * 3, tag),
    }
    yield tag, made


def test_another_tenants_runs_are_never_matched_nor_counted(
    shared: Cluster, world: tuple[str, dict[str, list[str]]]
) -> None:
    tag, made = world
    for who, matched in ((ADA, 4), (OPAL, 4), (VIC, 4), (BOB, 3)):
        for action in ("cancel", "retry", "delete"):
            found = as_(shared, who).bulk.act(action, [f"tag={tag}"], dry_run=True)
            assert found.matched == matched, (who.id, action)
    deleted = as_(shared, BOB).bulk.delete(["all"])  # every run of b2, none of b1
    assert deleted.done >= 3
    assert shared.store.get(made["b1 operated"][0]).tenant == "b1"
    assert as_(shared, ADA).bulk.delete([f"tag={tag}"], dry_run=True).matched == 4


def test_each_run_is_checked_against_its_jobs_rule_and_skipped_if_refused(
    shared: Cluster, world: tuple[str, dict[str, list[str]]]
) -> None:
    tag, made = world
    opal = as_(shared, OPAL).bulk
    retry = opal.retry([f"tag={tag}"], dry_run=True)
    assert (retry.matched, retry.done, retry.to_json()["skipped"]) == (4, 2, {"permission": 2})
    assert sorted(retry.sample) == sorted(made["b1 operated"])

    vic = as_(shared, VIC).bulk.delete([f"tag={tag}"])  # a token with no role deletes nothing
    assert (vic.matched, vic.done, vic.to_json()["skipped"]) == (4, 0, {"permission": 4})
    gone = opal.delete([f"tag={tag}"])
    assert (gone.done, gone.to_json()["skipped"]) == (2, {"permission": 2})
    left = shared.store.select(runs.RunFilter(tag=tag, tenant="b1", limit=10))
    assert sorted(r.id for r in left) == sorted(made["b1 admin_only"])
    assert len(shared.store.select(runs.RunFilter(tag=tag, tenant="b2", limit=10))) == 3

    entries = [e for e in as_(shared, ADA).admin.audit_log() if e.action == "bulk_delete"][:2]
    assert [(e.principal_id, e.outcome) for e in entries] == [
        ("opal", "allowed"),
        ("vic", "denied"),
    ]
    assert json.loads(entries[1].detail)["skipped"] == {"permission": 4}


def test_a_retry_asks_the_rules_guard_with_each_runs_own_input(shared: Cluster) -> None:
    tag = f"sec-{uuid.uuid4().hex[:8]}"
    small, big = failed_runs(shared, PAYER, "tests.small_pay", [{"cents": 50}, {"cents": 500}], tag)
    found = as_(shared, PAYER).bulk.retry([f"tag={tag}"], dry_run=True)
    assert (found.done, found.sample, found.to_json()["skipped"]) == (1, [small], {"permission": 1})
    assert big not in found.sample


def test_the_cli_and_http_are_scoped_alike(
    shared: Cluster, world: tuple[str, dict[str, list[str]]]
) -> None:
    tag, _ = world
    tokens = {p.id: shared.client.admin.create_token(p)[1] for p in (OPAL, BOB)}
    cli = cli_runner.run(
        shared.env,
        [
            "runs",
            "delete",
            "--where",
            f"tag={tag}",
            "--dry-run",
            "--json",
            "--token",
            tokens["opal"],
        ],
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) | {"sample": []} == {
        "action": "delete",
        "dry_run": True,
        "where": {"tag": tag},
        "matched": 4,
        "done": 2,
        "skipped": {"permission": 2},
        "sample": [],
    }
    with Serve(shared) as serve:
        http = httpx.Client(
            base_url=serve.url, headers={"Authorization": f"Bearer {tokens['bob']}"}
        )
        with http:
            answer = http.post(
                "/api/v1/runs/bulk/cancel", json={"where": {"tag": tag}, "dry_run": True}
            )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["matched"], answer.json()["done"]) == (3, 0)
    assert answer.json()["skipped"] == {"state": 3}
