// The monitoring page: plain DOM and SVG, no framework, no build step. Every figure on it comes from
// the JSON API the platform uses (design.md §3 and §7); the caller's identity is App Service
// Authentication's (the dev host's --demo-principal locally). Text from the API is only ever set with
// textContent, never as HTML.
"use strict";

const API = "/api";
const STATUS_TEXT = {
  connected: "Connected", auth_expired: "Sign-in expired", error: "Error", never_synced: "Never synced",
  disconnected: "Disconnected", authorization_required: "Sign-in required",
};
const POLL_MS = 1000;

// The function key: given once as ?code=<key>, then kept for this tab only and removed from the URL.
(function keepFunctionKey() {
  const url = new URL(window.location.href);
  const code = url.searchParams.get("code");
  if (code) {
    sessionStorage.setItem("functionKey", code);
    url.searchParams.delete("code");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
})();

class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (error && error.code) || "http_error";
  }
}

async function api(method, path, { body, headers } = {}) {
  const sent = { Accept: "application/json", ...(headers || {}) };
  const key = sessionStorage.getItem("functionKey");
  if (key) sent["x-functions-key"] = key;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin",
  });
  let payload = null;
  try { payload = await response.json(); } catch (_) { /* not JSON: handled below */ }
  if (!payload || payload.success !== true) throw new ApiError(response.status, payload && payload.error);
  return { status: response.status, data: payload.data, headers: response.headers, token: payload.continuationToken };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function when(iso) {
  if (!iso) return "never";
  const date = new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleString();
}

function notice(text, isError = false) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

// -- history chart ---------------------------------------------------------------------------
// Buckets of records and failures over a window ending now: 24 one-hour bars, or 28 six-hour bars.
function buckets(hourly, hours, width) {
  const now = Date.now();
  const start = now - hours * 3600e3;
  const count = Math.ceil(hours / width);
  const out = Array.from({ length: count }, (_, i) => ({ from: start + i * width * 3600e3, records: 0, runs: 0, failures: 0 }));
  for (const point of hourly || []) {
    const at = Date.parse(point.hour);
    if (!(at >= start - 3600e3 && at <= now)) continue;
    const index = Math.min(count - 1, Math.max(0, Math.floor((at - start) / (width * 3600e3))));
    out[index].records += point.records || 0;
    out[index].runs += point.runs || 0;
    out[index].failures += point.failures || 0;
  }
  return out;
}

function chart(title, hourly, hours, width, summary) {
  const data = buckets(hourly, hours, width);
  const W = 480, H = 90, top = 8, bottom = 14;
  const max = Math.max(1, ...data.map((b) => b.records));
  const step = W / data.length;
  const picture = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
    "aria-label": `${title}: records per ${width === 1 ? "hour" : width + " hours"}, failed runs in red` });
  data.forEach((b, i) => {
    const h = b.records ? Math.max(2, (H - top - bottom) * b.records / max) : 0;
    const bar = svg("rect", { class: "bar", x: i * step + 1, y: H - bottom - h, width: Math.max(1, step - 2), height: h });
    const tip = svg("title");
    tip.textContent = `${new Date(b.from).toLocaleString()}: ${b.records} records, ${b.runs} runs, ${b.failures} failed`;
    bar.append(tip);
    picture.append(bar);
    if (b.failures) picture.append(svg("rect", { class: "fail", x: i * step + 1, y: top - 6, width: Math.max(2, step - 2), height: 5 }));
  });
  const label = (x, text, anchor) => { const t = svg("text", { class: "axis", x, y: H - 3, "text-anchor": anchor }); t.textContent = text; return t; };
  picture.append(label(2, hours === 24 ? "24 h ago" : "7 days ago", "start"), label(W - 2, "now", "end"),
    label(W / 2, `max ${max} records`, "middle"));
  const s = summary || { runs: 0, failures: 0, records: {} };
  const total = Object.values(s.records || {}).reduce((a, b) => a + b, 0);
  return el("div", { class: "chart", "data-window": hours === 24 ? "24h" : "7d" },
    el("h3", { text: title }), picture,
    el("div", { class: "summary", text: `${s.runs} runs, ${s.failures} failed, ${total} records written` }));
}

// -- error log -------------------------------------------------------------------------------
async function loadErrors(card, integration) {
  const box = card.querySelector(".errors");
  box.dataset.state = "loading";
  box.replaceChildren(el("h3", { text: "Error log" }), el("p", { class: "none", text: "Loading…" }));
  const rows = [];
  try {
    for (const status of ["PARTIAL", "FAILED"]) {
      const { data } = await api("GET", `/integrations/${encodeURIComponent(integration.id)}/sync-logs?status=${status}&top=50`);
      for (const entry of data) {
        const meta = entry.metadata || {};
        if (status === "FAILED") {
          const error = meta.error || {};
          rows.push({ at: entry.createdAt, type: entry.entityType, status, id: "(the whole data type)",
            error: `${error.code || "error"}: ${error.message || ""}`, data: "" });
        }
        for (const failed of meta.errors || []) {
          rows.push({ at: entry.createdAt, type: entry.entityType, status, id: failed.externalId || "",
            error: failed.error || "", data: JSON.stringify(failed.data ?? null) });
        }
      }
    }
  } catch (error) {
    box.replaceChildren(el("h3", { text: "Error log" }), el("p", { class: "none", text: `Could not read the logs: ${error.message}` }));
    box.dataset.state = "failed";
    return;
  }
  rows.sort((a, b) => String(b.at).localeCompare(String(a.at)));
  const heading = el("h3", { text: `Error log (${rows.length})` });
  if (!rows.length) {
    box.replaceChildren(heading, el("p", { class: "none", text: "No failed records or failed runs in the kept logs." }));
    box.dataset.state = "loaded";
    return;
  }
  const table = el("table", {}, el("thead", {}, el("tr", {},
    ...["When", "Data type", "Status", "Record", "Error", "Data"].map((t) => el("th", { text: t })))));
  const body = el("tbody");
  for (const r of rows) {
    body.append(el("tr", { class: "error-row", "data-status": r.status },
      el("td", { text: when(r.at) }), el("td", { text: r.type }), el("td", { text: r.status }),
      el("td", { class: "record", text: r.id }), el("td", { class: "message", text: r.error }),
      el("td", { class: "data", text: r.data })));
  }
  table.append(body);
  box.replaceChildren(heading, table);
  box.dataset.state = "loaded";
}

// -- sync now, with a progress bar per data type ------------------------------------------------
function progressRow(type) {
  return el("div", { class: "type", "data-type": type },
    el("span", { class: "label", text: type }),
    el("div", { class: "track" }, el("div", { class: "fill", "data-percent": "0" })),
    el("span", { class: "count", text: "queued" }));
}

function setProgress(box, type, { percent, text, done, failed }) {
  let row = box.querySelector(`.type[data-type="${CSS.escape(type)}"]`);
  if (!row) { row = progressRow(type); box.append(row); }
  const fill = row.querySelector(".fill");
  fill.style.width = `${percent}%`;
  fill.dataset.percent = String(Math.round(percent));
  row.classList.toggle("done", !!done);
  row.classList.toggle("failed", !!failed);
  row.querySelector(".count").textContent = text;
}

function countsText(c) {
  return `${c.created || 0} created, ${c.updated || 0} updated, ${c.unchanged || 0} unchanged, ${c.errors || 0} failed`;
}

function showRun(box, run) {
  const progress = run.progress || {};
  const types = Object.keys(progress).length ? Object.keys(progress) : Object.keys(run.counts || {});
  const finished = run.status === "succeeded" || run.status === "failed";
  for (const type of types) {
    const p = progress[type] || (run.counts || {})[type] || {};
    const done = !!p.done || finished;
    // BC does not say how many records a pass will read: a bar grows with what was read and fills when done.
    const read = p.read || 0;
    const percent = done ? 100 : Math.min(90, read ? 10 + 80 * (1 - 1 / (1 + read / 500)) : 3);
    const text = done ? countsText(p) : `${read} read, ${(p.created || 0) + (p.updated || 0)} written`;
    setProgress(box, type, { percent, text, done, failed: run.status === "failed" && !p.done });
  }
}

async function syncNow(card, integration) {
  const button = card.querySelector("button.sync");
  const box = card.querySelector(".progress");
  button.disabled = true;
  delete box.dataset.result;
  delete box.dataset.runId;
  box.hidden = false;
  box.replaceChildren(el("h3", { text: "Sync in progress" }));
  for (const type of integration.entities || []) box.append(progressRow(type));
  const path = `/integrations/${encodeURIComponent(integration.id)}`;
  let result = "failed";
  try {
    const reply = await api("POST", `${path}/dynamics/sync`, { headers: { Prefer: "respond-async" } });
    if (reply.status === 202) {
      // design.md §7: queued; poll the run until it ends.
      const runId = reply.data.runId;
      box.dataset.runId = runId;
      for (;;) {
        const { data: run } = await api("GET", `${path}/sync-runs/${encodeURIComponent(runId)}`);
        showRun(box, run);
        if (run.status === "succeeded" || run.status === "failed") {
          box.querySelector("h3").textContent = run.status === "succeeded" ? "Sync finished" : `Sync failed: ${(run.error || {}).message || ""}`;
          result = run.status;
          await untilRecorded(integration.id, runId);
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    } else {
      // A synchronous answer (the service without queued runs): the run is over, its counts are final.
      box.dataset.runId = reply.headers.get("X-Sync-Run-Id") || "";
      showRun(box, { status: "succeeded", counts: reply.data });
      const paused = Object.values(reply.data).some((c) => c.paused);
      box.querySelector("h3").textContent = paused ? "Sync paused at its time budget: it continues by itself" : "Sync finished";
      result = "succeeded";
    }
  } catch (error) {
    box.querySelector("h3").textContent = `Sync failed: ${error.code}: ${error.message}`;
    for (const row of box.querySelectorAll(".type:not(.done)")) {
      setProgress(box, row.dataset.type, { percent: 100, text: "not synced", failed: true });
    }
  }
  // Draw the card again (status light, last/next sync, charts); the bars move to the new card.
  await refreshOne(integration.id);
  button.disabled = false;
  box.dataset.result = result;
}

// -- sign in again, disconnect -----------------------------------------------------------------
async function signInAgain(integration) {
  try {
    const { data } = await api("POST", `/integrations/${encodeURIComponent(integration.id)}/dynamics/authorize`);
    window.location.assign(data.authorizationUrl);
  } catch (error) {
    notice(`Sign-in could not start: ${error.message}`, true);
  }
}

function confirmDisconnect(integration) {
  const dialog = document.getElementById("confirm-disconnect");
  dialog.querySelector(".name").textContent = integration.name;
  dialog.dataset.integrationId = integration.id;
  dialog.showModal();
}

async function disconnect(id) {
  try {
    await api("DELETE", `/integrations/${encodeURIComponent(id)}`);
    notice("Disconnected: credentials erased, schedule stopped; data and logs kept.");
  } catch (error) {
    notice(`Disconnect failed: ${error.message}`, true);
  }
  await refreshOne(id);
}

// -- cards ---------------------------------------------------------------------------------------
function companyLabel(integration) {
  // The company's name once a test or a reconcile has read it; its id until then.
  if (integration.companyName) return integration.companyName;
  return integration.companyId ? `company ${integration.companyId}` : "company not selected";
}

function completenessLines(completeness) {
  // What the last reconcile proved per type: "verified complete: 10,234 of 10,234 at ...".
  const count = (n) => Number(n || 0).toLocaleString("en-US");
  return Object.entries(completeness || {}).sort(([a], [b]) => a.localeCompare(b)).map(([type, c]) => {
    const complete = c.storedCount === c.bcCount;
    const text = `${type}: ${complete ? "verified complete" : "incomplete"}: ${count(c.storedCount)} of ${count(c.bcCount)} at ${when(c.verifiedAt)}`
      + (c.deletedInBC ? ` (${count(c.deletedInBC)} deleted in BC)` : "");
    return el("div", { class: "verified", "data-type": type, "data-complete": String(complete), text });
  });
}

function card(integration) {
  const status = integration.status || "never_synced";
  const delegated = integration.authMode === "delegated";
  const stats = integration.statistics || {};
  const error = integration.lastError;
  const facts = el("dl", { class: "facts" },
    el("dt", { text: "Last sync" }), el("dd", { class: "last-sync", text: when(integration.lastSyncedAt) }),
    el("dt", { text: "Next sync" }), el("dd", { class: "next-sync",
      text: integration.nextSyncAt ? when(integration.nextSyncAt) : "not scheduled" }),
    el("dt", { text: "Every" }), el("dd", { text: `${integration.syncIntervalMinutes} minutes` }),
    el("dt", { text: "Data types" }), el("dd", { text: (integration.entities || []).join(", ") }));
  const verified = completenessLines(integration.completeness);
  if (verified.length) {
    facts.append(el("dt", { text: "Completeness" }), el("dd", { class: "completeness" }, ...verified));
  }
  if (error) {
    facts.append(el("dt", { text: "Last error" }),
      el("dd", { class: "last-error", text: `${error.code}: ${error.message} (${when(error.at)})` }));
  }
  const actions = el("div", { class: "actions" },
    el("button", { type: "button", class: "sync primary", disabled: status === "disconnected",
      text: "Sync now", onclick: () => syncNow(node, integration) }),
    delegated ? el("button", { type: "button", class: "signin", text: "Sign in again", onclick: () => signInAgain(integration) }) : null,
    el("button", { type: "button", class: "show-errors", text: "View error log", onclick: () => loadErrors(node, integration) }),
    el("button", { type: "button", class: "disconnect danger", disabled: status === "disconnected",
      text: "Disconnect", onclick: () => confirmDisconnect(integration) }));
  if (!delegated && (status === "auth_expired" || status === "disconnected")) {
    actions.append(el("span", { class: "meta", text: "Reconnect: PATCH a new clientId/clientSecret on the integration." }));
  }
  const node = el("article", { class: "integration", "data-id": integration.id, "data-status": status },
    el("header", {},
      el("span", { class: "light", "data-status": status, title: status }),
      el("h2", { text: integration.name }),
      el("span", { class: "status-text", text: STATUS_TEXT[status] || status }),
      el("span", { class: "meta company", title: integration.companyId || "",
        text: `${integration.environment} · ${companyLabel(integration)} · ${delegated ? "signed-in user" : "app credentials"}` })),
    facts, actions,
    el("div", { class: "progress", hidden: true }),
    el("div", { class: "charts" },
      chart("Last 24 hours", stats.hourly, 24, 1, stats.last24h),
      chart("Last 7 days", stats.hourly, 168, 6, stats.last7d)),
    el("div", { class: "errors" }));
  return node;
}

async function details(id) {
  const { data } = await api("GET", `/integrations/${encodeURIComponent(id)}`);
  return data;
}

// A run reads as ended a moment before its integration records it (shared/runs/finish.py closes
// the run first, so that only one instance finishes it): wait for that, briefly, before drawing.
async function untilRecorded(id, runId) {
  for (let attempt = 0; attempt < 40; attempt++) {
    if (((await details(id)).lastRun || {}).runId === runId) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function refreshOne(id) {
  const old = document.querySelector(`article.integration[data-id="${CSS.escape(id)}"]`);
  try {
    const fresh = card(await details(id));
    if (old) {
      // Keep what the operator was looking at: the last run's bars and an opened error log.
      const progress = old.querySelector(".progress");
      if (!progress.hidden) fresh.querySelector(".progress").replaceWith(progress);
      const hadErrors = old.querySelector(".errors").childElementCount > 0;
      old.replaceWith(fresh);
      if (hadErrors) await loadErrors(fresh, { id });
    }
  } catch (error) {
    notice(`Could not refresh the integration: ${error.message}`, true);
  }
}

async function refreshAll() {
  const list = document.getElementById("integrations");
  try {
    const all = [];
    let token = null;
    do {
      const query = token ? `?top=100&continuationToken=${encodeURIComponent(token)}` : "?top=100";
      const page = await api("GET", `/integrations${query}`);
      all.push(...page.data);
      token = page.token;
    } while (token);
    const cards = await Promise.all(all.map(async (i) => card(await details(i.id))));
    list.replaceChildren(...cards);
    document.getElementById("empty").hidden = all.length > 0;
    document.body.dataset.loaded = "true";
  } catch (error) {
    const hint = error.status === 401 ? " (sign in, or open the page with ?code=<function key>)" : "";
    notice(`Could not load the integrations: ${error.code}: ${error.message}${hint}`, true);
    document.body.dataset.loaded = "error";
  }
}

document.getElementById("refresh").addEventListener("click", () => { notice(""); refreshAll(); });
document.getElementById("cancel-disconnect").addEventListener("click", () => document.getElementById("confirm-disconnect").close("cancel"));
document.getElementById("confirm-disconnect-button").addEventListener("click", () => {
  const dialog = document.getElementById("confirm-disconnect");
  dialog.close("confirm");
  disconnect(dialog.dataset.integrationId);
});
// Back from "Sign in again": the OAuth callback sends the browser to OAUTH_RETURN_URL (this page)
// with ?integrationId=...&result=connected|denied.
(function signInResult() {
  const url = new URL(window.location.href);
  const result = url.searchParams.get("result");
  if (!result) return;
  notice(result === "connected" ? "Signed in: the integration is connected again." : `Sign-in ${result}: nothing changed.`,
    result !== "connected");
  url.searchParams.delete("result");
  url.searchParams.delete("integrationId");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
})();
refreshAll();
