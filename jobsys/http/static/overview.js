// The overview (the dashboard's home): charts of the last hour or day from
// GET /api/v1/stats/series — runs by state, failure rate, duration p50/p95 per job, queue
// depth and live workers — redrawn every few seconds while the page is shown.

import { get } from "./api.js";
import { barChart, lineChart } from "./chart.js";
import { fmtDuration, h, replace } from "./dom.js";
import { poll } from "./shared.js";

const POLL_MS = 5000;
const WINDOWS = { "1h": "last hour", "1d": "last day" };
const STATES = [
  ["submitted", "submitted"],
  ["completed", "completed"],
  ["failed", "failed"],
  ["cancelled", "cancelled"],
];

const pct = (v) => `${Math.round(v * 100)} %`;
const whole = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));
const seconds = (v) => (v === 0 ? "0" : fmtDuration(v));

function toggle(current) {
  return h("div", { className: "toggle", role: "group", "aria-label": "window", testid: "overview-window" },
    Object.entries(WINDOWS).map(([key, label]) =>
      h("a", { href: `#/overview?window=${key}`, className: key === current ? "active" : null, testid: `overview-window-${key}`,
        "aria-pressed": String(key === current), title: label }, key)));
}

function per(data) {
  return data.bucket_seconds === 60 ? "minute" : `${data.bucket_seconds / 60} minutes`;
}

function summary(data) {
  const t = data.totals;
  const ended = t.completed + t.failed + t.cancelled;
  const rate = ended ? ` (${pct(t.failed / ended)} of those that ended)` : "";
  return `${WINDOWS[data.window]}: ${t.submitted} submitted, ${t.completed} completed, ${t.failed} failed${rate}, ${t.cancelled} cancelled.`;
}

function charts(data) {
  const xs = data.buckets.map((b) => new Date(b));
  const samples = data.samples;
  return [
    lineChart({ testid: "chart-runs", title: `Runs per ${per(data)} by state`, xs, yLabel: "runs",
      series: STATES.map(([name, label]) => ({ name, label, values: data.runs[name] })), fmt: whole }),
    lineChart({ testid: "chart-failure-rate", title: "Failure rate (failed / ended)", xs, yLabel: "failed", yFloor: 1,
      series: [{ name: "failure_rate", label: "failure rate", values: data.failure_rate, dropZero: false }], fmt: pct,
      empty: "No run ended in this window." }),
    barChart({ testid: "chart-durations", title: "Duration per job (completed or failed in the window)", xLabel: "seconds",
      keys: [{ name: "p50", label: "p50" }, { name: "p95", label: "p95" }], fmt: seconds,
      rows: data.durations.map((d) => ({ label: d.job, values: { p50: d.p50, p95: d.p95 } })),
      empty: "No run ended in this window." }),
    lineChart({ testid: "chart-queued", title: "Queue depth (messages waiting, all queues)", xs, yLabel: "messages",
      series: [{ name: "queued", label: "queued", values: samples.queued, dropZero: false }], fmt: whole,
      empty: `No sample yet: this server samples every ${samples.every_seconds} s.` }),
    lineChart({ testid: "chart-workers", title: "Live workers", xs, yLabel: "workers",
      series: [{ name: "workers", label: "live workers", values: samples.workers, dropZero: false }], fmt: whole,
      empty: `No sample yet: this server samples every ${samples.every_seconds} s.` }),
  ];
}

export function renderOverview(view, _arg, params) {
  const span = params.get("window") in WINDOWS ? params.get("window") : "1h";
  const head = h("p", { className: "muted", testid: "overview-summary" });
  const grid = h("div", { className: "charts", testid: "overview-charts" });
  const note = h("p", { className: "hint", testid: "overview-note" });
  view.append(h("div", { className: "actions" }, h("h1", null, "Overview"), toggle(span)), head, grid, note);
  return poll(async () => {
    const data = await get(`/stats/series?window=${span}`);
    head.textContent = summary(data);
    note.textContent = "Runs count your tenant and the jobs you may list; queue depth and workers are the whole cluster, " +
      `as this server sampled them every ${data.samples.every_seconds} s since it started (the highest sample per bucket). ` +
      "Times are your local time.";
    grid.dataset.at = data.at;
    grid.dataset.window = data.window;
    replace(grid, charts(data));
  }, POLL_MS);
}
