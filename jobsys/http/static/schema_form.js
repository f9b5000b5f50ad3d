// A form generated from a job's input JSON Schema (pydantic's model_json_schema()).
//
// strings, numbers, integers, booleans and enums get their own inputs; arrays of scalars are
// comma lists; nested objects (and anything else) are JSON text fields. Defaults are
// prefilled, required fields marked, and the server's field errors shown next to the fields.

import { ApiError } from "./api.js";
import { fmtJson, h } from "./dom.js";

const SCALARS = new Set(["string", "number", "integer", "boolean"]);

/** Follow a local "$ref" ("#/$defs/Name") within the root schema. */
function deref(schema, root) {
  let current = schema || {};
  for (let i = 0; i < 20 && current.$ref; i++) {
    const path = current.$ref.replace(/^#\//, "").split("/");
    const target = path.reduce((node, key) => (node ? node[key] : undefined), root);
    const { $ref, ...rest } = current;
    current = { ...(target || {}), ...rest };
  }
  return current;
}

/** Unwrap `anyOf: [X, {type: "null"}]` (an Optional field) to X, noting that null is allowed. */
function unwrapOptional(schema, root) {
  const s = deref(schema, root);
  const options = s.anyOf || s.oneOf;
  if (!Array.isArray(options)) return { schema: s, nullable: false };
  const real = options.filter((o) => deref(o, root).type !== "null");
  if (real.length !== 1) return { schema: s, nullable: real.length < options.length };
  const { anyOf, oneOf, ...rest } = s;
  return { schema: { ...deref(real[0], root), ...rest }, nullable: true };
}

function kindOf(schema, root) {
  if (Array.isArray(schema.enum)) return "enum";
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  if (type === "array") {
    const items = deref(schema.items, root);
    if (SCALARS.has(items.type) && !items.enum) return "list";
    return "json";
  }
  if (SCALARS.has(type)) return type;
  return "json";
}

function isSecret(schema) {
  return schema.format === "password" || schema.writeOnly === true || schema.secret === true;
}

/** "max_items" -> "Max items" */
function humanize(name) {
  const words = name.replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function describeField(name, raw, root, required) {
  const { schema, nullable } = unwrapOptional(raw, root);
  const kind = kindOf(schema, root);
  const itemType = kind === "list" ? deref(schema.items, root).type : null;
  const label = (raw && raw.title) || humanize(name); // not the title of a referenced model
  return { name, label, schema, kind, itemType, nullable, required, hasDefault: "default" in schema };
}

function inputFor(field) {
  const { name, schema, kind } = field;
  const id = `field-${name}`;
  const base = { id, name, testid: id, "aria-required": field.required ? "true" : null };
  const dflt = schema.default;
  switch (kind) {
    case "boolean":
      return h("input", { ...base, type: "checkbox", checked: dflt === true });
    case "enum":
      return h(
        "select",
        base,
        field.required && !field.hasDefault ? h("option", { value: "" }, "— choose —") : null,
        !field.required ? h("option", { value: "" }, "(default)") : null,
        schema.enum.map((v) => h("option", { value: JSON.stringify(v), selected: v === dflt && field.hasDefault }, String(v))),
      );
    case "number":
    case "integer":
      return h("input", {
        ...base,
        type: "number",
        step: kind === "integer" ? "1" : "any",
        min: schema.minimum ?? schema.exclusiveMinimum,
        max: schema.maximum ?? schema.exclusiveMaximum,
        value: dflt === undefined || dflt === null ? "" : String(dflt),
      });
    case "string":
      return h("input", {
        ...base,
        type: isSecret(schema) ? "password" : "text",
        autocomplete: "off",
        placeholder: schema.pattern ? `pattern ${schema.pattern}` : null,
        value: typeof dflt === "string" && !isSecret(schema) ? dflt : "",
      });
    case "list":
      return h("input", {
        ...base,
        type: "text",
        placeholder: `comma-separated ${field.itemType}s`,
        value: Array.isArray(dflt) ? dflt.join(", ") : "",
      });
    default:
      return h("textarea", { ...base, rows: 4, spellcheck: "false", placeholder: "JSON", value: dflt === undefined || dflt === null ? "" : fmtJson(dflt) });
  }
}

function fieldRow(field) {
  const control = inputFor(field);
  const kindNote = { list: "comma list", json: "JSON" }[field.kind];
  const label = h(
    "label",
    { for: control.id },
    field.label || field.name,
    field.required ? h("span", { className: "required", testid: `required-${field.name}`, title: "required" }, " *") : null,
    kindNote ? h("small", { className: "muted" }, ` (${kindNote})`) : null,
  );
  const help = field.schema.description ? h("small", { className: "help" }, field.schema.description) : null;
  const error = h("span", { className: "field-error", testid: `field-error-${field.name}`, role: "alert" });
  const row = h("div", { className: `field kind-${field.kind}`, testid: `field-row-${field.name}` }, label, control, help, error);
  return { field, control, error, row };
}

function parseScalar(text, type) {
  if (type === "string") return text;
  if (type === "boolean") {
    if (/^(true|yes|1)$/i.test(text)) return true;
    if (/^(false|no|0)$/i.test(text)) return false;
    throw new Error(`"${text}" is not true or false`);
  }
  const n = Number(text);
  if (text === "" || !Number.isFinite(n)) throw new Error(`"${text}" is not a number`);
  if (type === "integer" && !Number.isInteger(n)) throw new Error(`"${text}" is not an integer`);
  return n;
}

/** The value of one field, or `undefined` to leave it out (the job's default applies). */
function readField({ field, control }) {
  const { kind } = field;
  if (kind === "boolean") return control.checked;
  const text = control.value.trim();
  if (text === "") return undefined;
  switch (kind) {
    case "enum":
      return JSON.parse(control.value);
    case "number":
    case "integer":
      return parseScalar(text, kind);
    case "string":
      return control.value;
    case "list":
      return text.split(",").map((p) => p.trim()).filter((p) => p !== "").map((p) => parseScalar(p, field.itemType));
    default:
      try {
        return JSON.parse(text);
      } catch (err) {
        throw new Error(`not valid JSON: ${err.message}`);
      }
  }
}

/**
 * Build the form's fields into `container`. Returns {read, showErrors, clearErrors}:
 * read() -> {value, ok} (local parse errors are shown at once), showErrors(fields) places
 * the server's {loc, msg} errors and returns those that matched no field.
 */
export function buildSchemaForm(container, schema) {
  const root = schema || {};
  const top = deref(root, root);
  const properties = top.properties;
  if (top.type !== "object" || !properties) return rawJsonForm(container, top);
  const required = new Set(top.required || []);
  const rows = Object.entries(properties).map(([name, raw]) => fieldRow(describeField(name, raw, root, required.has(name))));
  container.append(...rows.map((r) => r.row));
  if (!rows.length) container.append(h("p", { className: "muted" }, "This job takes no input."));
  const byName = new Map(rows.map((r) => [r.field.name, r]));

  const clearErrors = () => rows.forEach((r) => {
    r.error.textContent = "";
    r.row.classList.remove("invalid");
  });
  const mark = (r, message) => {
    r.error.textContent = r.error.textContent ? `${r.error.textContent}; ${message}` : message;
    r.row.classList.add("invalid");
  };
  const read = () => {
    clearErrors();
    const value = {};
    let ok = true;
    for (const r of rows) {
      try {
        const v = readField(r);
        if (v !== undefined) value[r.field.name] = v;
      } catch (err) {
        ok = false;
        mark(r, err.message);
      }
    }
    return { value, ok };
  };
  const showErrors = (fields) => {
    const unmatched = [];
    for (const f of fields) {
      const r = byName.get(fieldName(f.loc, byName));
      if (r) mark(r, f.msg);
      else unmatched.push(f);
    }
    return unmatched;
  };
  return { read, showErrors, clearErrors };
}

/** The form field a server error's `loc` points at: skip "body" / "input" prefixes. */
function fieldName(loc, byName) {
  const path = Array.isArray(loc) ? loc.map(String) : [];
  for (const part of path) {
    if (byName.has(part)) return part;
    if (part !== "body" && part !== "input") return null;
  }
  return null;
}

/** For an input that is not an object with properties: one JSON text field. */
function rawJsonForm(container, schema) {
  const r = fieldRow({ name: "input", label: "Input", schema, kind: "json", required: true, hasDefault: false });
  container.append(r.row);
  return {
    read() {
      r.error.textContent = "";
      try {
        const text = r.control.value.trim();
        return { value: text ? JSON.parse(text) : null, ok: true };
      } catch (err) {
        r.error.textContent = `not valid JSON: ${err.message}`;
        return { value: null, ok: false };
      }
    },
    showErrors(fields) {
      r.error.textContent = fields.map((f) => f.msg).join("; ");
      return [];
    },
    clearErrors() {
      r.error.textContent = "";
    },
  };
}

/**
 * Wire the submit of a form holding a generated schema form: check the fields, `send(value)`
 * with the button disabled, and show the API's field errors beside their fields (the others
 * in `errorEl`). `current()` gives the schema form (null while it loads). Returns the function
 * that shows a message in `errorEl` ("" hides it).
 */
export function wireSubmit(form, buttonEl, errorEl, current, send) {
  const showError = (message) => {
    errorEl.hidden = !message;
    errorEl.textContent = message || "";
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const schemaForm = current();
    if (!schemaForm) return;
    showError("");
    const { value, ok } = schemaForm.read();
    if (!ok) {
      showError("Fix the marked fields.");
      return;
    }
    buttonEl.disabled = true;
    try {
      await send(value);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const rest = schemaForm.showErrors(err.fields);
      const extra = rest.map((f) => `${(f.loc || []).join(".")}: ${f.msg}`).join("; ");
      showError(`${err.message}${extra ? ` (${extra})` : ""}`);
    } finally {
      buttonEl.disabled = false;
    }
  });
  return showError;
}
