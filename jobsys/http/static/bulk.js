// Bulk actions on the runs the table's filter selects: cancel, retry or delete them all.
// Each asks first, with the count of a dry run ("12 runs match — retry them?"), then acts
// and says what was done and what was skipped, and why.

import { ApiError, post } from "./api.js";
import { h, replace } from "./dom.js";
import { notifyError } from "./shared.js";

const ACTIONS = [
  { action: "cancel", label: "Cancel", past: "cancelled" },
  { action: "retry", label: "Retry", past: "retried" },
  { action: "delete", label: "Delete", past: "deleted", danger: true },
];

/** The bulk filter of the table's filters (job, state, tag, dead letters); {all: true} when
 * none is set (the confirmation shows how many runs that is). */
export function whereOf(filters) {
  const where = {};
  for (const key of ["job", "state", "tag"]) if (filters[key]) where[key] = filters[key];
  if (filters.exhausted === "true") where.exhausted = true;
  return Object.keys(where).length ? where : { all: true };
}

function skippedText(skipped) {
  const parts = Object.entries(skipped || {}).map(([reason, n]) => `${n} ${reason.replace(/_/g, " ")}`);
  return parts.length ? ` (skipped: ${parts.join(", ")})` : "";
}

/** The bar of bulk buttons and its confirmation line, for the table's current filters.
 * Keyword search selects runs the bulk filter cannot name: with it, the buttons are off. */
export function bulkBar(filters, onDone) {
  const panel = h("div", { className: "bulk-panel", testid: "runs-bulk-panel", hidden: true });
  const searching = Boolean(filters.q);
  const title = searching ? "Clear the keyword search to act on the runs of a filter (job, state, tag, dead letters)" : null;
  const buttons = ACTIONS.map(({ action, label, past, danger }) =>
    h("button", {
      type: "button",
      testid: `runs-bulk-${action}`,
      className: danger ? "danger" : null,
      disabled: searching,
      title,
      onClick: (event) => ask(event.currentTarget, action, label, past),
    }, `${label} matching…`),
  );
  const where = whereOf(filters);

  async function ask(button, action, label, past) {
    button.disabled = true;
    try {
      const dry = await post(`/runs/bulk/${action}`, { where, dry_run: true });
      panel.hidden = false;
      panel.dataset.action = action;
      panel.dataset.matched = String(dry.matched);
      panel.dataset.done = String(dry.done);
      const question = dry.done
        ? `${dry.matched} runs match — ${label.toLowerCase()} ${dry.done === dry.matched ? "them" : `${dry.done} of them`}?`
        : `${dry.matched} runs match — none can be ${past}.`;
      const go = h("button", {
        type: "button",
        testid: "runs-bulk-go",
        className: action === "delete" ? "danger" : null,
        onClick: (e) => act(e.currentTarget, action, past),
      }, `Yes, ${label.toLowerCase()} ${dry.done}`);
      const keep = h("button", { type: "button", testid: "runs-bulk-keep", onClick: () => (panel.hidden = true) }, "Keep them");
      replace(panel,
        h("span", { className: "confirm", testid: "runs-bulk-question" }, question + skippedText(dry.skipped)),
        dry.done ? go : null,
        keep);
    } catch (err) {
      notifyError(err);
    } finally {
      button.disabled = searching;
    }
  }

  async function act(button, action, past) {
    button.disabled = true;
    try {
      const done = await post(`/runs/bulk/${action}`, { where });
      const extra = done.stopping ? ` (${done.stopping} running, asked to stop)` : "";
      replace(panel, h("span", { testid: "runs-bulk-result", "data-done": String(done.done) },
        `${done.done} of ${done.matched} runs ${past}${extra}${skippedText(done.skipped)}.`));
      onDone();
    } catch (err) {
      if (err instanceof ApiError) replace(panel, h("span", { className: "error", testid: "runs-bulk-result" }, `${err.type}: ${err.message}`));
      else notifyError(err);
    }
  }

  return h("div", { className: "bulk", testid: "runs-bulk" }, h("div", { className: "bulk-buttons" }, buttons), panel);
}
