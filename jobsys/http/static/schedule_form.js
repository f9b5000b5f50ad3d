// The "New schedule" form: a job (or workflow), a cadence (every / cron / once, in a time
// zone), the input (the form generated from the job's input schema, or JSON), name,
// description and paused. The next fires of the cadence are previewed by the server as it is
// typed (POST /schedules/preview); its validation errors are shown beside their fields.

import { ApiError, get, post, seg } from "./api.js";
import { fmtJson, h, replace } from "./dom.js";
import { buildSchemaForm } from "./schema_form.js";

const UNITS = [["seconds", 1], ["minutes", 60], ["hours", 3600], ["days", 86400]];
const PREVIEW_COUNT = 5;
const PREVIEW_DELAY_MS = 300;

function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

function zoneNames() {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC"];
  }
}

/** The minutes `zone` is ahead of UTC at the instant `ms` (NaN for a zone unknown here). */
function zoneOffset(ms, zone) {
  try {
    const parts = Object.fromEntries(
      new Intl.DateTimeFormat("en-US", {
        timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
      }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]),
    );
    const wall = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    return Math.round((wall - Math.floor(ms / 1000) * 1000) / 60000);
  } catch {
    return Number.NaN;
  }
}

function pad(n) {
  return String(Math.abs(n)).padStart(2, "0");
}

/** "2030-01-02T03:04" read on the wall clock of `zone` -> ISO 8601 with that zone's offset. */
function wallToIso(value, zone) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(value);
  if (!m) return value; // let the server say what is wrong with it
  const [year, month, day, hour, minute, second = "00"] = m.slice(1);
  const asUtc = Date.UTC(+year, +month - 1, +day, +hour, +minute, +second);
  let offset = zoneOffset(asUtc, zone || "UTC");
  if (Number.isNaN(offset)) return `${year}-${month}-${day}T${hour}:${minute}:${second}Z`;
  offset = zoneOffset(asUtc - offset * 60000, zone); // the offset at the instant itself
  const sign = offset < 0 ? "-" : "+";
  return `${year}-${month}-${day}T${hour}:${minute}:${second}${sign}${pad(Math.trunc(offset / 60))}:${pad(offset % 60)}`;
}

/** "2030-01-02T09:00:00.123+01:00" -> "2030-01-02 09:00:00 +01:00" (the zone's wall clock). */
function wallText(iso) {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(.*)$/.exec(String(iso));
  return m ? `${m[1]} ${m[2]}${m[3] ? ` ${m[3]}` : ""}` : String(iso);
}

/** A labelled form row with its own error line; `name` is the API field it maps to. */
function row(name, label, control, help, labelled = control) {
  const error = h("span", { className: "field-error", testid: `schedule-error-${name}`, role: "alert" });
  if (!labelled.id) labelled.id = `schedule-${name}`;
  const el = h("div", { className: "field", testid: `schedule-row-${name}` }, h("label", { for: labelled.id }, label), control, help ? h("span", { className: "help" }, help) : null, error);
  return { el, error, name };
}

/** Which form field a server error's `loc` is about: skip "body"; "input.x" stays input. */
function fieldOf(loc) {
  const path = (Array.isArray(loc) ? loc : []).map(String).filter((p) => p !== "body");
  return { head: path[0] || "", rest: path.slice(1) };
}

/** The job may be scheduled by this user, as far as the server's hint says (it still checks). */
export function mayCreate(job) {
  const may = job.may || {};
  return may.create !== false && may.execute !== false;
}

/**
 * Build the form into `container`, offering the jobs of `jobsData` (a promise of the body of
 * GET /jobs?all=true) this user may schedule. `onCreated(record)` is called after a schedule
 * is saved.
 */
export function buildScheduleForm(container, jobsData, onCreated) {
  const jobSelect = h("select", { testid: "schedule-job" }, h("option", { value: "" }, "— pick a job —"));
  const kind = h("select", { testid: "schedule-kind" }, ["every", "cron", "once"].map((k) => h("option", { value: k }, k)));
  const everyValue = h("input", { type: "number", min: "1", step: "any", value: "1", testid: "schedule-every", className: "short" });
  const everyUnit = h("select", { testid: "schedule-every-unit" }, UNITS.map(([u]) => h("option", { value: u }, u)));
  everyUnit.value = "hours";
  const cronInput = h("input", { testid: "schedule-cron", placeholder: "0 * * * *  (minute hour day month weekday)", spellcheck: "false" });
  const atInput = h("input", { type: "datetime-local", step: "1", testid: "schedule-at" });
  const zones = h("datalist", { id: "schedule-zones" }, zoneNames().map((z) => h("option", { value: z })));
  const zoneInput = h("input", { testid: "schedule-timezone", list: "schedule-zones", value: browserZone(), spellcheck: "false" });
  const nameInput = h("input", { testid: "schedule-name", placeholder: "optional" });
  const descInput = h("textarea", { testid: "schedule-description", rows: 2, placeholder: "optional: what it is for" });
  const paused = h("input", { type: "checkbox", testid: "schedule-paused" });
  const inputMode = h("select", { testid: "schedule-input-mode" }, h("option", { value: "form" }, "form"), h("option", { value: "json" }, "JSON"));
  const inputFields = h("div", { className: "fields", testid: "schedule-input-fields" });
  const inputJson = h("textarea", { testid: "schedule-input-json", rows: 5, spellcheck: "false", hidden: true }, "");
  const preview = h("ol", { className: "preview", testid: "schedule-preview" });
  const previewNote = h("p", { className: "hint", testid: "schedule-preview-note" }, "Pick a cadence to see its next fires.");
  const submit = h("button", { type: "submit", testid: "schedule-create" }, "Create schedule");
  const formError = h("p", { className: "error", testid: "schedule-form-error", role: "alert", hidden: true });

  const rows = {
    job: row("job", "Job", jobSelect),
    kind: row("kind", "Cadence", kind),
    every: row("every", "Every", h("span", { className: "inline" }, everyValue, " ", everyUnit), null, everyValue),
    cron: row("cron", "Cron", cronInput, "five fields, or @hourly, @daily ..."),
    at: row("at", "At", atInput, "on the wall clock of the time zone below"),
    timezone: row("timezone", "Time zone", zoneInput, "IANA name: the cron's zone, and the zone the preview is shown in"),
    input: row("input", "Input", h("span", { className: "inline" }, inputMode, h("span", { className: "help" }, " the form generated from the job's input schema, or JSON")), null, inputMode),
    name: row("name", "Name", nameInput),
    description: row("description", "Description", descInput),
    paused: row("paused", "Paused", paused, "create it inactive: it fires once resumed"),
  };
  const form = h(
    "form",
    { className: "submit-form", testid: "schedule-form", novalidate: true },
    rows.job.el,
    rows.kind.el, rows.every.el, rows.cron.el, rows.at.el, rows.timezone.el,
    h("div", { className: "preview-box" }, h("h2", null, "Next fires"), previewNote, preview),
    rows.input.el, inputFields, inputJson,
    rows.name.el, rows.description.el, rows.paused.el,
    zones,
    h("div", { className: "actions" }, submit),
    formError,
  );
  container.append(form);

  // --- the input: a generated form per job, or JSON ------------------------------------
  const schemas = new Map(); // job name -> input schema (workflows come with theirs)
  let schemaForm = null;
  let loading = 0;

  const showInput = async () => {
    const job = jobSelect.value;
    const asJson = inputMode.value === "json";
    inputJson.hidden = !asJson;
    inputFields.hidden = asJson;
    replace(inputFields);
    schemaForm = null;
    if (!job) return;
    const ticket = ++loading;
    form.dataset.ready = "false";
    try {
      if (!schemas.has(job)) schemas.set(job, (await get(`/jobs/${seg(job)}`)).input_schema || {});
    } catch (err) {
      if (ticket === loading) showFieldErrors([{ loc: ["job"], msg: err.message }]);
      return;
    }
    if (ticket !== loading) return;
    schemaForm = buildSchemaForm(inputFields, schemas.get(job));
    form.dataset.ready = "true";
  };

  /** The input to send: {value, ok}. Switching to JSON carries the form's values over. */
  const readInput = () => {
    if (inputMode.value === "json") {
      const text = inputJson.value.trim();
      if (!text) return { value: {}, ok: true };
      try {
        const value = JSON.parse(text);
        if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("must be a JSON object");
        return { value, ok: true };
      } catch (err) {
        mark(rows.input, `not valid JSON: ${err.message}`);
        return { value: null, ok: false };
      }
    }
    if (!schemaForm) return { value: {}, ok: true };
    return schemaForm.read();
  };

  inputMode.addEventListener("change", () => {
    if (inputMode.value === "json" && schemaForm) {
      const { value, ok } = schemaForm.read();
      if (ok) inputJson.value = fmtJson(value);
    }
    showInput();
  });
  jobSelect.addEventListener("change", () => {
    clearError(rows.job);
    showInput();
  });

  // --- errors --------------------------------------------------------------------------
  const mark = (r, message) => {
    r.error.textContent = r.error.textContent ? `${r.error.textContent}; ${message}` : message;
    r.el.classList.add("invalid");
  };
  const clearError = (r) => {
    r.error.textContent = "";
    r.el.classList.remove("invalid");
  };
  const showFormError = (message) => {
    formError.hidden = !message;
    formError.textContent = message || "";
  };
  /** Place the server's field errors; returns those that fit no field. */
  const showFieldErrors = (fields, only = null) => {
    const rest = [];
    for (const f of fields) {
      const { head, rest: tail } = fieldOf(f.loc);
      const target = head === "options" ? null : rows[head];
      if (only && !only.includes(head)) continue;
      if (head === "input" && inputMode.value === "form" && schemaForm && tail.length) {
        const unmatched = schemaForm.showErrors([{ ...f, loc: tail }]);
        if (!unmatched.length) continue;
      }
      if (target) mark(target, f.msg);
      else rest.push(f);
    }
    return rest;
  };

  // --- the cadence, and its preview ----------------------------------------------------
  const showKind = () => {
    const k = kind.value;
    rows.every.el.hidden = k !== "every";
    rows.cron.el.hidden = k !== "cron";
    rows.at.el.hidden = k !== "once";
  };

  /** The cadence fields of the API body for the kind picked. */
  const cadenceBody = () => {
    const k = kind.value;
    const zone = zoneInput.value.trim();
    const body = { kind: k };
    if (zone) body.timezone = zone;
    if (k === "every") {
      const factor = UNITS.find(([u]) => u === everyUnit.value)?.[1] || 1;
      const n = Number(everyValue.value);
      body.every = everyValue.value.trim() === "" || Number.isNaN(n) ? everyValue.value : n * factor;
    } else if (k === "cron") {
      body.cron = cronInput.value.trim();
    } else if (atInput.value) {
      body.at = wallToIso(atInput.value, zone);
    }
    return body;
  };

  const CADENCE_FIELDS = ["kind", "every", "cron", "at", "timezone"];
  let previewTicket = 0;
  let previewTimer = null;
  const refreshPreview = async () => {
    const ticket = ++previewTicket;
    const body = cadenceBody();
    CADENCE_FIELDS.forEach((f) => clearError(rows[f]));
    if ((body.kind === "cron" && !body.cron) || (body.kind === "once" && !body.at)) {
      replace(preview);
      previewNote.textContent = body.kind === "cron" ? "Enter a cron expression to see its next fires." : "Pick a time to see the fire.";
      preview.dataset.state = "empty";
      return;
    }
    preview.dataset.state = "loading";
    try {
      const data = await post("/schedules/preview", { ...body, count: PREVIEW_COUNT });
      if (ticket !== previewTicket) return;
      const fires = data.fires || [];
      previewNote.textContent = fires.length ? `Shown in ${data.timezone}.` : "It would never fire.";
      replace(preview, fires.map((f) => h("li", { testid: "schedule-preview-fire", "data-at": f.at }, wallText(f.local), f.note ? h("span", { className: "hint" }, ` — ${f.note}`) : null)));
      preview.dataset.state = "ok";
    } catch (err) {
      if (ticket !== previewTicket) return;
      replace(preview);
      preview.dataset.state = "error";
      const rest = err instanceof ApiError ? showFieldErrors(err.fields, CADENCE_FIELDS) : [];
      previewNote.textContent = err instanceof ApiError && (err.fields.length || rest.length) ? "Fix the cadence to see its next fires." : `No preview: ${err.message}`;
    }
  };
  const schedulePreview = () => {
    previewTicket++; // an answer still on its way is for a cadence since changed
    preview.dataset.state = "pending";
    clearTimeout(previewTimer);
    previewTimer = setTimeout(refreshPreview, PREVIEW_DELAY_MS);
  };
  for (const el of [everyValue, everyUnit, cronInput, atInput, zoneInput]) el.addEventListener("input", schedulePreview);
  kind.addEventListener("change", () => {
    showKind();
    schedulePreview();
  });

  // --- save ------------------------------------------------------------------------------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showFormError("");
    Object.values(rows).forEach(clearError);
    if (schemaForm) schemaForm.clearErrors();
    if (!jobSelect.value) {
      mark(rows.job, "pick a job");
      showFormError("Fix the marked fields.");
      return;
    }
    const input = readInput();
    if (!input.ok) {
      showFormError("Fix the marked fields.");
      return;
    }
    const body = { job: jobSelect.value, ...cadenceBody(), input: input.value, paused: paused.checked };
    if (nameInput.value.trim()) body.name = nameInput.value.trim();
    if (descInput.value.trim()) body.description = descInput.value.trim();
    submit.disabled = true;
    try {
      const made = await post("/schedules", body);
      form.dataset.created = made.id;
      nameInput.value = "";
      descInput.value = "";
      await onCreated(made);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      // an input the job's schema refuses names the fields within the input
      const fields = err.type === "InvalidInput" ? err.fields.map((f) => ({ ...f, loc: ["input", ...(f.loc || [])] })) : err.fields;
      const rest = showFieldErrors(fields);
      const extra = rest.map((f) => `${(f.loc || []).join(".")}: ${f.msg}`).join("; ");
      showFormError(err.status === 403
        ? `Not allowed: ${err.message}`
        : `${err.type}: ${err.message}${extra ? ` (${extra})` : ""}`);
    } finally {
      submit.disabled = false;
    }
  });

  // --- the jobs to pick from ------------------------------------------------------------
  showKind();
  jobsData
    .then((data) => {
      const jobs = (data.jobs || []).filter((j) => !j.hidden && mayCreate(j)).sort((a, b) => a.name.localeCompare(b.name));
      const flows = (data.workflows || []).slice().sort((a, b) => a.name.localeCompare(b.name));
      for (const wf of flows) schemas.set(wf.name, wf.input_schema || {});
      jobSelect.append(
        h("optgroup", { label: "jobs" }, jobs.map((j) => h("option", { value: j.name }, j.name))),
        flows.length ? h("optgroup", { label: "workflows" }, flows.map((w) => h("option", { value: w.name }, w.name))) : null,
      );
      form.dataset.jobs = "loaded";
      if (!jobs.length && !flows.length) showFormError("You may not create schedules of any job.");
    })
    .catch((err) => showFormError(`Cannot list the jobs: ${err.message}`));
  schedulePreview();
}
