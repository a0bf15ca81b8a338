// The per-step checklist of one instance: the outline of its code (steps greyed until they run)
// merged with the steps the engine has recorded. Same states and glyphs as the terminal's.
export const GLYPHS = {
  pending: "○", running: "◐", done: "✓", retrying: "↻", failed: "✗", sleeping: "☾",
  waiting: "⏳", replayed: "↷", skipped: "–", cancelled: "⊘",
};
// the engine's step status -> the checklist's state
const STATE_OF = {
  running: "running", done: "done", failed: "failed", sleeping: "sleeping", waiting: "waiting",
  backoff: "retrying", ready: "retrying", cancelled: "cancelled",
};
const FINISHED = new Set(["complete", "errored", "terminated"]);

export function formatMs(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60), rest = s % 60;
  if (m < 60) return rest ? `${m} min ${rest} s` : `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  return `${Math.floor(h / 24)} d` + (h % 24 ? ` ${h % 24} h` : "");
}

const key = (kind, name, count) => `${kind}\u0000${name}\u0000${count}`;

function matchesPattern(row, name) {
  if (!row.outline?.name_pattern) return row.outline?.name === null;
  try { return new RegExp(row.outline.name_pattern).test(name); } catch { return false; }
}

// rows: [{kind, name, count, label, outline, step, state, logs}]
export function buildChecklist(outline, steps, logs, instanceStatus) {
  const rows = [];
  const seen = new Map();
  for (const o of outline || []) {
    let count = 1;
    if (o.name !== null) {
      const k = `${o.kind}\u0000${o.name}`;
      count = (seen.get(k) || 0) + 1;
      seen.set(k, count);
    }
    rows.push({ kind: o.kind, name: o.name, count, label: o.label, outline: o, step: null,
                state: "pending", logs: [], hidden: false });
  }
  let lastTouched = -1;
  for (const step of steps || []) {
    let index = rows.findIndex((r) => !r.step && r.name === step.name && r.kind === step.kind
                                      && r.count === step.count);
    if (index < 0) {
      const holder = rows.findIndex((r) => r.name === null && r.kind === step.kind
                                           && matchesPattern(r, step.name));
      const loopSibling = rows.findLastIndex((r) => r.name === step.name && r.kind === step.kind);
      const at = holder >= 0 ? holder : loopSibling >= 0 ? loopSibling + 1 : lastTouched + 1;
      if (holder >= 0) rows[holder].hidden = true;
      // a rollback step (a compensation handler's run) reads "↶ rollback NAME"
      const label = step.kind === "rollback" ? `\u21b6 rollback ${step.name}` : step.name;
      rows.splice(at, 0, { kind: step.kind, name: step.name, count: step.count, label,
                           outline: holder >= 0 ? rows[holder].outline : null, step: null,
                           state: "pending", logs: [], hidden: false });
      index = at;
    }
    const row = rows[index];
    row.step = step;
    row.state = STATE_OF[step.status] || step.status;
    lastTouched = Math.max(lastTouched, index);
  }
  const byKey = new Map(rows.filter((r) => r.step).map((r) => [key(r.kind, r.name, r.count), r]));
  const loose = [];
  for (const line of logs || []) {
    const row = line.step ? byKey.get(key(line.step.kind, line.step.name, line.step.count)) : null;
    (row ? row.logs : loose).push(line);
  }
  if (FINISHED.has(instanceStatus)) {
    for (const row of rows) if (!row.step) row.state = "skipped";
  }
  return { rows: inRunOrder(rows.filter((r) => !r.hidden || r.step), steps || []), loose };
}

// The steps that ran, in the order they were first reached (`steps` comes in the store's seq
// order); each step not reached stays after the reached step that precedes it in the outline.
// Placing by the outline alone listed a loop's steps grouped by kind (every step.do, then every
// sleep), since each new name lands beside the last of its kind.
function inRunOrder(rows, steps) {
  const reachedAt = new Map(steps.map((step, index) => [step, index]));
  const after = new Map();          // reached row (or null: the top) -> rows not reached after it
  let anchor = null;
  for (const row of rows) {
    if (row.step) { anchor = row; continue; }
    if (!after.has(anchor)) after.set(anchor, []);
    after.get(anchor).push(row);
  }
  const reached = rows.filter((r) => r.step).sort((a, b) => reachedAt.get(a.step) - reachedAt.get(b.step));
  const ordered = [...(after.get(null) || [])];
  for (const row of reached) ordered.push(row, ...(after.get(row) || []));
  return ordered;
}

// The engine's names for kinds of waits, in words.
const WORDS = { event_timeout: "event timeout", retry: "retry back-off" };
export const words = (label) => WORDS[label] ?? String(label).replaceAll("_", " ");

export function stepDetail(row) {
  const step = row.step, o = row.outline;
  const bits = [];
  if (!step) {
    if (row.state === "skipped") bits.push("not run");
    if (o?.kind === "sleep" && o.duration) bits.push(`sleep ${o.duration}`);
    if (o?.kind === "wait") bits.push(`event "${o.event_type ?? "?"}"` + (o.timeout ? `, timeout ${o.timeout}` : ""));
    if (o?.conditional) bits.push("conditional");
    if (o?.in_loop) bits.push("in a loop");
    return bits.join(" · ");
  }
  if (step.kind === "sleep" && step.requested_ms !== null) {
    bits.push(step.woken_early ? `woken after ${formatMs(step.duration_ms)} of ${formatMs(step.requested_ms)}`
                               : `sleep ${formatMs(step.requested_ms)}`);
  }
  if (step.kind === "wait" && step.event_type) bits.push(`event "${step.event_type}"`);
  if (row.state === "cancelled") bits.push("cancelled by the workflow's code");
  if (step.attempts > 1 || row.state === "retrying") bits.push(`attempt ${step.attempts}`);
  if (step.duration_ms !== null && step.duration_ms !== undefined && step.kind !== "sleep") bits.push(formatMs(step.duration_ms));
  return bits.join(" · ");
}

// Under a step that failed an attempt, as `dynwf instances describe` prints it: each failed
// attempt's error and the user's frames it was raised from, then how the last attempt ended.
export function attemptLines(step) {
  const lines = [];
  for (const failed of step?.failed_attempts || []) {
    const error = failed.error || {};
    lines.push(`attempt ${failed.attempt} failed: ${error.name ?? "Error"}: ${error.message ?? ""}`);
    lines.push(...frameLines(error.traceback));
  }
  if (lines.length && step.status === "done") lines.push(`attempt ${step.attempts} done`);
  return lines;
}

// A traceback (emulator/tracebacks.py's entries) as the terminal prints it, innermost call last.
// the line over the frames an instance's error was raised from (emulator/tracebacks.py
// traceback_heading): loading the tenant's modules, or run()
export function tracebackHeading(frames) {
  const first = (Array.isArray(frames) ? frames : []).find((frame) => "file" in frame);
  return first?.function === "<module>" ? "loading the code raised it (most recent call last):"
    : "run() raised it (most recent call last):";
}

export function frameLines(frames) {
  const lines = [];
  for (const frame of Array.isArray(frames) ? frames : []) {
    if ("elided" in frame) {
      const what = frame.of === "the traceback" ? "entries" : "frames";
      lines.push(`  ... ${frame.elided} ${frame.elided === 1 ? what.slice(0, -1) : what} of ${frame.of}`);
    } else {
      lines.push(`  ${frame.file}:${frame.line} in ${frame.function}`);
      if (frame.source) lines.push(`      ${frame.source}`);
    }
  }
  return lines;
}
