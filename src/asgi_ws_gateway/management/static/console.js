"use strict";
// The asgi-ws-gateway test console. The URL fragment can pre-fill it (it never reaches a server):
//   console#token=ADMIN&api=chat&room=lobby&query=a%3D1&connect=1&send=hello
// The token is taken out of the address once read (it would stay in the history); the rest stays.
// It cannot name the gateway to connect to: that is the page's own origin unless the user types another.
// The admin token is kept in no storage: a script of any page of this origin (the application's own
// pages share it) could read it there after the console is closed; retype it, or link it in the fragment.
(() => {
  const $ = (selector) => document.querySelector(selector);
  const setup = $("#setup"), sendForm = $("#send"), log = $("#log"), status = $("#status");
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    const rest = new URLSearchParams(fragment);
    rest.delete("token");
    history.replaceState(history.state, "", location.pathname + location.search + (rest.toString() ? `#${rest}` : ""));
  }
  const encoder = new TextEncoder();
  const KEPT = 1000; // log entries shown: an upstream flooding the socket must not grow the page without end
  let apis = [], ws = null, pending = [], frame = 0;

  const time = () => new Date().toISOString().slice(11, 23);
  // Control, line-breaking, bidi and invisible characters as escapes (\u202e), as the command line shows
  // them: an upstream's close reason or an API's name cannot reorder or hide the text around it.
  const UNSEEN = /[\p{C}\p{Zl}\p{Zp}]|(?! )\p{Zs}/gu;
  const shown = (text) => String(text).replace(UNSEEN, (c) => {
    const code = c.codePointAt(0);
    return code > 0xffff ? `\\U${code.toString(16).padStart(8, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
  const placeholders = (path) => Array.from(path.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g), (m) => m[1]);

  // Entries are queued and drawn once per animation frame, the newest KEPT of them: one layout per
  // frame, not one per message.
  function entry(dir, text, size) {
    pending.push([dir, text, size, time()]);
    if (pending.length > 2 * KEPT) pending = pending.slice(-KEPT);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    frame = 0;
    const batch = pending.slice(-KEPT);
    pending = [];
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const items = document.createDocumentFragment();
    for (const [dir, text, size, at] of batch) items.append(line(dir, text, size, at));
    log.append(items);
    for (let extra = log.children.length - KEPT; extra > 0; extra--) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function line(dir, text, size, at) {
    const li = document.createElement("li");
    li.dataset.dir = dir;
    const stamp = document.createElement("time");
    stamp.textContent = at;
    const arrow = document.createElement("span");
    arrow.className = "dir";
    arrow.textContent = { in: "←", out: "→", sys: "•" }[dir];
    li.append(stamp, arrow);
    if (size !== undefined) {
      const bytes = document.createElement("span");
      bytes.className = "size";
      bytes.textContent = `${size} B`;
      li.append(bytes);
    }
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.append(body);
    return li;
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    const open = state === "open";
    for (const name of ["message", "text", "json", "close"]) sendForm[name].disabled = !open;
    setup.open.disabled = open || state === "connecting";
  }

  function describe(data) {
    if (typeof data === "string") return [data === "" ? "(empty text)" : data, encoder.encode(data).length];
    const bytes = new Uint8Array(data);
    const hex = Array.from(bytes.slice(0, 32), (b) => b.toString(16).padStart(2, "0")).join(" ");
    return [`[binary] ${hex}${bytes.length > 32 ? " …" : ""}`, bytes.length];
  }

  function selected() {
    return apis.find((api) => api.name === setup.api.value);
  }

  function showParams() {
    const api = selected(), holder = $("#params");
    holder.replaceChildren();
    for (const name of api ? placeholders(api.path) : []) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      Object.assign(input, { type: "text", size: 12, value: fragment.get(name) || "" });
      input.dataset.param = name;
      label.append(`${name} `, input);
      holder.append(label);
    }
  }

  async function loadApis() {
    const token = setup.admin.value.trim();
    $("#apis-status").textContent = "loading…";
    const response = await fetch("apis", { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) {
      $("#apis-status").textContent = response.status === 401 ? "the admin token was refused" : `error ${response.status}`;
      return false;
    }
    apis = (await response.json()).apis;
    setup.api.replaceChildren(...apis.map((api) => new Option(shown(`${api.display_name || api.name}: ${api.path}`), api.name)));
    if (fragment.has("api")) setup.api.value = fragment.get("api");
    $("#apis-status").textContent = `${apis.length} API(s)`;
    showParams();
    return true;
  }

  function target() {
    const api = selected();
    let path = api.path;
    for (const input of document.querySelectorAll("#params input")) {
      path = path.replace(`{${input.dataset.param}}`, encodeURIComponent(input.value.trim()));
    }
    const query = new URLSearchParams(setup.query.value.trim());
    if (setup.key.value.trim()) query.set(setup.keyParam.value.trim(), setup.key.value.trim());
    if (setup.token.value.trim()) query.set(setup.tokenParam.value.trim(), setup.token.value.trim());
    const search = query.toString();
    return `${setup.base.value.replace(/\/$/, "")}${path}${search ? `?${search}` : ""}`;
  }

  function connect(firstMessage) {
    if (!selected()) return entry("sys", "load the APIs and pick one first");
    const url = target();
    const protocols = setup.subprotocols.value.split(",").map((p) => p.trim()).filter(Boolean);
    $("#url").textContent = url;
    setStatus("connecting", "connecting…");
    entry("sys", `connecting to ${url}`);
    const socket = ws = new WebSocket(url, protocols);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      const details = [socket.protocol && `subprotocol ${socket.protocol}`, socket.extensions].filter(Boolean);
      setStatus("open", "open");
      entry("sys", `open${details.length ? ` (${details.join("; ")})` : ""}`);
      if (firstMessage) send(firstMessage);
    };
    socket.onmessage = (event) => entry("in", ...describe(event.data));
    socket.onerror = () => entry("sys", "error (the close event below says more)");
    socket.onclose = (event) => {
      const reason = event.reason ? ` "${shown(event.reason)}"` : "";
      setStatus("closed", `closed ${event.code}${reason}`);
      entry("sys", `closed: code ${event.code}${reason}${event.wasClean ? "" : " (not clean)"}`);
      if (ws === socket) ws = null;
    };
  }

  function send(text) {
    ws.send(text);
    entry("out", ...describe(text));
  }

  // The gateway connected to is the page's own origin, whatever a link says: a fragment naming another
  // host made the console send it the token and subscription key the user typed (phishing). Only the
  // user may type another one into the field (a console served on the management port).
  setup.base.value = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`;
  setup.admin.value = fragment.get("token") || "";
  for (const name of ["query", "key", "subprotocols"]) if (fragment.has(name)) setup[name].value = fragment.get(name);
  setup.load.addEventListener("click", loadApis);
  setup.api.addEventListener("change", showParams);
  setup.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!ws) connect();
  });
  sendForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (ws && ws.readyState === WebSocket.OPEN) send(sendForm.message.value);
  });
  sendForm.json.addEventListener("click", () => {
    let text;
    try {
      text = JSON.stringify(JSON.parse(sendForm.message.value));
    } catch (error) {
      return entry("sys", `not JSON: ${error.message}`);
    }
    if (ws && ws.readyState === WebSocket.OPEN) send(text);
  });
  sendForm.close.addEventListener("click", () => {
    if (ws) ws.close(Number(sendForm.code.value) || 1000, sendForm.reason.value);
  });
  sendForm.clear.addEventListener("click", () => {
    pending = [];
    log.replaceChildren();
  });
  if (setup.admin.value) {
    loadApis().then((ok) => {
      if (ok && fragment.get("connect") === "1") connect(fragment.get("send"));
    });
  }
})();
