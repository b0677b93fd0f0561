// cmbagent-events viewer: the run list (searchable, paged, two runs compared) and, for one run, its
// event tree with a time axis, filters, search, per-agent cost, kept live through the server's
// WebSocket (/ws/runs/<id>?after_seq=N). Plain DOM, no build step.
// Every value from the database is put in the page with textContent, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TYPES = ["agent_call", "tool_call", "code_exec", "file_gen", "handoff", "llm_call", "error"];
const TIMELINE_MAX_MARKS = 4000;
const RENDER_PER_FRAME = 10000;  // tree rows added per animation frame at most
const REPLAY_SLICE = 10000;      // while replaying, events are drawn once this many are waiting
const RUNS_PAGE = 50;
const BIG_RUN = 5000;          // from this many events, rows off screen are not laid out (content-visibility)
const REDRAW_WHILE_DRAWING_MS = 2000;  // time axes and stats redrawn this rarely while a huge run is drawn

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

// -- numbers as people read them ------------------------------------------------------------------
// Durations: 0.4 ms, 124 ms, 2.3 s, 1 min 5 s, 2 h 3 min.
function fmtMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  const sign = ms < 0 ? "-" : "";
  ms = Math.abs(ms);
  if (ms === 0) return "0 s";
  if (ms < 10) return `${sign}${+ms.toFixed(1)} ms`;
  if (ms < 1000) return `${sign}${Math.round(ms)} ms`;
  if (ms < 10000) return `${sign}${+(ms / 1000).toFixed(2)} s`;
  if (ms < 60000) return `${sign}${+(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${sign}${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
  const min = Math.round(s / 60);
  return `${sign}${Math.floor(min / 60)} h${min % 60 ? ` ${min % 60} min` : ""}`;
}

function fmtDuration(seconds) {
  return seconds === null || seconds === undefined ? "" : fmtMs(seconds * 1000);
}

// Money in USD: $1.23 from a dollar up, else three significant digits ($0.000107); "–" when unknown.
function fmtMoney(usd, signed = false) {
  if (usd === null || usd === undefined || !Number.isFinite(usd)) return "–";
  const sign = usd < 0 ? "−" : (signed && usd > 0 ? "+" : "");
  const x = Math.abs(usd);
  if (x === 0) return "$0";
  let text;
  if (x >= 1) text = x.toFixed(2);
  else {
    const decimals = Math.min(12, Math.max(2, 2 - Math.floor(Math.log10(x))));
    text = x.toFixed(decimals).replace(/(\.\d\d\d*?)0+$/, "$1");
  }
  return `${sign}$${text}`;
}

function fmtInt(n, signed = false) {
  if (n === null || n === undefined) return "–";
  return (signed && n > 0 ? "+" : "") + Number(n).toLocaleString("en-US");
}

function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

// Round steps for a time axis: 1, 2, 5 x 10^k ms, then seconds and minutes people count in.
const NICE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000,
                    300000, 600000, 900000, 1800000, 3600000, 7200000];

function axisTicks(span, target = 6) {
  const raw = span / target;
  let step = NICE_STEPS.find((s) => s >= raw);
  if (step === undefined) step = Math.ceil(raw / 3600000) * 3600000;
  if (raw < 1) step = Math.pow(10, Math.ceil(Math.log10(raw)));
  const ticks = [];
  for (let i = 0; i * step <= span + 1e-9 && i < 50; i++) ticks.push(i * step);
  return ticks;
}

function drawAxis(track, span, target = 6) {
  track.replaceChildren(...axisTicks(span, target).map((t) => el("span", {
    class: t / span > 0.9 ? "tick end" : "tick", style: `left:${((t / span) * 100).toFixed(3)}%`,
  }, fmtMs(t))));
}

function setStatus(state, text) {
  const node = $("#live-status");
  node.dataset.state = state;
  node.textContent = text || "";
}

const LONG_MESSAGE = 600;  // characters of a message shown before it is collapsed

// One chat message: role (and name), its content (collapsed when long), the tool calls it makes.
function chatMessage(m) {
  const head = `${m.role || "?"}${m.name ? " · " + m.name : ""}${m.tool_call_id ? " · answers " + m.tool_call_id : ""}`;
  const content = typeof m.content === "string" ? m.content : m.content == null ? "" : JSON.stringify(m.content, null, 2);
  const body = content.length > LONG_MESSAGE
    ? el("details", {}, el("summary", {}, content.slice(0, 200) + "…"), el("pre", {}, content))
    : content ? el("pre", {}, content) : null;
  const calls = Array.isArray(m.tool_calls) ? m.tool_calls.map((c) => el("pre", { class: "tool-call" },
    `→ ${(c.function && c.function.name) || c.name}(${(c.function && c.function.arguments) || ""})`)) : [];
  return el("div", { class: `chat-msg role-${m.role || "other"}` }, el("div", { class: "chat-role" }, head),
    ...(body ? [body] : []), ...calls);
}

async function getJSON(url) {
  const resp = await fetch(url, { credentials: "same-origin" });
  if (!resp.ok) throw new Error(`${resp.status} ${(await resp.text()).trim()}`);
  return resp.json();
}

// -- what an event says, in one line (mirrors cmbagent_events/render.py describe) -----------------
function kindOf(e) {
  if (e.event_type === "agent_call" && e.event_subtype === "message") return "message";
  if (e.event_type === "plan" || e.event_type === "workflow") return "step";
  return TYPES.includes(e.event_type) ? e.event_type : "other";
}

// When an event ran, in ms since the epoch: from its timestamp to completed_at (agent calls); events
// recorded once done (model calls, tools, code) end at their timestamp and began duration_ms before.
function timesOf(e, now) {
  const at = Date.parse(e.timestamp);
  if (e.completed_at) return [at, Date.parse(e.completed_at)];
  if (e.status === "running") return [at, now === undefined ? at : Math.max(at, now)];
  return [at - (e.duration_ms || 0), at];
}

function isError(e) {
  return kindOf(e) === "error" || e.status === "failed" || e.event_subtype === "error";
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
      const cost = typeof u.cost === "number" ? ` cost=${fmtMoney(u.cost)}` : "";
      return `${e.agent_name || ""} ${m.model || ""} tokens=${u.total_tokens ?? "?"}${cost}`;
    }
    default:
      return `${e.event_type}/${e.event_subtype} ${e.agent_name || ""} ${preview(e.inputs)}`;
  }
}

const LABELS = { agent_call: "agent", tool_call: "tool", code_exec: "code", file_gen: "file", message: "msg",
                 handoff: "handoff", llm_call: "llm", error: "error", step: "step", other: "event" };

// -- runs list: searched, filtered and paged on the server; two runs picked to compare -------------
let runsTimer = null;
const runsQuery = { q: "", status: "", mode: "", since: "", offset: 0 };
const picked = new Map();  // run id -> started_at, at most two
const modesSeen = new Set();
let runsAsked = 0;

function showRuns() {
  $("#runs-view").hidden = false;
  $("#crumb").textContent = "";
  setStatus("idle", "");
  document.title = "runs · cmbagent-events";
  refreshRuns();
  runsTimer = setInterval(refreshRuns, 3000);
}

async function refreshRuns() {
  const params = new URLSearchParams({ limit: String(RUNS_PAGE), offset: String(runsQuery.offset) });
  for (const key of ["q", "status", "mode", "since"]) if (runsQuery[key]) params.set(key, runsQuery[key]);
  const asked = ++runsAsked;
  let data;
  try {
    data = await getJSON(`/api/runs?${params}`);
  } catch (err) {
    setStatus("error", `cannot load runs: ${err.message}`);
    return;
  }
  if (asked !== runsAsked) return;  // a newer query was sent meanwhile
  setStatus("idle", "");
  $("#runs tbody").replaceChildren(...data.runs.map(runRow));
  const filtered = runsQuery.q || runsQuery.status || runsQuery.mode || runsQuery.since;
  $("#runs-empty").hidden = data.runs.length > 0;
  $("#runs-empty").textContent = filtered ? "No run matches these filters." : "No runs yet. Capture one (for example make demo) and it appears here.";
  $("#runs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  const first = runsQuery.offset + 1;
  $("#runs-page").textContent = data.runs.length ? `runs ${first}–${runsQuery.offset + data.runs.length}` : "";
  $("#runs-prev").disabled = runsQuery.offset === 0;
  $("#runs-next").disabled = !data.has_more;
  for (const r of data.runs) {
    if (r.mode && !modesSeen.has(r.mode)) { modesSeen.add(r.mode); $("#runs-modes").append(el("option", { value: r.mode })); }
  }
}

function runRow(r) {
  const box = el("input", { type: "checkbox", "aria-label": `pick run ${r.id}` });
  box.checked = picked.has(r.id);
  box.addEventListener("click", (ev) => ev.stopPropagation());
  box.addEventListener("change", () => pickRun(r, box.checked));
  const row = el("tr", { dataset: { runId: r.id } },
    el("td", { class: "pick" }, box),
    el("td", { class: "mono" }, r.id.slice(0, 13) + "…"),
    el("td", { class: "task" }, preview(r.task_description || "", 90)),
    el("td", {}, el("span", { class: `badge ${r.status}` }, r.status)),
    el("td", {}, r.mode || ""),
    el("td", {}, fmtTime(r.started_at)),
    el("td", { class: "num" }, r.status === "running" ? "running" : fmtDuration(r.duration_s)),
    el("td", { class: "num" }, fmtInt(r.total_events)),
    el("td", { class: "num" + (r.dropped_events ? " drops" : "") }, String(r.dropped_events ?? "")),
    el("td", { class: "num" }, fmtInt(r.total_tokens)),
    el("td", { class: "num", dataset: { cost: String(r.cost ?? "") } }, fmtMoney(r.cost)));
  row.addEventListener("click", () => { location.hash = `#/runs/${r.id}`; });
  return row;
}

function pickRun(r, on) {
  if (on) {
    picked.set(r.id, r.started_at || "");
    if (picked.size > 2) picked.delete(picked.keys().next().value);  // the oldest pick gives way
  } else {
    picked.delete(r.id);
  }
  for (const box of document.querySelectorAll("#runs tbody tr")) {
    box.querySelector("input").checked = picked.has(box.dataset.runId);
  }
  $("#compare").disabled = picked.size !== 2;
  $("#compare-hint").textContent = picked.size === 2 ? "A = the earlier run" : `tick ${2 - picked.size} more run${picked.size ? "" : "s"} to compare`;
}

function setupRunsFilters() {
  let typing = null;
  const apply = () => {
    runsQuery.q = $("#runs-q").value.trim();
    runsQuery.status = $("#runs-status").value;
    runsQuery.mode = $("#runs-mode").value.trim();
    runsQuery.since = $("#runs-since").value;
    runsQuery.offset = 0;
    refreshRuns();
  };
  $("#runs-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(apply, 200); });
  for (const id of ["#runs-status", "#runs-mode", "#runs-since"]) $(id).addEventListener("change", apply);
  $("#runs-filter").addEventListener("submit", (ev) => { ev.preventDefault(); apply(); });
  $("#runs-prev").addEventListener("click", () => { runsQuery.offset = Math.max(0, runsQuery.offset - RUNS_PAGE); refreshRuns(); });
  $("#runs-next").addEventListener("click", () => { runsQuery.offset += RUNS_PAGE; refreshRuns(); });
  $("#compare").addEventListener("click", () => {
    const [a, b] = [...picked.entries()].sort((x, y) => (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0)).map((p) => p[0]);
    location.hash = `#/diff/${encodeURIComponent(a)}/${encodeURIComponent(b)}`;
  });
}

// -- two runs compared ------------------------------------------------------------------------------
function summaryLine(s) {
  if (!s) return el("div", { class: "muted" }, "nothing: this run has no such event");
  return el("div", { class: "sum" }, el("span", { class: "seq" }, `#${s.seq}`), " ",
    el("span", { class: `t t-${kindOf({ event_type: s.event_type, event_subtype: s.event_subtype })}` }, `${s.event_type}/${s.event_subtype}`),
    " ", el("span", { class: `st st-${s.status}` }, s.status || ""), " ", el("span", { class: "text" }, s.text || ""));
}

function deltaCell(a, b, d, fmt) {
  const cls = d > 0 ? "up" : d < 0 ? "down" : "same";
  return el("td", { class: "num" }, `${fmt(a)} → ${fmt(b)} `, el("span", { class: `delta ${cls}` }, d ? `(${fmt(d, true)})` : "(=)"));
}

function compareTable(title, rows) {
  const head = el("tr", {}, ...[title, "events", "model calls", "tokens", "cost", "time"].map((h, i) => el("th", { class: i ? "num" : "" }, h)));
  const body = rows.map((r) => el("tr", {},
    el("td", {}, r.name ?? "(none)"),
    deltaCell(r.a.events, r.b.events, r.delta.events, fmtInt),
    deltaCell(r.a.calls, r.b.calls, r.delta.calls, fmtInt),
    deltaCell(r.a.total_tokens, r.b.total_tokens, r.delta.total_tokens, fmtInt),
    deltaCell(r.a.cost, r.b.cost, r.delta.cost, fmtMoney),
    deltaCell(r.a.time_ms, r.b.time_ms, Math.round(r.delta.time_ms * 10) / 10, (v, s) => (s && v > 0 ? "+" : "") + fmtMs(v))));
  return el("table", { class: "runs compare" }, el("thead", {}, head), el("tbody", {}, ...body));
}

async function showDiff(a, b) {
  $("#diff-view").hidden = false;
  $("#crumb").textContent = "compare";
  document.title = "compare · cmbagent-events";
  const box = $("#diff-body");
  box.replaceChildren(el("p", { class: "muted" }, "comparing…"));
  let diff, runA, runB;
  try {
    [diff, runA, runB] = await Promise.all([getJSON(`/api/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`),
      getJSON(`/api/runs/${encodeURIComponent(a)}`), getJSON(`/api/runs/${encodeURIComponent(b)}`)]);
  } catch (err) {
    box.replaceChildren(el("p", { class: "notice" }, `cannot compare: ${err.message}`));
    return;
  }
  const runCell = (label, r) => el("div", { class: "run-card" }, el("strong", {}, `Run ${label} `),
    el("a", { href: `#/runs/${r.id}`, class: "mono" }, r.id.slice(0, 13) + "…"), " ",
    el("span", { class: `badge ${r.status}` }, r.status),
    el("div", { class: "task" }, preview(r.task_description || "", 120)),
    el("div", { class: "muted" }, `${fmtTime(r.started_at)} · ${fmtDuration(r.duration_s) || "–"} · ${fmtInt(r.total_events)} events · ${fmtMoney(r.cost)}`));
  const parts = [el("div", { class: "pair" }, runCell("A", runA.run), runCell("B", runB.run))];
  const ev = diff.events;
  if (diff.same) {
    parts.push(el("p", { id: "diff-verdict", class: "verdict same" }, `Same: both runs did the same thing (${fmtInt(ev.matched)} events matched).`));
  } else {
    const f = diff.first_divergence;
    parts.push(el("p", { id: "diff-verdict", class: "verdict diverged" },
      `Diverged: first at agent ${f.agent} (${fmtInt(ev.matched)} events matched before the runs parted; A has ${fmtInt(ev.a)} events, B ${fmtInt(ev.b)}).`));
    const side = (label, at, then) => el("div", { class: "side" }, el("h3", {}, `Run ${label} did`), summaryLine(at),
      ...(then.length ? [el("div", { class: "muted small" }, "then"), ...then.map(summaryLine)] : []));
    parts.push(el("div", { id: "first-divergence", class: "pair divergence" }, side("A", f.a, f.then_a), side("B", f.b, f.then_b)));
    if (diff.diverged_agents.length > 1) {
      parts.push(el("h2", {}, "Every agent that diverged"),
        el("ul", { class: "plain" }, ...diff.diverged_agents.map((d) => el("li", {}, `${d.agent ?? "(none)"}: A #${d.seq_a ?? "–"}, B #${d.seq_b ?? "–"}`))));
    }
  }
  parts.push(el("h2", {}, "Per agent (A → B, B minus A)"), compareTable("agent", diff.by_agent));
  if (diff.by_model.length) parts.push(el("h2", {}, "Per model"), compareTable("model", diff.by_model));
  const files = (label, list) => el("div", { class: "side" }, el("h3", {}, `Files only in run ${label}`),
    list.length ? el("ul", { class: "plain mono" }, ...list.map((p) => el("li", {}, p))) : el("div", { class: "muted" }, "none"));
  parts.push(el("h2", {}, "Files"), el("div", { id: "diff-files", class: "pair" }, files("A", diff.files.only_a), files("B", diff.files.only_b)));
  box.replaceChildren(...parts);
}

// -- one run -------------------------------------------------------------------------------------
class RunView {
  constructor(runId) {
    this.runId = runId;
    this.events = new Map();   // id -> event (all received; the tree may still be drawing them)
    this.nodes = new Map();    // id -> <li>
    this.pending = [];         // received, not drawn yet (drawn RENDER_PER_FRAME at a time)
    this.errors = [];          // error events, seq order
    this.kinds = {};           // kind -> how many events
    this.hits = 0;             // events matching the filter
    this.lastRedraw = 0;
    this.lastSeq = -1;
    this.run = null;
    this.ended = false;
    this.closed = false;
    this.ws = null;
    this.retry = 0;
    this.gaps = 0;
    this.selected = null;
    this.live = false;
    this.t0 = null;            // ms since epoch of the run's start: the time axis' zero
    this.span = 1;             // ms shown on the time axes
    this.filter = { agent: "", type: "", status: "", text: "" };
    this.choices = { agent: new Set(), type: new Set(), status: new Set() };
    this.hlAgent = null;
    this.errorAt = -1;         // seq of the error "next error" went to last
    this.costFetched = 0;
    $("#tree").replaceChildren();
    $("#tree-axis").replaceChildren();
    $("#timeline").replaceChildren();
    $("#cost-table").replaceChildren();
    $("#detail").replaceChildren("Select an event.");
    $("#run-notice").hidden = true;
    $("#loading").textContent = "";
    $("#f-count").textContent = "";
    for (const [id, label] of [["#f-agent", "all agents"], ["#f-type", "all types"], ["#f-status", "any status"]]) {
      $(id).replaceChildren(el("option", { value: "" }, label));
    }
    $("#f-text").value = "";
    // running agent calls grow on the time axes even when no event arrives; the cost table follows
    this.ticker = setInterval(() => {
      if (this.run && this.run.status === "running") {
        this.queueTimeline();
        if (Date.now() - this.costFetched > 5000) this.loadCost();
      }
    }, 1000);
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
      case "events":
        for (const e of msg.events) this.addEvent(e);
        // replaying a long history: the first page at once, then in big slices (each slice costs the
        // browser a layout of the whole tree); live events at once
        if (this.live || this.nodes.size === 0 || this.pending.length >= REPLAY_SLICE) this.drawSoon();
        else $("#loading").textContent = `loading ${fmtInt(this.events.size)} events…`;
        break;
      case "updates": for (const e of msg.events) this.updateEvent(e); this.queueTimeline(); break;
      case "gap": this.addGap(msg.from_seq, msg.to_seq); break;
      case "replayed":
        this.drawSoon();
        this.retry = 0;
        this.live = true;
        if (!this.ended) setStatus("live", "live");
        break;
      case "end":
        this.ended = true;
        this.setRun(msg.run);
        setStatus("ended", `run ${msg.run.status}`);
        this.queueTimeline();
        this.loadCost();
        break;
      case "error": setStatus("error", msg.message); break;
    }
  }

  setRun(run) {
    const first = this.run === null;
    this.run = run;
    if (run.started_at && this.t0 === null) this.t0 = Date.parse(run.started_at);
    $("#crumb").textContent = run.id;
    document.title = `${run.id.slice(0, 8)} · cmbagent-events`;
    $("#run-title").replaceChildren(`Run ${run.id.slice(0, 13)}… `, el("span", { class: `badge ${run.status}` }, run.status));
    $("#run-task").textContent = run.task_description || "";
    this.renderStats();
    if (first) this.loadCost();
  }

  renderStats() {
    const run = this.run;
    if (!run) return;
    const agentCalls = this.kinds.agent_call || 0;
    const items = [
      ["mode", run.mode || "–"], ["started", fmtTime(run.started_at)],
      ["duration", run.status === "running" ? "running" : fmtDuration(run.duration_s)],
      ["events", fmtInt(run.status === "running" ? this.events.size : run.total_events)],
      ["dropped", String(run.dropped_events)], ["tokens", fmtInt(run.total_tokens)],
      ["cost", fmtMoney(run.cost)], ["agent calls", fmtInt(agentCalls)], ["errors", fmtInt(this.errors.length)],
    ];
    $("#run-stats").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { stat: k } }, v)]));
    if (run.dropped_events || this.gaps) {
      const notice = $("#run-notice");
      notice.hidden = false;
      notice.textContent = `${run.dropped_events || this.gaps} events were dropped at capture (queue full or database refused a batch); the trace below is incomplete.`;
    }
  }

  // -- receiving and drawing events ---------------------------------------------------------------
  addEvent(e) {
    if (this.events.has(e.id)) { this.updateEvent(e); return; }
    this.events.set(e.id, e);
    this.lastSeq = Math.max(this.lastSeq, e.seq);
    if (isError(e)) this.errors.push(e);
    this.kinds[kindOf(e)] = (this.kinds[kindOf(e)] || 0) + 1;
    this.pending.push({ event: e, fresh: this.live });  // came after the replay: flashed when drawn
  }

  drawSoon() {
    if (this.drawQueued) return;
    this.drawQueued = true;
    requestAnimationFrame(() => { this.drawQueued = false; this.drawSome(); });
  }

  // Draw the next slice of received events; a huge run thus shows its first rows at once and
  // stays usable while the rest is drawn.
  drawSome() {
    const slice = this.pending.splice(0, RENDER_PER_FRAME);
    $("#tree").classList.toggle("big", this.events.size >= BIG_RUN);
    for (const item of slice) this.drawEvent(item.event, item.fresh);
    this.refreshChoices();
    if (this.filterActive()) this.showHits();
    if (this.pending.length) {
      $("#loading").textContent = `drawing ${fmtInt(this.nodes.size)} of ${fmtInt(this.events.size)} events…`;
      this.drawSoon();
      if (Date.now() - this.lastRedraw < REDRAW_WHILE_DRAWING_MS) return;  // whole-run work: not every frame
    } else {
      $("#loading").textContent = "";
    }
    this.lastRedraw = Date.now();
    this.queueTimeline();
    this.renderStatsSoon();
  }

  drawEvent(e, fresh) {
    const li = el("li", { dataset: { seq: String(e.seq), id: e.id, type: kindOf(e) } });
    li.append(this.rowFor(e), el("ul"));
    if (this.hlAgent !== null && e.agent_name === this.hlAgent) li.classList.add("hl");
    this.nodes.set(e.id, li);
    const parent = e.parent_event_id && this.nodes.get(e.parent_event_id);
    (parent ? parent.lastChild : $("#tree")).append(li);
    if (this.filterActive()) this.filterNew(e, li);
    if (fresh) {
      li.classList.add("fresh");
      setTimeout(() => li.classList.remove("fresh"), 1300);
    }
    if (parent) parent.firstChild.querySelector(".caret").textContent = parent.classList.contains("collapsed") ? "▸" : "▾";
    for (const [key, value] of [["agent", e.agent_name], ["type", kindOf(e)], ["status", e.status]]) {
      if (value && !this.choices[key].has(value)) { this.choices[key].add(value); this.choicesChanged = true; }
    }
  }

  rowFor(e) {
    const kind = kindOf(e);
    const row = el("div", { class: `row st-${e.status}`, title: e.id },
      el("span", { class: "caret" }, ""),
      el("span", { class: "seq" }, `#${e.seq}`),
      el("span", { class: `t t-${kind}` }, LABELS[kind]),
      el("span", { class: "text" }, describe(e)),
      el("span", { class: "dur" }, e.duration_ms != null ? fmtMs(e.duration_ms) : ""),
      el("span", { class: "bar-cell" }, this.barFor(e)));
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

  // The event on the run's time axis, in the tree row: positioned by CSS from --s/--e (ms since the
  // run's start) and the axis' --span, so a growing run moves every bar without touching them.
  barFor(e) {
    const [start, end] = timesOf(e);
    if (this.t0 === null || !Number.isFinite(start)) return null;
    const s = Math.max(0, start - this.t0);
    const running = e.status === "running";
    return el("span", { class: `bar t-${kindOf(e)}${running ? " running" : ""}`,
                        style: `--s:${s.toFixed(1)};--e:${Math.max(s, end - this.t0).toFixed(1)}` });
  }

  updateEvent(patch) {
    const e = this.events.get(patch.id);
    if (!e) return;
    const meta = Object.assign({}, e.meta || {}, patch.meta || {});
    Object.assign(e, patch, { meta });
    e._hay = undefined;
    if (isError(e) && !this.errors.includes(e)) { this.errors.push(e); this.errors.sort((x, y) => x.seq - y.seq); }
    const li = this.nodes.get(e.id);
    if (!li) return;  // not drawn yet: it is drawn from the updated event
    const caret = li.firstChild.querySelector(".caret").textContent;
    li.firstChild.replaceWith(this.rowFor(e));
    li.firstChild.querySelector(".caret").textContent = caret;
    if (this.selected === e.id) this.select(e.id);
    if (this.filterActive()) this.filterSoon();  // its status or text changed
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
      ["at", this.t0 !== null ? `${fmtMs(timesOf(e)[0] - this.t0)} after the start` : "–"],
      ["duration", e.duration_ms != null ? fmtMs(e.duration_ms) : "–"]];
    const usage = e.outputs && e.outputs.usage;
    if (usage && typeof usage.cost === "number") fields.push(["cost", fmtMoney(usage.cost)]);
    const parts = [el("dl", {}, ...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v ?? "–"))]))];
    if (e.error_message) parts.push(el("strong", {}, "error"), el("pre", {}, e.error_message));
    const traceback = e.meta && typeof e.meta.traceback === "string" ? e.meta.traceback : null;
    if (traceback) parts.push(el("strong", {}, "traceback"), el("pre", { class: "traceback" }, traceback));
    for (const key of ["inputs", "outputs", "meta"]) {
      let value = e[key];
      if (key === "meta" && traceback) value = Object.fromEntries(Object.entries(value).filter(([k]) => k !== "traceback"));
      if (value !== null && value !== undefined) parts.push(el("strong", {}, key), el("pre", {}, JSON.stringify(value, null, 2)));
    }
    $("#detail").replaceChildren(...parts);
    if (e.event_type === "llm_call") this.showLlmCall(id);
  }

  // A model call whole: the conversation it was sent and what the model answered (fetched on demand).
  async showLlmCall(id) {
    let call;
    try {
      call = await getJSON(`/api/events/${encodeURIComponent(id)}/llm`);
    } catch (err) {
      return;  // an older database, or the call is gone: the event's own fields are shown already
    }
    if (this.selected !== id) return;
    const box = el("div", { class: "llm" });
    const req = call.request || {};
    const facts = [`model ${req.model || "–"}`, `cost ${call.cost != null ? fmtMoney(call.cost) : "–"} (${call.cost_source})`,
      call.replayable ? "replayable" : `not replayable${call.note ? ": " + call.note : ""}`];
    box.append(el("strong", {}, "model call"), el("div", { class: "llm-facts" }, facts.join(" · ")));
    if (Array.isArray(req.messages)) {
      box.append(el("strong", {}, `conversation sent (${req.messages.length} messages)`));
      for (const m of req.messages) box.append(chatMessage(m));
    } else {
      box.append(el("div", { class: "llm-facts" }, call.note || "request not recorded"));
    }
    if (Array.isArray(req.tools) && req.tools.length) {
      box.append(el("strong", {}, "tools offered"), el("div", { class: "llm-facts" },
        req.tools.map((t) => (t.function && t.function.name) || t.name || "?").join(", ")));
    }
    if (req.params && Object.keys(req.params).length) box.append(el("strong", {}, "parameters"), el("pre", {}, JSON.stringify(req.params, null, 2)));
    const choice = call.response && Array.isArray(call.response.choices) ? call.response.choices[0] : null;
    if (choice) {
      box.append(el("strong", {}, `completion${choice.finish_reason ? " (" + choice.finish_reason + ")" : ""}`),
        chatMessage(choice.message || {}));
    }
    $("#detail").append(box);
  }

  // -- finding things: filters, search, next error, collapse ----------------------------------------
  refreshChoices() {
    if (!this.choicesChanged) return;
    this.choicesChanged = false;
    for (const key of ["agent", "type", "status"]) {
      const select = $(`#f-${key}`);
      const have = new Set([...select.options].map((o) => o.value));
      const add = [...this.choices[key]].filter((v) => !have.has(v)).sort();
      for (const value of add) select.append(el("option", { value }, key === "type" ? LABELS[value] || value : value));
    }
  }

  filterActive() {
    const f = this.filter;
    return Boolean(f.agent || f.type || f.status || f.text);
  }

  matches(e) {
    const f = this.filter;
    if (f.agent && e.agent_name !== f.agent) return false;
    if (f.type && kindOf(e) !== f.type) return false;
    if (f.status && e.status !== f.status) return false;
    if (f.text) {
      if (e._hay === undefined) {
        e._hay = [e.agent_name, e.event_type, e.event_subtype, e.status, describe(e), e.error_message,
                  JSON.stringify(e.inputs), JSON.stringify(e.outputs)].join("\n").toLowerCase();
      }
      if (!e._hay.includes(f.text)) return false;
    }
    return true;
  }

  setFilter(key, value) {
    this.filter[key] = key === "text" ? value.trim().toLowerCase() : value;
    this.applyFilter();
    this.queueTimeline();
  }

  filterSoon() {
    if (this.filterQueued) return;
    this.filterQueued = true;
    requestAnimationFrame(() => { this.filterQueued = false; this.applyFilter(); });
  }

  // A newly drawn event under the current filter: it has no drawn children yet, so it is a hit or
  // hidden; a hit makes its hidden ancestors context.
  filterNew(e, li) {
    const hit = this.matches(e);
    li.classList.add(hit ? "f-hit" : "f-out");
    if (!hit) return;
    this.hits += 1;
    for (let up = li.parentElement.closest("li"); up && up.classList.contains("f-out"); up = up.parentElement.closest("li")) {
      up.classList.replace("f-out", "f-ctx");
    }
  }

  showHits() {
    $("#f-count").textContent = this.filterActive() ? `${fmtInt(this.hits)} of ${fmtInt(this.nodes.size)} events match` : "";
  }

  // Matching events shown (f-hit), their ancestors kept as dimmed context (f-ctx), the rest hidden.
  applyFilter() {
    const active = this.filterActive();
    const keep = new Set();
    let hits = 0;
    const drawn = [...this.nodes.keys()].map((id) => this.events.get(id)).sort((a, b) => b.seq - a.seq);
    for (const e of drawn) {  // children come after their parents: walk back, passing "keep" upwards
      const li = this.nodes.get(e.id);
      const hit = active && this.matches(e);
      if (hit) hits += 1;
      const kept = hit || keep.has(e.id);
      if (kept && e.parent_event_id) keep.add(e.parent_event_id);
      li.classList.toggle("f-hit", hit);
      li.classList.toggle("f-ctx", active && kept && !hit);
      li.classList.toggle("f-out", active && !kept);
    }
    this.hits = hits;
    this.showHits();
  }

  nextError() {
    const shown = this.errors.filter((e) => this.nodes.has(e.id) && !this.nodes.get(e.id).classList.contains("f-out"));
    if (!shown.length) { $("#f-count").textContent = "no errors"; return; }
    const next = shown.find((e) => e.seq > this.errorAt) || shown[0];  // cycles back to the first
    this.errorAt = next.seq;
    const li = this.nodes.get(next.id);
    for (let up = li.parentElement.closest("li"); up; up = up.parentElement.closest("li")) {
      if (up.classList.contains("collapsed")) {
        up.classList.remove("collapsed");
        up.firstChild.querySelector(".caret").textContent = "▾";
      }
    }
    for (const old of document.querySelectorAll("#tree li.current-error")) old.classList.remove("current-error");
    li.classList.add("current-error");
    li.firstChild.scrollIntoView({ block: "center" });
    this.select(next.id);
    $("#f-count").textContent = `error ${shown.indexOf(next) + 1} of ${shown.length}`;
  }

  collapseAll(collapse) {
    for (const li of this.nodes.values()) {
      if (!li.lastChild.childElementCount) continue;
      li.classList.toggle("collapsed", collapse);
      li.firstChild.querySelector(".caret").textContent = collapse ? "▸" : "▾";
    }
  }

  highlightAgent(name) {
    this.hlAgent = this.hlAgent === name ? null : name;
    for (const tr of document.querySelectorAll("#cost-table tbody tr")) {
      tr.classList.toggle("hl", this.hlAgent !== null && tr.dataset.name === this.hlAgent);
    }
    let first = null;
    for (const [id, li] of this.nodes) {
      const on = this.hlAgent !== null && this.events.get(id).agent_name === this.hlAgent;
      li.classList.toggle("hl", on);
      if (on && first === null) first = li;
    }
    if (first) first.firstChild.scrollIntoView({ block: "nearest" });
  }

  // -- cost ------------------------------------------------------------------------------------------
  async loadCost() {
    this.costFetched = Date.now();
    const by = $("#cost-by").value || "agent";
    let data;
    try {
      data = await getJSON(`/api/runs/${encodeURIComponent(this.runId)}/cost?by=${by}`);
    } catch (err) {
      $("#cost-table").replaceChildren(el("caption", { class: "muted" }, `cost unavailable: ${err.message}`));
      return;
    }
    if (this.closed) return;
    const head = el("tr", {}, ...[by, "events", "calls", "tokens", "cost", "time", "errors"].map((h, i) => el("th", { class: i ? "num" : "" }, h)));
    const line = (r, cls) => {
      const tr = el("tr", { class: cls || "", dataset: { name: r.name ?? "" } },
        el("td", {}, r.name ?? (cls === "total" ? "total" : "(none)")), el("td", { class: "num" }, fmtInt(r.events)),
        el("td", { class: "num" }, fmtInt(r.calls)), el("td", { class: "num" }, fmtInt(r.total_tokens)),
        el("td", { class: "num cost" }, fmtMoney(r.cost)),
        el("td", { class: "num", title: `model ${fmtMs(r.llm_ms)}, tools ${fmtMs(r.tool_ms)}, code ${fmtMs(r.code_ms)}` }, fmtMs(r.time_ms)),
        el("td", { class: "num" + (r.errors ? " drops" : "") }, fmtInt(r.errors)));
      if (by === "agent" && !cls && r.name !== null) {
        tr.classList.add("clickable");
        tr.classList.toggle("hl", r.name === this.hlAgent);
        tr.addEventListener("click", () => this.highlightAgent(r.name));
      }
      return tr;
    };
    $("#cost-table").replaceChildren(el("thead", {}, head),
      el("tbody", {}, ...data.rows.map((r) => line(r))), el("tfoot", {}, line(data.total, "total")));
  }

  // -- time axes: the lanes above and the bars in the tree rows share the run's clock -----------------
  queueTimeline() {
    if (this.timelineQueued) return;
    this.timelineQueued = true;
    requestAnimationFrame(() => { this.timelineQueued = false; this.renderTimeline(); });
  }

  renderTimeline() {
    const box = $("#timeline");
    if (!this.events.size) { box.replaceChildren(el("div", { class: "muted" }, "No events yet.")); return; }
    const now = this.run && this.run.status === "running" ? Date.now() : undefined;
    const times = new Map();
    let first = Infinity;
    let last = -Infinity;
    for (const e of this.events.values()) {
      const t = timesOf(e, now);
      times.set(e.id, t);
      first = Math.min(first, t[0]);
      last = Math.max(last, t[1]);
    }
    if (this.t0 === null || first < this.t0) {
      const had = this.t0 !== null;
      this.t0 = first;
      if (had) this.redrawBars();
    }
    const t0 = this.t0;
    const runEnd = this.run && this.run.completed_at ? Date.parse(this.run.completed_at) : 0;
    const span = Math.max(1, runEnd - t0, last - t0);
    this.span = span;
    $("#tree-box").style.setProperty("--span", span.toFixed(1));
    drawAxis($("#tree-axis"), span, 3);  // a narrow column: fewer labels

    let shown = [...this.events.values()];
    if (shown.length > TIMELINE_MAX_MARKS) shown = shown.filter((e) => ["agent_call", "error", "handoff"].includes(kindOf(e))).slice(0, TIMELINE_MAX_MARKS);
    const filtering = this.filterActive();
    const lanes = new Map();
    for (const e of shown) {
      const name = kindOf(e) === "message" ? (e.inputs && e.inputs.sender) || e.agent_name : e.agent_name;
      const lane = name || "(run)";
      if (!lanes.has(lane)) lanes.set(lane, el("div", { class: "lane" }, el("span", { class: "lane-name", title: lane }, lane)));
      const [start, end] = times.get(e.id);
      const left = ((start - t0) / span) * 100;
      const width = Math.max(((end - start) / span) * 100, 0);
      const mark = el("div", {
        class: `mark t-${kindOf(e)}${e.status === "running" ? " running" : ""}${this.selected === e.id ? " selected" : ""}${filtering && !this.matches(e) ? " dim" : ""}`,
        title: `#${e.seq} at ${fmtMs(start - t0)}: ${describe(e)}`, dataset: { id: e.id, seq: String(e.seq) },
        style: `left:${left.toFixed(3)}%;width:calc(${width.toFixed(3)}% + 3px)`,
      });
      mark.addEventListener("click", () => this.select(e.id));
      lanes.get(lane).append(mark);
    }
    const axis = el("div", { class: "axis" }, el("div", { class: "axis-track" }));
    drawAxis(axis.firstChild, span);
    const note = shown.length < this.events.size ? el("div", { class: "muted small" }, `${fmtInt(this.events.size - shown.length)} minor events not drawn here (all are in the tree)`) : null;
    box.replaceChildren(...lanes.values(), axis, ...(note ? [note] : []));
  }

  redrawBars() {
    for (const [id, li] of this.nodes) {
      const cell = li.firstChild.querySelector(".bar-cell");
      cell.replaceChildren(...[this.barFor(this.events.get(id))].filter(Boolean));
    }
  }
}

function setupRunControls() {
  for (const key of ["agent", "type", "status"]) {
    $(`#f-${key}`).addEventListener("change", (ev) => current instanceof RunView && current.setFilter(key, ev.target.value));
  }
  let typing = null;
  $("#f-text").addEventListener("input", (ev) => {
    clearTimeout(typing);
    typing = setTimeout(() => current instanceof RunView && current.setFilter("text", ev.target.value), 150);
  });
  $("#next-error").addEventListener("click", () => current instanceof RunView && current.nextError());
  $("#collapse-all").addEventListener("click", () => current instanceof RunView && current.collapseAll(true));
  $("#expand-all").addEventListener("click", () => current instanceof RunView && current.collapseAll(false));
  $("#cost-by").addEventListener("change", () => current instanceof RunView && current.loadCost());
}

// -- routing -------------------------------------------------------------------------------------
let current = null;

function route() {
  if (runsTimer) { clearInterval(runsTimer); runsTimer = null; }
  if (current) { current.close(); current = null; }
  for (const id of ["#runs-view", "#run-view", "#diff-view"]) $(id).hidden = true;
  const run = location.hash.match(/^#\/runs\/([^/?#]+)/);
  const diff = location.hash.match(/^#\/diff\/([^/?#]+)\/([^/?#]+)/);
  if (run) {
    $("#run-view").hidden = false;
    current = new RunView(decodeURIComponent(run[1]));
  } else if (diff) {
    setStatus("idle", "");
    showDiff(decodeURIComponent(diff[1]), decodeURIComponent(diff[2]));
  } else {
    showRuns();
  }
}

setupRunsFilters();
setupRunControls();
window.addEventListener("hashchange", route);
route();
