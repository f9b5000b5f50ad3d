// Submit a run: pick a job, fill the form generated from its input schema, see the new run.

import { get, post, seg } from "./api.js";
import { h } from "./dom.js";
import { notifyError } from "./shared.js";
import { buildSchemaForm, wireSubmit } from "./schema_form.js";
import { pauseBlock } from "./queues.js";

function jobList(view) {
  const list = h("ul", { className: "job-list", testid: "job-list" });
  view.append(h("h1", null, "Submit a run"), h("p", { className: "muted" }, "Pick a job."), list);
  get("/jobs")
    .then((data) => {
      const jobs = (data.jobs || []).filter((j) => !j.hidden).sort((a, b) => a.name.localeCompare(b.name));
      list.append(...jobs.map((j) => h(
        "li",
        null,
        h("a", { href: `#/submit/${seg(j.name)}`, testid: "job-link", "data-job": j.name }, j.name),
        " ",
        h("span", { className: "muted" }, (j.description || "").split("\n")[0].replace(/``/g, "")),
        (j.tags || []).map((t) => h("span", { className: "tag" }, t)),
      )));
    })
    .catch(notifyError);
}

function commaList(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

function optionsBlock() {
  const tags = h("input", { id: "submit-tags", testid: "submit-tags", placeholder: "comma-separated tags" });
  const key = h("input", { id: "submit-idempotency", testid: "submit-idempotency", placeholder: "optional" });
  const block = h(
    "details",
    { className: "options" },
    h("summary", null, "Run options"),
    h("div", { className: "field" }, h("label", { for: "submit-tags" }, "Tags"), tags),
    h("div", { className: "field" }, h("label", { for: "submit-idempotency" }, "Idempotency key"), key),
  );
  const read = () => {
    const options = { tags: commaList(tags.value) };
    if (key.value.trim()) options.idempotency_key = key.value.trim();
    return options;
  };
  return { block, read };
}

function jobForm(view, name) {
  const fields = h("div", { className: "fields", testid: "submit-fields" });
  const error = h("p", { className: "error", testid: "submit-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", testid: "submit-button" }, "Submit");
  const options = optionsBlock();
  const form = h("form", { className: "submit-form", testid: "submit-form", "data-job": name, novalidate: true }, fields, options.block, submit, error);
  const description = h("p", { className: "muted", testid: "job-description" });
  const limits = h("p", { className: "muted", testid: "job-limits", hidden: true });
  view.append(h("h1", null, "Submit ", h("code", null, name)), description, limits, form, h("a", { href: "#/submit" }, "other jobs"));

  let schemaForm = null;
  const showError = wireSubmit(form, submit, error, () => schemaForm, async (value) => {
    const made = await post(`/jobs/${seg(name)}/runs`, { input: value, ...options.read() });
    location.hash = `#/runs/${seg(made.run_id)}`;
  });

  get(`/jobs/${seg(name)}`)
    .then((spec) => {
      description.textContent = (spec.description || "").replace(/``/g, "");
      const declared = Object.entries(spec.limits || {});
      if (declared.length) {
        // Its flow limits, as declared: "max_concurrency 2 · rate 5/s"
        limits.textContent = "Limits: " + declared.map(([k, v]) => `${k} ${v}`).join(" · ");
        limits.hidden = false;
      }
      description.after(pauseBlock(spec));
      schemaForm = buildSchemaForm(fields, spec.input_schema);
      form.dataset.ready = "true";
    })
    .catch((err) => showError(err.message));
}

export function renderSubmit(view, name) {
  if (name) jobForm(view, name);
  else jobList(view);
}
