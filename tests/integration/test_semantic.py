"""Semantic search beside keyword search: runs made by real workers, embedded by the workers'
indexer (``JOBSYS_EMBEDDER=python:tests.embedder:embed``, or an OpenAI-compatible endpoint
over real HTTP), found by meaning with no shared word, through the client, the CLI, the HTTP
API and MCP; never another tenant's runs, never by the text of runs one may not read."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from jobsys import Client, Principal, SubmitOptions
from jobsys.base import errors
from jobsys.declare import cadence
from jobsys.service.client import Client as ServiceClient
from jobsys.store import runs, schema, search, stores
from tests import cli_runner, embedder
from tests.cluster import CATALOG, Cluster, cluster
from tests.embedder import FakeEndpoint
from tests.integration.mcp_support import http_session
from tests.servers import Serve
from tests.waiting import NotYet, eventually

pytestmark = pytest.mark.integration

ENV = {
    "JOBSYS_CATALOG": CATALOG + ",tests.semantic_jobs",
    "JOBSYS_EMBEDDER": "python:tests.embedder:embed",
    "JOBSYS_EMBED_SECONDS": "0.3",
}
OUTAGE = "connection refused by upstream host"
"""Shares no word with the query "network outage", and means it."""
QUERY = "network outage"
LATER = cadence.every(3600, start_at="2100-01-01T00:00:00+00:00", input={"a": 1, "b": 2})

ADMIN = Principal(id="ada", roles=("admin",), tenant="default")
VIEWER = Principal(id="vic", roles=("viewer",), tenant="default")
"""May list the runs of ``semantic.sealed_fail`` but not read them."""
OPS = Principal(id="opal", roles=("ops",), tenant="default")
OTHER = Principal(id="otto", roles=("ops",), tenant="elsewhere")


@dataclasses.dataclass
class Made:
    cluster: Cluster
    outage: str
    """examples.fail, its error ``OUTAGE``."""
    disk: str
    """examples.fail, its error about a full disk."""
    sealed: str
    """semantic.sealed_fail, its error ``OUTAGE``: only the role ops may read it."""
    logged: str
    """semantic.logs, completed; a log line about sockets and DNS."""
    elsewhere: str
    """examples.fail in the tenant ``elsewhere``, its error ``OUTAGE``."""
    cleanup: str
    """A schedule named "nightly disk cleanup"."""
    cleanup_elsewhere: str
    """The same, in the tenant ``elsewhere``."""

    def client(self, who: Principal) -> Client:
        c = self.cluster
        return ServiceClient(c.settings, c.registry, principal=who, store=c.client.store)


def ids(found: list[Any]) -> list[str]:
    return [r.id for r in found]


@pytest.fixture(scope="module")
def made(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Made]:
    with cluster(tmp_path_factory.mktemp("semantic"), redis_url, database_url, **ENV) as c:
        c.start_worker("w1", concurrency=2)
        other = ServiceClient(c.settings, c.registry, principal=OTHER, store=c.client.store)
        m = Made(
            c,
            outage=c.client.submit("examples.fail", {"message": OUTAGE}),
            disk=c.client.submit("examples.fail", {"message": "disk full on /data"}),
            sealed=c.client.submit("semantic.sealed_fail", {"message": OUTAGE}),
            logged=c.client.submit("semantic.logs", {"message": "socket unreachable, dns down"}),
            elsewhere=other.submit("examples.fail", {"message": OUTAGE}),
            cleanup=c.client.schedules.create("examples.add", LATER, "nightly disk cleanup").id,
            cleanup_elsewhere=other.schedules.create("examples.add", LATER, "disk cleanup").id,
        )
        everyone = [m.outage, m.disk, m.sealed, m.logged]
        c.wait_all(everyone, timeout=60)
        other.wait(m.elsewhere, timeout=60)

        def indexed() -> bool | NotYet:  # the indexer embeds in the background
            found = set(ids(c.client.list(search=QUERY, mode="semantic")))
            found |= set(ids(other.list(search=QUERY, mode="semantic")))
            want = {m.outage, m.sealed, m.logged, m.elsewhere}  # both tenants' runs
            return want <= found or NotYet(f"found {found}")

        eventually(indexed, 30, what="the indexer to embed the runs' errors and logs")
        eventually(
            lambda: (
                (
                    [i for i, _ in c.client.schedules.nearest("storage")] == [m.cleanup]
                    and [i for i, _ in other.schedules.nearest("storage")] == [m.cleanup_elsewhere]
                )
                or NotYet("schedules not embedded")
            ),
            30,
            what="the indexer to embed the schedules",
        )
        yield m


def test_semantic_finds_a_run_by_meaning_with_no_shared_word(made: Made) -> None:
    c = made.cluster.client
    semantic = c.list(search=QUERY, mode="semantic")
    assert set(ids(semantic)) == {made.outage, made.sealed, made.logged}
    assert made.disk not in ids(semantic) and made.elsewhere not in ids(semantic)
    # keyword search finds nothing for the query, and still finds the run by its words
    assert c.list(search=QUERY, mode="keyword") == []
    assert made.outage in ids(c.list(search="refused", mode="keyword"))
    assert made.disk in ids(c.list(search="storage quota", mode="semantic"))
    # hybrid (the default with an embedder): the semantic list alone here; with a shared
    # word, what both lists hold comes first
    assert set(ids(c.list(search=QUERY))) == set(ids(semantic))
    both = ids(c.list(search="refused upstream", mode="hybrid"))
    assert set(both[:2]) == {made.outage, made.sealed} and both[2:] == [made.logged]
    # scores: a similarity for semantic results, none for keyword ones
    mode, scored = c.search(QUERY, "semantic")
    assert mode == "semantic" and all(s is not None and s > 0.9 for _, s in scored)
    assert [s for _, s in c.search("refused", "keyword")[1]] == [None, None]


def test_semantic_search_is_tenant_scoped_and_checks_the_read_right(made: Made) -> None:
    def found(who: Principal, mode: str, text: str = QUERY) -> set[str]:
        return set(ids(made.client(who).list(search=text, mode=mode)))

    assert found(OTHER, "semantic") == {made.elsewhere}
    assert found(OTHER, "hybrid", "refused network") == {made.elsewhere}
    for mode in ("semantic", "hybrid"):
        assert made.elsewhere not in found(ADMIN, mode)
    # the viewer may list the sealed job's runs, not read them: no search by their text
    for mode, text in (("semantic", QUERY), ("hybrid", QUERY), ("keyword", "refused")):
        assert made.sealed not in found(VIEWER, mode, text), mode
        assert made.outage in found(VIEWER, mode, text), mode
        assert made.sealed in found(OPS, mode, text), mode
    listed = made.client(VIEWER).list(job="semantic.sealed_fail")
    assert ids(listed) == [made.sealed] and listed[0].error is None  # listed, withheld
    # schedules: by their name's meaning, each tenant its own
    assert [i for i, _ in made.client(OTHER).schedules.nearest("storage quota")] == [
        made.cleanup_elsewhere
    ]
    assert [i for i, _ in made.client(VIEWER).schedules.nearest("storage quota")] == [made.cleanup]


def test_semantic_search_without_an_embedder_says_how_to_turn_it_on(made: Made) -> None:
    c = made.cluster
    off = dataclasses.replace(c.settings, embedder=None)
    client = ServiceClient(off, c.registry, store=c.client.store)
    with pytest.raises(errors.SemanticSearchOff, match="JOBSYS_EMBEDDER"):
        client.list(search=QUERY, mode="semantic")
    assert ids(client.list(search="refused")) == ids(client.list(search="refused", mode="keyword"))
    printed = cli_runner.run(
        {**c.env, "JOBSYS_EMBEDDER": ""}, ["runs", "list", "--search", QUERY, "--mode", "semantic"]
    )
    assert printed.returncode == 2 and "set JOBSYS_EMBEDDER" in printed.stderr


def test_a_deleted_run_leaves_no_vector_behind(made: Made) -> None:
    c = made.cluster.client
    tag = "gone-soon"
    run_id = c.submit("examples.fail", {"message": "dns unreachable"}, SubmitOptions(tags=(tag,)))
    made.cluster.wait_all([run_id], timeout=60)
    eventually(
        lambda: run_id in ids(c.list(search=QUERY, mode="semantic")) or NotYet("not embedded"),
        30,
        what="the run embedded",
    )
    assert vectors_of(made, run_id) >= 1
    assert c.bulk.delete([f"tag={tag}"]).done == 1
    assert vectors_of(made, run_id) == 0
    assert run_id not in ids(c.list(search=QUERY, mode="semantic"))


def vectors_of(made: Made, run_id: str) -> int:
    E = schema.embeddings
    with made.cluster.store.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(E.c.kind == "run", E.c.ref == run_id)
        return int(conn.execute(query).scalar_one())


@pytest.mark.interface
def test_cli_http_and_mcp_search_by_mode(made: Made) -> None:
    c = made.cluster
    printed = cli_runner.run(
        c.env, ["runs", "list", "--search", QUERY, "--mode", "semantic", "--json"]
    )
    assert printed.returncode == 0, printed.stderr
    rows = json.loads(printed.stdout)
    assert {r["id"] for r in rows} == {made.outage, made.sealed, made.logged}
    assert all(r["score"] > 0.9 for r in rows)  # best first, with their scores
    keyword = cli_runner.run(c.env, ["runs", "list", "--search", QUERY, "--mode", "keyword"])
    assert keyword.returncode == 0 and made.outage not in keyword.stdout
    words = cli_runner.run(c.env, ["runs", "list", "--search", "refused", "--json"])
    assert next(r["score"] for r in json.loads(words.stdout) if r["id"] == made.outage) > 0
    table = cli_runner.run(c.env, ["runs", "list", "--search", "refused", "--mode", "keyword"])
    assert made.outage in table.stdout and "score" not in table.stdout
    bad = cli_runner.run(c.env, ["runs", "list", "--search", QUERY, "--mode", "fuzzy"])
    assert bad.returncode == 2

    tokens = {p.id: c.client.admin.create_token(p)[1] for p in (ADMIN, VIEWER, OTHER)}
    with Serve(c) as server:

        def get(who: str | None, **params: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
            return httpx.get(f"{server.url}/api/v1/runs", params=params, headers=headers)

        def run_ids(who: str, **params: str) -> set[str]:
            resp = get(who, **params)
            assert resp.status_code == 200, resp.text
            return {r["id"] for r in resp.json()["runs"]}

        assert run_ids("ada", q=QUERY, mode="semantic") == {made.outage, made.sealed, made.logged}
        ranked = get("ada", q=QUERY, mode="semantic").json()
        assert ranked["mode"] == "semantic" and all(r["score"] > 0.9 for r in ranked["runs"])
        assert get("ada", q=QUERY).json()["mode"] == "hybrid"  # the default with an embedder
        assert "score" not in get("ada", q="refused", mode="keyword").json()["runs"][0]
        assert run_ids("ada", q=QUERY, mode="keyword") == set()
        assert made.outage in run_ids("ada", q="refused", mode="keyword")
        assert run_ids("vic", q=QUERY, mode="semantic") == {made.outage, made.logged}
        assert run_ids("otto", q=QUERY, mode="hybrid") == {made.elsewhere}
        assert get(None, q=QUERY, mode="semantic").status_code == 401
        assert get("ada", q=QUERY, mode="fuzzy").status_code == 422

        async def mcp() -> None:
            async with http_session(f"{server.url}/mcp", tokens["vic"]) as s:
                result = await s.call_tool("job_search", {"query": QUERY, "mode": "semantic"})
                data = result.structured_content
                assert not result.is_error and data is not None, result.content
                assert data["mode"] == "semantic"
                assert {r["run_id"] for r in data["runs"]} == {made.outage, made.logged}
                assert all(r["score"] > 0.9 for r in data["runs"])
                assert data["schedules"] == []
                storage = await s.call_tool("job_search", {"query": "storage", "mode": "semantic"})
                assert storage.structured_content is not None
                schedules = storage.structured_content["schedules"]
                assert [(x["id"], x["name"]) for x in schedules] == [
                    (made.cleanup, "nightly disk cleanup")
                ]
                jobs = await s.call_tool("job_search", {"query": "sum of numbers"})
                found = jobs.structured_content
                assert found is not None and found["mode"] == "hybrid"
                assert "examples.add" in {j["name"] for j in found["jobs"]}  # "Add two integers"

        anyio.run(mcp)


def test_a_changed_schedule_is_embedded_again(made: Made) -> None:
    other = made.client(OTHER)
    assert other.schedules.nearest("payment") == []
    other.schedules.update(made.cleanup_elsewhere, description="and the billing invoices")
    eventually(
        lambda: (
            [i for i, _ in other.schedules.nearest("payment")] == [made.cleanup_elsewhere]
            or NotYet("not embedded again")
        ),
        30,
        what="the changed schedule embedded again",
    )
    assert made.client(ADMIN).schedules.nearest("payment") == []  # the other tenant's


def test_an_openai_compatible_endpoint_embeds_for_the_workers(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> None:
    with FakeEndpoint() as fake:
        env = {
            **ENV,
            "JOBSYS_EMBEDDER": f"openai:{fake.url}",
            "JOBSYS_EMBEDDER_MODEL": "tiny-embed",
            "JOBSYS_EMBEDDER_KEY": "sk-semantic",
        }
        with cluster(tmp_path_factory.mktemp("openai"), redis_url, database_url, **env) as c:
            c.start_worker("w1", concurrency=1)
            run_id = c.client.submit("examples.fail", {"message": OUTAGE})
            c.wait_all([run_id], timeout=60)

            def found() -> bool | NotYet:
                got = ids(c.client.list(search=QUERY, mode="semantic"))
                return got == [run_id] or NotYet(f"found {got}")

            eventually(found, 30, what="the run embedded through the endpoint")
        models = {body["model"] for body, _ in fake.requests}
        keys = {headers["Authorization"] for _, headers in fake.requests}
        assert models == {"tiny-embed"} and keys == {"Bearer sk-semantic"}


def test_one_indexer_at_a_time_takes_the_entries_and_keeps_each_vector_once(
    store: runs.RunStore,
) -> None:
    assert isinstance(store, stores.Store)
    calls: list[int] = []

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return embedder.embed(texts)

    with store.engine.begin() as conn:
        search.index(conn, [(f"r{i}", "connection refused") for i in range(5)])
    sem = store.semantic
    # the first pass takes nothing: entries are taken one pass after they are seen
    assert sem.index_runs(embed, 2, "w1") == 0 and calls == []
    assert sem._take("w2", 2) is not None  # another worker holds the work
    assert sem.index_runs(embed, 2, "w1") == 0 and calls == []
    sem._release("w2")
    assert sem.index_runs(embed, 2, "w1") == 5 and calls == [2, 2, 1]
    assert sem.index_runs(embed, 2, "w1") == 0 and sem.count() == 5
    with store.engine.begin() as conn:  # done again from the start: no vector twice
        conn.execute(schema.embed_progress.update().values(done_to=0))
    assert sem.index_runs(embed, 10, "w2") == 5 and sem.count() == 5
