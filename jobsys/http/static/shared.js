// Things every view uses: the notice line and a polling loop that stops with its view.

import { ApiError } from "./api.js";

const POLL_MS = 1000;

export function notify(message, kind = "info") {
  const el = document.getElementById("notice");
  if (!message) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.hidden = false;
  el.textContent = message;
  el.dataset.kind = kind;
}

export function notifyError(err) {
  if (err instanceof ApiError && err.status === 401) return; // the login form says it
  notify(err instanceof ApiError ? `${err.type}: ${err.message}` : String(err), "error");
}

/**
 * Call `tick` now and then every `ms` after each call ends (never overlapping).
 * `tick` returns false to stop. Returns a function that stops the loop.
 */
export function poll(tick, ms = POLL_MS) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    if (stopped) return;
    let again = true;
    try {
      again = (await tick()) !== false;
    } catch (err) {
      notifyError(err);
      // no use asking again: logged out, not allowed, or gone
      if (err instanceof ApiError && [401, 403, 404].includes(err.status)) again = false;
    }
    if (again && !stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/**
 * Run an action from a button: disable it meanwhile. Errors go to the notice line (and the
 * result is undefined), or are thrown to the caller when `report` is false.
 */
export async function act(buttonEl, action, report = true) {
  buttonEl.disabled = true;
  try {
    return await action();
  } catch (err) {
    if (!report) throw err;
    notifyError(err);
    return undefined;
  } finally {
    buttonEl.disabled = false;
  }
}
