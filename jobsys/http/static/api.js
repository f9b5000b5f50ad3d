// The HTTP API client: every call goes to /api/v1 with the token from session storage.

const TOKEN_KEY = "jobsys.token";
const PREFIX = "/api/v1";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed with HTTP ${status}`);
    this.status = status;
    this.type = error.type || "HttpError";
    this.fields = Array.isArray(error.fields) ? error.fields : [];
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },
  set token(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

let unauthorized = () => {};

/** Called with the server's message whenever a request gets a 401. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** A query string from an object, skipping empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** The path segment of an id or name, escaped. */
export function seg(value) {
  return encodeURIComponent(String(value));
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { type: "HttpError", message: text.slice(0, 300) } };
  }
}

/** Call the API; resolves to the JSON body, throws ApiError for any non-2xx status. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(PREFIX + path, init);
  } catch (err) {
    throw new ApiError(0, { error: { type: "NetworkError", message: `server unreachable: ${err.message}` } });
  }
  const data = await readBody(response);
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401) unauthorized(error.message);
    throw error;
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const del = (path) => api("DELETE", path);

/** The URL of a run's live log stream (EventSource cannot send headers: token in the query). */
export function logStreamUrl(runId) {
  return `${PREFIX}/runs/${seg(runId)}/logs/stream${query({ token: session.token })}`;
}
