// An SVG drawing of a workflow run: one box per step, coloured by its state, arrows for edges.

import { h, s, token } from "./dom.js";

const BOX_W = 170;
const BOX_H = 48;
const GAP_X = 70;
const GAP_Y = 26;
const PAD = 16;

/** Each step's column: the length of the longest path of edges leading to it. */
function layers(names, edges) {
  const incoming = new Map(names.map((n) => [n, []]));
  for (const [from, to] of edges) incoming.get(to).push(from);
  const depth = new Map();
  const visit = (name, trail) => {
    if (depth.has(name)) return depth.get(name);
    if (trail.has(name)) return 0; // a cycle should not happen; do not loop on one
    trail.add(name);
    const d = Math.max(-1, ...incoming.get(name).map((p) => visit(p, trail))) + 1;
    trail.delete(name);
    depth.set(name, d);
    return d;
  };
  names.forEach((n) => visit(n, new Set()));
  return depth;
}

function positions(names, edges) {
  const depth = layers(names, edges);
  const columns = [];
  for (const name of names) {
    const d = depth.get(name);
    (columns[d] ||= []).push(name);
  }
  const where = new Map();
  columns.forEach((column, x) => column.forEach((name, y) => {
    where.set(name, { x: PAD + x * (BOX_W + GAP_X), y: PAD + y * (BOX_H + GAP_Y) });
  }));
  const width = PAD * 2 + columns.length * BOX_W + Math.max(0, columns.length - 1) * GAP_X;
  const height = PAD * 2 + Math.max(1, ...columns.map((c) => c.length)) * (BOX_H + GAP_Y) - GAP_Y;
  return { where, width, height };
}

function edgePath(a, b) {
  const x1 = a.x + BOX_W;
  const y1 = a.y + BOX_H / 2;
  const x2 = b.x;
  const y2 = b.y + BOX_H / 2;
  const mid = (x1 + x2) / 2;
  return `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2 - 4} ${y2}`;
}

function node(name, step, at, onSelect) {
  const state = (step && step.state) || "waiting";
  const count = step && Array.isArray(step.runs) ? step.runs.length : 0;
  const g = s(
    "g",
    { className: `dag-node state-${token(state)}`, testid: "dag-node", "data-step": name, "data-state": state, transform: `translate(${at.x} ${at.y})`, tabindex: 0, role: "button" },
    s("title", null, `${name}: ${state}`),
    s("rect", { width: BOX_W, height: BOX_H, rx: 6 }),
    s("text", { x: 10, y: 20, className: "dag-name" }, name.length > 22 ? `${name.slice(0, 21)}…` : name),
    s("text", { x: 10, y: 38, className: "dag-state" }, count > 1 ? `${state} · ${count} runs` : state),
  );
  g.addEventListener("click", () => onSelect(name));
  g.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") onSelect(name);
  });
  return g;
}

/** The edges of a workflow run: its "edges", or derived from the definition's depends_on. */
export function edgesOf(record) {
  if (Array.isArray(record.edges)) return record.edges;
  const steps = (record.definition && record.definition.steps) || [];
  return steps.flatMap((st) => (st.depends_on || []).map((dep) => [dep, st.name]));
}

export function stepNames(record) {
  const names = new Set(Object.keys(record.steps || {}));
  const defined = (record.definition && record.definition.steps) || [];
  defined.forEach((st) => names.add(st.name));
  edgesOf(record).forEach(([a, b]) => {
    names.add(a);
    names.add(b);
  });
  return [...names];
}

/** The SVG for a workflow run record; `onSelect(stepName)` when a box is clicked. */
export function drawDag(record, onSelect) {
  const names = stepNames(record);
  const edges = edgesOf(record).filter(([a, b]) => names.includes(a) && names.includes(b));
  const { where, width, height } = positions(names, edges);
  const marker = s(
    "marker",
    { id: "dag-arrow", viewBox: "0 0 10 10", refX: 6, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M 0 0 L 10 5 L 0 10 z", className: "dag-arrowhead" }),
  );
  const lines = edges.map(([a, b]) => s("path", { d: edgePath(where.get(a), where.get(b)), className: "dag-edge", "marker-end": "url(#dag-arrow)", "data-from": a, "data-to": b }));
  const nodes = names.map((n) => node(n, (record.steps || {})[n], where.get(n), onSelect));
  return h(
    "div",
    { className: "dag-wrap" },
    s("svg", { className: "dag", testid: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "workflow steps" }, s("defs", null, marker), lines, nodes),
  );
}
