// Schedules: next and last fire, last run, and pause / resume / trigger.

import { get, post, seg } from "./api.js";
import { badge, button, fmtDuration, fmtTime, h, replace, shortId } from "./dom.js";
import { act, notify, poll } from "./shared.js";

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

function actions(schedule, refresh) {
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
    button("Pause", doAction("pause"), { testid: "schedule-pause", disabled: !isLive || isPaused }),
    button("Resume", doAction("resume"), { testid: "schedule-resume", disabled: !isPaused }),
    button("Trigger", doAction("trigger"), { testid: "schedule-trigger", disabled: !isLive }),
  ];
}

function row(schedule, refresh) {
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
    h("td", { className: "row-actions" }, actions(schedule, refresh)),
  );
}

export function renderSchedules(view) {
  const tbody = h("tbody", { testid: "schedules-body" });
  const empty = h("p", { className: "muted", hidden: true, testid: "schedules-empty" }, "No schedules. Create them with `jobsys schedules create` or POST /api/v1/schedules.");
  view.append(
    h("h1", null, "Schedules"),
    h("table", { className: "grid", testid: "schedules-table" },
      h("thead", null, h("tr", null, ["name", "job", "cadence", "state", "next run", "last run", "last run id", "runs", ""].map((c) => h("th", null, c)))),
      tbody),
    empty,
  );
  let lastKey = "";
  const refresh = async () => {
    const data = await get("/schedules");
    const schedules = data.schedules || [];
    const key = JSON.stringify(schedules);
    if (key === lastKey) return; // unchanged: keep the rows (and the buttons being clicked)
    lastKey = key;
    replace(tbody, schedules.map((sch) => row(sch, refresh)));
    empty.hidden = schedules.length > 0;
  };
  return poll(refresh, 2000);
}
