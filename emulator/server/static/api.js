// The admin API of `dynwf dev`, as the page calls it: same origin, token on every change.
const TOKEN = document.querySelector('meta[name="dynwf-token"]')?.content ?? "";
export const API = "/__dynwf/api";

export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.hint = error.hint;
    this.body = body;
  }
}

async function call(method, path, body) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-dynwf-token"] = TOKEN;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(API + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin", cache: "no-store",
  });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const q = (params) => {
  const parts = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return parts.length ? "?" + new URLSearchParams(parts).toString() : "";
};
const enc = encodeURIComponent;

export const api = {
  list: (filters = {}) => call("GET", "/instances" + q(filters)),
  tenants: () => call("GET", "/tenants"),
  schedules: () => call("GET", "/schedules"),
  create: (tenant, params) => call("POST", "/instances", { tenant, params }),
  describe: (id) => call("GET", `/instances/${enc(id)}`),
  outline: (id) => call("GET", `/instances/${enc(id)}/outline`),
  logs: (id, after) => call("GET", `/instances/${enc(id)}/logs` + q({ after })),
  act: (id, action) => call("POST", `/instances/${enc(id)}/${action}`),
  terminate: (id, options) => call("POST", `/instances/${enc(id)}/terminate`, options),
  rerun: (id, from) => call("POST", `/instances/${enc(id)}/rerun`, { from }),
  sendEvent: (id, type, payload) => call("POST", `/instances/${enc(id)}/events`, { type, payload }),
  sample: () => call("GET", "/playground/sample"),
  playground: (code, params) => call("POST", "/playground", { code, params }),
};

// Progress from the engine as server-sent events; `onEvent` gets each parsed event.
export function progress(instance, onEvent, onState) {
  const source = new EventSource(API + "/events" + q({ instance }));
  source.addEventListener("open", () => onState?.(true));
  source.addEventListener("error", () => onState?.(false));
  source.addEventListener("progress", (message) => {
    try { onEvent(JSON.parse(message.data)); } catch { /* a malformed event is skipped */ }
  });
  return () => source.close();
}
