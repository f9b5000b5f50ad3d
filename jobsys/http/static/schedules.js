// Schedules: next and last fire, last run; pause / resume / trigger / delete; and a form to
// create one (schedule_form.js).

import { ApiError, del, get, post, seg } from "./api.js";
import { badge, button, fmtDuration, fmtTime, h, replace, shortId } from "./dom.js";
import { buildScheduleForm } from "./schedule_form.js";
import { act, notify, notifyError, poll } from "./shared.js";

/** "every 1.0 h", "cron 0 * * * * (UTC)", "once at ..." */
function cadenceText(c) {
  if (!c) return "—";
  switch (c.kind) {
    case "interval":
      return `every ${fmtDuration(c.every)}`;
    case "ongoing":
      return `ongoing, every ${fmtDuration(c.every)}`;
    case "cron":
      return `cron ${c.cron} (${c.timezone || "UTC"})`;
    case "once":
      return `once at ${fmtTime(c.at)}`;
    default:
      return String(c.kind || "—");
  }
}

function runLink(id) {
  return id ? h("a", { href: `#/runs/${seg(id)}`, testid: "schedule-last-run", title: id }, shortId(id)) : "—";
}

/** "Delete" asks first, in the row: the ids being confirmed survive the table's refreshes. */
function deleteControls(schedule, refresh, confirming, may) {
  const label = schedule.name || schedule.id;
  const rerender = () => refresh(true);
  if (may.delete === false) return null; // the job's rules say no (the server would refuse)
  if (!confirming.has(schedule.id)) {
    const ask = () => {
      confirming.add(schedule.id);
      rerender();
    };
    return [button("Delete", ask, { testid: "schedule-delete", className: "danger", disabled: schedule.state === "cancelled", title: "Cancel it for good: it never fires again" })];
  }
  const yes = async (event) => {
    try {
      await act(event.currentTarget, () => del(`/schedules/${seg(schedule.id)}`), false);
      notify(`Deleted ${label}: it never fires again.`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) notify(`Not allowed to delete ${label}: ${err.message}`, "error");
      else notifyError(err);
    } finally {
      confirming.delete(schedule.id);
      await rerender();
    }
  };
  const keep = () => {
    confirming.delete(schedule.id);
    rerender();
  };
  return [
    h("span", { className: "confirm", testid: "schedule-delete-question" }, `Delete ${label}? `),
    button("Yes, delete", yes, { testid: "schedule-delete-confirm", className: "danger" }),
    button("Keep", keep, { testid: "schedule-delete-keep" }),
  ];
}

/**
 * The row's buttons. `may` is the server's hint of what this user may do to the job (from
 * GET /jobs): the buttons it says no to are left out; the server still decides, and its
 * refusals go to the notice line.
 */
function actions(schedule, refresh, confirming, may) {
  const path = `/schedules/${seg(schedule.id)}`;
  const doAction = (name) => async (event) => {
    const result = await act(event.currentTarget, () => post(`${path}/${name}`));
    if (result === undefined) return;
    if (name === "trigger") notify(`Triggered ${schedule.name || schedule.id}${result.run_id ? `: run ${result.run_id}` : ""}.`);
    else notify(`${name === "pause" ? "Paused" : "Resumed"} ${schedule.name || schedule.id}.`);
    await refresh();
  };
  const isPaused = schedule.state === "paused";
  const isLive = schedule.state === "active" || isPaused;
  return [
    may.update === false ? null : [
      button("Pause", doAction("pause"), { testid: "schedule-pause", disabled: !isLive || isPaused }),
      button("Resume", doAction("resume"), { testid: "schedule-resume", disabled: !isPaused }),
    ],
    may.execute === false ? null : button("Trigger", doAction("trigger"), { testid: "schedule-trigger", disabled: !isLive }),
    deleteControls(schedule, refresh, confirming, may),
  ];
}

function row(schedule, refresh, confirming, mayOf) {
  return h(
    "tr",
    { testid: "schedule-row", "data-schedule-id": schedule.id, "data-state": schedule.state },
    h("td", { title: schedule.id }, schedule.name || shortId(schedule.id)),
    h("td", null, schedule.job),
    h("td", null, cadenceText(schedule.cadence)),
    h("td", null, badge(schedule.state, "schedule-state")),
    h("td", { testid: "schedule-next" }, fmtTime(schedule.next_fire_at)),
    h("td", { testid: "schedule-last" }, fmtTime(schedule.last_fire_at)),
    h("td", null, runLink(schedule.last_run_id), schedule.last_state ? ` ${schedule.last_state}` : ""),
    h("td", { className: "num", testid: "schedule-run-count" }, String(schedule.run_count ?? 0)),
    h("td", { className: "row-actions" }, actions(schedule, refresh, confirming, mayOf(schedule.job))),
  );
}

export function renderSchedules(view) {
  const tbody = h("tbody", { testid: "schedules-body" });
  const empty = h("p", { className: "muted", hidden: true, testid: "schedules-empty" }, "No schedules. Create one with New schedule above, `jobsys schedules create` or POST /api/v1/schedules.");
  const formBox = h("div");
  const panel = h("details", { className: "start", testid: "schedule-create-panel" }, h("summary", { testid: "schedule-new" }, "New schedule"), formBox);
  const confirming = new Set();
  // what this user may do to each job: a hint from the server (GET /jobs), never a check
  const jobsData = get("/jobs?all=true");
  let mays = null;
  const mayOf = (job) => (mays && mays.get(job)) || {};
  view.append(
    h("h1", null, "Schedules"),
    panel,
    h("table", { className: "grid", testid: "schedules-table" },
      h("thead", null, h("tr", null, ["name", "job", "cadence", "state", "next run", "last run", "last run id", "runs", ""].map((c) => h("th", null, c)))),
      tbody),
    empty,
  );
  let lastKey = "";
  let shown = [];
  const refresh = async (local = false) => {
    if (mays === null) {
      mays = new Map();
      try {
        for (const j of (await jobsData).jobs || []) mays.set(j.name, j.may || {});
      } catch {
        // no hints: every button shows, and the server says what it refuses
      }
    }
    if (local !== true) shown = (await get("/schedules")).schedules || [];
    const key = JSON.stringify([shown, [...confirming]]);
    if (key === lastKey) return; // unchanged: keep the rows (and the buttons being clicked)
    lastKey = key;
    if (local === true) {
      // a confirmation asked or answered: redraw now, then get the news
      replace(tbody, shown.map((sch) => row(sch, refresh, confirming, mayOf)));
      return refresh();
    }
    replace(tbody, shown.map((sch) => row(sch, refresh, confirming, mayOf)));
    empty.hidden = shown.length > 0;
  };
  buildScheduleForm(formBox, jobsData, async (made) => {
    notify(`Created schedule ${made.name || made.id}${made.state === "paused" ? " (paused)" : ""}.`);
    panel.open = false;
    await refresh();
  });
  return poll(refresh, 2000);
}
