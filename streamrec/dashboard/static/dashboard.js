// The dashboard's script: reads /api/state once, then one message per poll from /api/stream
// (server-sent events), and draws plain SVG. No framework, no build step, nothing fetched from
// beyond the dashboard itself.
"use strict";

const TYPES = ["browse", "click", "purchase"];
const COLORS = { browse: "var(--browse)", click: "var(--click)", purchase: "var(--purchase)",
  all: "var(--all)", p50: "var(--browse)", p99: "var(--p99)", hits: "var(--purchase)",
  misses: "var(--p99)", reordered: "var(--click)", size: "var(--click)" };
const SVG = "http://www.w3.org/2000/svg";
let points = [];
let historyS = 600;
let inspected = null;

const $ = (id) => document.getElementById(id);
const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d));

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// A line chart of named series [{name, values: [[t, v|null]...]}] over the kept history.
function lineChart(svg, series) {
  const w = svg.clientWidth || 400, h = svg.clientHeight || 150, pad = { l: 40, r: 8, t: 6, b: 16 };
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const all = series.flatMap((s) => s.values.filter((p) => p[1] !== null));
  if (!all.length) { el("text", { x: pad.l, y: h / 2 }, svg).textContent = "no data yet"; return; }
  const t1 = Math.max(...all.map((p) => p[0])), t0 = t1 - Math.min(historyS, Math.max(30, t1 - Math.min(...all.map((p) => p[0]))));
  const vmax = Math.max(1e-9, ...all.map((p) => p[1])) * 1.1;
  const x = (t) => pad.l + ((t - t0) / Math.max(1e-9, t1 - t0)) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / vmax) * (h - pad.t - pad.b);
  for (const f of [0, 0.5, 1]) {
    el("line", { x1: pad.l, x2: w - pad.r, y1: y(vmax * f / 1.1), y2: y(vmax * f / 1.1), stroke: "#e3e6ed" }, svg);
    el("text", { x: 2, y: y(vmax * f / 1.1) + 3 }, svg).textContent = fmt(vmax * f / 1.1, vmax < 10 ? 2 : 0);
  }
  el("text", { x: pad.l, y: h - 2 }, svg).textContent = `-${Math.round(t1 - t0)} s`;
  el("text", { x: w - pad.r - 20, y: h - 2 }, svg).textContent = "now";
  let lx = pad.l + 4;
  for (const s of series) {
    const d = s.values.filter((p) => p[1] !== null && p[0] >= t0)
      .map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    if (d) el("path", { d, fill: "none", stroke: COLORS[s.name] || "#888", "stroke-width": 1.6, "data-series": s.name }, svg);
    const label = el("text", { x: lx, y: pad.t + 8, style: `fill:${COLORS[s.name] || "#888"}` }, svg);
    label.textContent = s.name;
    lx += 8 + 6 * s.name.length;
  }
}

function barChart(svg, buckets) {
  const w = svg.clientWidth || 400, h = svg.clientHeight || 150, pad = { l: 40, r: 8, t: 6, b: 16 };
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  if (!buckets.length || !buckets.some((b) => b[1] > 0)) { el("text", { x: pad.l, y: h / 2 }, svg).textContent = "no lists in the last minute"; return; }
  const vmax = Math.max(...buckets.map((b) => b[1]));
  const bw = (w - pad.l - pad.r) / buckets.length;
  buckets.forEach(([le, n], i) => {
    const bh = (n / vmax) * (h - pad.t - pad.b);
    el("rect", { x: pad.l + i * bw + 1, y: h - pad.b - bh, width: bw - 2, height: bh, fill: "var(--browse)", "data-le": le, "data-n": n }, svg);
    el("text", { x: pad.l + i * bw + 1, y: h - 3 }, svg).textContent = Number.isFinite(le) ? (le >= 1000 ? `${le / 1000}s` : `${le}`) : "+∞";
  });
  el("text", { x: 2, y: pad.t + 8 }, svg).textContent = `${vmax}`;
}

function series(name, get) { return { name, values: points.map((p) => [p.t, get(p)]) }; }

function drawCharts() {
  lineChart($("c-events"), [...TYPES.map((t) => series(t, (p) => p.events_in[t])), series("all", (p) => p.events_in.all)]);
  lineChart($("c-lists"), [...TYPES.map((t) => series(t, (p) => p.lists_out[t])), series("all", (p) => p.lists_out.all)]);
  lineChart($("c-latency"), [series("p50", (p) => p.latency_ms.p50), series("p99", (p) => p.latency_ms.p99)]);
  lineChart($("c-cache"), [series("hits", (p) => p.encoder.hits_per_s), series("misses", (p) => p.encoder.misses_per_s),
    series("reordered", (p) => p.encoder.reordered_per_s)]);
  lineChart($("c-batch"), [series("p50", (p) => p.batch.p50_ms), series("p99", (p) => p.batch.p99_ms), series("size", (p) => p.batch.mean_size)]);
}

function drawNow(msg) {
  const p = points[points.length - 1];
  if (p) {
    $("t-events").textContent = fmt(p.events_in.all);
    $("t-lists").textContent = fmt(p.lists_out.all);
    $("t-p50").textContent = p.latency_ms.p50 === null ? "–" : `${fmt(p.latency_ms.p50)} ms`;
    $("t-p99").textContent = p.latency_ms.p99 === null ? "–" : `${fmt(p.latency_ms.p99)} ms`;
    $("t-dlq").textContent = fmt(Object.values(p.dlq).reduce((a, b) => a + b, 0), 2);
    $("t-workers").textContent = `${p.workers_up}/${msg.workers.length}`;
  }
  barChart($("c-hist"), msg.latency_histogram || []);
  const rows = msg.workers.map((w) => w.ok
    ? `<tr data-url="${esc(w.url)}"><td>${esc(w.url)}</td><td>${esc(w.status)}${w.fault ? " · " + esc(w.fault) : ""}</td>` +
      `<td>${esc(w.model_version)} · ${w.catalog_items} items · ${esc(w.retrieval.method)}` +
      `${w.retrieval.method === "exact scan" ? "" : ` (${w.retrieval.graph_items} items, recall@k ≈ ${fmt(w.retrieval.recall_estimate, 3)})`}` +
      ` · cache ${w.encoder_cache.users}/${w.encoder_cache.capacity} users</td><td>${esc(w.partitions.join(", "))}</td></tr>`
    : `<tr data-url="${esc(w.url)}"><td>${esc(w.url)}</td><td colspan="3">down: ${esc(w.error)}</td></tr>`);
  $("workers").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="4">no worker found</td></tr>';
  const d = msg.discovery || {};
  $("discovery").textContent = `workers from ${d.from}${d.error ? " (last discovery failed: " + d.error + ")" : ""}`;
  // one row per partition number (the three type topics are co-partitioned), a column per topic
  const lag = msg.workers.filter((w) => w.ok).flatMap((w) => w.lag.map(([t, part, n]) => [t, part, n, w.url]));
  const topics = [...new Set(lag.map((r) => r[0]))].sort();
  const rowsByPart = new Map();
  for (const [t, part, n, u] of lag) {
    if (!rowsByPart.has(part)) rowsByPart.set(part, { url: u, n: {} });
    rowsByPart.get(part).n[t] = n;
  }
  $("lag").tHead.innerHTML = `<tr><th>partition</th>${topics.map((t) => `<th>${esc(t)}</th>`).join("")}<th>worker</th></tr>`;
  $("lag").tBodies[0].innerHTML = [...rowsByPart.entries()].sort((a, b) => a[0] - b[0]).map(([part, r]) =>
    `<tr><td>${part}</td>${topics.map((t) => `<td>${r.n[t] ?? "–"}</td>`).join("")}<td>${esc(r.url)}</td></tr>`).join("");
  $("dlq").tBodies[0].innerHTML = p ? Object.entries(p.dlq).map(([r, v]) => `<tr><td>${esc(r)}</td><td>${fmt(v, 2)}</td></tr>`).join("") : "";
  $("recent-users").innerHTML = (msg.recent_users || []).map((u) => `<a href="#" data-user="${esc(u)}">${esc(u)}</a>`).join(" ");
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function whyText(item) { return item.why ? `${item.why.kind}: ${item.why.text || ""}` : ""; }

function drawList(ol, list, moves) {
  if (!list) { ol.innerHTML = "<li class='note'>no list</li>"; return; }
  ol.innerHTML = list.items.map((item, i) => {
    let mark = "";
    if (moves) {
      const was = moves.ranks[i][2];
      mark = was === null ? ' <span class="new">new</span>'
        : was > i ? ` <span class="moved-up">↑${was - i}</span>` : was < i ? ` <span class="moved-down">↓${i - was}</span>` : "";
    }
    return `<li data-item="${esc(item.item_id)}">${esc(item.item_id)} <span class="note">${fmt(item.score, 3)}</span>${mark}` +
      `<span class="why">${esc(whyText(item))}</span></li>`;
  }).join("");
}

function drawTimeline(events) {
  const svg = $("timeline"), w = svg.clientWidth || 400, h = svg.clientHeight || 46;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  if (!events.length) return;
  const t0 = events[0][2], t1 = Math.max(t0 + 1, events[events.length - 1][2]);
  events.forEach(([item, type, ts]) => {
    const c = el("circle", { cx: 8 + ((ts - t0) / (t1 - t0)) * (w - 16), cy: 10 + 12 * TYPES.indexOf(type), r: 4,
      fill: COLORS[type] || "#888" }, svg);
    el("title", {}, c).textContent = `${type} ${item} at ${new Date(ts * 1000).toISOString()}`;
  });
}

async function inspect(user) {
  inspected = user;
  const headers = {};
  const token = $("token").value || sessionStorage.getItem("streamrec-token") || "";
  if (token) { headers.Authorization = `Bearer ${token}`; sessionStorage.setItem("streamrec-token", token); }
  let body;
  try {
    const r = await fetch(`/api/users/${encodeURIComponent(user)}`, { headers });
    body = await r.json();
    if (!r.ok) { $("inspect-status").textContent = body.error || `HTTP ${r.status}`; return; }
  } catch (e) { $("inspect-status").textContent = String(e); return; }
  if (inspected !== user) return;  // another user was asked for meanwhile
  const st = body.state;
  $("inspect-status").textContent = `partition ${body.partition} on ${body.worker || "no worker"}` +
    (st && st.found ? ` · ${st.events} events kept` : " · no record") + (body.error ? ` · ${body.error}` : "");
  const events = st && st.timeline ? st.timeline : [];
  drawTimeline(events);
  $("events").innerHTML = events.slice().reverse().map(([item, type, ts]) =>
    `<li data-item="${esc(item)}"><span class="type-${esc(type)}">${esc(type)}</span> ${esc(item)} <span class="note">${new Date(ts * 1000).toLocaleTimeString()}</span></li>`).join("");
  drawList($("current"), body.current, body.moves);
  drawList($("previous"), body.previous, null);
  $("current-meta").textContent = body.current
    ? `${body.current.source} · ${body.current.model_version} · event ${body.current.event_id}` : "";
  $("left").textContent = body.moves && body.moves.left.length ? `left the list: ${body.moves.left.join(", ")}` : "";
  $("current").dataset.eventId = body.current ? body.current.event_id : "";
}

function connect() {
  const source = new EventSource("/api/stream");
  source.onopen = () => { $("conn").textContent = "live"; $("conn").className = "pill on"; };
  source.onerror = () => { $("conn").textContent = "reconnecting…"; $("conn").className = "pill off"; };
  source.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    points.push(msg.point);
    const cut = msg.point.t - historyS;
    while (points.length && points[0].t < cut) points.shift();
    drawNow(msg);
    drawCharts();
    if (inspected && msg.polls % 2 === 0) inspect(inspected);
  };
}

async function start() {
  const r = await fetch("/api/state");
  const state = await r.json();
  historyS = state.config.history_s;
  points = state.points;
  drawNow(state);
  drawCharts();
  connect();
  $("inspect-form").addEventListener("submit", (e) => { e.preventDefault(); const u = $("user-id").value.trim(); if (u) inspect(u); });
  document.body.addEventListener("click", (e) => {
    const u = e.target.dataset && e.target.dataset.user;
    if (u) { e.preventDefault(); $("user-id").value = u; inspect(u); }
  });
}

start();
