// gridwatch command centre: plain JS against the ticket REST API (see docs/api.md).
"use strict";

// The case life cycle (GB/T 30428 steps; GET /meta/states has the labels and moves).
const STATUSES = ["received", "verified", "dispatched", "in_progress", "resolved", "checked", "closed",
                  "false_alarm"];
const ACTIVE = ["received", "verified", "dispatched", "in_progress", "resolved", "checked"];
const POLL_MS = 3000;
let LABELS = {};  // state -> Chinese label, from GET /meta/states after login
function stateText(s) { return LABELS[s] ? `${LABELS[s]} ${s.replace("_", " ")}` : s.replace("_", " "); }
async function loadLabels() {
  try {
    LABELS = Object.fromEntries((await api("/meta/states")).map((s) => [s.name, s.label_zh]));
  } catch (e) { LABELS = {}; }  // the English names still work
  for (const label of document.querySelectorAll("#status-filter label")) {
    const box = label.querySelector("input");
    label.replaceChildren(box, stateText(box.value));
  }
}
let selectedId = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(path, options) {
  const res = await fetch(path, options);  // same origin: the HttpOnly session cookie goes along
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (res.status === 401) showLogin();
  if (!res.ok) {
    const err = new Error(`${res.status} ${res.statusText}`);
    err.status = res.status; err.body = body;
    throw err;
  }
  return body;
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
                                       second: "2-digit" });
}

function setupFilters() {
  const fs = document.getElementById("status-filter");
  for (const s of STATUSES) {
    const box = el("input", { type: "checkbox", name: "status", value: s });
    box.checked = ACTIVE.includes(s);
    box.addEventListener("change", refreshTickets);
    fs.append(el("label", { class: "inline" }, box, s.replace("_", " ")));
  }
  document.getElementById("hazard-filter").addEventListener("change", refreshTickets);
  document.getElementById("grid-filter").addEventListener("change", refreshTickets);
}

function ticketQuery() {
  const q = new URLSearchParams({ limit: "200" });
  for (const box of document.querySelectorAll("#status-filter input:checked")) q.append("status", box.value);
  const hazard = document.getElementById("hazard-filter").value;
  if (hazard) q.set("hazard", hazard);
  const grid = document.getElementById("grid-filter").value;
  if (grid) q.set("grid", grid);
  return q;
}

async function refreshTickets() {
  let page;
  try {
    page = await api(`/tickets?${ticketQuery()}`);
  } catch (e) {
    document.getElementById("ticket-count").textContent = `cannot load tickets: ${e.message}`;
    return;
  }
  const tbody = document.querySelector("#tickets tbody");
  tbody.replaceChildren(...page.items.map((t) => el("tr", {
      "data-id": t.id, class: t.id === selectedId ? "selected" : "",
      onclick: () => selectTicket(t.id) },
    el("td", {}, t.id),
    el("td", {}, fmtTime(t.opened_at)),
    el("td", { class: `hz-${t.hazard}` }, t.hazard),
    el("td", { class: `sev-${t.severity}` }, t.severity),
    el("td", {}, el("span", { class: `badge st-${t.status}` }, stateText(t.status)),
       t.overdue ? el("span", { class: "overdue", title: `overdue since ${fmtTime(t.due_at)}` }, " ⏰") : null,
       t.cleared_at ? el("span", { class: "cleared", title: `cleared ${fmtTime(t.cleared_at)}` }, " ✓gone") : null),
    el("td", {}, t.title),
    el("td", { class: "muted" }, t.grid_path.join("/")))));
  document.getElementById("ticket-count").textContent =
    `${page.items.length} of ${page.total} tickets · updated ${new Date().toLocaleTimeString()}`;
}

async function selectTicket(id) {
  selectedId = id;
  for (const tr of document.querySelectorAll("#tickets tbody tr")) {
    tr.classList.toggle("selected", Number(tr.dataset.id) === id);
  }
  await renderDetail();
}

async function renderDetail(message) {
  const pane = document.getElementById("detail");
  if (selectedId === null) return;
  let t;
  try {
    t = await api(`/tickets/${selectedId}`);
  } catch (e) {
    pane.replaceChildren(el("p", { class: "error" }, `cannot load ticket ${selectedId}: ${e.message}`));
    return;
  }
  const img = el("img", { src: `${t.evidence.snapshot}?v=${encodeURIComponent(t.updated_at)}`,
                          alt: `snapshot of ticket ${t.id}` });
  img.addEventListener("error", () => img.replaceWith(el("p", { class: "muted" }, "snapshot not available yet")));
  const note = el("input", { id: "note", placeholder: "note (optional)" });
  const buttons = t.allowed_next.map((s) => el("button", { type: "button", "data-to": s,
    onclick: () => doTransition(t.id, s, note.value) }, `→ ${stateText(s)}`));
  pane.replaceChildren(
    el("h2", {}, `#${t.id} ${t.title}`),
    message ? el("p", { class: message.error ? "error" : "muted" }, message.text) : null,
    img,
    el("p", {}, el("a", { href: t.evidence.clip, target: "_blank", rel: "noopener" }, "open clip (MP4)")),
    el("dl", {},
      el("dt", {}, "status"), el("dd", {}, el("span", { class: `badge st-${t.status}` }, stateText(t.status))),
      el("dt", {}, "deadline"), el("dd", { class: t.overdue ? "error" : "" }, t.due_at
        ? `${t.due_stage} by ${fmtTime(t.due_at)}${t.overdue ? ` — overdue, escalated to ${t.escalated_to.join("/")}` : ""}`
        : "-"),
      el("dt", {}, "hazard"), el("dd", {}, `${t.hazard} (severity ${t.severity}, conf ${t.confidence.toFixed(2)})`),
      el("dt", {}, "camera"), el("dd", {}, `${t.camera_name || t.camera_id} · zone ${t.zone_id || "-"}`),
      el("dt", {}, "grid"), el("dd", {}, t.grid_path.join(" / ")),
      el("dt", {}, "opened"), el("dd", {}, fmtTime(t.opened_at)),
      el("dt", {}, "cleared"), el("dd", {}, t.cleared_at ? fmtTime(t.cleared_at) : "still present"),
      el("dt", {}, "assignee"), el("dd", {}, t.assignee || "-"),
      el("dt", {}, "note"), el("dd", {}, t.note || "-"),
      el("dt", {}, "incident"), el("dd", { class: "muted" }, t.incident_id)),
    el("div", { class: "actions" }, note),
    el("div", { class: "actions" }, ...(buttons.length ? buttons : [el("span", { class: "muted" }, "no further steps")])),
    el("h2", {}, "History"),
    el("ol", { class: "events" }, ...t.events.map((e) => el("li", {},
      `${fmtTime(e.ts)} ${e.kind}`,
      e.kind === "transition" ? ` ${e.from_status} → ${e.to_status} by ${e.actor || "?"}` : "",
      e.note ? ` — ${e.note}` : ""))));
}

async function doTransition(id, to, note) {
  try {  // the actor is the logged-in user (the server takes it from the session)
    await api(`/tickets/${id}/transition`, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ to, note: note || null }) });
    await renderDetail({ text: `moved to ${to}` });
  } catch (e) {
    const allowed = e.body?.detail?.allowed;
    const why = e.status === 403 ? `refused: ${e.body?.detail || "not allowed for your role"}`
      : allowed ? `not allowed; allowed: ${allowed.join(", ") || "none"}` : `failed: ${e.message}`;
    await renderDetail({ error: true, text: why });
  }
  refreshTickets();
}

async function refreshCameras() {
  let cams;
  try { cams = await api("/cameras"); } catch (e) { return; }
  document.getElementById("cameras").replaceChildren(...cams.map((c) => {
    const state = c.health ? c.health.state : "unknown";
    const age = c.health?.last_frame_ts ? Math.round(Date.now() / 1000 - c.health.last_frame_ts) : null;
    return el("li", { "data-camera": c.id },
      el("span", {}, `${c.name || c.id} `, el("span", { class: "muted" }, c.grid_path.join("/"))),
      el("span", { class: `cs-${state}`, title: c.health?.last_error || "" },
        state, age !== null ? ` · ${age}s ago` : "", c.enabled ? "" : " (disabled)"),
      " ", el("button", { type: "button", title: "latest analysed frame, drawn by its worker",
                          onclick: () => showDebug(c.id) }, "debug"));
  }));
}

// Live debug view: the worker draws its latest analysed frame on request (GET /cameras/{id}/debug.jpg).
let debugCamera = null;
let debugTimer = null;
async function refreshDebug() {
  if (debugCamera === null) return;
  const cam = debugCamera;
  const res = await fetch(`/cameras/${encodeURIComponent(cam)}/debug.jpg?timeout=5`, { cache: "no-store" });
  if (cam !== debugCamera) return;
  const status = document.getElementById("debug-status");
  if (res.ok) {
    const img = document.getElementById("debug-img");
    const old = img.src;
    img.src = URL.createObjectURL(await res.blob());
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } else {
    const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
    status.textContent = `${res.status}: ${body?.detail || res.statusText}`;
  }
  debugTimer = setTimeout(refreshDebug, 2000);
}
function showDebug(cameraId) {
  clearTimeout(debugTimer);
  debugCamera = cameraId;
  document.getElementById("debug-title").textContent = cameraId;
  document.getElementById("debug-status").textContent = "asking the worker ...";
  document.getElementById("debug-view").hidden = false;
  refreshDebug();
}
document.getElementById("debug-close").addEventListener("click", () => {
  debugCamera = null; clearTimeout(debugTimer);
  document.getElementById("debug-view").hidden = true;
});

async function refreshGrid() {
  let tree;
  try { tree = await api("/grid"); } catch (e) { return; }
  const sel = document.getElementById("grid-filter");
  const current = sel.value;
  const opts = [el("option", { value: "" }, "all")];
  const walk = (nodes, depth) => {
    for (const n of nodes) {
      opts.push(el("option", { value: n.path.join("/") },
        `${"\u00a0\u00a0".repeat(depth)}${n.name} (${n.active_tickets})`));
      walk(n.children, depth + 1);
    }
  };
  walk(tree, 0);
  sel.replaceChildren(...opts);
  sel.value = current;
}

async function refreshConn() {
  const box = document.getElementById("conn");
  try {
    const res = await fetch("/healthz");
    const h = await res.json();
    box.textContent = `db ${h.database ? "ok" : "down"} · mqtt ${h.mqtt}`;
    box.className = `conn ${h.status === "ok" ? "ok" : "bad"}`;
  } catch (e) {
    box.textContent = "API unreachable"; box.className = "conn bad";
  }
}

function tick() {
  if (loggedIn === null || !document.getElementById("auto").checked) return;
  refreshTickets(); refreshConn();
}

// Login: POST /auth/login sets the HttpOnly session cookie; the page itself never holds the token.
let loggedIn = null;
function showLogin(message) {
  loggedIn = null;
  document.getElementById("app").hidden = true;
  document.getElementById("whoami").hidden = true;
  document.getElementById("login").hidden = false;
  const err = document.getElementById("login-error");
  err.hidden = !message; err.textContent = message || "";
}
function showApp(me) {
  const first = loggedIn === null;
  loggedIn = me;
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("whoami").hidden = false;
  document.getElementById("whoami-name").textContent =
    `${me.username} (${me.role}${me.scopes.length ? ": " + me.scopes.join(", ") : ""})`;
  if (first) { loadLabels(); refreshTickets(); refreshCameras(); refreshGrid(); refreshConn(); }
}
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const res = await fetch("/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: document.getElementById("login-user").value,
                           password: document.getElementById("login-password").value }) });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  document.getElementById("login-password").value = "";
  if (res.ok) showApp(body.user);
  else showLogin(res.status === 429 ? `too many failed logins; wait ${res.headers.get("Retry-After")} s`
                                    : body?.detail || `login failed (${res.status})`);
});
document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/auth/logout", { method: "POST" });
  showLogin("logged out");
});

setupFilters();
fetch("/auth/me").then(async (res) => (res.ok ? showApp(await res.json()) : showLogin()))
  .catch(() => showLogin("API unreachable"));
setInterval(tick, POLL_MS);
setInterval(() => { if (loggedIn !== null) { refreshCameras(); refreshGrid(); } }, POLL_MS * 3);
