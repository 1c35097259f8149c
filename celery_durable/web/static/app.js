// celery_durable dashboard: plain JavaScript over the JSON API under /api/.
//
// One page; the part after "#" picks the view (#/runs, #/runs/ID, #/rules,
// #/rules/NAME, #/workers). Each view draws its forms once and its data on
// every poll (every POLL_MS while the tab is visible), so a form being
// filled in is never redrawn. Data is put in the page with textContent,
// never as HTML. Changes are POSTed with the API token from the header field
// (kept for this tab only, in sessionStorage), never with a cookie.
"use strict";

const POLL_MS = 2000;
const FINAL = new Set(["completed", "failed", "cancelled", "timed_out"]);
const STATUSES = ["pending", "running", "sleeping", "waiting", "blocked", "completed", "failed",
  "cancelled", "timed_out", "stuck"];

let view = null; // {load: async fn} of the view on screen
let generation = 0; // bumps on navigation: answers for a previous view are dropped
let loading = false;
let carried = null; // a message to show on the next view (after a change that navigates)

// -- small helpers -------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(ts) {
  if (!ts) return "-";
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  return seconds < 60 ? `${seconds.toFixed(1)}s ago` : `${Math.round(seconds / 60)} min ago`;
}

function badge(text) {
  return el("span", { class: `status status-${String(text).replace(/[^a-z_]/gi, "")}` }, text);
}

function json(value) {
  const compact = JSON.stringify(value);
  return compact && compact.length <= 80 ? compact : JSON.stringify(value, null, 2);
}

function table(headers, rows, label) {
  return el("div", { class: "scroll" },
    el("table", { "aria-label": label },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.length ? rows.map((cells) => el("tr", {}, cells.map((c) =>
        c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))))
        : el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "Nothing here yet.")))));
}

function notify(message, isError) {
  const notice = document.getElementById("notice");
  notice.replaceChildren(el("p", { class: isError ? "msg error" : "msg" }, message));
}

function token() {
  return sessionStorage.getItem("durable-token") || "";
}

async function api(path, options) {
  const method = (options && options.method) || "GET";
  const headers = { Accept: "application/json" };
  let body;
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (token()) headers.Authorization = `Bearer ${token()}`;
    body = options.body === undefined ? "" : JSON.stringify(options.body);
  }
  const response = await fetch(`api${path}`, { method, headers, body, cache: "no-store" });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.data = data;
    throw error;
  }
  return data;
}

// A change: POST (or DELETE), then tell what happened and redraw.
async function change(path, body, done, method) {
  try {
    const answer = await api(path, { method: method || "POST", body });
    notify(done(answer));
    await refresh();
    return answer;
  } catch (error) {
    const hint = error.status === 401 ? " (enter the API token at the top)" : "";
    notify(`${error.message}${hint}`, true);
    return null;
  }
}

function parseJson(text, what) {
  if (!text.trim()) return { value: null };
  try {
    return { value: JSON.parse(text) };
  } catch (error) {
    return { error: `${what} is not valid JSON: ${error.message}` };
  }
}

function hashParams() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

function link(path, params) {
  const query = params && [...params].length ? `?${params}` : "";
  return `#${path}${query}`;
}

// -- runs ------------------------------------------------------------------------------

function runsView(params) {
  const data = el("div", { id: "runs-data" });
  const workflow = el("input", { id: "f-workflow", name: "workflow", value: params.get("workflow") || "", placeholder: "any" });
  const status = el("select", { id: "f-status", name: "status" },
    el("option", { value: "" }, "any"),
    STATUSES.map((s) => el("option", { value: s, selected: params.get("status") === s }, s)));
  const form = el("form", { class: "inline", "aria-label": "Filter runs", onsubmit: (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (workflow.value.trim()) next.set("workflow", workflow.value.trim());
    if (status.value) next.set("status", status.value);
    location.hash = link("/runs", next);
  } },
  el("label", { for: "f-workflow" }, "Workflow", workflow),
  el("label", { for: "f-status" }, "Status", status),
  el("button", { type: "submit" }, "Filter"));
  render(el("h2", {}, "Runs"), el("div", { class: "panel" }, form), data);

  return async () => {
    const answer = await api(`/runs?${params}`);
    const rows = answer.runs.map((run) => [
      el("td", { class: "mono" }, el("a", { href: `#/runs/${encodeURIComponent(run.id)}` }, run.id)),
      run.workflow, badge(run.status), when(run.created_at), el("td", { class: "hide-narrow" }, when(run.updated_at)),
    ]);
    const pager = el("div", { class: "pager" });
    if (params.get("cursor")) {
      const first = new URLSearchParams(params);
      first.delete("cursor");
      pager.append(el("a", { href: link("/runs", first) }, "Newest"));
    }
    if (answer.next_cursor) {
      const next = new URLSearchParams(params);
      next.set("cursor", answer.next_cursor);
      pager.append(el("a", { href: link("/runs", next), rel: "next" }, "Older runs →"));
    }
    data.replaceChildren(table(["Run", "Workflow", "Status", "Created", el("span", { class: "hide-narrow" }, "Updated")],
      rows, "Runs"), pager);
  };
}

function timelineDetail(item) {
  const detail = [];
  if (item.attempt) detail.push(`attempt ${item.attempt}`);
  if (item.duration !== undefined) detail.push(`took ${(item.duration * 1000).toFixed(1)} ms`);
  if (item.delay !== undefined) detail.push(`retry in ${item.delay}s`);
  if (item.until) detail.push(`until ${when(item.until)}`);
  if (item.queue) detail.push(`${item.type === "step.dispatched" ? "to queue" : "queue"} ${item.queue}`);
  if (item.worker) detail.push(`on ${item.worker}`);
  if (item.error) detail.push(item.error);
  return detail.join(", ");
}

function runView(runId, params) {
  const summary = el("div", { id: "run-summary", class: "panel" });
  const timeline = el("div", { id: "run-timeline" });
  const inFlight = el("div", { id: "run-steps" });
  const cancelButton = el("button", { type: "button", class: "danger", id: "cancel-run", onclick: () =>
    change(`/runs/${encodeURIComponent(runId)}/cancel`, undefined, (a) =>
      a.cancelled ? `Run ${runId} cancelled.` : `Run ${runId} had already finished.`) }, "Cancel run");
  const name = el("input", { id: "event-name", required: true, placeholder: "approval" });
  const payload = el("textarea", { id: "event-payload", placeholder: '{"ok": true}', "aria-describedby": "event-error" });
  const payloadError = el("p", { id: "event-error", class: "field-error" });
  const sendForm = el("form", { "aria-label": "Send an event", onsubmit: async (event) => {
    event.preventDefault();
    const parsed = parseJson(payload.value, "The payload");
    payloadError.textContent = parsed.error || "";
    if (parsed.error) return;
    const answer = await change(`/runs/${encodeURIComponent(runId)}/events/${encodeURIComponent(name.value.trim())}`,
      parsed.value, () => `Event ${name.value.trim()} delivered to run ${runId}.`);
    if (answer) payload.value = "";
  } },
  el("label", { for: "event-name" }, "Event name", name),
  el("label", { for: "event-payload" }, "Payload (JSON)", payload), payloadError,
  el("button", { type: "submit" }, "Send event"));
  const actions = el("div", { class: "panel", id: "run-actions" },
    el("h3", {}, "Act on this run"), el("p", {}, cancelButton), sendForm);
  render(el("p", {}, el("a", { href: "#/runs" }, "← Runs")), el("h2", {}, `Run ${runId}`), summary,
    actions, el("h3", {}, "Timeline"), timeline, inFlight);

  return async () => {
    const query = new URLSearchParams();
    if (params.get("cursor")) query.set("cursor", params.get("cursor"));
    const run = await api(`/runs/${encodeURIComponent(runId)}?${query}`);
    const facts = [
      ["Workflow", run.workflow], ["Status", badge(run.status)], ["Created", when(run.created_at)],
      ["Updated", when(run.updated_at)], ["Arguments", el("pre", {}, json(run.args))],
      ["Keyword arguments", el("pre", {}, json(run.kwargs))],
    ];
    if (run.idempotency_key) facts.push(["Idempotency key", run.idempotency_key]);
    if (run.parent) facts.push(["Parent", el("a", { href: `#/runs/${encodeURIComponent(run.parent)}` }, run.parent)]);
    if ("result" in run) facts.push(["Result", el("pre", { id: "run-result" }, json(run.result))]);
    if (run.error) facts.push(["Error", el("pre", { class: "error", id: "run-error" }, run.error)]);
    if (run.traceback) facts.push(["Traceback", el("details", {}, el("summary", {}, "Show"), el("pre", {}, run.traceback))]);
    facts.push(["Events", String(run.events)]);
    summary.replaceChildren(el("dl", {}, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
    actions.hidden = FINAL.has(run.status);
    const rows = run.timeline.map((item) => [
      el("td", { class: "mono" }, `+${(item.offset * 1000).toFixed(0)} ms`), item.type, item.name || "",
      timelineDetail(item),
    ]);
    const pager = el("div", { class: "pager" });
    if (run.next_cursor) {
      pager.append(el("a", { href: link(`/runs/${encodeURIComponent(runId)}`, new URLSearchParams({ cursor: run.next_cursor })) }, "Later events →"));
    }
    timeline.replaceChildren(table(["Time", "Event", "Name", "Detail"], rows, "Timeline"), pager);
    inFlight.replaceChildren();
    if (run.steps_in_flight && run.steps_in_flight.length) {
      inFlight.append(el("h3", {}, "Steps in flight"), table(["Position", "Step", "Queue", "Attempt", "State", "Worker", "Since"],
        run.steps_in_flight.map((s) => [String(s.position), s.name, s.queue || "", String(s.attempt), badge(s.state), s.worker || "-", when(s.since)]),
        "Steps in flight"));
    }
  };
}

// -- rules -----------------------------------------------------------------------------

function switchButtons(rule) {
  const path = `/rules/${encodeURIComponent(rule.name)}/enabled`;
  const say = (what) => () => `Rule ${rule.name} ${what}.`;
  return el("span", {},
    el("button", { type: "button", class: "secondary", "aria-label": `Enable ${rule.name}`, disabled: rule.enabled,
      onclick: () => change(path, { enabled: true }, say("enabled")) }, "Enable"), " ",
    el("button", { type: "button", class: "secondary", "aria-label": `Disable ${rule.name}`, disabled: !rule.enabled,
      onclick: () => change(path, { enabled: false }, say("disabled")) }, "Disable"));
}

function breakerText(breaker) {
  return `${breaker.state} (${breaker.executions}/${breaker.max_executions})`;
}

function reportNodes(report) {
  return [
    el("p", {}, "Would fire: ", badge(report.would_fire ? "yes" : "no"), report.reason ? ` (${report.reason})` : ""),
    report.breaker ? el("p", {}, "Breaker: ", breakerText(report.breaker)) : "",
    el("ul", {}, report.conditions.map((c) => el("li", {}, c.holds ? "✔ " : "✘ ", `${c.condition}: ${c.why}`))),
    report.actions.length ? el("div", {}, el("p", {}, "Rendered actions:"), el("pre", {}, json(report.actions))) : "",
  ];
}

function rulesView() {
  const data = el("div", { id: "rules-data" });
  render(el("h2", {}, "Rules"), el("p", {}, el("a", { href: "#/rules/new", id: "new-rule" }, "New rule")), data);
  return async () => {
    const rules = await api("/rules");
    data.replaceChildren(table(["Rule", "Source", "Trigger", "Enabled", "Breaker", "Last fired", "Outcome", ""],
      rules.map((rule) => [
        el("a", { href: `#/rules/${encodeURIComponent(rule.name)}` }, rule.name), rule.source || "config", rule.event || "-",
        el("span", {}, badge(rule.enabled ? "yes" : "no"), rule.switch ? ` (switched ${rule.switch})` : ""),
        rule.breaker ? badge(breakerText(rule.breaker)) : "-", when(rule.last_fired),
        rule.last_outcome ? badge(rule.last_outcome) : "-", switchButtons(rule),
      ]), "Rules"));
  };
}

function ruleView(name, params) {
  const base = `/rules/${encodeURIComponent(name)}`;
  const summary = el("div", { class: "panel", id: "rule-summary" });
  const history = el("div", { id: "rule-history" });
  const eventText = el("textarea", { id: "test-event", placeholder: '{"type": "task.failed", "data": {"task_name": "mail.send", "error_message": "ConnectionError: refused"}}' });
  const taskId = el("input", { id: "test-task", placeholder: "a past task id" });
  const testError = el("p", { class: "field-error", id: "test-error" });
  const testResult = el("div", { id: "test-result" });
  const testForm = el("form", { "aria-label": "Dry run", onsubmit: async (event) => {
    event.preventDefault();
    testError.textContent = "";
    let body;
    if (taskId.value.trim()) body = { task_id: taskId.value.trim() };
    else {
      const parsed = parseJson(eventText.value, "The event");
      if (parsed.error || parsed.value === null) {
        testError.textContent = parsed.error || "Give an event as JSON or a past task id.";
        return;
      }
      body = { event: parsed.value };
    }
    try {
      testResult.replaceChildren(...reportNodes(await api(`${base}/test`, { method: "POST", body })));
    } catch (error) {
      testError.textContent = error.message;
    }
  } },
  el("label", { for: "test-event" }, "Sample event (JSON)", eventText),
  el("label", { for: "test-task" }, "…or a past task id", taskId), testError,
  el("button", { type: "submit" }, "Test"));
  const chainInput = el("input", { id: "chain-task", placeholder: "task id" });
  const chainResult = el("div", { id: "chain-result" });
  const chainForm = el("form", { class: "inline", "aria-label": "Retry chain", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const answer = await api(`/tasks/${encodeURIComponent(chainInput.value.trim())}/retry-chain`);
      chainResult.replaceChildren(el("ol", { class: "mono" }, answer.chain.map((t) => el("li", {}, t))));
    } catch (error) {
      chainResult.replaceChildren(el("p", { class: "field-error" }, error.message));
    }
  } }, el("label", { for: "chain-task" }, "Retry chain of task", chainInput), el("button", { type: "submit" }, "Show"));
  const operate = el("div", { class: "panel" },
    el("button", { type: "button", class: "secondary", onclick: () => change(`${base}/notify-test`, undefined,
      (a) => a.results.map((r) => `${r.type}: ${r.ok ? "sent" : `FAILED: ${r.error}`}`).join("; ") || "No notification to send.") },
    "Send test notification"), " ",
    el("button", { type: "button", class: "secondary", onclick: () => change(`${base}/reset-breaker`, undefined,
      () => `Breaker of ${name} closed.`) }, "Reset breaker"), " ",
    el("button", { type: "button", class: "secondary", onclick: () => change(`${base}/enabled`, { enabled: null },
      () => `Rule ${name} follows its definition again.`) }, "Clear switch"));
  render(el("p", {}, el("a", { href: "#/rules" }, "← Rules")), el("h2", {}, `Rule ${name}`), summary, operate,
    el("div", { class: "grid2" }, el("div", { class: "panel" }, el("h3", {}, "Test (dry run)"), testForm, testResult),
      el("div", { class: "panel" }, el("h3", {}, "Retry chain"), chainForm, chainResult)),
    el("h3", {}, "History"), history);

  return async () => {
    const query = new URLSearchParams({ limit: "20" });
    if (params.get("cursor")) query.set("cursor", params.get("cursor"));
    const [rules, page] = await Promise.all([api("/rules"), api(`${base}/history?${query}`)]);
    const rule = rules.find((r) => r.name === name);
    if (rule) {
      const stored = rule.source === "stored";
      summary.replaceChildren(stored ? el("p", {},
        el("a", { href: `#/rules/${encodeURIComponent(name)}/edit`, id: "edit-rule" }, "Edit"), " ",
        el("button", { type: "button", class: "danger", onclick: async () => {
          if (await change(`/rules/${encodeURIComponent(name)}`, undefined, () => `Rule ${name} deleted.`, "DELETE")) {
            carried = `Rule ${name} deleted.`;
            location.hash = "#/rules";
          }
        } }, "Delete rule")) : "",
      rule.problems && rule.problems.length ? el("ul", { class: "error" }, rule.problems.map((p) =>
        el("li", {}, `${p.worker ? `${p.worker}: ` : ""}${p.field ? `${p.field}: ` : ""}${p.message}`))) : "",
      el("dl", {},
        el("dt", {}, "Trigger"), el("dd", {}, rule.event),
        el("dt", {}, "Enabled"), el("dd", {}, badge(rule.enabled ? "yes" : "no"), rule.switch ? ` (switched ${rule.switch})` : "", " ", switchButtons(rule)),
        el("dt", {}, "Conditions"), el("dd", {}, rule.conditions.join(", ") || "-"),
        el("dt", {}, "Actions"), el("dd", {}, rule.actions.join(", ")),
        el("dt", {}, "Source"), el("dd", {}, rule.source || "config"),
        el("dt", {}, "Breaker"), el("dd", {}, rule.breaker ? badge(breakerText(rule.breaker)) : "-"),
        el("dt", {}, "Last fired"), el("dd", {}, when(rule.last_fired))));
    }
    const rows = page.history.map((entry) => {
      const data = entry.event.data || {};
      const actions = (entry.actions || []).map((a) => `${a.type}:${a.skipped ? "skipped" : a.ok ? "ok" : "failed"}`).join(", ");
      return [when(entry.ts), entry.event.type, data.task_name || data.workflow_name || data.worker || "-",
        badge(entry.outcome), actions || entry.reason || "-"];
    });
    const pager = el("div", { class: "pager" });
    if (params.get("cursor")) pager.append(el("a", { href: link(`/rules/${encodeURIComponent(name)}`) }, "Newest"));
    if (page.next_cursor) {
      pager.append(el("a", { href: link(`/rules/${encodeURIComponent(name)}`, new URLSearchParams({ cursor: page.next_cursor })) }, "Older →"));
    }
    history.replaceChildren(table(["Time", "Event", "Subject", "Outcome", "Actions"], rows, "History"), pager);
  };
}


const NEW_RULE = `name: Retry network errors
trigger:
  event: task.failed
  conditions:
    task_name_pattern: "myapp.tasks.*"
    error_pattern: "ConnectionError|Timeout"
actions:
  - type: retry
    delay_seconds: 10
    max_attempts: 3
`;

function ruleEditorView(name) {
  const text = el("textarea", { id: "rule-yaml", rows: "16", spellcheck: "false", "aria-describedby": "rule-problems" });
  const problems = el("div", { id: "rule-problems", "aria-live": "polite" });
  const goTo = (line) => {
    const lines = text.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    text.focus();
    text.setSelectionRange(start, start + (lines[line - 1] || "").length);
  };
  const show = (found) => {
    text.setAttribute("aria-invalid", found.length ? "true" : "false");
    problems.replaceChildren(found.length ? el("ul", { class: "field-error" }, found.map((p) => el("li", {},
      p.line ? el("button", { type: "button", class: "secondary", onclick: () => goTo(p.line) }, `line ${p.line}`) : "",
      " ", p.field ? el("strong", {}, `${p.field}: `) : "", p.message))) : el("p", { class: "muted" }, "No problems."));
  };
  const check = async () => {
    try {
      show((await api("/rules/validate", { method: "POST", body: { yaml: text.value } })).problems);
    } catch (error) {
      show(error.data && error.data.problems ? error.data.problems : [{ message: error.message }]);
    }
  };
  const form = el("form", { "aria-label": "Rule in YAML", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const answer = await api("/rules", { method: "POST", body: { yaml: text.value } });
      const first = answer.saved[0];
      carried = answer.saved.map((r) => `Rule ${r.name} ${r.change}.`).join(" ");
      location.hash = `#/rules/${encodeURIComponent(first.name)}`;
    } catch (error) {
      if (error.data && error.data.problems) show(error.data.problems);
      else {
        const hint = error.status === 401 ? " (enter the API token at the top)" : "";
        show([{ message: `${error.message}${hint}` }]);
      }
    }
  } },
  el("label", { for: "rule-yaml" }, "The rule, in YAML (one rule, or a list)", text), problems,
  el("p", {}, el("button", { type: "button", class: "secondary", onclick: check }, "Check"), " ",
    el("button", { type: "submit" }, "Save")));
  const sample = el("textarea", { id: "draft-event", placeholder: '{"type": "task.failed", "data": {"task_name": "myapp.tasks.send", "error_message": "ConnectionError: refused"}}' });
  const sampleTask = el("input", { id: "draft-task", placeholder: "a past task id" });
  const tried = el("div", { id: "draft-result", "aria-live": "polite" });
  const tryForm = el("form", { "aria-label": "Test this rule before saving", onsubmit: async (event) => {
    event.preventDefault();
    const body = { yaml: text.value };
    if (sampleTask.value.trim()) body.task_id = sampleTask.value.trim();
    else {
      const parsed = parseJson(sample.value, "The event");
      if (parsed.error || parsed.value === null) {
        tried.replaceChildren(el("p", { class: "field-error" }, parsed.error || "Give an event as JSON or a past task id."));
        return;
      }
      body.event = parsed.value;
    }
    try {
      tried.replaceChildren(...reportNodes(await api("/rules/try", { method: "POST", body })));
    } catch (error) {
      if (error.data && error.data.problems) show(error.data.problems);
      tried.replaceChildren(el("p", { class: "field-error" }, error.message));
    }
  } },
  el("label", { for: "draft-event" }, "Sample event (JSON)", sample),
  el("label", { for: "draft-task" }, "…or a past task id", sampleTask),
  el("button", { type: "submit" }, "Test before saving"), tried);
  render(el("p", {}, el("a", { href: "#/rules" }, "← Rules")), el("h2", {}, name ? `Edit rule ${name}` : "New rule"),
    el("div", { class: "panel" }, form),
    el("div", { class: "panel" }, el("h3", {}, "Test (dry run, nothing sent or stored)"), tryForm));
  if (name) {
    api(`/rules/${encodeURIComponent(name)}/yaml`).then((answer) => { text.value = answer.yaml; })
      .catch((error) => show([{ message: error.message }]));
  } else text.value = NEW_RULE;
  return null; // nothing to poll: the text being edited is never redrawn
}

// -- workers ---------------------------------------------------------------------------

function workersView() {
  const data = el("div", { id: "workers-data" });
  render(el("h2", {}, "Workers"), data);
  return async () => {
    const workers = await api("/workers");
    const runLinks = (ids) => ids.length ? ids.map((id) => el("div", { class: "mono" }, el("a", { href: `#/runs/${encodeURIComponent(id)}` }, id))) : "-";
    data.replaceChildren(table(["Worker", "Heartbeat", "State", "Runs", "Steps", "Tasks"],
      workers.map((w) => [w.worker, ago(w.heartbeat_age), badge(w.alive ? "alive" : "silent"), runLinks(w.runs),
        el("td", { class: "mono" }, w.steps.join(" ") || "-"), el("td", { class: "mono" }, w.tasks.join(" ") || "-")]),
      "Workers"));
  };
}

// -- the frame -------------------------------------------------------------------------

function render(...nodes) {
  document.getElementById("main").replaceChildren(...nodes);
}

async function refresh() {
  if (!view || loading) return;
  const mine = generation;
  loading = true;
  try {
    await view();
    if (mine === generation) document.getElementById("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (mine === generation) notify(error.message, true);
  } finally {
    loading = false;
  }
}

function route() {
  generation += 1;
  loading = false;
  document.getElementById("notice").replaceChildren();
  if (carried) {
    notify(carried);
    carried = null;
  }
  const { parts, params } = hashParams();
  const section = parts[0] || "runs";
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (section === "runs" && parts[1]) view = runView(parts[1], params);
  else if (section === "rules" && parts[1] === "new" && !parts[2]) view = ruleEditorView(null);
  else if (section === "rules" && parts[1] && parts[2] === "edit") view = ruleEditorView(parts[1]);
  else if (section === "rules" && parts[1]) view = ruleView(parts[1], params);
  else if (section === "rules") view = rulesView();
  else if (section === "workers") view = workersView();
  else view = runsView(params);
  document.title = `celery_durable: ${parts.join(" ") || "runs"}`;
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("durable-token", input.value.trim());
    notify(input.value.trim() ? "Token set for this tab." : "Token cleared.");
  });
  window.addEventListener("hashchange", route);
  route();
  setInterval(() => {
    if (!document.hidden) refresh();
  }, POLL_MS);
});
