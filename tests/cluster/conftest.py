"""Fixtures of the multi-host scenarios: the session's ``Site`` (bridge, Redis, PostgreSQL
database, forwarder), a ``Hosts`` cluster per test module (its settings: the module's
``SETTINGS``), and ``hosts``, that cluster for one scenario. A table of every scenario's
figures ends the session (also in ``<pytest's base temp>/cluster-report.json``).

The scenarios share one bridge and so run in one process: with pytest-xdist they form one
``xdist_group`` (``--dist loadgroup``), and each scenario's figures reach the controlling
process in its teardown report's ``user_properties``, where the table is printed."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import netns
from tests.cluster.hosts import Hosts, Site, site

PASSED = pytest.StashKey[bool]()
"""Whether the test's call passed, for the report its teardown writes."""


@pytest.fixture(scope="session")
def cluster_site(
    tmp_path_factory: pytest.TempPathFactory, database_url: str | None
) -> Iterator[Site]:
    if not (database_url or "").startswith("postgresql"):
        pytest.skip(
            reason="the multi-host scenarios run on PostgreSQL: set JOBSYS_TEST_DATABASE_URL "
            "to a postgresql+psycopg:// URL whose user may create databases"
        )
    assert database_url is not None
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason=reason)
    with site(tmp_path_factory.mktemp("site"), database_url) as made:
        yield made


@pytest.fixture(scope="module")
def module_hosts(
    cluster_site: Site, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Hosts]:
    name = request.module.__name__.rpartition(".")[2]
    cluster = Hosts(
        cluster_site, tmp_path_factory.mktemp(name), **getattr(request.module, "SETTINGS", {})
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def hosts(module_hosts: Hosts, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Hosts]:
    """The module's cluster for one scenario: its outcomes are reported after the test,
    with the test's result."""
    module_hosts.begin()
    try:
        yield module_hosts
    finally:
        passed = request.node.stash.get(PASSED, False)
        for outcome in module_hosts.end():
            summary = outcome.report(tmp_path, request.node.nodeid, passed)
            request.node.user_properties.append((REPORT_PROPERTY, summary))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[PASSED] = report.passed
    return report


REPORT_PROPERTY = "cluster_report"
REPORTS: list[dict[str, Any]] = []
"""Every scenario's figures, gathered in the controlling process (``pytest_runtest_logreport``
runs there, with or without xdist)."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        REPORTS.extend(v for k, v in report.user_properties if k == REPORT_PROPERTY)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.xdist_group("netns"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if REPORTS and factory is not None and not hasattr(session.config, "workerinput"):
        path = factory.getbasetemp() / "cluster-report.json"
        path.write_text(json.dumps(REPORTS, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("multi-host scenarios")
    write(f"{'scenario':<36} {'runs':>5} {'executions/run':<16} {'recovery s':>10}  result")
    for r in REPORTS:
        per_run = " ".join(f"{k}x:{v}" for k, v in r["executions_per_run"].items())
        recovery = "-" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}"
        result = "PASS" if r.get("passed") else "FAIL"
        shown = ", ".join(f"{k} {v}" for k, v in r["extra"].items())
        write(f"{r['scenario']:<36} {r['runs']:>5} {per_run:<16} {recovery:>10}  {result}  {shown}")
