// cmbagent-events viewer: the run list and, for one run, its event tree and timeline, kept live
// through the server's WebSocket (/ws/runs/<id>?after_seq=N). Plain DOM, no build step.
// Every value from the database is put in the page with textContent, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TYPES = ["agent_call", "tool_call", "code_exec", "file_gen", "handoff", "llm_call", "error"];
const TIMELINE_MAX_MARKS = 4000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function preview(value, limit = 72) {
  if (value === null || value === undefined) return "";
  let text = typeof value === "string" ? value : JSON.stringify(value);
  text = text.split(/\s+/).join(" ").trim();
  return text.length <= limit ? text : text.slice(0, limit - 1) + "…";
}

// A chat message as a person reads it: its text, or the tool calls / tool results it carries.
function messagePreview(value, limit) {
  if (value && typeof value === "object") {
    if (Array.isArray(value.tool_calls) && value.tool_calls.length) {
      const names = value.tool_calls.map((c) => `${(c.function || {}).name}(${(c.function || {}).arguments || ""})`);
      return preview(`calls ${names.join(", ")}`, limit);
    }
    if (Array.isArray(value.tool_responses) && value.tool_responses.length) {
      return preview("tool result: " + value.tool_responses.map((r) => String(r && r.content)).join("; "), limit);
    }
    if (value.content !== null && value.content !== undefined) return preview(value.content, limit);
  }
  return preview(value, limit);
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} m ${Math.round(seconds % 60)} s`;
}

function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

function setStatus(state, text) {
  const node = $("#live-status");
  node.dataset.state = state;
  node.textContent = text || "";
}

// -- what an event says, in one line (mirrors cmbagent_events/render.py describe) -----------------
function kindOf(e) {
  if (e.event_type === "agent_call" && e.event_subtype === "message") return "message";
  if (e.event_type === "plan" || e.event_type === "workflow") return "step";
  return TYPES.includes(e.event_type) ? e.event_type : "other";
}

function describe(e) {
  const i = e.inputs && typeof e.inputs === "object" ? e.inputs : {};
  const o = e.outputs && typeof e.outputs === "object" ? e.outputs : {};
  const m = e.meta && typeof e.meta === "object" ? e.meta : {};
  switch (kindOf(e)) {
    case "message":
      if (Array.isArray(m.recipients)) {  // a folded broadcast: one event for every member it reached
        const names = m.recipients.slice(0, 3).join(", ") + (m.recipients.length > 3 ? ` +${m.recipients.length - 3}` : "");
        return `${i.sender} → ${names} [broadcast to ${m.recipients.length}]: ${messagePreview(i.content, 72)}`;
      }
      return `${i.sender} → ${i.recipient}${m.broadcast ? " [broadcast]" : ""}: ${messagePreview(i.content, 72)}`;
    case "agent_call": {
      const out = o.response !== undefined && o.response !== null ? ` ⇒ ${messagePreview(o.response, 50)}` : "";
      return `${e.agent_name}: ${messagePreview(i.message, 50)}${out}`;
    }
    case "step":
      return `${e.event_type} ${e.event_subtype}: ${preview(i.task || (e.outputs && Object.keys(o).length ? o : i), 80)}`;
    case "tool_call":
      return `${i.tool_name}(${preview(i.arguments, 40)}) → ${preview(o.result, 40)}`;
    case "code_exec":
      return `${m.language || ""} exit=${m.exit_code}: ${preview(o.result, 50)}`;
    case "file_gen":
      return `${i.file_path} (${i.file_type}${m.size_bytes != null ? ", " + m.size_bytes + " bytes" : ""})`;
    case "handoff":
      return `${i.from_agent} → ${i.to_agent}${m.reason ? " [" + m.reason + "]" : ""}`;
    case "error":
      return `${e.event_subtype} in ${e.agent_name}: ${preview(e.error_message)}`;
    case "llm_call": {
      const u = o.usage || {};
      const cost = typeof u.cost === "number" ? ` cost=$${u.cost.toFixed(6)}` : "";
      return `${e.agent_name || ""} ${m.model || ""} tokens=${u.total_tokens ?? "?"}${cost}`;
    }
    default:
      return `${e.event_type}/${e.event_subtype} ${e.agent_name || ""} ${preview(e.inputs)}`;
  }
}

const LABELS = { agent_call: "agent", tool_call: "tool", code_exec: "code", file_gen: "file", message: "msg",
                 handoff: "handoff", llm_call: "llm", error: "error", step: "step", other: "event" };

// -- runs list -----------------------------------------------------------------------------------
let runsTimer = null;

async function showRuns() {
  $("#run-view").hidden = true;
  $("#runs-view").hidden = false;
  $("#crumb").textContent = "";
  setStatus("idle", "");
  document.title = "runs · cmbagent-events";
  await refreshRuns();
  runsTimer = setInterval(refreshRuns, 3000);
}

async function refreshRuns() {
  let data;
  try {
    const resp = await fetch("/api/runs?limit=500", { credentials: "same-origin" });
    if (!resp.ok) throw new Error(`${resp.status} ${await resp.text()}`);
    data = await resp.json();
  } catch (err) {
    setStatus("error", `cannot load runs: ${err.message}`);
    return;
  }
  const body = $("#runs tbody");
  body.replaceChildren(...data.runs.map(runRow));
  $("#runs-empty").hidden = data.runs.length > 0;
  $("#runs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function runRow(r) {
  const row = el("tr", { dataset: { runId: r.id } },
    el("td", { class: "mono" }, r.id.slice(0, 13) + "…"),
    el("td", { class: "task" }, preview(r.task_description || "", 90)),
    el("td", {}, el("span", { class: `badge ${r.status}` }, r.status)),
    el("td", {}, r.mode || ""),
    el("td", {}, fmtTime(r.started_at)),
    el("td", { class: "num" }, r.status === "running" ? "running" : fmtDuration(r.duration_s)),
    el("td", { class: "num" }, String(r.total_events ?? "")),
    el("td", { class: "num" + (r.dropped_events ? " drops" : "") }, String(r.dropped_events ?? "")),
    el("td", { class: "num" }, r.total_tokens != null ? Number(r.total_tokens).toLocaleString() : "–"));
  row.addEventListener("click", () => { location.hash = `#/runs/${r.id}`; });
  return row;
}

// -- one run -------------------------------------------------------------------------------------
class RunView {
  constructor(runId) {
    this.runId = runId;
    this.events = new Map();   // id -> event
    this.nodes = new Map();    // id -> <li>
    this.lastSeq = -1;
    this.run = null;
    this.ended = false;
    this.closed = false;
    this.ws = null;
    this.retry = 0;
    this.gaps = 0;
    this.selected = null;
    this.live = false;
    this.timelineQueued = false;
    $("#tree").replaceChildren();
    $("#timeline").replaceChildren();
    $("#detail").replaceChildren("Select an event.");
    $("#run-notice").hidden = true;
    // running agent calls grow on the timeline even when no event arrives
    this.ticker = setInterval(() => { if (this.run && this.run.status === "running") this.queueTimeline(); }, 1000);
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}/ws/runs/${encodeURIComponent(this.runId)}?after_seq=${this.lastSeq}`;
    setStatus(this.lastSeq < 0 ? "replaying" : "reconnecting", this.lastSeq < 0 ? "loading…" : "reconnecting…");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (msg) => this.onMessage(JSON.parse(msg.data));
    ws.onclose = () => {
      if (this.closed || this.ended) return;
      this.retry = Math.min(this.retry + 1, 5);
      setStatus("reconnecting", "disconnected, reconnecting…");
      setTimeout(() => this.connect(), 500 * this.retry);  // resumes after lastSeq: nothing lost, nothing twice
    };
  }

  close() {
    this.closed = true;
    clearInterval(this.ticker);
    if (this.ws) this.ws.close();
  }

  onMessage(msg) {
    switch (msg.type) {
      case "run": this.setRun(msg.run); break;
      case "events": for (const e of msg.events) this.addEvent(e); this.queueTimeline(); break;
      case "updates": for (const e of msg.events) this.updateEvent(e); this.queueTimeline(); break;
      case "gap": this.addGap(msg.from_seq, msg.to_seq); break;
      case "replayed":
        this.retry = 0;
        this.live = true;
        if (!this.ended) setStatus("live", "live");
        break;
      case "end":
        this.ended = true;
        this.setRun(msg.run);
        setStatus("ended", `run ${msg.run.status}`);
        this.queueTimeline();
        break;
      case "error": setStatus("error", msg.message); break;
    }
  }

  setRun(run) {
    this.run = run;
    $("#crumb").textContent = run.id;
    document.title = `${run.id.slice(0, 8)} · cmbagent-events`;
    $("#run-title").replaceChildren(`Run ${run.id.slice(0, 13)}… `, el("span", { class: `badge ${run.status}` }, run.status));
    $("#run-task").textContent = run.task_description || "";
    this.renderStats();
  }

  renderStats() {
    const run = this.run;
    if (!run) return;
    const counts = {};
    for (const e of this.events.values()) counts[kindOf(e)] = (counts[kindOf(e)] || 0) + 1;
    const items = [
      ["mode", run.mode || "–"], ["started", fmtTime(run.started_at)],
      ["duration", run.status === "running" ? "running" : fmtDuration(run.duration_s)],
      ["events", String(run.status === "running" ? this.events.size : run.total_events)],
      ["dropped", String(run.dropped_events)], ["tokens", run.total_tokens != null ? String(run.total_tokens) : "–"],
      ["agent calls", String(counts.agent_call || 0)], ["errors", String(counts.error || 0)],
    ];
    $("#run-stats").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { stat: k } }, v)]));
    if (run.dropped_events || this.gaps) {
      const notice = $("#run-notice");
      notice.hidden = false;
      notice.textContent = `${run.dropped_events || this.gaps} events were dropped at capture (queue full or database refused a batch); the trace below is incomplete.`;
    }
  }

  addEvent(e) {
    if (this.events.has(e.id)) { this.updateEvent(e); return; }
    this.events.set(e.id, e);
    this.lastSeq = Math.max(this.lastSeq, e.seq);
    const li = el("li", { dataset: { seq: String(e.seq), id: e.id, type: kindOf(e) } });
    li.append(this.rowFor(e), el("ul"));
    this.nodes.set(e.id, li);
    const parent = e.parent_event_id && this.nodes.get(e.parent_event_id);
    (parent ? parent.lastChild : $("#tree")).append(li);
    if (this.live) {  // arrived after the replay: show it
      li.classList.add("fresh");
      setTimeout(() => li.classList.remove("fresh"), 1300);
    }
    if (parent) parent.firstChild.querySelector(".caret").textContent = parent.classList.contains("collapsed") ? "▸" : "▾";
    this.renderStatsSoon();
  }

  rowFor(e) {
    const kind = kindOf(e);
    const dur = e.duration_ms != null ? `${e.duration_ms < 1000 ? e.duration_ms.toFixed(1) + " ms" : (e.duration_ms / 1000).toFixed(2) + " s"}` : "";
    const row = el("div", { class: `row st-${e.status}`, title: e.id },
      el("span", { class: "caret" }, ""),
      el("span", { class: "seq" }, `#${e.seq}`),
      el("span", { class: `t t-${kind}` }, LABELS[kind]),
      el("span", { class: "text" }, describe(e)),
      el("span", { class: "dur" }, dur));
    row.addEventListener("click", (ev) => {
      const li = row.parentElement;
      if (ev.target.classList.contains("caret") && li.lastChild.childElementCount) {
        li.classList.toggle("collapsed");
        ev.target.textContent = li.classList.contains("collapsed") ? "▸" : "▾";
        return;
      }
      this.select(e.id);
    });
    return row;
  }

  updateEvent(patch) {
    const e = this.events.get(patch.id);
    if (!e) return;
    const meta = Object.assign({}, e.meta || {}, patch.meta || {});
    Object.assign(e, patch, { meta });
    const li = this.nodes.get(e.id);
    const caret = li.firstChild.querySelector(".caret").textContent;
    li.firstChild.replaceWith(this.rowFor(e));
    li.firstChild.querySelector(".caret").textContent = caret;
    if (this.selected === e.id) this.select(e.id);
  }

  addGap(first, last) {
    this.gaps += last - first + 1;
    const count = last - first + 1;
    $("#tree").append(el("li", { class: "gap-row" }, `⚠ ${count} event${count > 1 ? "s" : ""} (#${first}–#${last}) never stored: dropped at capture`));
    this.lastSeq = Math.max(this.lastSeq, last);
    this.renderStatsSoon();
  }

  renderStatsSoon() {
    if (this.statsQueued) return;
    this.statsQueued = true;
    requestAnimationFrame(() => { this.statsQueued = false; this.renderStats(); });
  }

  select(id) {
    const e = this.events.get(id);
    if (!e) return;
    for (const node of document.querySelectorAll(".row.selected, .mark.selected")) node.classList.remove("selected");
    this.nodes.get(id)?.firstChild.classList.add("selected");
    document.querySelector(`.mark[data-id="${CSS.escape(id)}"]`)?.classList.add("selected");
    this.selected = id;
    const fields = [["id", e.id], ["type", `${e.event_type} / ${e.event_subtype}`], ["agent", e.agent_name],
      ["status", e.status], ["seq", e.seq], ["depth", e.depth], ["parent", e.parent_event_id || "–"],
      ["node / step", `${e.node_id || "–"} / ${e.step_id || "–"}`], ["time", fmtTime(e.timestamp)],
      ["duration", e.duration_ms != null ? `${e.duration_ms.toFixed(2)} ms` : "–"]];
    const parts = [el("dl", {}, ...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v ?? "–"))]))];
    if (e.error_message) parts.push(el("strong", {}, "error"), el("pre", {}, e.error_message));
    for (const key of ["inputs", "outputs", "meta"]) {
      if (e[key] !== null && e[key] !== undefined) parts.push(el("strong", {}, key), el("pre", {}, JSON.stringify(e[key], null, 2)));
    }
    $("#detail").replaceChildren(...parts);
  }

  queueTimeline() {
    if (this.timelineQueued) return;
    this.timelineQueued = true;
    requestAnimationFrame(() => { this.timelineQueued = false; this.renderTimeline(); });
  }

  renderTimeline() {
    const all = [...this.events.values()];
    const box = $("#timeline");
    if (!all.length) { box.replaceChildren(el("div", { class: "muted" }, "No events yet.")); return; }
    let shown = all;
    if (shown.length > TIMELINE_MAX_MARKS) shown = all.filter((e) => ["agent_call", "error", "handoff"].includes(kindOf(e)));
    const now = Date.now();
    const start = (e) => Date.parse(e.timestamp);
    const end = (e) => e.completed_at ? Date.parse(e.completed_at)
      : (e.status === "running" && this.run && this.run.status === "running" ? now : start(e));
    const t0 = this.run && this.run.started_at ? Math.min(Date.parse(this.run.started_at), ...shown.map(start)) : Math.min(...shown.map(start));
    const runEnd = this.run && this.run.completed_at ? Date.parse(this.run.completed_at) : 0;
    const t1 = Math.max(t0 + 1, runEnd, ...shown.map(end));
    const span = t1 - t0;
    const lanes = new Map();
    for (const e of shown) {
      const name = kindOf(e) === "message" ? (e.inputs && e.inputs.sender) || e.agent_name : e.agent_name;
      const lane = name || "(run)";
      if (!lanes.has(lane)) lanes.set(lane, el("div", { class: "lane" }, el("span", { class: "lane-name", title: lane }, lane)));
      const left = ((start(e) - t0) / span) * 100;
      const width = Math.max(((end(e) - start(e)) / span) * 100, 0);
      const mark = el("div", {
        class: `mark t-${kindOf(e)}${e.status === "running" ? " running" : ""}${this.selected === e.id ? " selected" : ""}`,
        title: `#${e.seq} ${describe(e)}`, dataset: { id: e.id, seq: String(e.seq) },
        style: `left:${left.toFixed(3)}%;width:calc(${width.toFixed(3)}% + 3px)`,
      });
      mark.addEventListener("click", () => this.select(e.id));
      lanes.get(lane).append(mark);
    }
    const axis = el("div", { class: "axis" }, el("span", {}, "0"), el("span", {}, fmtDuration(span / 2000)), el("span", {}, fmtDuration(span / 1000)));
    const note = shown.length < all.length ? el("div", { class: "muted" }, `${all.length - shown.length} minor events not drawn`) : null;
    box.replaceChildren(...lanes.values(), axis, ...(note ? [note] : []));
  }
}

// -- routing -------------------------------------------------------------------------------------
let current = null;

function route() {
  if (runsTimer) { clearInterval(runsTimer); runsTimer = null; }
  if (current) { current.close(); current = null; }
  const match = location.hash.match(/^#\/runs\/([^/?#]+)/);
  if (match) {
    $("#runs-view").hidden = true;
    $("#run-view").hidden = false;
    current = new RunView(decodeURIComponent(match[1]));
  } else {
    showRuns();
  }
}

window.addEventListener("hashchange", route);
route();
