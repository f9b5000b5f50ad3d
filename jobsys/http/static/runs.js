// The runs table: filters, keyword or semantic search, live state and progress (polled every
// second).

import { get, query, seg } from "./api.js";
import { bulkBar } from "./bulk.js";
import { badge, fmtDuration, fmtTime, h, progressBar, replace, runPct, shortId } from "./dom.js";
import { poll } from "./shared.js";

export const STATES = ["pending", "blocked", "running", "retrying", "completed", "failed", "cancelled"];
const FILTERS = ["job", "state", "tag", "q", "mode", "exhausted"];
/** How the search box matches (the server's default: hybrid with an embedder, else keyword). */
const MODES = ["keyword", "semantic", "hybrid"];

async function loadJobNames() {
  const data = await get("/jobs");
  return (data.jobs || []).map((j) => j.name).sort();
}

function select(testid, name, label, options, value) {
  return h(
    "select",
    { testid, name, "aria-label": label },
    h("option", { value: "" }, `any ${label}`),
    options.map((o) => h("option", { value: o, selected: o === value }, o)),
  );
}

function filterForm(params, onChange) {
  const job = select("runs-filter-job", "job", "job", [], params.get("job") || "");
  const state = select("runs-filter-state", "state", "state", STATES, params.get("state") || "");
  const tag = h("input", { testid: "runs-filter-tag", name: "tag", placeholder: "tag", value: params.get("tag") || "" });
  const q = h("input", { testid: "runs-filter-search", name: "q", type: "search", placeholder: "search errors, logs, jobs", value: params.get("q") || "" });
  const mode = h(
    "select",
    { testid: "runs-filter-mode", name: "mode", "aria-label": "search mode", title: "keyword: whole words; semantic: by meaning (needs JOBSYS_EMBEDDER); hybrid: both" },
    h("option", { value: "" }, "default search"),
    MODES.map((m) => h("option", { value: m, selected: m === (params.get("mode") || "") }, m)),
  );
  const exhausted = h("input", { type: "checkbox", testid: "runs-filter-exhausted", name: "exhausted", checked: params.get("exhausted") === "true" });
  const dead = h("label", { title: "Runs that used all their attempts (with state failed: the dead letters)" }, exhausted, " attempts used up");
  const form = h("form", { className: "filters", testid: "runs-filters" }, job, state, tag, q, mode, dead,
    h("button", { type: "submit", testid: "runs-filter-apply" }, "Apply"));
  const value = (k) => (k === "exhausted" ? (exhausted.checked ? "true" : "") : form.elements[k].value.trim());
  const values = () => Object.fromEntries(FILTERS.map((k) => [k, value(k)]));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    onChange(values());
  });
  job.addEventListener("change", () => onChange(values()));
  state.addEventListener("change", () => onChange(values()));
  mode.addEventListener("change", () => onChange(values()));
  exhausted.addEventListener("change", () => onChange(values()));
  loadJobNames()
    .then((names) => {
      const current = params.get("job") || "";
      const all = current && !names.includes(current) ? [...names, current] : names;
      job.append(...all.map((n) => h("option", { value: n, selected: n === current }, n)));
    })
    .catch(() => {}); // the table's own polling reports errors
  return form;
}

function rowCells(run) {
  const note = run.cancel_requested && !["cancelled", "completed", "failed"].includes(run.state) ? "cancelling" : "";
  return [
    h("td", null, h("a", { href: `#/runs/${seg(run.id)}`, testid: "run-link", title: run.id }, shortId(run.id))),
    h("td", { testid: "run-job" }, run.job),
    h("td", null, badge(run.state), note ? h("small", null, ` ${note}`) : null),
    h("td", null, progressBar(runPct(run), "run-progress")),
    h("td", { className: "num" }, `${run.attempts}/${run.max_attempts}`),
    h("td", null, run.worker || "—"),
    h("td", null, fmtTime(run.created_at)),
    h("td", { className: "num" }, fmtDuration(run.duration)),
    h("td", null, (run.tags || []).join(", ")),
  ];
}

/** Update the table body in place, one <tr> per run id (stable for clicks during polling). */
function updateRows(tbody, runs, rows) {
  const seen = new Set();
  runs.forEach((run, index) => {
    seen.add(run.id);
    let tr = rows.get(run.id);
    if (!tr) {
      tr = h("tr", { testid: "run-row", "data-run-id": run.id });
      rows.set(run.id, tr);
    }
    const key = JSON.stringify([run.state, run.progress, run.attempts, run.worker, run.duration, run.cancel_requested]);
    if (tr.dataset.key !== key) {
      tr.dataset.key = key;
      tr.dataset.state = run.state;
      replace(tr, rowCells(run));
    }
    if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
  });
  for (const [id, tr] of rows) {
    if (!seen.has(id)) {
      tr.remove();
      rows.delete(id);
    }
  }
}

export function renderRuns(view, _arg, params) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
  const onChange = (values) => {
    location.hash = `#/runs${query(values)}`;
  };
  const tbody = h("tbody", { testid: "runs-body" });
  const empty = h("p", { className: "muted", testid: "runs-empty", hidden: true }, "No runs match.");
  const count = h("span", { className: "muted", testid: "runs-count" });
  const table = h(
    "table",
    { className: "grid", testid: "runs-table" },
    h("thead", null, h("tr", null, ["run", "job", "state", "progress", "attempts", "worker", "created", "duration", "tags"].map((c) => h("th", null, c)))),
    tbody,
  );
  const rows = new Map();
  let refresh = () => {};
  view.append(h("h1", null, "Runs ", count), filterForm(params, onChange), bulkBar(filters, () => refresh()), table, empty);
  return poll((refresh = async () => {
    const data = await get(`/runs${query({ ...filters, limit: 100 })}`);
    const runs = data.runs || [];
    updateRows(tbody, runs, rows);
    empty.hidden = runs.length > 0;
    count.textContent = `(${runs.length}${runs.length >= 100 ? "+" : ""})`;
  }));
}
