// Workflows: the workflow runs, starting one, and one run's DAG of step states.

import { get, post, seg } from "./api.js";
import { badge, button, fmtJson, fmtTime, h, replace, shortId } from "./dom.js";
import { act, notifyError, poll } from "./shared.js";
import { drawDag } from "./dag.js";
import { buildSchemaForm, wireSubmit } from "./schema_form.js";

function runsTable(tbody, list) {
  replace(tbody, list.map((w) => h(
    "tr",
    { testid: "workflow-row", "data-workflow-run-id": w.id, "data-state": w.state },
    h("td", null, h("a", { href: `#/workflows/${seg(w.id)}`, testid: "workflow-link", title: w.id }, shortId(w.id))),
    h("td", null, w.workflow),
    h("td", null, badge(w.state, "workflow-state")),
    h("td", null, fmtTime(w.created_at)),
    h("td", null, fmtTime(w.finished_at)),
  )));
}

/** Start a declared workflow: pick one, fill the form generated from its input schema. */
function startForm(onStarted) {
  const pick = h("select", { testid: "workflow-start-name", "aria-label": "workflow" });
  const fields = h("div", { className: "fields", testid: "workflow-start-fields" });
  const error = h("p", { className: "error", testid: "workflow-start-error", role: "alert", hidden: true });
  const go = h("button", { type: "submit", testid: "workflow-start" }, "Start");
  const form = h(
    "form",
    { className: "submit-form", testid: "workflow-start-form", novalidate: true },
    h("div", { className: "field" }, h("label", null, "Workflow"), pick),
    fields,
    go,
    error,
  );
  const byName = new Map();
  let schemaForm = null;
  const showError = wireSubmit(form, go, error, () => schemaForm, async (value) => {
    const made = await post(`/workflows/${seg(pick.value)}/runs`, { input: value });
    if (made && made.workflow_run_id) onStarted(made.workflow_run_id);
  });
  const choose = () => {
    fields.replaceChildren();
    showError("");
    const wf = byName.get(pick.value);
    schemaForm = wf ? buildSchemaForm(fields, wf.input_schema || { type: "object", properties: {} }) : null;
    go.disabled = !wf;
  };
  pick.addEventListener("change", choose);
  get("/workflows")
    .then((data) => {
      for (const wf of data.workflows || []) byName.set(wf.name, wf);
      pick.append(...[...byName.values()].map((w) => h("option", { value: w.name, title: w.description || "" }, w.name)));
      choose();
    })
    .catch(notifyError);
  return h("details", { className: "start", testid: "workflow-start-panel" }, h("summary", null, "Start a workflow"), form);
}

export function renderWorkflows(view) {
  const tbody = h("tbody", { testid: "workflow-runs-body" });
  view.append(
    h("h1", null, "Workflows"),
    startForm((id) => {
      location.hash = `#/workflows/${seg(id)}`;
    }),
    h("table", { className: "grid", testid: "workflow-runs-table" },
      h("thead", null, h("tr", null, ["run", "workflow", "state", "created", "finished"].map((c) => h("th", null, c)))),
      tbody),
  );
  let lastKey = "";
  return poll(async () => {
    const data = await get("/workflow-runs");
    const list = data.workflow_runs || [];
    const key = JSON.stringify(list.map((w) => [w.id, w.state]));
    if (key !== lastKey) runsTable(tbody, list);
    lastKey = key;
  }, 2000);
}

function stepRuns(record, name) {
  const step = (record.steps || {})[name];
  const runs = (step && step.runs) || [];
  return h(
    "div",
    { testid: "step-detail", "data-step": name },
    h("h2", null, "Step ", h("code", null, name), " ", badge(step ? step.state : "waiting", "step-state")),
    runs.length
      ? h("ul", null, runs.map((r) => h("li", null, h("a", { href: `#/runs/${seg(r.id)}`, testid: "step-run" }, r.id), " ", badge(r.state))))
      : h("p", { className: "muted" }, "No runs yet."),
    step && step.withheld
      ? h("p", { className: "muted", testid: "step-withheld" }, "You may not read this step's job: its runs' input, output and errors are withheld.")
      : null,
  );
}

export function renderWorkflowRun(view, id) {
  const header = h("span");
  const dag = h("div", { testid: "dag-container" });
  const detail = h("div", { className: "card" }, h("p", { className: "muted" }, "Click a step to see its runs."));
  const facts = h("div");
  const cancel = button("Cancel", () => doCancel(), { testid: "workflow-cancel", className: "danger" });
  const root = h("article", { testid: "workflow-run", "data-workflow-run-id": id },
    h("h1", null, "Workflow run ", h("code", null, id), " ", header),
    h("div", { className: "actions" }, cancel, h("a", { href: "#/workflows" }, "all workflow runs")),
    dag, detail, facts);
  view.append(root);

  let record = null;
  let selected = null;
  let lastKey = "";
  const select = (name) => {
    selected = name;
    if (record) replace(detail, stepRuns(record, name));
  };
  const show = (data) => {
    record = data;
    root.dataset.state = data.state;
    replace(header, badge(data.state, "workflow-run-state"));
    cancel.disabled = data.state !== "running";
    const key = JSON.stringify([data.state, data.steps, data.edges]);
    if (key === lastKey) return;
    lastKey = key;
    replace(dag, drawDag(data, select));
    if (selected) select(selected);
    replace(facts, h("div", { className: "columns" },
      h("section", { className: "card" }, h("h2", null, "Input"), h("pre", { testid: "workflow-input" }, fmtJson(data.input)),
        (data.withheld || []).length
          ? h("p", { className: "muted", testid: "workflow-withheld" }, `Withheld (steps you may not read): ${data.withheld.join(", ")}`)
          : null),
      h("section", { className: "card" }, h("h2", null, "Output"), h("pre", { testid: "workflow-output" }, fmtJson(data.output ?? null))),
      data.error ? h("section", { className: "card" }, h("h2", null, "Error"), h("pre", { className: "error", testid: "workflow-error" }, fmtJson(data.error))) : null));
  };
  async function doCancel() {
    const data = await act(cancel, () => post(`/workflow-runs/${seg(id)}/cancel`));
    if (data) lastKey = "";
  }
  return poll(async () => {
    show(await get(`/workflow-runs/${seg(id)}`));
    return record.state === "running";
  });
}
