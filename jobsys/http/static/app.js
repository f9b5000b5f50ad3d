// The dashboard: token login, then a hash router over the views.

import { get, onUnauthorized, session } from "./api.js";
import { notify } from "./shared.js";
import { renderOverview } from "./overview.js";
import { renderRuns } from "./runs.js";
import { renderRun } from "./run.js";
import { renderSubmit } from "./submit.js";
import { renderSchedules } from "./schedules.js";
import { renderWorkflows, renderWorkflowRun } from "./workflows.js";
import { renderWorkers } from "./workers.js";
import { renderQueues } from "./queues.js";

const $ = (id) => document.getElementById(id);

let stopView = () => {};
let loggedIn = false;

const routes = [
  [/^overview$/, () => renderOverview],
  [/^runs$/, () => renderRuns],
  [/^runs\/(.+)$/, () => renderRun],
  [/^submit(?:\/(.+))?$/, () => renderSubmit],
  [/^schedules$/, () => renderSchedules],
  [/^workflows$/, () => renderWorkflows],
  [/^workflows\/(.+)$/, () => renderWorkflowRun],
  [/^workers$/, () => renderWorkers],
  [/^queues$/, () => renderQueues],
];

/** "#/runs/abc?job=x" -> {path: "runs/abc", params: URLSearchParams} */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?", 2);
  return { path: path || "overview", params: new URLSearchParams(search) };
}

function highlightNav(path) {
  const section = path.split("/")[0];
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === section);
  }
}

function route() {
  if (!loggedIn) return;
  stopView();
  notify("");
  const { path, params } = parseHash();
  const view = $("view");
  view.replaceChildren();
  highlightNav(path);
  for (const [pattern, pick] of routes) {
    const match = path.match(pattern);
    if (match) {
      const arg = match[1] === undefined ? undefined : decodeURIComponent(match[1]);
      stopView = pick()(view, arg, params) || (() => {});
      return;
    }
  }
  view.textContent = `No page at #/${path}.`;
  stopView = () => {};
}

function showLogin(message) {
  loggedIn = false;
  stopView();
  stopView = () => {};
  $("view").hidden = true;
  $("view").replaceChildren();
  $("nav").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("login-token").value = "";
  $("login-token").focus();
}

function showApp(me) {
  loggedIn = true;
  $("login").hidden = true;
  $("login-error").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  $("view").hidden = false;
  const roles = (me.roles || []).join(", ");
  $("whoami").textContent = roles ? `${me.id} (${roles})` : me.id;
  $("whoami").title = `tenant ${me.tenant}`;
  $("nav").querySelector('[data-view="workers"]').hidden = !me.admin; // admin roles only
  route();
}

async function checkToken() {
  try {
    showApp(await get("/me"));
  } catch (err) {
    session.clear();
    showLogin(err.status === 401 ? err.message : `Cannot log in: ${err.message}`);
  }
}

function onLogin(event) {
  event.preventDefault();
  const token = $("login-token").value.trim();
  if (!token) {
    showLogin("Enter an API token.");
    return;
  }
  session.token = token;
  checkToken();
}

function onLogout() {
  session.clear();
  notify("");
  showLogin("");
}

function start() {
  onUnauthorized((message) => {
    session.clear();
    if (loggedIn) showLogin(`Your session ended: ${message}`);
  });
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", onLogout);
  window.addEventListener("hashchange", route);
  if (session.token) checkToken();
  else showLogin("");
}

start();
