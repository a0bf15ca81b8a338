// The dashboard: instances, one instance's checklist, and the playground. Plain DOM, no build.
import { api, progress, ApiError } from "./api.js";
import { GLYPHS, attemptLines, buildChecklist, frameLines, stepDetail, formatMs, tracebackHeading, words } from "./checklist.js";

const STATUSES = ["queued", "running", "paused", "errored", "terminated", "complete", "waiting",
                  "waitingForPause", "unknown"];
const FINISHED = new Set(["complete", "errored", "terminated"]);
// For which statuses each action of the instance view applies; its button is disabled otherwise.
const APPLIES = {
  pause: (status) => ["running", "waiting", "queued"].includes(status),
  resume: (status) => ["paused", "waitingForPause"].includes(status),
  terminate: (status) => !FINISHED.has(status),
  "terminate-rollback": (status) => !FINISHED.has(status),
  restart: () => true,
  wake: (status) => !FINISHED.has(status),
  delete: () => true,
};
// The actions that throw work away ask first.
const CONFIRM = {
  terminate: "Terminate this instance? It stops for good: steps not run yet never run.",
  "terminate-rollback": "Run this instance's rollback handlers (latest-started step first), then terminate it? It stops for good.",
  restart: "Restart this instance? Every step's result is erased and it runs again from the first step.",
  delete: "Delete this instance? It stops at once, without rollback, and everything stored about it "
          + "(steps, events, logs) is erased. This cannot be undone.",
};
const codeChanged = (info) => Boolean(info.current_code_version && info.code_version
                                      && info.current_code_version !== info.code_version);
const view = document.getElementById("view");
let cleanup = () => {};

// ---- small helpers ----------------------------------------------------------------------------

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const json = (value) => JSON.stringify(value, null, 2);
// Times as the CLI prints them: UTC, the engine's clock (which fast-forward may run ahead).
const when = (ms) => (ms ? new Date(ms).toISOString().slice(0, 19).replace("T", " ") : "—");
const time = (ms) => (ms ? new Date(ms).toISOString().slice(11, 23) : "");
const badge = (status) => h("span", { class: `badge status-${status}`, "data-status": status }, status);

let toastTimer = null;
function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `toast show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = "toast"; }, 4000);
}

// A workflow's error ({name, message, stack?}) as one line, as `dynwf instances describe` shows it.
function errorLine(error) {
  if (typeof error === "string") return error;
  if (error?.message !== undefined) return `${error.name || "Error"}: ${error.message}`;
  return JSON.stringify(error);
}

// The rollback phase (docs/semantics.md, "Rollbacks"): under way, or its outcome.
function rollbackText(rollback) {
  if (rollback === null) return "running its rollback handlers";
  if (rollback.outcome === "complete") return "complete: every handler ran";
  return "failed" + (rollback.error ? `: ${errorLine(rollback.error)}` : "");
}

// An in-page confirmation (window.confirm would block the page and every test that drives it).
function confirmed(question, yes) {
  return new Promise((resolve) => {
    const answer = (yes) => () => { dialog.remove(); resolve(yes); };
    const dialog = h("div", { id: "confirm", class: "confirm", role: "dialog", "aria-modal": "true" },
      h("div", { class: "confirm-box" },
        h("p", { id: "confirm-question" }, question),
        h("div", { class: "row" },
          h("button", { type: "button", id: "confirm-yes", class: "primary", onclick: answer(true) }, yes),
          h("button", { type: "button", id: "confirm-no", onclick: answer(false) }, "Cancel"))));
    dialog.addEventListener("keydown", (e) => { if (e.key === "Escape") answer(false)(); });
    document.body.append(dialog);
    dialog.querySelector("#confirm-no").focus();
  });
}

function errorText(error) {
  if (error instanceof ApiError) return error.message + (error.hint ? ` (${error.hint})` : "");
  return String(error?.message ?? error);
}

function setLive(on) {
  const el = document.getElementById("live");
  el.textContent = on === null ? "" : on ? "● live" : "○ offline";
  el.classList.toggle("on", on === true);
}

// Run `task` now, and again once after it finishes if asked meanwhile (events come in bursts).
function coalesced(task) {
  let running = false, again = false;
  const run = async () => {
    if (running) { again = true; return; }
    running = true;
    try { await task(); } catch (error) { console.error(error); }
    running = false;
    if (again) { again = false; run(); }
  };
  return run;
}

// ---- instances --------------------------------------------------------------------------------

function instancesView(query) {
  const tenant = h("input", { id: "filter-tenant", placeholder: "any tenant", value: query.get("tenant") || "" });
  const status = h("select", { id: "filter-status" }, h("option", { value: "" }, "any status"),
                   STATUSES.map((s) => h("option", { value: s }, s)));
  status.value = query.get("status") || "";
  const body = h("tbody", { id: "instances-body" });
  const count = h("span", { class: "muted" });
  const filters = () => ({ tenant: tenant.value.trim(), status: status.value, limit: 500 });

  const refresh = coalesced(async () => {
    const rows = await api.list(filters());
    body.replaceChildren(...rows.map((row) => h("tr", {
      "data-id": row.id, class: "clickable",
      onclick: () => { location.hash = `#/instances/${encodeURIComponent(row.id)}`; },
    },
      h("td", {}, h("a", { href: `#/instances/${encodeURIComponent(row.id)}` },
                   row.tenant_instance_id || row.id)),
      h("td", {}, row.tenant ?? "—"),
      h("td", {}, row.workflow === "__playground" ? "playground" : row.workflow),
      h("td", {}, badge(row.status)),
      h("td", {}, when(row.created_at)),
      h("td", {}, when(row.updated_at)),
      h("td", { class: "mono" }, row.code_version ?? "—"))));
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted empty" },
      "No instances yet. Start one from a tenant, the CLI, or the Playground.")));
    count.textContent = `${rows.length} instance${rows.length === 1 ? "" : "s"}`;
  });
  const update = () => {
    const params = new URLSearchParams();
    if (tenant.value.trim()) params.set("tenant", tenant.value.trim());
    if (status.value) params.set("status", status.value);
    history.replaceState(null, "", "#/instances" + (params.size ? "?" + params : ""));
    refresh();
  };
  tenant.addEventListener("input", update);
  status.addEventListener("change", update);

  // Start an instance of one of the project's tenants (tenants/<id>/), as POST /instances does.
  const startTenant = h("select", { id: "start-tenant", required: true });
  const startParams = h("textarea", { id: "start-params", class: "mono", rows: 1, spellcheck: "false" }, "{}");
  const startError = h("div", { class: "inline-error", id: "start-error" });
  const startForm = h("form", { id: "start-form", class: "start-form", onsubmit: async (e) => {
    e.preventDefault();
    startError.textContent = "";
    let given;
    try { given = startParams.value.trim() ? JSON.parse(startParams.value) : {}; }
    catch (error) { startError.textContent = `The params are not JSON: ${error.message}`; return; }
    try {
      const created = await api.create(startTenant.value, given);
      location.hash = `#/instances/${encodeURIComponent(created.id)}`;
    } catch (error) { startError.textContent = errorText(error); }
  } },
    h("label", {}, "Tenant ", startTenant),
    h("label", { class: "grow" }, "Params (JSON) ", startParams),
    h("button", { type: "submit", id: "start", class: "primary" }, "Start"), startError);
  api.tenants().then(({ tenants }) => {
    startTenant.replaceChildren(...tenants.map((t) => h("option", { value: t }, t)));
    if (!tenants.length) startForm.replaceChildren(h("span", { class: "muted" },
      "This project has no tenants/ folder: start instances from the CLI or the Playground."));
  }).catch((error) => { startError.textContent = errorText(error); });

  // The project's cron schedules and each one's next firings (UTC), as the server computes them:
  // shown again just after the soonest one passes, so no time shown is ever in the past.
  const schedules = h("section", { class: "panel", id: "schedules", hidden: true });
  let schedulesTimer = null;
  const showSchedules = async () => {
    clearTimeout(schedulesTimer);
    let answer;
    try { answer = await api.schedules(); } catch (error) { console.error(error); return; }
    const list = answer.schedules;
    schedules.hidden = !list.length;
    schedules.replaceChildren(h("h2", {}, "Schedules"),
      h("table", { class: "schedules" },
        h("thead", {}, h("tr", {}, ["Workflow", "Cron (UTC)", "Next firings (UTC)"].map((t) => h("th", {}, t)))),
        h("tbody", {}, list.map((s) => h("tr", { "data-workflow": s.workflow, "data-cron": s.cron },
          h("td", {}, s.workflow), h("td", { class: "mono" }, s.cron),
          h("td", {}, s.next.length ? h("ul", { class: "firings" },
            s.next.map((at) => h("li", { "data-at": at }, when(at).slice(0, 16))))
            : h("span", { class: "muted" }, "never fires again")))))));
    const soonest = Math.min(...list.flatMap((s) => s.next.slice(0, 1)));
    if (Number.isFinite(soonest))
      schedulesTimer = setTimeout(showSchedules, Math.min(Math.max(soonest - answer.now, 0) + 500, 60_000));
  };

  view.replaceChildren(
    h("section", { class: "panel" },
      h("div", { class: "row between" }, h("h1", {}, "Instances"), count),
      h("div", { class: "filters" }, h("label", {}, "Tenant ", tenant), h("label", {}, "Status ", status)),
      h("div", { class: "table-wrap" }, h("table", { class: "instances" },
        h("thead", {}, h("tr", {}, ["Instance", "Tenant", "Workflow", "Status", "Created", "Updated",
                                    "Code version"].map((t) => h("th", {}, t)))),
        body))),
    h("section", { class: "panel" }, h("h2", {}, "Start an instance"), startForm),
    schedules);
  refresh();
  showSchedules();
  const stop = progress(null, (event) => { if (event.kind !== "log") refresh(); }, setLive);
  return () => { clearTimeout(schedulesTimer); stop(); };
}

// ---- one instance -----------------------------------------------------------------------------

function instanceView(id) {
  let outline = [];
  let outlineFile = null;
  const head = h("div", { class: "instance-head" });
  const checklist = h("ol", { id: "checklist", class: "checklist" });
  const loose = h("div", { class: "loose-logs" });
  const params = h("pre", { id: "instance-params", class: "json" });
  const output = h("pre", { id: "instance-output", class: "json" });
  const errorBox = h("pre", { id: "instance-error", class: "json error", hidden: true });
  const timers = h("ul", { class: "timers" });

  const act = (action) => async () => {
    if (CONFIRM[action] && !(await confirmed(CONFIRM[action], action))) return;
    try {
      const result = action === "terminate-rollback" ? await api.terminate(id, { rollback: true })
                                                     : await api.act(id, action);
      if (action === "delete") {      // nothing is left to show: back to the list
        toast(`deleted ${result.tenant_instance_id || result.id}`);
        location.hash = "#/instances";
        return;
      }
      toast(`${action}: ${result.status}${result.woken !== undefined ? ` (${result.woken} woken)` : ""}`);
    } catch (error) { toast(`${action} failed: ${errorText(error)}`, "error"); }
    refresh();
  };
  const buttons = h("div", { class: "actions" }, Object.keys(APPLIES).map(
    (action) => h("button", { type: "button", "data-action": action, onclick: act(action),
                              class: CONFIRM[action] ? "danger" : "" },
                   action === "terminate-rollback" ? "terminate + rollback" : action)));
  const enableActions = (status) => {
    for (const button of buttons.querySelectorAll("button")) {
      const applies = APPLIES[button.dataset.action](status);
      button.disabled = !applies;
      button.title = applies ? "" : `not for a ${status} instance`;
    }
  };

  const eventType = h("input", { id: "event-type", placeholder: "event type", required: true });
  const eventPayload = h("textarea", { id: "event-payload", class: "mono", rows: 3, spellcheck: "false" }, "{}");
  const eventError = h("div", { class: "inline-error", id: "event-error" });
  const eventForm = h("form", { id: "event-form", class: "event-form", onsubmit: async (e) => {
    e.preventDefault();
    eventError.textContent = "";
    let payload;
    try { payload = eventPayload.value.trim() ? JSON.parse(eventPayload.value) : null; }
    catch (error) { eventError.textContent = `The payload is not JSON: ${error.message}`; return; }
    try {
      await api.sendEvent(id, eventType.value.trim(), payload);
      toast(`event "${eventType.value.trim()}" sent`);
    } catch (error) { eventError.textContent = errorText(error); }
    refresh();
  } },
    h("h3", {}, "Send event"),
    h("label", {}, "Type ", eventType),
    h("label", {}, "Payload (JSON) ", eventPayload),
    h("button", { type: "submit", id: "send-event" }, "Send event"), eventError);

  // "rerun from here": a new instance with this one's history up to the step, on the current code
  const STEP_TYPES = { do: "do", sleep: "sleep", wait: "waitForEvent" };
  const rerunFrom = (step) => async () => {
    const label = step.count > 1 ? `${step.name} #${step.count}` : step.name;
    const question = `Rerun from "${label}"? A new instance gets this one's history up to that `
      + "step and runs it and every later step with the code as it is now; this instance is not changed.";
    if (!(await confirmed(question, "rerun"))) return;
    try {
      const result = await api.rerun(id, { name: step.name, count: step.count, type: STEP_TYPES[step.kind] });
      toast(`rerun ${result.tenant_instance_id || result.id} made (${result.steps_kept} step(s) kept)`);
      location.hash = `#/instances/${encodeURIComponent(result.id)}`;
    } catch (error) { toast(`rerun failed: ${errorText(error)}`, "error"); }
  };

  const opened = new Set();     // outputs the user expanded stay expanded across updates
  const rowKey = (row) => `${row.kind}/${row.name}/${row.count}`;
  const renderRow = (row, instanceError, runFrames) => {
    const step = row.step;
    const details = [];
    const attempts = attemptLines(step);
    if (attempts.length) details.push(h("pre", { class: "step-attempts" }, attempts.join("\n")));
    const error = step?.error ?? instanceError;
    if (error) details.push(h("pre", { class: "step-error" },
      [errorLine(error), ...(instanceError ? runFrames : [])].join("\n")));
    if (step && step.sensitive && step.result !== null && step.result !== undefined)
      // the admin API already redacted it (sensitive: "output"); say so rather than show a value
      details.push(h("p", { class: "step-redacted muted" }, `output ${step.result} (sensitive)`));
    else if (step && step.result !== null && step.result !== undefined && step.kind !== "sleep")
      details.push(h("details", { class: "step-output", open: opened.has(rowKey(row)),
                              ontoggle: (e) => { e.target.open ? opened.add(rowKey(row)) : opened.delete(rowKey(row)); } },
                     h("summary", {}, step.kind === "wait" ? "event" : "output"),
                     h("pre", { class: "json" }, json(step.result))));
    if (row.logs.length) details.push(h("ul", { class: "logs" }, row.logs.map((line) =>
      h("li", { class: `log level-${line.level}` }, h("span", { class: "at" }, time(line.at)),
        line.level === "info" || line.level === "log" ? "" : h("span", { class: "level" }, line.level),
        h("span", { class: "msg" }, line.message)))));
    const kind = row.kind === "do" ? "" : h("span", { class: "kind" }, row.kind);
    return h("li", { class: `step state-${row.state}`, "data-step": row.label, "data-state": row.state,
                     "data-kind": row.kind },
      h("div", { class: "step-line" },
        h("span", { class: "glyph", "aria-hidden": "true" }, GLYPHS[row.state] ?? "?"),
        h("span", { class: "name" }, row.label, row.count > 1 ? h("span", { class: "muted" }, ` #${row.count}`) : ""),
        kind,
        h("span", { class: "state" }, row.state === "skipped" ? "not run" : row.state),
        h("span", { class: "detail" }, stepDetail(row)),
        step ? h("button", { type: "button", class: "rerun small", title: "a new instance from "
                             + "this instance's history up to this step, on the current code",
                             onclick: rerunFrom(step) }, "rerun from here") : ""),
      details);
  };

  let lastStatus = null;
  const refresh = coalesced(async () => {
    const [info, logs] = await Promise.all([api.describe(id), api.logs(id)]);
    lastStatus = info.status;
    const { rows, loose: looseLines } = buildChecklist(outline, info.steps, logs.lines, info.status);
    // the instance's error goes under the step that failed last; only an error raised outside
    // every step is shown on its own
    const failing = info.error ? rows.findLast((r) => r.state === "failed" && r.kind !== "rollback") : undefined;
    const runFrames = info.error_traceback?.length
      ? [tracebackHeading(info.error_traceback), ...frameLines(info.error_traceback)] : [];
    checklist.replaceChildren(...rows.map((row) =>
      renderRow(row, row === failing ? info.error : null, runFrames)));
    enableActions(info.status);
    if (!rows.length) checklist.append(h("li", { class: "muted" }, "No steps yet."));
    loose.replaceChildren(...(looseLines.length ? [h("h3", {}, "Logs outside steps"),
      h("ul", { class: "logs" }, looseLines.map((l) => h("li", { class: `log level-${l.level}` },
        h("span", { class: "at" }, time(l.at)), h("span", { class: "msg" }, l.message))))] : []));
    head.replaceChildren(
      h("div", { class: "row between" },
        h("h1", {}, info.tenant_instance_id || info.id),
        h("span", { id: "instance-status" }, badge(info.status))),
      h("dl", { class: "facts" },
        h("dt", {}, "Id"), h("dd", { class: "mono" }, info.id),
        h("dt", {}, "Tenant"), h("dd", {}, info.tenant ?? "—"),
        h("dt", {}, "Workflow"), h("dd", {}, info.workflow === "__playground" ? "playground (scratch tenant)" : info.workflow),
        h("dt", {}, "Code version"), h("dd", {}, h("span", { class: "mono" }, info.code_version ?? "—"),
          codeChanged(info)
            ? h("span", { id: "code-changed", class: "warn" },
                ` (tenants/${info.tenant}/ is now ${info.current_code_version}: the code changed since this instance started)`)
            : info.current_code_version && info.code_version ? h("span", { class: "muted" }, " (same as tenants/ now)") : ""),
        h("dt", {}, "Created"), h("dd", {}, when(info.created_at)),
        h("dt", {}, "Updated"), h("dd", {}, when(info.updated_at)),
        "rollback" in info ? [h("dt", {}, "Rollback"), h("dd", { id: "instance-rollback" }, rollbackText(info.rollback))] : [],
        info.rerun_of ? [h("dt", {}, "Rerun of"), h("dd", { id: "rerun-of" },
          h("a", { href: `#/instances/${encodeURIComponent(info.rerun_of)}` }, info.rerun_of),
          h("span", { class: "muted" }, ` from ${info.rerun_from?.name ?? "?"}`))] : [],
        info.reruns?.length ? [h("dt", {}, "Reruns"), h("dd", { id: "reruns" }, info.reruns.map((r) =>
          h("div", {}, h("a", { href: `#/instances/${encodeURIComponent(r.id)}` }, r.id),
            h("span", { class: "muted" }, ` from ${r.from?.name ?? "?"} (${r.status})`))))] : [],
        outlineFile ? [h("dt", {}, "Code"), h("dd", { class: "mono" }, outlineFile)] : []));
    params.textContent = json(info.params);
    output.textContent = info.output === null || info.output === undefined ? (FINISHED.has(info.status) ? "null" : "—") : json(info.output);
    // the error and run()'s frames show under the failing step; the box only holds an error
    // raised outside every step
    errorBox.hidden = !info.error || failing !== undefined;
    errorBox.textContent = info.error ? [errorLine(info.error), ...runFrames].join("\n") : "";
    timers.replaceChildren(...info.timers.map((t) => h("li", {},
      `${words(t.kind)} of ${t.step.name}: due ${when(t.due_at)} (in ${formatMs(Math.max(0, t.due_in_ms))})`)));
    if (info.events_buffered) timers.append(h("li", {}, `${info.events_buffered} event(s) buffered`));
    const waiting = info.steps.find((s) => s.status === "waiting" && s.event_type);
    if (waiting && !eventType.value) eventType.value = waiting.event_type;
  });

  view.replaceChildren(
    h("p", {}, h("a", { href: "#/instances" }, "← all instances")),
    h("section", { class: "panel" }, head, buttons),
    h("div", { class: "columns" },
      h("section", { class: "panel grow" }, h("h2", {}, "Steps"), checklist, loose),
      h("aside", { class: "panel side" },
        h("h3", {}, "Params"), params, h("h3", {}, "Output"), output, errorBox,
        h("ul", { class: "timers-wrap" }, timers), eventForm)));

  let stop = () => {}, closed = false;
  (async () => {
    let realId = id;
    try {
      const got = await api.outline(id);
      outline = got.steps || [];
      outlineFile = got.file;
      realId = got.id || id;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) throw error;
      outline = [];
    }
    await refresh();
    // the engine's progress names instances by their real id
    if (!closed) stop = progress(realId, () => refresh(), (on) => { setLive(on); if (on) refresh(); });
  })().catch((error) => {
    view.replaceChildren(h("p", {}, h("a", { href: "#/instances" }, "← all instances")),
                         h("p", { class: "inline-error" }, errorText(error)));
  });
  return () => { closed = true; stop(); };
}

// ---- playground -------------------------------------------------------------------------------

const CODE_KEY = "dynwf.playground.code", PARAMS_KEY = "dynwf.playground.params";

function playgroundView() {
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const editor = h("textarea", { id: "editor", class: "editor mono", spellcheck: "false",
                                 autocomplete: "off", wrap: "off", "aria-label": "tenant code (index.py)" });
  const paramsBox = h("textarea", { id: "params", class: "mono", rows: 2, spellcheck: "false",
                                    "aria-label": "params (JSON)" });
  const diagnostics = h("ul", { id: "diagnostics", class: "diagnostics" });
  const runButton = h("button", { id: "run", type: "button", class: "primary" }, "Run");
  const resetButton = h("button", { type: "button" }, "Reset to sample");
  let marks = new Map();

  const renderGutter = () => {
    const lines = editor.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: lines }, (_, i) =>
      h("div", { class: marks.has(i + 1) ? `mark ${marks.get(i + 1)}` : "" }, i + 1)));
    gutter.scrollTop = editor.scrollTop;
  };
  const save = () => {
    sessionStorage.setItem(CODE_KEY, editor.value);
    sessionStorage.setItem(PARAMS_KEY, paramsBox.value);
  };
  editor.addEventListener("input", () => { marks = new Map(); renderGutter(); save(); });
  editor.addEventListener("scroll", () => { gutter.scrollTop = editor.scrollTop; });
  paramsBox.addEventListener("input", save);
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Tab" && !e.shiftKey) {
      e.preventDefault();
      editor.setRangeText("    ", editor.selectionStart, editor.selectionEnd, "end");
      editor.dispatchEvent(new Event("input"));
    } else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });

  const goTo = (line, column) => {
    const lines = editor.value.split("\n");
    let offset = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    offset += Math.max(0, (column || 1) - 1);
    editor.focus();
    editor.setSelectionRange(offset, offset);
    const lineHeight = editor.scrollHeight / Math.max(1, lines.length);
    editor.scrollTop = Math.max(0, (line - 4) * lineHeight);
  };

  const showDiagnostics = (found) => {
    marks = new Map();
    for (const d of found) if (!marks.has(d.line) || d.severity === "error") marks.set(d.line, d.severity);
    diagnostics.replaceChildren(...found.map((d) => h("li", {
      class: `diag ${d.severity}`, "data-line": d.line, "data-code": d.code,
      onclick: () => goTo(d.line, d.column),
    }, h("span", { class: "where" }, `line ${d.line}:${d.column}`),
       h("span", { class: "code" }, d.code), h("span", { class: "sev" }, d.severity),
       h("span", { class: "msg" }, d.message), d.hint ? h("span", { class: "hint" }, d.hint) : "")));
    renderGutter();
  };

  async function run() {
    let params;
    diagnostics.replaceChildren();
    try { params = paramsBox.value.trim() ? JSON.parse(paramsBox.value) : {}; }
    catch (error) {
      diagnostics.replaceChildren(h("li", { class: "diag error" }, h("span", { class: "msg" },
        `Params are not JSON: ${error.message}`)));
      return;
    }
    runButton.disabled = true;
    runButton.textContent = "Checking…";
    try {
      const created = await api.playground(editor.value, params);
      if (created.diagnostics?.length) showDiagnostics(created.diagnostics);
      location.hash = `#/instances/${encodeURIComponent(created.id)}`;
    } catch (error) {
      if (error instanceof ApiError && error.body?.diagnostics) showDiagnostics(error.body.diagnostics);
      else diagnostics.replaceChildren(h("li", { class: "diag error" }, h("span", { class: "msg" }, errorText(error))));
    } finally {
      runButton.disabled = false;
      runButton.textContent = "Run";
    }
  }
  runButton.addEventListener("click", run);

  const loadSample = async (force) => {
    const sample = await api.sample();
    editor.value = (!force && sessionStorage.getItem(CODE_KEY)) || sample.code;
    paramsBox.value = (!force && sessionStorage.getItem(PARAMS_KEY)) || JSON.stringify(sample.params);
    marks = new Map();
    diagnostics.replaceChildren();
    renderGutter();
    if (force) save();
  };
  resetButton.addEventListener("click", () => loadSample(true));

  view.replaceChildren(h("section", { class: "panel" },
    h("div", { class: "row between" }, h("h1", {}, "Playground"),
      h("span", { class: "muted" }, "A scratch tenant's index.py, checked with the rules of dynwf check, then run in its own isolate.")),
    h("div", { class: "editor-wrap" }, gutter, editor),
    h("label", { class: "params-label" }, "Params (JSON)", paramsBox),
    h("div", { class: "row" }, runButton, resetButton, h("span", { class: "muted" }, "Ctrl+Enter runs")),
    diagnostics));
  loadSample(false).catch((error) => diagnostics.replaceChildren(h("li", { class: "diag error" }, errorText(error))));
  return () => {};
}

// ---- routing ----------------------------------------------------------------------------------

// dynwf serve mounts no playground: its page says so, and #/playground shows the instances
const HAS_PLAYGROUND = document.querySelector('meta[name="dynwf-playground"]')?.content !== "off";

function route() {
  cleanup();
  const hash = location.hash.replace(/^#/, "") || "/instances";
  const [path, search] = hash.split("?");
  const query = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("[data-nav]"))
    a.classList.toggle("active", a.dataset.nav === (parts[0] || "instances"));
  if (parts[0] === "playground" && HAS_PLAYGROUND) { setLive(null); cleanup = playgroundView(); }
  else if (parts[0] === "instances" && parts[1]) cleanup = instanceView(decodeURIComponent(parts[1]));
  else cleanup = instancesView(query);
}

window.addEventListener("hashchange", route);
route();
