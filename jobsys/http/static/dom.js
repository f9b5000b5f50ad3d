// Small DOM helpers. Every value from the server goes in as text (never as HTML).

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function applyProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "className") {
      el.setAttribute("class", value);
    } else if (key === "testid") {
      el.setAttribute("data-testid", value);
    } else if (key === "value" || key === "checked" || key === "disabled" || key === "hidden") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

/** h("a", {href, testid, onClick}, "text", child...) */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A CSS-safe token from a server value (for class names). */
export function token(value) {
  return String(value ?? "").toLowerCase().replace(/[^a-z0-9_-]/g, "");
}

export function link(href, text, props = {}) {
  return h("a", { href, ...props }, text);
}

function pad(n) {
  return String(n).padStart(2, "0");
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${date} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  return m < 120 ? `${m} min ${Math.round(seconds % 60)} s` : `${(m / 60).toFixed(1)} h`;
}

export function fmtJson(value) {
  if (value === undefined) return "";
  return JSON.stringify(value, null, 2);
}

export function shortId(id) {
  const text = String(id ?? "");
  return text.length > 12 ? text.slice(0, 12) : text;
}

export function badge(state, testid = "state") {
  return h("span", { className: `badge state-${token(state)}`, testid, "data-state": state }, state || "—");
}

/** The progress percentage of a run (100 once it completed). */
export function runPct(run) {
  if (run.state === "completed") return 100;
  const pct = run.progress && Number(run.progress.pct);
  return Number.isFinite(pct) ? Math.max(0, Math.min(100, pct)) : 0;
}

export function progressBar(pct, testid = "progress", note = "") {
  const rounded = Math.round(pct);
  const fill = h("div", { className: "bar-fill" });
  fill.style.width = `${pct}%`;
  return h(
    "div",
    { className: "progress", testid, role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": rounded, "data-pct": rounded },
    h("div", { className: "bar" }, fill),
    h("span", { className: "bar-text", testid: `${testid}-text` }, `${rounded} %`, note ? ` · ${note}` : ""),
  );
}

/** A definition list from [label, value, testid] rows. */
export function facts(rows) {
  return h(
    "dl",
    { className: "facts" },
    rows.map(([label, value, testid]) => [h("dt", null, label), h("dd", { testid }, value ?? "—")]),
  );
}

export function button(text, onClick, props = {}) {
  return h("button", { type: "button", onClick, ...props }, text);
}
