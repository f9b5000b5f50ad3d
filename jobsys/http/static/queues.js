// The queues page (who is paused, runs waiting, pause/resume for admins) and the pause block
// of a job's page: both over /api/v1/queues and /api/v1/jobs/{name}/pause|resume.

import { get, post, seg } from "./api.js";
import { badge, button, fmtTime, h, replace } from "./dom.js";
import { act, notify, poll } from "./shared.js";

const POLL_MS = 2000;

function who(pauses) {
  return pauses.map((p) => `${p.scope === "all" ? "everything" : p.scope} by ${p.paused_by} since ${fmtTime(p.paused_at)}`).join("; ");
}

function queueRow(q, admin, refresh) {
  const state = q.paused ? "paused" : "running";
  const action = q.paused
    ? button("Resume", (e) => act(e.currentTarget, async () => { await post(`/queues/${seg(q.name)}/resume`); refresh(); }), { testid: "queue-resume" })
    : button("Pause", (e) => act(e.currentTarget, async () => { await post(`/queues/${seg(q.name)}/pause`); refresh(); }), { testid: "queue-pause" });
  return h(
    "tr",
    { testid: "queue-row", "data-queue": q.name, "data-paused": String(q.paused) },
    h("td", null, h("code", null, q.name)),
    h("td", null, badge(state, "queue-state")),
    h("td", { testid: "queue-paused-by" }, who(q.pauses) || "—"),
    h("td", { className: "num", testid: "queue-waiting" }, String(q.waiting)),
    h("td", { className: "num", testid: "queue-paused-runs" }, String(q.paused_runs)),
    h("td", null, admin ? action : ""),
  );
}

export function renderQueues(view) {
  const tbody = h("tbody", { testid: "queues-body" });
  const everything = h("p", { className: "muted", testid: "queues-everything" });
  const table = h(
    "table",
    { className: "grid", testid: "queues-table" },
    h("thead", null, h("tr", null, ["queue", "state", "paused by", "waiting", "paused runs", ""].map((c) => h("th", null, c)))),
    tbody,
  );
  view.append(h("h1", null, "Queues"), everything, table);
  let admin = false;
  get("/me").then((me) => { admin = me.admin; }).catch(() => {});
  const tick = async () => {
    const data = await get("/queues");
    const all = (data.pauses || []).filter((p) => p.scope === "all");
    everything.textContent = all.length ? `Everything is paused: ${who(all)}.` : "";
    replace(tbody, (data.queues || []).map((q) => queueRow(q, admin, tick)));
  };
  return poll(tick, POLL_MS);
}

/** The pause state of job `spec` (as GET /jobs/{name} shows it), with its pause/resume button. */
export function pauseBlock(spec) {
  const block = h("div", { className: "pause-block", testid: "job-pause" });
  const show = (paused) => {
    const text = paused.length ? `Paused: ${who(paused)}. Its runs wait, pending.` : "Not paused: its runs start as workers take them.";
    const may = spec.may && spec.may.pause;
    const own = paused.some((p) => p.scope === "job");
    const path = `/jobs/${seg(spec.name)}/${own ? "resume" : "pause"}`;
    const toggle = button(own ? "Resume job" : "Pause job", (e) => act(e.currentTarget, async () => {
      await post(path);
      const fresh = await get(`/jobs/${seg(spec.name)}`);
      notify(own ? `Job ${spec.name} resumed.` : `Job ${spec.name} paused.`);
      show(fresh.paused || []);
    }), { testid: own ? "job-resume" : "job-pause-button" });
    block.dataset.paused = String(paused.length > 0);
    replace(block, h("span", { testid: "job-pause-state" }, text), may ? [" ", toggle] : "");
  };
  show(spec.paused || []);
  return block;
}
