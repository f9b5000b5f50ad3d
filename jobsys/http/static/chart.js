// Small SVG charts of our own (no library, nothing from a CDN): lines over time buckets, and
// paired horizontal bars per category. Every drawn value carries data attributes (series,
// bucket, value) so that tests and tools can read what is drawn; colours come from app.css.

import { h, s, token } from "./dom.js";

const W = 640;
const H = 200;
const PAD = { left: 52, right: 14, top: 12, bottom: 38 };
const X_TICKS = 6;

/** A round upper bound for an axis whose data reach `max` (at least `floor`). */
function niceMax(max, floor = 1) {
  const top = Math.max(max, floor);
  const step = 10 ** Math.floor(Math.log10(top));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= top) return m * step;
  return 10 * step;
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

export function clock(date) {
  return `${pad2(date.getHours())}:${pad2(date.getMinutes())}`;
}

function legend(testid, items) {
  return h(
    "ul",
    { className: "chart-legend", testid: `${testid}-legend` },
    items.map((it) =>
      h("li", { testid: "chart-legend-item", "data-series": it.name },
        h("span", { className: `chart-swatch series-${token(it.name)}` }), ` ${it.label}`)),
  );
}

function frame(testid, title, body, items) {
  return h("figure", { className: "chart card", testid },
    h("figcaption", null, h("h2", null, title)), body, items ? legend(testid, items) : null);
}

function axes(yMax, yLabel, xLabel, fmt) {
  const plotH = H - PAD.top - PAD.bottom;
  const ticks = [0, yMax / 2, yMax].map((v) => {
    const y = PAD.top + plotH - (v / yMax) * plotH;
    return s("g", { className: "chart-tick" },
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, className: "chart-grid" }),
      s("text", { x: PAD.left - 6, y: y + 4, className: "chart-tick-label", "text-anchor": "end" }, fmt(v)));
  });
  const yTitle = s("text", { className: "chart-axis-label", transform: `translate(12 ${PAD.top + plotH / 2}) rotate(-90)`, "text-anchor": "middle" }, yLabel);
  const xTitle = s("text", { className: "chart-axis-label", x: PAD.left + (W - PAD.left - PAD.right) / 2, y: H - 4, "text-anchor": "middle" }, xLabel);
  return [ticks, yTitle, xTitle];
}

/**
 * A line chart over time buckets. `xs`: the bucket starts (Dates); `series`: [{name, label,
 * values}] with a number or null (not measured: the line breaks) per bucket. `fmt` formats
 * values for the axis and tooltips; `yFloor` is the least top of the y axis.
 */
export function lineChart({ testid, title, xs, series, yLabel, xLabel = "time", fmt = String, yFloor = 1, empty = "Nothing in this window." }) {
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const measured = series.flatMap((se) => se.values.filter((v) => v !== null && v !== undefined));
  const yMax = niceMax(Math.max(0, ...measured), yFloor);
  const x = (i) => PAD.left + (xs.length > 1 ? (i / (xs.length - 1)) * plotW : plotW / 2);
  const y = (v) => PAD.top + plotH - (v / yMax) * plotH;
  const every = Math.max(1, Math.ceil(xs.length / X_TICKS));
  const xTicks = xs.map((d, i) => (i % every === 0
    ? s("text", { x: x(i), y: PAD.top + plotH + 16, className: "chart-tick-label", "text-anchor": "middle" }, clock(d))
    : null));
  const lines = series.map((se) => {
    let d = "";
    let pen = false;
    se.values.forEach((v, i) => {
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      d += `${pen ? "L" : "M"} ${x(i).toFixed(1)} ${y(v).toFixed(1)} `;
      pen = true;
    });
    const points = se.values.map((v, i) => (v === null || v === undefined || (se.dropZero !== false && v === 0) ? null
      : s("circle", { cx: x(i), cy: y(v), r: 2.5, className: `chart-point series-${token(se.name)}`, testid: "chart-point", "data-series": se.name, "data-bucket": xs[i].toISOString(), "data-value": v },
        s("title", null, `${clock(xs[i])} ${se.label}: ${fmt(v)}`))));
    const total = se.values.reduce((a, v) => a + (v || 0), 0);
    return s("g", { className: "chart-series", testid: "chart-series", "data-series": se.name, "data-total": total, "data-points": points.filter(Boolean).length },
      d ? s("path", { d: d.trim(), className: `chart-line series-${token(se.name)}` }) : null, points);
  });
  const note = measured.length ? null
    : s("text", { x: PAD.left + plotW / 2, y: PAD.top + plotH / 2, className: "chart-empty", testid: "chart-empty", "text-anchor": "middle" }, empty);
  const svg = s("svg", { className: "chart-svg", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, "data-y-max": yMax },
    axes(yMax, yLabel, xLabel, fmt), xTicks, lines, note);
  return frame(testid, title, svg, series.map((se) => ({ name: se.name, label: se.label })));
}

/**
 * Horizontal bars, a group per category: `rows` [{label, values: {key: number}}], `keys`
 * [{name, label}] (one bar each, in this order). `fmt` formats the values.
 */
export function barChart({ testid, title, rows, keys, xLabel, fmt = String, empty = "Nothing in this window." }) {
  const bar = 12;
  const group = keys.length * bar + 10;
  const left = 170;
  const plotW = W - left - 70;
  const height = PAD.top + Math.max(1, rows.length) * group + 30;
  const top = niceMax(Math.max(0, ...rows.flatMap((r) => keys.map((k) => r.values[k.name] || 0))), 0.001);
  const groups = rows.map((r, gi) => {
    const y0 = PAD.top + gi * group;
    const name = r.label.length > 26 ? `${r.label.slice(0, 25)}…` : r.label;
    return s("g", { className: "chart-group", "data-job": r.label },
      s("text", { x: left - 8, y: y0 + (keys.length * bar) / 2 + 4, className: "chart-tick-label", "text-anchor": "end" }, s("title", null, r.label), name),
      keys.map((k, ki) => {
        const v = r.values[k.name] || 0;
        const w = Math.max(1, (v / top) * plotW);
        return [
          s("rect", { x: left, y: y0 + ki * bar, width: w, height: bar - 2, className: `chart-bar series-${token(k.name)}`, testid: "chart-bar", "data-job": r.label, "data-stat": k.name, "data-value": v },
            s("title", null, `${r.label} ${k.label}: ${fmt(v)}`)),
          s("text", { x: left + w + 4, y: y0 + ki * bar + bar - 3, className: "chart-value" }, fmt(v)),
        ];
      }));
  });
  const axisY = PAD.top + Math.max(1, rows.length) * group;
  const note = rows.length ? null
    : s("text", { x: left + plotW / 2, y: PAD.top + group / 2 + 4, className: "chart-empty", testid: "chart-empty", "text-anchor": "middle" }, empty);
  const svg = s("svg", { className: "chart-svg", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": title },
    s("line", { x1: left, x2: left + plotW, y1: axisY, y2: axisY, className: "chart-grid" }),
    s("text", { x: left, y: axisY + 14, className: "chart-tick-label", "text-anchor": "start" }, fmt(0)),
    s("text", { x: left + plotW, y: axisY + 14, className: "chart-tick-label", "text-anchor": "end" }, fmt(top)),
    s("text", { x: left + plotW / 2, y: axisY + 26, className: "chart-axis-label", "text-anchor": "middle" }, xLabel),
    groups, note);
  return frame(testid, title, svg, keys);
}
