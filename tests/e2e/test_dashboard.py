"""The web dashboard, end to end in headless Chromium: a real cluster (Redis, a run store, a
``jobsys worker``), ``jobsys serve`` in a subprocess, and Debian's chromium driven by
Playwright. The browser logs in with a token, submits from the form generated from a job's
schema, watches progress reach 100 %, cancels a long run, retries a failed one, steers a
schedule and draws a workflow run's DAG; each result is checked in the run store as well.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``); Playwright's own browser
downloads are not used. Without it the module is skipped (the reason says so), except where
``JOBSYS_REQUIRE_BROWSER=1`` (``.ci/run``), where it fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from jobsys import SubmitOptions
from jobsys.declare import cadence, permissions
from jobsys.store import runs
from tests.cluster import Cluster, cluster
from tests.servers import Serve
from tests.waiting import NotYet, eventually

CHROMIUM = Path(os.environ.get("JOBSYS_TEST_CHROMIUM", "/usr/bin/chromium"))
BROWSER_REQUIRED = os.environ.get("JOBSYS_REQUIRE_BROWSER") == "1"
"""Set by ``.ci/run`` (which installs Chromium): there, a missing browser fails the run."""

pytestmark = [
    pytest.mark.interface,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not BROWSER_REQUIRED,
        reason=f"the dashboard test needs Chromium at {CHROMIUM} (apt-get install chromium); "
        "CI installs it and sets JOBSYS_REQUIRE_BROWSER=1",
    ),
]
ADMIN = permissions.Principal(id="ui-admin", roles=("admin",))
WAIT_MS = 30_000
"""How long the browser waits for a run to reach a state (the worker runs it meanwhile)."""

expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def ui_cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    # (an embedder, for the search mode selector: tests/embedder.py)
    embedder = {"JOBSYS_EMBEDDER": "python:tests.embedder:embed", "JOBSYS_EMBED_SECONDS": "0.3"}
    with cluster(tmp_path_factory.mktemp("dashboard"), redis_url, database_url, **embedder) as c:
        c.start_worker("w1", concurrency=2)
        yield c


@pytest.fixture(scope="module")
def server(ui_cluster: Cluster) -> Iterator[Serve]:
    with Serve(ui_cluster) as s:
        yield s


@pytest.fixture(scope="module")
def token(ui_cluster: Cluster) -> str:
    _, secret = ui_cluster.client.admin.create_token(ADMIN)
    return secret


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found, and JOBSYS_REQUIRE_BROWSER=1: install Debian's chromium "
            "(`apt-get install chromium`) or set JOBSYS_TEST_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
NETWORK_RELOADS = 3


class Ui:
    """A browser tab on the dashboard, with the uncaught page errors it saw."""

    def __init__(self, page: Page, base: str) -> None:
        self.page, self.base = page, base
        self.page_errors: list[str] = []
        self.failed_requests: list[str] = []
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on(
            "requestfailed",
            lambda r: self.failed_requests.append(f"{r.method} {r.url}: {r.failure}"),
        )

    def by(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    def open(self, route: str = "") -> None:
        """Load the dashboard at ``route``, again if the host's network changed meanwhile:
        Chromium cancels the requests in flight (``net::ERR_NETWORK_CHANGED``) whenever a
        network interface comes or goes, which the multi-host tests (tests/cluster) do while
        this runs beside them, and a page whose scripts were cancelled never starts."""
        seen = len(self.failed_requests)
        self.page.goto(f"{self.base}/#/{route}" if route else f"{self.base}/")
        for _ in range(NETWORK_RELOADS):
            if not any(NETWORK_CHANGED in f for f in self.failed_requests[seen:]):
                return
            seen = len(self.failed_requests)
            self.page.reload()

    def login(self, secret: str, route: str = "") -> None:
        self.open(route)
        self.by("login-token").fill(secret)
        self.by("login-submit").click()
        expect(self.by("whoami")).to_contain_text(ADMIN.id)
        expect(self.by("login-view")).to_be_hidden()

    def run_id(self) -> str:
        """The id of the run the detail page shows (after the page moved to it)."""
        expect(self.page).to_have_url(re.compile(r"#/runs/[0-9a-f]+$"))
        detail = self.by("run-detail")
        expect(detail).to_be_visible()
        run_id = detail.get_attribute("data-run-id")
        assert run_id
        return run_id

    def expect_run_state(self, state: str, timeout: float = WAIT_MS) -> None:
        expect(self.by("run-detail")).to_have_attribute("data-state", state, timeout=timeout)

    def open_form(self, job: str) -> None:
        self.open(f"submit/{job}")
        expect(self.by("submit-form")).to_have_attribute("data-ready", "true")

    def assert_clean(self) -> None:
        assert self.page_errors == [], self.page_errors


@pytest.fixture
def ui(request: pytest.FixtureRequest, browser: Browser, server: Serve) -> Iterator[Ui]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    failed_before = request.session.testsfailed
    tab = Ui(page, server.url)
    try:
        yield tab
    finally:
        if request.session.testsfailed > failed_before:
            shot = Path("/tmp") / f"jobsys-dashboard-{request.node.name}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the failed test: {shot}\nserver log:\n{server.tail()}")
            print(f"failed requests: {tab.failed_requests}\npage errors: {tab.page_errors}")
        context.close()


def test_a_bad_token_shows_the_login_error(ui: Ui) -> None:
    ui.open()
    expect(ui.by("login-view")).to_be_visible()
    ui.by("login-token").fill("not-a-real-token")
    ui.by("login-submit").click()
    expect(ui.by("login-error")).to_be_visible()
    expect(ui.by("login-error")).to_contain_text(re.compile(r"token", re.IGNORECASE))
    expect(ui.by("nav")).to_be_hidden()
    assert ui.page.evaluate("sessionStorage.getItem('jobsys.token')") is None
    ui.assert_clean()


def test_the_generated_form_submits_and_progress_reaches_100(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    ui.login(token)
    ui.by("nav-submit").click()
    ui.page.locator('[data-testid="job-link"][data-job="ui.progress"]').click()
    expect(ui.by("submit-form")).to_have_attribute("data-ready", "true")

    # one input per field of the schema, defaults prefilled, the required one marked
    expect(ui.by("required-label")).to_be_visible()
    expect(ui.by("required-seconds")).to_have_count(0)
    expect(ui.by("field-label")).to_have_value("")
    expect(ui.by("field-seconds")).to_have_attribute("type", "number")
    expect(ui.by("field-seconds")).to_have_value("2")
    expect(ui.by("field-steps")).to_have_value("10")
    expect(ui.by("field-mode").locator("option:checked")).to_have_text("even")
    expect(ui.by("field-shout")).not_to_be_checked()
    expect(ui.by("field-words")).to_have_attribute("placeholder", re.compile("comma"))
    expect(ui.by("field-options")).to_have_js_property("tagName", "TEXTAREA")

    # the server's field errors appear next to the fields
    ui.by("field-steps").fill("0")
    ui.by("submit-button").click()
    expect(ui.by("field-error-steps")).to_contain_text(re.compile(r"\S"))
    expect(ui.by("field-error-label")).to_contain_text(re.compile(r"\S"))
    expect(ui.by("submit-error")).to_be_visible()
    expect(ui.page).to_have_url(re.compile(r"#/submit/ui\.progress$"))

    ui.by("field-label").fill("hello ui")
    ui.by("field-steps").fill("10")
    ui.by("field-words").fill("alpha, beta")
    ui.by("submit-button").click()
    run_id = ui.run_id()

    # record every progress value the page shows, then wait for the end
    ui.page.evaluate(
        """() => {
          window.seenPct = [];
          const note = () => {
            const bar = document.querySelector('[data-testid="run-progress"]');
            if (bar) window.seenPct.push(Number(bar.dataset.pct));
          };
          note();
          new MutationObserver(note).observe(
            document.querySelector('[data-testid="run-detail"]'), {childList: true, subtree: true});
        }"""
    )
    ui.expect_run_state("completed")
    expect(ui.by("run-progress")).to_have_attribute("data-pct", "100")
    expect(ui.by("run-progress-text")).to_contain_text("100 %")
    seen = ui.page.evaluate("window.seenPct")
    assert seen[-1] == 100
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    expect(ui.by("run-output")).to_contain_text("alpha")
    expect(ui.by("run-logs")).to_contain_text("step 10 of 10")
    expect(ui.by("run-cancel")).to_be_disabled()

    record = ui_cluster.store.get(run_id)
    assert record.state is runs.RunState.COMPLETED
    assert record.input["label"] == "hello ui"
    assert record.input["words"] == ["alpha", "beta"]
    assert record.progress is not None and record.progress["pct"] == 100
    assert record.output == {"label": "hello ui", "steps": 10, "words": ["alpha", "beta"]}

    # the runs table shows it, filtered by job
    ui.by("nav-runs").click()
    ui.by("runs-filter-job").select_option("ui.progress")
    row = ui.page.locator(f'[data-testid="run-row"][data-run-id="{run_id}"]')
    expect(row).to_have_attribute("data-state", "completed")
    expect(row.get_by_test_id("run-progress-text")).to_contain_text("100 %")
    expect(ui.by("run-row")).to_have_count(1)
    ui.assert_clean()


def test_a_long_run_is_cancelled_with_the_button(ui: Ui, ui_cluster: Cluster, token: str) -> None:
    ui.login(token, "submit/ui.long")
    expect(ui.by("submit-form")).to_have_attribute("data-ready", "true")
    expect(ui.by("field-seconds")).to_have_value("120")
    ui.by("submit-button").click()
    run_id = ui.run_id()
    ui.expect_run_state("running")
    worker = ui_cluster.wait_state(run_id, runs.RunState.RUNNING, timeout=10).worker
    assert worker and worker.startswith("w1")
    expect(ui.by("run-worker")).to_contain_text(worker)
    ui.by("run-cancel").click()
    ui.expect_run_state("cancelled")
    expect(ui.by("run-state")).to_have_text("cancelled")
    expect(ui.by("run-cancel")).to_be_disabled()
    expect(ui.by("run-retry")).to_be_enabled()

    record = ui_cluster.store.get(run_id)
    assert record.state is runs.RunState.CANCELLED
    assert record.cancel_requested
    assert ui_cluster.executions(run_id) == 1
    ui.assert_clean()


def test_a_failed_run_is_retried_with_the_button(ui: Ui, ui_cluster: Cluster, token: str) -> None:
    failed_id = ui_cluster.client.submit("ui.fail", {"reason": "planned failure 7"})
    ui_cluster.wait_state(failed_id, runs.RunState.FAILED, timeout=60)

    ui.login(token)
    ui.by("nav-runs").click()
    ui.by("runs-filter-state").select_option("failed")
    ui.by("runs-filter-search").fill("planned failure 7")
    ui.by("runs-filter-apply").click()
    row = ui.page.locator(f'[data-testid="run-row"][data-run-id="{failed_id}"]')
    expect(row).to_have_attribute("data-state", "failed")
    row.get_by_test_id("run-link").click()

    expect(ui.by("run-detail")).to_have_attribute("data-run-id", failed_id)
    ui.expect_run_state("failed")
    expect(ui.by("run-error")).to_contain_text("planned failure 7")
    expect(ui.by("run-cancel")).to_be_disabled()
    ui.by("run-retry").click()

    expect(ui.by("run-detail")).not_to_have_attribute("data-run-id", failed_id)
    new_id = ui.run_id()
    expect(ui.by("run-parent")).to_have_text(failed_id)
    ui.expect_run_state("failed")
    assert ui_cluster.store.get(new_id).parent_id == failed_id
    assert ui_cluster.executions(new_id) == 1
    ui.assert_clean()


def test_the_search_mode_finds_a_run_by_meaning_or_by_its_words(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    run_id = ui_cluster.client.submit("ui.fail", {"reason": "connection refused by upstream host"})
    ui_cluster.wait_state(run_id, runs.RunState.FAILED, timeout=60)
    eventually(  # the workers' indexer embeds the error in the background
        lambda: (
            run_id in {r.id for r in ui_cluster.client.list(search="outage", mode="semantic")}
            or NotYet("not embedded yet")
        ),
        30,
        what="the run's error embedded",
    )
    row = ui.page.locator(f'[data-testid="run-row"][data-run-id="{run_id}"]')

    ui.login(token, "runs")
    ui.by("runs-filter-search").fill("network outage")  # no word of the error
    ui.by("runs-filter-mode").select_option("semantic")
    expect(ui.page).to_have_url(re.compile(r"mode=semantic"))
    expect(row).to_have_attribute("data-state", "failed")
    ui.by("runs-filter-mode").select_option("keyword")
    expect(ui.by("runs-empty")).to_be_visible()
    expect(row).to_have_count(0)
    ui.by("runs-filter-search").fill("refused upstream")
    ui.by("runs-filter-apply").click()
    expect(row).to_have_count(1)
    ui.assert_clean()


def test_the_runs_a_filter_selects_are_retried_in_bulk_after_a_count(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    tag = "ui-bulk-7"
    options = SubmitOptions(tags=(tag,))
    failed = [ui_cluster.client.submit("ui.fail", {"reason": "bulk"}, options) for _ in range(3)]
    ui_cluster.wait_all(failed, timeout=60)

    ui.login(token, f"runs?tag={tag}&state=failed&exhausted=true")
    expect(ui.by("runs-filter-exhausted")).to_be_checked()
    expect(ui.by("run-row")).to_have_count(3)
    ui.by("runs-bulk-retry").click()
    expect(ui.by("runs-bulk-question")).to_have_text("3 runs match — retry them?")
    ui.by("runs-bulk-keep").click()  # nothing yet
    expect(ui.by("runs-bulk-panel")).to_be_hidden()
    assert ui_cluster.client.list(tag=tag, limit=10) and not [
        r for r in ui_cluster.client.list(tag=tag, limit=10) if r.parent_id
    ]
    ui.by("runs-bulk-retry").click()
    ui.by("runs-bulk-go").click()
    expect(ui.by("runs-bulk-result")).to_have_text("3 of 3 runs retried.")
    retries = [r for r in ui_cluster.client.list(tag=tag, limit=10) if r.parent_id]
    assert sorted(r.parent_id or "" for r in retries) == sorted(failed)

    ui.by("runs-filter-search").fill("bulk")  # keyword search: no bulk action
    ui.by("runs-filter-apply").click()
    expect(ui.by("runs-bulk-delete")).to_be_disabled()
    ui.assert_clean()


def test_a_completed_run_labels_an_earlier_attempts_error(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    run_id = ui_cluster.client.submit("examples.flaky", {"failures": 1})
    record = ui_cluster.client.wait(run_id, timeout=60)
    assert record.state is runs.RunState.COMPLETED and record.attempts == 2
    assert record.error is not None  # the first attempt's, kept in the record

    ui.login(token, f"runs/{run_id}")
    ui.expect_run_state("completed")
    expect(ui.by("run-error")).to_have_attribute("data-earlier", "true")
    expect(ui.by("run-error")).to_contain_text("An earlier attempt failed")
    expect(ui.page.locator(".error-box")).to_have_count(0)
    # The history: both attempts, the first with its error, and each change of state.
    attempts = ui.page.get_by_test_id("run-attempt")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_have_attribute("data-outcome", "retrying")
    expect(attempts.nth(0)).to_contain_text(record.error["message"])
    expect(attempts.nth(1)).to_have_attribute("data-outcome", "completed")
    changes = ui.page.get_by_test_id("history-event")
    expect(changes).to_have_count(len(ui_cluster.client.events(run_id).events))
    expect(changes.last).to_have_attribute("data-to", "completed")
    ui.assert_clean()


def test_a_waiting_run_says_why_it_has_not_started(ui: Ui, ui_cluster: Cluster, token: str) -> None:
    """A run whose message a worker without its job parked (``parking.py``) says why it
    waits; the record is made here, as that worker writes it, and never published."""
    why = "no live worker knows job 'tests.effect': worker old@host does not"
    record = ui_cluster.store.create(
        {
            "id": runs.new_run_id(),
            "job": "tests.effect",
            "job_version": "1",
            "queue": "jobs",
            "priority": 5,
            "input": {"seconds": 0},
            "max_attempts": 1,
            "timeout": 10.0,
            "principal": ADMIN.model_dump(mode="json"),
            "principal_id": ADMIN.id,
            "tenant": ADMIN.tenant,
        }
    )
    assert record is not None
    assert ui_cluster.store.mark_waiting(record.id, 1, {"reason": "no_worker", "message": why})
    try:
        ui.login(token, f"runs/{record.id}")
        ui.expect_run_state("pending")
        expect(ui.by("run-waiting")).to_have_text(why)
        ui_cluster.client.cancel(record.id)
        ui.expect_run_state("cancelled")
        expect(ui.by("run-waiting")).to_have_count(0)
    finally:
        if not ui_cluster.store.get(record.id).terminal:
            ui_cluster.store.request_cancel(record.id)
    ui.assert_clean()


def test_the_job_page_shows_its_limits(ui: Ui, ui_cluster: Cluster, token: str) -> None:
    """A job's concurrency and rate limits on its page (a job registered at runtime with its
    own); a job without limits shows none."""
    ui_cluster.client.definitions.register(
        {
            "kind": "alias",
            "name": "ui.limited",
            "target": "examples.add",
            "max_concurrency": 2,
            "rate": "10/s",
        }
    )
    try:
        ui.login(token, "submit/ui.limited")
        expect(ui.by("submit-form")).to_have_attribute("data-ready", "true")
        expect(ui.by("job-limits")).to_have_text("Limits: max_concurrency 2 · rate 10/s")
        ui.open("submit/examples.add")
        expect(ui.by("submit-form")).to_have_attribute("data-ready", "true")
        expect(ui.by("job-limits")).to_be_hidden()
    finally:
        ui_cluster.client.definitions.remove("ui.limited")
    ui.assert_clean()


def test_schedules_pause_resume_and_trigger(ui: Ui, ui_cluster: Cluster, token: str) -> None:
    schedules = ui_cluster.client.schedules
    sched = schedules.create("tests.effect", cadence.every(3600, input={"seconds": 0}), "ui-hourly")
    ui.login(token, "schedules")
    row = ui.page.locator(f'[data-testid="schedule-row"][data-schedule-id="{sched.id}"]')
    expect(row).to_have_attribute("data-state", "active")
    expect(row.get_by_test_id("schedule-next")).not_to_have_text("—")

    row.get_by_test_id("schedule-pause").click()
    expect(row).to_have_attribute("data-state", "paused")
    assert schedules.get(sched.id).state.value == "paused"
    row.get_by_test_id("schedule-resume").click()
    expect(row).to_have_attribute("data-state", "active")
    assert schedules.get(sched.id).state.value == "active"

    row.get_by_test_id("schedule-trigger").click()
    expect(ui.by("notice")).to_contain_text("Triggered")
    fired = [r for r in ui_cluster.client.list(job="tests.effect") if r.schedule_id == sched.id]
    assert len(fired) == 1 and fired[0].trigger == "manual"
    ui_cluster.wait_state(fired[0].id, runs.RunState.COMPLETED, timeout=60)
    last = schedules.get(sched.id).last_run_id
    assert last == fired[0].id
    expect(row.get_by_test_id("schedule-last-run")).to_have_attribute("title", last)
    ui.assert_clean()


def open_schedule_form(ui: Ui, job: str) -> None:
    ui.by("schedule-new").click()
    expect(ui.by("schedule-form")).to_have_attribute("data-jobs", "loaded")
    ui.by("schedule-job").select_option(job)
    expect(ui.by("schedule-form")).to_have_attribute("data-ready", "true")


def test_a_schedule_is_created_from_the_form_fires_and_is_deleted(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    schedules = ui_cluster.client.schedules
    ui.login(token, "schedules")
    open_schedule_form(ui, "tests.effect")
    expect(ui.by("field-seconds")).to_be_visible()  # the job's input schema, as a form
    ui.by("field-seconds").fill("0")
    ui.by("schedule-kind").select_option("every")
    ui.by("schedule-every-unit").select_option("seconds")
    ui.by("schedule-every").fill("2")
    ui.by("schedule-timezone").fill("UTC")
    # the server's preview of the unsaved cadence: fires 2 s apart
    fires = ui.by("schedule-preview-fire")
    expect(fires).to_have_count(5)
    expect(ui.by("schedule-preview")).to_have_attribute("data-state", "ok")
    ats = [
        dt.datetime.fromisoformat(a) for a in fires.evaluate_all("l => l.map(e => e.dataset.at)")
    ]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(ats)] == [2.0] * 4
    ui.by("schedule-name").fill("ui-every-2s <b>not bold</b>")
    ui.by("schedule-description").fill("made in the dashboard")
    ui.by("schedule-create").click()
    expect(ui.by("notice")).to_contain_text("Created schedule ui-every-2s <b>not bold</b>")
    sched_id = ui.by("schedule-form").get_attribute("data-created")
    assert sched_id
    record = schedules.get(sched_id)
    assert record.job == "tests.effect" and record.input == {"seconds": 0}
    assert record.cadence["kind"] == "interval" and record.cadence["every"] == 2
    assert record.description == "made in the dashboard"
    row = ui.page.locator(f'[data-testid="schedule-row"][data-schedule-id="{sched_id}"]')
    expect(row).to_have_attribute("data-state", "active")
    expect(row.locator("b")).to_have_count(0)  # the name is text, not HTML
    expect(row).to_contain_text("<b>not bold</b>")
    expect(row).to_contain_text("every 2.0 s")

    # beat fires it; the worker runs it; the row shows the run
    ui_cluster.start_beat("ui-beat")
    try:
        expect(row.get_by_test_id("schedule-last-run")).to_have_attribute(
            "title", re.compile(r"\w"), timeout=WAIT_MS
        )
        run_id = row.get_by_test_id("schedule-last-run").get_attribute("title")
        assert run_id
        assert ui_cluster.store.get(run_id).schedule_id == sched_id

        # delete: asked first; "Keep" keeps it
        row.get_by_test_id("schedule-delete").click()
        expect(row.get_by_test_id("schedule-delete-question")).to_contain_text("Delete ui-every-2s")
        row.get_by_test_id("schedule-delete-keep").click()
        expect(row.get_by_test_id("schedule-delete")).to_be_enabled()
        assert schedules.get(sched_id).state.value == "active"
        row.get_by_test_id("schedule-delete").click()
        row.get_by_test_id("schedule-delete-confirm").click()
        expect(row).to_have_attribute("data-state", "cancelled")
        expect(ui.by("notice")).to_contain_text("Deleted ui-every-2s")
        expect(row.get_by_test_id("schedule-delete")).to_be_disabled()
        expect(row.get_by_test_id("schedule-pause")).to_be_disabled()
        assert schedules.get(sched_id).state.value == "cancelled"
    finally:
        ui_cluster.stop("ui-beat")
    ui.assert_clean()


def test_a_bad_cron_shows_the_servers_error_by_its_field(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    before = {s.id for s in ui_cluster.client.schedules.list(limit=10_000)}
    ui.login(token, "schedules")
    open_schedule_form(ui, "tests.effect")
    ui.by("schedule-kind").select_option("cron")
    ui.by("schedule-timezone").fill("Europe/Paris")
    ui.by("schedule-cron").fill("0 9 * * 1-5")
    expect(ui.by("schedule-preview-fire")).to_have_count(5)
    expect(ui.by("schedule-preview-note")).to_contain_text("Europe/Paris")
    first = ui.by("schedule-preview-fire").first.text_content() or ""
    assert " 09:00:00" in first, first

    ui.by("schedule-cron").fill("61 * * * *")
    expect(ui.by("schedule-error-cron")).to_contain_text(re.compile(r"\S"))
    expect(ui.by("schedule-preview-fire")).to_have_count(0)
    expect(ui.by("schedule-preview")).to_have_attribute("data-state", "error")
    ui.by("schedule-create").click()
    expect(ui.by("schedule-form-error")).to_be_visible()
    expect(ui.by("schedule-form-error")).to_contain_text("InvalidSchedule")
    expect(ui.by("schedule-error-cron")).to_contain_text(re.compile(r"\S"))
    expect(ui.by("schedule-row-cron")).to_have_class(re.compile(r"\binvalid\b"))

    # the input as JSON: not an object is refused before it is sent
    ui.by("schedule-cron").fill("*/5 * * * *")
    expect(ui.by("schedule-error-cron")).to_be_empty()
    ui.by("schedule-input-mode").select_option("json")
    ui.by("schedule-input-json").fill("[1, 2]")
    ui.by("schedule-create").click()
    expect(ui.by("schedule-error-input")).to_contain_text("JSON object")
    # and an input the job's schema refuses is the server's error, by the input field
    ui.by("schedule-input-json").fill('{"seconds": "soon"}')
    ui.by("schedule-create").click()
    expect(ui.by("schedule-error-input")).to_contain_text(re.compile(r"\S"))
    expect(ui.by("schedule-form-error")).to_be_visible()
    assert {s.id for s in ui_cluster.client.schedules.list(limit=10_000)} == before
    ui.assert_clean()


def test_a_viewer_sees_only_what_it_may_do_and_the_servers_refusal(
    ui: Ui, ui_cluster: Cluster
) -> None:
    schedules = ui_cluster.client.schedules
    theirs = schedules.create("tests.operated", cadence.every(3600, input={"seconds": 0}), "ui-op")
    anyones = schedules.create("tests.effect", cadence.every(3600, input={"seconds": 0}), "ui-any")
    viewer = permissions.Principal(id="ui-viewer", roles=("viewer",), scopes=("pay",))
    _, secret = ui_cluster.client.admin.create_token(viewer)
    ui.open("schedules")
    ui.by("login-token").fill(secret)
    ui.by("login-submit").click()
    expect(ui.by("whoami")).to_contain_text(viewer.id)

    # tests.operated: only the role operator changes its schedules, so no buttons for them
    op_row = ui.page.locator(f'[data-testid="schedule-row"][data-schedule-id="{theirs.id}"]')
    any_row = ui.page.locator(f'[data-testid="schedule-row"][data-schedule-id="{anyones.id}"]')
    expect(op_row).to_have_attribute("data-state", "active")
    expect(any_row.get_by_test_id("schedule-delete")).to_be_enabled()
    for testid in ("schedule-delete", "schedule-pause", "schedule-resume", "schedule-trigger"):
        expect(op_row.get_by_test_id(testid)).to_have_count(0)

    # nor is it offered in the form; a job whose guard decides on the input is, and the
    # server's refusal of this input is shown
    ui.by("schedule-new").click()
    expect(ui.by("schedule-form")).to_have_attribute("data-jobs", "loaded")
    job = ui.by("schedule-job")
    expect(job.locator('option[value="tests.small_pay"]')).to_have_count(1)
    expect(job.locator('option[value="tests.operated"]')).to_have_count(0)
    ui.by("schedule-job").select_option("tests.small_pay")
    expect(ui.by("schedule-form")).to_have_attribute("data-ready", "true")
    ui.by("field-cents").fill("500")
    ui.by("schedule-name").fill("ui-refused")
    ui.by("schedule-create").click()
    expect(ui.by("schedule-form-error")).to_contain_text("Not allowed")
    expect(ui.by("schedule-form-error")).to_contain_text("ui-viewer")
    assert not schedules.list(name="ui-refused")

    # what it may do, it does
    any_row.get_by_test_id("schedule-delete").click()
    any_row.get_by_test_id("schedule-delete-confirm").click()
    expect(any_row).to_have_attribute("data-state", "cancelled")
    assert schedules.get(theirs.id).state.value == "active"
    schedules.delete(theirs.id)
    ui.assert_clean()


def test_a_workflow_run_is_drawn_as_a_dag(ui: Ui, ui_cluster: Cluster, token: str) -> None:
    ui.login(token, "workflows")
    ui.by("workflow-start-panel").locator("summary").click()
    ui.by("workflow-start-name").select_option("examples.diamond")
    expect(ui.by("field-count")).to_have_value("10")  # the input schema's default
    ui.by("field-count").fill("3")
    ui.by("field-bonus").fill("1")
    ui.by("workflow-start").click()
    expect(ui.page).to_have_url(re.compile(r"#/workflows/wf_\w+$"))
    wf_id = ui.by("workflow-run").get_attribute("data-workflow-run-id")
    assert wf_id and ui_cluster.client.workflows.get(wf_id).input == {"count": 3, "bonus": 1}
    expect(ui.by("workflow-run")).to_have_attribute("data-state", "completed", timeout=WAIT_MS)
    nodes = ui.by("dag-node")
    expect(nodes).to_have_count(4)
    for step in ("numbers", "squares", "offset", "total"):
        node = ui.page.locator(f'[data-testid="dag-node"][data-step="{step}"]')
        expect(node).to_have_attribute("data-state", "succeeded")
    assert ui.page.locator(".dag-edge").count() == 4
    ui.page.locator('[data-testid="dag-node"][data-step="squares"]').click()
    expect(ui.by("step-run")).to_have_count(3)
    output = ui_cluster.client.workflows.get(wf_id).output
    assert output["total"] == {"total": 1 + 4 + 9 + 3 + 1, "parts": 3}
    expect(ui.by("workflow-output")).to_contain_text('"total": 18')
    assert json.loads(ui.by("workflow-output").text_content()) == output

    ui.page.get_by_role("link", name="all workflow runs").click()
    row = ui.page.locator(f'[data-testid="workflow-row"][data-workflow-run-id="{wf_id}"]')
    expect(row).to_have_attribute("data-state", "completed")
    ui.assert_clean()


def test_logout_and_a_revoked_token_return_to_the_login_form(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    ui.login(token)
    ui.by("logout").click()
    expect(ui.by("login-view")).to_be_visible()
    expect(ui.by("login-error")).to_be_hidden()
    assert ui.page.evaluate("sessionStorage.getItem('jobsys.token')") is None

    record, short_lived = ui_cluster.client.admin.create_token(ADMIN)
    ui.login(short_lived)
    expect(ui.by("overview-charts")).to_be_visible()  # the home page
    ui_cluster.client.admin.revoke_token(record.id)
    expect(ui.by("login-view")).to_be_visible()  # the next poll gets a 401
    expect(ui.by("login-error")).to_contain_text("session ended")
    expect(ui.by("nav")).to_be_hidden()
    ui.assert_clean()


def test_the_workers_page_flags_a_node_with_another_catalog_and_a_lost_one(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    ui_cluster.start_worker("ui-old", concurrency=1, catalog="workers.examples")
    run_id = ui_cluster.client.submit("ui.long", {"seconds": 120})  # only w1 knows ui.long
    holder = ui_cluster.wait_state(run_id, runs.RunState.RUNNING, timeout=30).worker
    ui.login(token)
    ui.by("nav-workers").click()
    old = ui.page.locator('[data-testid="worker-row"][data-worker^="ui-old@"]')
    expect(old).to_have_attribute("data-mismatch", "catalog")
    expect(old.get_by_test_id("worker-state")).to_have_text("live")
    expect(old.get_by_test_id("worker-mismatch")).to_have_text("catalog")
    busy = ui.page.locator(f'[data-testid="worker-row"][data-worker="{holder}"]')
    expect(busy).to_have_attribute("data-mismatch", "")
    expect(busy.get_by_test_id("worker-running")).to_have_text("1")
    expect(busy.get_by_test_id("worker-run")).to_have_attribute("href", f"#/runs/{run_id}")
    expect(ui.by("workers-summary")).to_contain_text("1 mismatched")

    ui_cluster.kill("ui-old")  # no clean stop: its heartbeats stop, it turns lost
    expect(old).to_have_attribute("data-state", "lost")
    expect(old.get_by_test_id("worker-state")).to_have_text("lost")
    busy.get_by_test_id("worker-run").click()
    expect(ui.by("run-detail")).to_have_attribute("data-run-id", run_id)
    ui.by("run-cancel").click()
    ui.expect_run_state("cancelled")
    ui.assert_clean()


def test_queues_and_a_jobs_pauses_are_shown_and_steered(
    ui: Ui, ui_cluster: Cluster, token: str
) -> None:
    pauses = ui_cluster.client.pauses
    try:
        ui.login(token, "queues")
        row = ui.page.locator('[data-testid="queue-row"][data-queue="jobs"]')
        expect(row).to_have_attribute("data-paused", "false")
        row.get_by_test_id("queue-pause").click()
        expect(row).to_have_attribute("data-paused", "true")
        expect(row.get_by_test_id("queue-paused-by")).to_contain_text(f"queue by {ADMIN.id}")
        assert [(p.scope, p.name) for p in pauses.list_pauses()] == [("queue", "jobs")]
        row.get_by_test_id("queue-resume").click()
        expect(row).to_have_attribute("data-paused", "false")
        assert pauses.list_pauses() == []

        ui.open_form("tests.urgent")  # a job's page says what pauses it, with its button
        block = ui.by("job-pause")
        expect(block).to_have_attribute("data-paused", "false")
        ui.by("job-pause-button").click()
        expect(block).to_have_attribute("data-paused", "true")
        expect(ui.by("job-pause-state")).to_contain_text(f"job by {ADMIN.id}")
        assert [(p.scope, p.name) for p in pauses.list_pauses()] == [("job", "tests.urgent")]
        ui.by("job-resume").click()
        expect(block).to_have_attribute("data-paused", "false")
        assert pauses.list_pauses() == []
    finally:
        pauses.resume_all()
        pauses.resume_queue("jobs")
        pauses.resume_job("tests.urgent")
    ui.assert_clean()


def test_the_overview_charts_a_live_drain(
    ui: Ui, ui_cluster: Cluster, server: Serve, token: str, tmp_path: Path
) -> None:
    """The home page charts the runs of the last hour as they drain: each chart draws the
    figures of ``GET /api/v1/stats/series``; a screenshot is kept (its path is printed)."""
    console_errors: list[str] = []  # a refused style or script (CSP), a failed request
    ui.page.on(
        "console",
        lambda m: (
            console_errors.append(m.text)
            if m.type == "error" and NETWORK_CHANGED not in m.text  # (see Ui.open)
            else None
        ),
    )
    ui.login(token)  # the overview is the home page
    expect(ui.by("nav-overview")).to_have_class(re.compile(r"\bactive\b"))
    expect(ui.by("overview-charts")).to_have_attribute("data-window", "1h")
    ids = [ui_cluster.client.submit("examples.add", {"a": i, "b": 1}) for i in range(30)]
    ids += [ui_cluster.client.submit("examples.fail", {"message": "drain"}) for _ in range(10)]
    ui_cluster.wait_all(ids, timeout=90)
    headers = {"Authorization": f"Bearer {token}"}
    api = httpx.get(f"{server.url}/api/v1/stats/series", headers=headers, timeout=30).json()
    assert api["totals"]["failed"] >= 10 and api["totals"]["completed"] >= 30

    runs_chart = ui.by("chart-runs")
    for state in ("submitted", "completed", "failed", "cancelled"):
        series = runs_chart.locator(f'[data-testid="chart-series"][data-series="{state}"]')
        expect(series).to_have_attribute("data-total", str(api["totals"][state]))
        drawn = [b for b, n in zip(api["buckets"], api["runs"][state], strict=True) if n]
        points = series.get_by_test_id("chart-point")
        expect(points).to_have_count(len(drawn))  # a point per bucket that has runs
        values = [int(v or 0) for v in points.evaluate_all("ps => ps.map(p => p.dataset.value)")]
        assert sum(values) == api["totals"][state]
    rates = ui.by("chart-failure-rate").get_by_test_id("chart-point")
    expect(rates).to_have_count(sum(1 for r in api["failure_rate"] if r is not None))

    bars = ui.by("chart-durations").get_by_test_id("chart-bar")
    expect(bars).to_have_count(2 * len(api["durations"]))
    for d in api["durations"]:
        for stat in ("p50", "p95"):
            bar = ui.page.locator(
                f'[data-testid="chart-bar"][data-job="{d["job"]}"][data-stat="{stat}"]'
            )
            assert float(bar.get_attribute("data-value") or "nan") == pytest.approx(d[stat])
    queued = ui.by("chart-queued").get_by_test_id("chart-point")
    expect(queued.first).to_be_attached()
    workers = ui.by("chart-workers").get_by_test_id("chart-point")
    assert max(int(w or 0) for w in workers.evaluate_all("ps => ps.map(p => p.dataset.value)")) >= 1
    expect(ui.by("overview-summary")).to_contain_text(f"{api['totals']['failed']} failed")

    ui.by("overview-window-1d").click()  # the day, by the quarter hour
    expect(ui.by("overview-charts")).to_have_attribute("data-window", "1d")
    expect(
        runs_chart.locator('[data-testid="chart-series"][data-series="failed"]')
    ).to_have_attribute("data-total", str(api["totals"]["failed"]))
    ui.by("overview-window-1h").click()
    expect(ui.by("overview-charts")).to_have_attribute("data-window", "1h")

    shots = Path(os.environ.get("JOBSYS_TEST_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "dashboard-overview.png"
    ui.page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the overview: {shot}")
    assert console_errors == []
    ui.assert_clean()
