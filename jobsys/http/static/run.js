// One run: its record, its history (attempts and changes), progress, live logs (server-sent
// events), cancel and retry.

import { get, logStreamUrl, post, query, seg } from "./api.js";
import { badge, button, facts, fmtDuration, fmtJson, fmtTime, h, progressBar, replace, runPct } from "./dom.js";
import { act, notify, poll } from "./shared.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const RETRYABLE = new Set(["failed", "cancelled"]);

function runLink(id, testid) {
  return id ? h("a", { href: `#/runs/${seg(id)}`, testid }, id) : "—";
}

function timings(run) {
  return facts([
    ["created", fmtTime(run.created_at), "run-created"],
    ["started", fmtTime(run.started_at), "run-started"],
    ["finished", fmtTime(run.finished_at), "run-finished"],
    ["duration", fmtDuration(run.duration), "run-duration"],
    ["next attempt", fmtTime(run.next_attempt_at)],
    ["deadline", fmtTime(run.deadline_at)],
  ]);
}

function placement(run) {
  const origin = [];
  if (run.schedule_id) origin.push(h("a", { href: "#/schedules" }, `schedule ${run.schedule_id}`));
  if (run.workflow_id) origin.push(h("a", { href: `#/workflows/${seg(run.workflow_id)}` }, `workflow ${run.workflow_id}`));
  return facts([
    ["job", run.job, "run-job"],
    ["attempts", `${run.attempts} of ${run.max_attempts}${run.lost ? ` (worker lost ${run.lost}×)` : ""}`, "run-attempts"],
    ["worker", run.worker ? `${run.worker}${run.worker_pid ? ` pid ${run.worker_pid}` : ""}` : "—", "run-worker"],
    // Why a waiting run has not started (no live worker knows its job), when a worker said.
    ...(run.waiting && !TERMINAL.has(run.state) ? [["waiting", run.waiting.message, "run-waiting"]] : []),
    ["queue", `${run.queue} (priority ${run.priority})`],
    ["timeout", `${run.timeout} s`],
    ["tags", (run.tags || []).join(", ") || "—", "run-tags"],
    ["principal", run.principal_id],
    ["parent", runLink(run.parent_id, "run-parent")],
    ["origin", origin.length ? origin : "—"],
  ]);
}

/** The run's error; on a completed run, an error is an earlier attempt's and says so. */
function errorBlock(error, state) {
  if (!error) return h("p", { className: "muted", testid: "run-error" }, "No error.");
  const earlier = state === "completed";
  return h(
    "div",
    { className: earlier ? "earlier-error-box" : "error-box", testid: "run-error", "data-earlier": String(earlier) },
    earlier ? h("p", { className: "muted" }, "An earlier attempt failed; a later one completed the run:") : null,
    h("p", null, h("strong", null, error.type || "Error"), `: ${error.message || ""}`),
    error.reason ? h("p", { className: "muted" }, `reason: ${error.reason}`) : null,
    error.traceback ? h("details", null, h("summary", null, "traceback"), h("pre", null, error.traceback)) : null,
  );
}

/** What an event changed, in words. */
function change(event) {
  if (event.kind === "created") return `created (${event.to_state})`;
  if (event.kind === "progress") return `progress ${(event.detail || {}).milestone} %`;
  if (event.kind === "action") {
    const detail = event.detail || {};
    return detail.run_id ? `${detail.action} as ${detail.run_id}` : detail.action || "action";
  }
  return `${event.from_state} → ${event.to_state}`;
}

/** The run's history: its attempts (timing, worker, how each ended) and every change. */
function historyBlock(history) {
  const attempts = h(
    "ol",
    { className: "attempts", testid: "run-attempts" },
    history.attempts.map((a) =>
      h(
        "li",
        { testid: "run-attempt", "data-attempt": String(a.attempt), "data-outcome": a.outcome || "running" },
        h("strong", null, `attempt ${a.attempt}`),
        ` ${a.outcome || "running"}`,
        a.duration !== null ? ` after ${fmtDuration(a.duration)}` : "",
        a.worker ? ` on ${a.worker}` : "",
        a.error ? h("span", { className: "attempt-error" }, ` — ${a.error.type || "Error"}: ${a.error.message || ""}`) : null,
      ),
    ),
  );
  const table = h(
    "table",
    { className: "grid", testid: "run-history" },
    h("thead", null, h("tr", null, ["at", "attempt", "change", "worker", "by", "error"].map((c) => h("th", null, c)))),
    h(
      "tbody",
      null,
      history.events.map((e) =>
        h(
          "tr",
          { testid: "history-event", "data-kind": e.kind, "data-to": e.to_state || "" },
          h("td", null, fmtTime(e.at)),
          h("td", null, String(e.attempt)),
          h("td", null, change(e)),
          h("td", null, e.worker || ""),
          h("td", null, e.actor || ""),
          h("td", null, e.error ? `${e.error.type || "Error"}: ${e.error.message || ""}` : ""),
        ),
      ),
    ),
  );
  return [attempts, table];
}

function section(title, ...body) {
  return h("section", { className: "card" }, h("h2", null, title), ...body);
}

/** Render the parts of the page that come from the run record. */
function fill(parts, run) {
  parts.root.dataset.state = run.state;
  replace(parts.state, badge(run.state, "run-state"), run.cancel_requested && !TERMINAL.has(run.state) ? h("small", { testid: "run-cancelling" }, " cancel requested") : null);
  const note = run.progress && run.progress.message ? run.progress.message : "";
  replace(parts.progress, progressBar(runPct(run), "run-progress", note));
  replace(parts.facts, placement(run), timings(run));
  replace(parts.input, h("pre", { testid: "run-input" }, fmtJson(run.input)));
  replace(parts.output, h("pre", { testid: "run-output" }, run.output === null || run.output === undefined ? "—" : fmtJson(run.output)));
  replace(parts.error, errorBlock(run.error, run.state));
  parts.cancel.disabled = TERMINAL.has(run.state);
  parts.retry.disabled = !RETRYABLE.has(run.state);
}

/** Live log lines: an EventSource, or polling /logs?after= if the stream fails. */
class LogFeed {
  constructor(runId, pre, onState, onProgress) {
    this.runId = runId;
    this.pre = pre;
    this.onState = onState;
    this.onProgress = onProgress;
    this.lastId = 0;
    this.stopPolling = null;
    this.open();
  }

  add(line) {
    if (line.id !== undefined && line.id <= this.lastId) return; // replayed after a reconnect
    if (line.id !== undefined) this.lastId = line.id;
    const at = line.at ? new Date(line.at).toLocaleTimeString() : "";
    this.pre.append(h("span", { className: "log-line", testid: "log-line" }, `${at}  ${line.message}\n`));
    this.pre.scrollTop = this.pre.scrollHeight;
  }

  open() {
    const source = new EventSource(logStreamUrl(this.runId));
    this.source = source;
    source.addEventListener("log", (e) => this.add(JSON.parse(e.data)));
    source.addEventListener("state", (e) => this.onState(JSON.parse(e.data)));
    source.addEventListener("progress", (e) => this.onProgress(JSON.parse(e.data).progress));
    source.addEventListener("end", () => {
      source.close();
      this.onState(null);
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) this.fallback();
    };
  }

  fallback() {
    this.source = null;
    this.stopPolling = poll(async () => {
      const data = await get(`/runs/${seg(this.runId)}/logs${query({ after: this.lastId || "" })}`);
      (data.logs || []).forEach((line) => this.add(line));
      return !this.done;
    });
  }

  finish() {
    this.done = true;
  }

  close() {
    if (this.source) this.source.close();
    if (this.stopPolling) this.stopPolling();
  }
}

/** A record that says less than the one shown: not ended where the shown one has (the same
 * attempt), or an earlier attempt. */
function stale(record, shown) {
  if (record.attempts < shown.attempts) return true;
  return record.attempts === shown.attempts && TERMINAL.has(shown.state) && !TERMINAL.has(record.state);
}

/** Progress reported before the progress shown, in the same attempt. */
function olderProgress(record, shown) {
  const a = record.progress && record.progress.at;
  const b = shown.progress && shown.progress.at;
  return record.attempts === shown.attempts && Boolean(a && b) && a < b;
}

export function renderRun(view, runId) {
  const parts = {
    state: h("span"),
    progress: h("div", { className: "run-progress-box" }),
    facts: h("div", { className: "columns" }),
    input: h("div"),
    output: h("div"),
    error: h("div"),
    history: h("div"),
    cancel: button("Cancel", () => cancel(), { testid: "run-cancel", className: "danger" }),
    retry: button("Retry", () => retry(), { testid: "run-retry" }),
  };
  const logs = h("pre", { className: "logs", testid: "run-logs" });
  parts.root = h(
    "article",
    { className: "run", testid: "run-detail", "data-run-id": runId },
    h("h1", null, "Run ", h("code", { testid: "run-id" }, runId), " ", parts.state),
    h("div", { className: "actions" }, parts.cancel, parts.retry, h("a", { href: "#/runs" }, "all runs")),
    parts.progress,
    parts.facts,
    h("div", { className: "columns" }, section("Input", parts.input), section("Output", parts.output)),
    section("Error", parts.error),
    section("History", parts.history),
    section("Logs", logs),
  );
  view.append(parts.root);

  let run = null;
  // Records come from the poll, the stream's state events and its progress events, and a
  // slow poll can answer after a newer event: never show the run going back.
  const show = (record) => {
    if (run && stale(record, run)) return;
    if (run && olderProgress(record, run)) record = { ...record, progress: run.progress };
    run = record;
    fill(parts, record);
  };
  // The history is read again when the run changes (its state or its attempt).
  let seen = "";
  const showHistory = async (record) => {
    const mark = `${record.state}/${record.attempts}/${record.cancel_requested}`;
    if (mark === seen) return;
    seen = mark;
    replace(parts.history, ...historyBlock(await get(`/runs/${seg(runId)}/events`)));
  };
  const refresh = async () => {
    const record = await get(`/runs/${seg(runId)}`);
    show(record);
    await showHistory(run);
  };

  async function cancel() {
    const record = await act(parts.cancel, () => post(`/runs/${seg(runId)}/cancel`));
    if (record) {
      show(record);
      notify("Cancel requested.");
    }
  }

  async function retry() {
    const made = await act(parts.retry, () => post(`/runs/${seg(runId)}/retry`));
    if (made && made.run_id) location.hash = `#/runs/${seg(made.run_id)}`;
  }

  const feed = new LogFeed(
    runId,
    logs,
    (record) => (record ? show(record) : refresh().catch(() => {})),
    (progress) => run && show({ ...run, progress }),
  );
  // The record (state, progress) is polled until the run ends; the stream carries the logs.
  const stop = poll(async () => {
    await refresh();
    if (run && TERMINAL.has(run.state)) {
      feed.finish();
      return false;
    }
    return true;
  });
  return () => {
    stop();
    feed.close();
  };
}
