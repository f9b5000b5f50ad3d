// The workers page (admin roles): every worker process from its heartbeat, live or lost, what
// it reads and holds, and whether it runs this server's jobsys version and catalog.

import { get, seg } from "./api.js";
import { badge, fmtTime, h, replace, shortId } from "./dom.js";
import { poll } from "./shared.js";

const POLL_MS = 2000;
const COLUMNS = ["host", "worker", "pid", "state", "pool", "queues", "running", "last heartbeat", "version", "catalog", "mismatch"];

function runLinks(w) {
  const links = (w.runs || []).map((r) =>
    h("a", { href: `#/runs/${seg(r.id)}`, testid: "worker-run", title: `${r.job} ${r.id}` }, shortId(r.id)));
  const more = w.running - links.length;
  return [h("span", { testid: "worker-running" }, String(w.running)), links.length ? " " : "",
    links.flatMap((a, i) => (i ? [" ", a] : [a])), more > 0 && links.length ? ` +${more}` : ""];
}

function rowCells(w) {
  const mismatch = (w.mismatch || []).join(", ");
  return [
    h("td", null, w.host || "?"),
    h("td", { testid: "worker-name" }, w.name),
    h("td", { className: "num" }, w.pid ?? "—"),
    h("td", null, badge(w.state, "worker-state")),
    h("td", null, w.pool ? `${w.pool} ×${w.concurrency}` : "—"),
    h("td", null, (w.queues || []).join(", ")),
    h("td", null, runLinks(w)),
    h("td", { title: fmtTime(w.last_seen) }, w.seen_seconds_ago === null ? "—" : `${w.seen_seconds_ago.toFixed(1)} s ago`),
    h("td", null, w.version || "?"),
    h("td", { title: (w.catalog || []).join(", ") }, h("code", null, w.catalog_hash || "?")),
    h("td", { testid: "worker-mismatch", className: mismatch ? "error" : "muted" }, mismatch || "—"),
  ];
}

export function renderWorkers(view) {
  const tbody = h("tbody", { testid: "workers-body" });
  const summary = h("p", { className: "muted", testid: "workers-summary" });
  const table = h(
    "table",
    { className: "grid", testid: "workers-table" },
    h("thead", null, h("tr", null, COLUMNS.map((c) => h("th", null, c)))),
    tbody,
  );
  const empty = h("p", { className: "muted", testid: "workers-empty", hidden: true },
    "No worker has sent a heartbeat: start one with `jobsys worker`.");
  view.append(h("h1", null, "Workers"), summary, table, empty);
  return poll(async () => {
    const data = await get("/workers");
    const workers = data.workers || [];
    replace(tbody, workers.map((w) =>
      h("tr", { testid: "worker-row", "data-worker": w.name, "data-state": w.state, "data-mismatch": (w.mismatch || []).join(","),
        className: w.mismatch && w.mismatch.length ? "mismatched" : null }, rowCells(w))));
    empty.hidden = workers.length > 0;
    const s = data.summary || {};
    const want = data.expected || {};
    summary.textContent = `${s.workers} workers on ${s.hosts} hosts: ${s.live} live, ${s.lost} lost, ` +
      `${s.mismatched} mismatched, ${s.running} runs running. This server: jobsys ${want.version}, ` +
      `catalog ${want.catalog_hash} (${(want.catalog || []).join(", ")}).`;
  }, POLL_MS);
}
