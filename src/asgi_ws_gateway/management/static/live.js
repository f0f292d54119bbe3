// The live console: polls the management API (relative to this page) and draws plain SVG charts.
// The admin token comes from the field or the URL fragment (#token=...; a fragment never reaches a
// server, and the page takes the token out of the address once read, so it stays out of the history).
// Every value from the gateway is written with textContent, never parsed as HTML.
"use strict";

const CHARTS = [
  { series: "active", title: "Active connections", rate: false },
  { series: "handshakes", title: "Handshakes /s by outcome", rate: true },
  { series: "messages", title: "Messages /s by direction", rate: true },
  { series: "bytes", title: "Bytes /s by direction", rate: true },
  { series: "refusals", title: "Policy refusals /s by policy", rate: true },
  { series: "upstream_failures", title: "Upstream connect failures /s by backend", rate: true },
  { series: "closes", title: "Closes /s by code", rate: true },
];
const COLORS = ["#1565c0", "#2e7d32", "#c62828", "#ef6c00", "#6a1b9a", "#00838f", "#9e9d24", "#5d4037"];
const SVG = "http://www.w3.org/2000/svg";
const W = 600, H = 160, LEFT = 44, BOTTOM = 18, TOP = 8;
const MIN_POLL = 1; // seconds: each poll asks every worker; faster only loads the gateway
// A browser runs a timer of more than 2^31 - 1 ms (24.8 days) at once: a link's poll=1e10 (or Infinity)
// made the page poll back to back, every worker each time, for as long as it stayed open.
const MAX_POLL = 3600;
const LINES = COLORS.length - 1; // a chart draws its busiest lines and adds up the rest as "other"
const RECENT = 12; // slots that rank a chart's lines (a minute at the default 5 s)

const params = new URLSearchParams(location.hash.slice(1));
if (params.has("token")) { // out of the address bar, the history and synced tabs; the other settings stay
  const rest = new URLSearchParams(params); rest.delete("token");
  history.replaceState(history.state, "", location.pathname + location.search + (rest.toString() ? "#" + rest : ""));
}
const state = {
  token: params.get("token") || "",
  poll: Math.min(MAX_POLL, Math.max(MIN_POLL, Number(params.get("poll")) || 2)) * 1000,
  interval: 5, window: 900, since: null,
  slots: new Map(), // slot index (time / interval) -> Map(series -> [[api, label, value], ...]); a missing slot is a gap
  apis: new Set(),
  connections: [], total: 0, refusals: [],
  closing: new Set(), // ids kicked, or found closing already: shown as closing until a poll no longer lists them
  downSince: null, gaps: [], refusedToken: null,
};
const $ = (selector) => document.querySelector(selector);
const api = $("select[name=api]"), filter = $("input[name=filter]"), admin = $("input[name=admin]");
admin.value = state.token;
if (params.get("api")) { api.append(new Option(params.get("api"), params.get("api"))); api.value = params.get("api"); }

async function call(path, options = {}) {
  const response = await fetch("../" + path, {
    ...options, cache: "no-store",
    headers: { Authorization: "Bearer " + state.token, "Content-Type": "application/json" },
  });
  if (!response.ok) throw Object.assign(new Error(response.status + " " + response.statusText), { status: response.status });
  return response.json();
}

function status(text, kind) { const el = $("#status"); el.textContent = text; el.dataset.state = kind; }
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });

async function poll() {
  // A refused token is not sent again until it is changed: every poll would count as a guess (the API
  // makes an address wait after 30 refusals a minute).
  if (state.token && state.token !== state.refusedToken) {
    try {
      // Only the slots after the last complete one: the newest slot was sampled mid-slot, so ask again.
      const since = state.since === null ? "" : "?since=" + state.since;
      const [series, listed, refused] = await Promise.all([call("metrics/series" + since), call("connections"), call("refusals")]);
      if (state.downSince !== null) { state.gaps.push([state.downSince, Date.now() / 1000]); state.downSince = null; }
      // What arrived is shown apart from fetching it: a page that fails to draw is not an outage.
      try {
        absorb(series);
        state.connections = listed.connections; state.total = listed.total ?? listed.connections.length;
        const open = new Set(state.connections.map((c) => c.id));
        for (const id of state.closing) if (!open.has(id)) state.closing.delete(id);
        state.refusals = refused.refusals;
        const missing = series.workers.missing || [];  // on the bus's roster, no answer: not in the sums
        $("#workers").textContent = "workers: " + series.workers.answered + " of " + series.workers.expected
          + (missing.length ? " · missing " + missing.slice(0, 5).join(", ") + (missing.length > 5 ? " and " + (missing.length - 5) + " more" : "") : "");
        const failed = render();
        if (failed.length) status("live · updated " + clock(Date.now() / 1000) + " · could not draw " + failed.join(", "), "error");
        else status("live · updated " + clock(Date.now() / 1000), "live");
      } catch (error) {
        console.error("live console: showing the answer failed", error);
        status("could not show the gateway's answer (" + error.message + "): see the browser console", "error");
      }
      $("#status").dataset.polls = String(Number($("#status").dataset.polls || 0) + 1);
    } catch (error) {
      if (error.status === 401) {
        state.refusedToken = state.token;
        status("the admin token was refused (401): enter the right one", "down");
      } else if (error.status === 429) status("too many refused tokens from this address: waiting (429)", "down");
      else {
        if (state.downSince === null) state.downSince = Date.now() / 1000;
        status("gateway unreachable since " + clock(state.downSince) + " · retrying", "down");
      }
    }
    renderGaps();
  }
  setTimeout(poll, state.poll);
}

function absorb(document) {
  state.interval = document.interval; state.window = document.window;
  for (const s of document.series) state.apis.add(s.api);
  document.times.forEach((time, i) => {
    const values = new Map();
    let sampled = !document.series.length;
    for (const s of document.series) {
      if (s.values[i] === null) continue;
      sampled = true;
      if (!values.has(s.name)) values.set(s.name, []);
      values.get(s.name).push([s.api, s.label, s.values[i]]);
    }
    // null everywhere: no worker sampled this slot (kept as a gap); an empty slot is all zeros.
    if (sampled) state.slots.set(Math.round(time / state.interval), values);
  });
  if (document.times.length > 1) state.since = document.times[document.times.length - 2];
  let newest = -Infinity; // loops, not Math.max(...many): a spread of too many values overflows the stack
  for (const index of state.slots.keys()) newest = Math.max(newest, index);
  const oldest = newest - Math.round(state.window / state.interval);
  for (const index of state.slots.keys()) if (index < oldest) state.slots.delete(index);
  for (const name of [...state.apis].sort()) {
    if (name && ![...api.options].some((o) => o.value === name)) api.append(new Option(name, name));
  }
}

// One chart's lines: label -> [value or null per slot], summed over the chosen API(s).
function lines(chart) {
  if (!state.slots.size) return { times: [], lines: new Map() };
  let first = Infinity, last = -Infinity;
  for (const index of state.slots.keys()) { first = Math.min(first, index); last = Math.max(last, index); }
  const step = state.interval;
  first = Math.max(first, last - Math.round(state.window / step));
  const axis = [];
  for (let index = first; index <= last; index++) axis.push(index);
  const totals = new Map();
  axis.forEach((index, i) => {
    const slot = state.slots.get(index);
    if (!slot) return;
    for (const [apiName, label, value] of slot.get(chart.series) || []) {
      if (api.value && apiName !== api.value) continue;
      if (!totals.has(label)) totals.set(label, axis.map((t) => (state.slots.has(t) ? 0 : null)));
      totals.get(label)[i] += value;
    }
  });
  const times = axis.map((index) => index * step);
  if (!chart.rate) return { times, lines: busiest(totals) };
  const rates = new Map();
  for (const [label, values] of totals) {
    // A total that went down is a restarted worker: no rate for that step, not a negative one.
    rates.set(label, values.map((v, i) => (i && v !== null && values[i - 1] !== null && v >= values[i - 1]
      ? (v - values[i - 1]) / step : null)));
  }
  return { times, lines: busiest(rates) };
}

// At most LINES lines, the busiest over the last RECENT slots, and the rest added up as "other"
// (thousands of close codes would draw as one blot, and take seconds to).
function busiest(found) {
  if (found.size <= LINES + 1) return found;
  const recent = (values) => {
    let sum = 0;
    for (let i = Math.max(0, values.length - RECENT); i < values.length; i++) sum += values[i] ?? 0;
    return sum;
  };
  const ranked = [...found].map(([label, values]) => [recent(values), label, values])
    .sort((a, b) => b[0] - a[0] || (a[1] < b[1] ? -1 : 1));
  const kept = new Map(ranked.slice(0, LINES).map(([, label, values]) => [label, values]));
  const other = ranked[0][2].map(() => null);
  for (const [, , values] of ranked.slice(LINES)) {
    values.forEach((v, i) => { if (v !== null) other[i] = (other[i] ?? 0) + v; });
  }
  const prior = kept.get("other"); // the gateway's own "other" (a family beyond its share) is one line too
  kept.set("other", prior ? prior.map((v, i) => (v === null && other[i] === null ? null : (v ?? 0) + (other[i] ?? 0))) : other);
  return kept;
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(chart) {
  let figure = document.querySelector(`figure[data-series="${chart.series}"]`);
  if (!figure) {
    figure = document.createElement("figure");
    figure.dataset.series = chart.series;
    figure.append(Object.assign(document.createElement("figcaption"), { textContent: chart.title }));
    figure.append(el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": chart.title }));
    figure.append(Object.assign(document.createElement("div"), { className: "legend" }));
    $("#charts").append(figure);
  }
  const svg = figure.querySelector("svg"), legend = figure.querySelector(".legend");
  svg.replaceChildren(); legend.replaceChildren();
  const { times, lines: found } = lines(chart);
  let max = 1e-9;
  for (const values of found.values()) for (const v of values) if (v !== null && v > max) max = v;
  const x = (i) => LEFT + (times.length > 1 ? (i / (times.length - 1)) * (W - LEFT - 4) : (W - LEFT) / 2);
  const y = (v) => TOP + (1 - v / max) * (H - TOP - BOTTOM);
  svg.append(el("line", { class: "axis", x1: LEFT, y1: H - BOTTOM, x2: W, y2: H - BOTTOM }));
  svg.append(el("line", { class: "axis", x1: LEFT, y1: TOP, x2: LEFT, y2: H - BOTTOM }));
  svg.append(el("text", { x: LEFT - 4, y: TOP + 8, "text-anchor": "end" }, max >= 1e-6 && found.size ? fmt(max) : "0"));
  svg.append(el("text", { x: LEFT - 4, y: H - BOTTOM, "text-anchor": "end" }, "0"));
  if (times.length) {
    svg.append(el("text", { x: LEFT, y: H - 4 }, clock(times[0])));
    svg.append(el("text", { x: W - 2, y: H - 4, "text-anchor": "end" }, clock(times[times.length - 1])));
  }
  times.forEach((time, i) => { // slots nobody sampled: the gateway was down or restarting
    if (!state.slots.has(Math.round(time / state.interval))) {
      const r = el("rect", { class: "gap", x: x(i) - 3, y: TOP, width: 6, height: H - TOP - BOTTOM });
      r.append(el("title", {}, "no data at " + clock(time)));
      svg.append(r);
    }
  });
  let n = 0;
  for (const [label, values] of [...found].sort()) {
    const color = COLORS[n++ % COLORS.length];
    let d = "", pen = false, points = 0;
    values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      d += (pen ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
      pen = true; points += 1;
    });
    let peak = 0;
    for (const v of values) if (v !== null && v > peak) peak = v;
    const path = el("path", { d, stroke: color, "data-label": label, "data-points": points, "data-max": peak });
    svg.append(path);
    const last = [...values].reverse().find((v) => v !== null);
    if (last !== undefined) svg.append(el("circle", { cx: x(values.lastIndexOf(last)), cy: y(last), r: 2.5, fill: color }));
    const item = document.createElement("span");
    item.append(Object.assign(document.createElement("i"), { style: "background:" + color }));
    item.append(document.createTextNode(shown(label || chart.title) + ": " + (last === undefined ? "–" : fmt(last))));
    legend.append(item);
  }
  if (!found.size) legend.append(Object.assign(document.createElement("span"), { className: "empty", textContent: "nothing yet" }));
}

function fmt(value) {
  if (value >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (value >= 1e3) return (value / 1e3).toFixed(1) + "k";
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

// Control, line-breaking, bidi and invisible characters as escapes (\u202e), as the command line shows
// them: a client's text (an address, a refusal's detail) cannot reorder, hide or mimic what is read.
const UNSEEN = /[\p{C}\p{Zl}\p{Zp}]|(?! )\p{Zs}/gu;
function shown(text) {
  return String(text).replace(UNSEEN, (c) => {
    const code = c.codePointAt(0);
    return code > 0xffff ? "\\U" + code.toString(16).padStart(8, "0") : "\\u" + code.toString(16).padStart(4, "0");
  });
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "–" : shown(text);
  if (className) td.className = className;
  return td;
}

function renderConnections() {
  const needle = filter.value.trim().toLowerCase(), now = Date.now() / 1000;
  const visible = state.connections.filter((c) => (!api.value || c.api === api.value)
    && (!needle || [c.api, c.client, c.subject, c.subscription, c.backend, c.worker].some((v) => String(v ?? "").toLowerCase().includes(needle))));
  const body = $("#connections tbody");
  body.replaceChildren();
  for (const c of visible) {
    const row = body.insertRow();
    row.dataset.id = c.id;
    cell(row, c.api); cell(row, c.client); cell(row, c.subject); cell(row, c.subscription); cell(row, c.backend);
    cell(row, Math.max(0, Math.round(now - c.opened_at)) + " s", "num");
    for (const k of ["messages_in", "messages_out", "bytes_in", "bytes_out"]) cell(row, c[k], "num");
    cell(row, c.worker);
    const actions = row.insertCell();
    const send = Object.assign(document.createElement("button"), { type: "button", textContent: "Send", name: "send" });
    send.onclick = () => act(c.id, "messages", { text: $("input[name=message]").value });
    const kick = Object.assign(document.createElement("button"), { type: "button", textContent: "Kick", name: "kick" });
    kick.onclick = () => act(c.id, "close", { code: 1000, reason: "closed from the console" }, row);
    if (state.closing.has(c.id)) {
      row.dataset.closing = "true";
      Object.assign(kick, { disabled: true, textContent: "Closing", title: "closing: the row goes when the connection ends" });
    }
    actions.append(send, " ", kick);
  }
  const listed = state.connections.length, open = state.total ?? listed;
  $("#connection-count").textContent = "(" + visible.length + " of " + listed
    + (open > listed ? ", the oldest of " + open + " open" : "") + ")";
}

async function act(id, what, body, row) {
  try {
    await call("connections/" + encodeURIComponent(id) + "/" + what, { method: "POST", body: JSON.stringify(body) });
    if (row) { // kicked: its closing handshake may outlast a poll, which then lists it as closing
      state.closing.add(id);
      state.connections = state.connections.filter((c) => c.id !== id); row.remove();
    }
  } catch (error) {
    if (what === "close" && error.status === 409) {
      // Its client, its upstream or the gateway (a drain, a shutdown, an earlier kick) closes it already, with
      // their code, not this one: not a failure. It stays listed until it ends.
      state.closing.add(id); renderConnections();
      status("connection " + shown(id) + " is already closing: it leaves the list when it ends", "note");
    } else if (what === "close" && error.status === 404) { // ended since the last poll
      state.connections = state.connections.filter((c) => c.id !== id); renderConnections();
      status("connection " + shown(id) + " had closed already", "note");
    } else status(what + " failed: " + error.message, "down");
  }
}

function renderRefusals() {
  const body = $("#refusals tbody");
  body.replaceChildren();
  for (const r of state.refusals.filter((r) => !api.value || r.api === api.value)) {
    const row = body.insertRow();
    cell(row, clock(r.at)); cell(row, r.api); cell(row, r.status, "num"); cell(row, r.policy);
    cell(row, r.reason); cell(row, r.detail, "detail");
  }
}

function renderGaps() {
  $("#gaps").textContent = state.gaps.slice(-3).map(([a, b]) => "gap: unreachable " + clock(a) + "–" + clock(b)).join(" · ");
}

// Each part on its own: one that fails (logged to the browser console) does not blank the others.
// Returns the names of the parts that failed.
function render() {
  const failed = [];
  const part = (name, draw) => {
    try { draw(); } catch (error) { console.error("live console: drawing " + name + " failed", error); failed.push(name); }
  };
  part("the connections", renderConnections);
  part("the refusals", renderRefusals);
  for (const chart of CHARTS) part("the chart " + JSON.stringify(chart.title), () => drawChart(chart));
  return failed;
}

admin.addEventListener("change", () => { state.token = admin.value.trim(); });
api.addEventListener("change", render);
filter.addEventListener("input", renderConnections);
render();
poll();
