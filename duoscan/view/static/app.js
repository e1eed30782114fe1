// duoscan operator view: hash routes, polled JSON, no build step.
"use strict";
const view = document.getElementById("view");
const status = document.getElementById("status");
const POLL_MS = 1500;
let lastRender = "";

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));
const when = (ms) => new Date(ms).toLocaleTimeString();
const enc = encodeURIComponent;

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new Error(`${url}: HTTP ${r.status}${body.detail ? ` (${body.detail})` : ""}`);
  }
  return r.json();
}

function badge(f) {
  return `<span class="badge ${esc(f.verdict)}">${esc(f.verdict)}</span>` + (f.degraded ? `<span class="badge degraded" title="scored without an input its model was trained on">degraded</span>` : "");
}

function frameTile(f) {
  return `<a class="frame ${esc(f.verdict)}" href="#/frame/${enc(f.frame_id)}" data-frame="${esc(f.frame_id)}">
    <img class="overlay" alt="overlay ${esc(f.frame_id)}" src="/img/${enc(f.frame_id)}/overlay.png">
    <div class="cap">${badge(f)}<span title="score / threshold">${fmt(f.score)} / ${fmt(f.threshold)}</span></div></a>`;
}

function trendSvg(points) {
  if (!points.length) return `<p class="empty">no results yet</p>`;
  const W = 1000, H = 180, pad = 8;
  const ys = points.flatMap((p) => [p.score, p.threshold ?? p.score]);
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const x = (i) => pad + (i * (W - 2 * pad)) / Math.max(1, points.length - 1);
  const y = (v) => H - pad - ((v - lo) * (H - 2 * pad)) / span;
  const line = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.score).toFixed(1)}`).join("");
  const thr = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.threshold ?? p.score).toFixed(1)}`).join("");
  const dots = points.map((p, i) => `<a href="#/frame/${enc(p.frame_id)}"><circle class="${esc(p.verdict)}" cx="${x(i).toFixed(1)}" cy="${y(p.score).toFixed(1)}" r="3"><title>${esc(p.frame_id)} ${fmt(p.score)}</title></circle></a>`).join("");
  return `<svg class="trend" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" data-points="${points.length}">
    <path d="${thr}" class="threshold" fill="none" stroke-width="2"/><path d="${line}" fill="none" stroke="#8ab4f8" stroke-width="1.5"/>${dots}</svg>`;
}

async function renderLines() {
  const lines = await getJSON("/api/lines");
  if (!lines.length) return `<p class="empty">No results in Redis yet. Start workers and producers.</p>`;
  const cards = await Promise.all(lines.map(async (l) => {
    const trend = await getJSON(`/api/lines/${enc(l.line)}/trend?n=120`);
    const stations = Object.entries(l.stations).map(([s, frames]) => `<div class="station" data-station="${esc(s)}"><h3>station ${esc(s)}</h3>
      <div class="frames">${frames.map(frameTile).join("")}</div></div>`).join("");
    return `<section class="line-card" data-line="${esc(l.line)}"><h2><a href="#/line/${enc(l.line)}">line ${esc(l.line)}</a></h2>
      <div class="meta">${l.anomalous} anomalous of the last ${l.recent} frames</div>${trendSvg(trend)}${stations}</section>`;
  }));
  return cards.join("");
}

async function renderLine(line) {
  const [trend, lines] = await Promise.all([getJSON(`/api/lines/${enc(line)}/trend?n=500`), getJSON("/api/lines?n=24")]);
  const l = lines.find((x) => x.line === line);
  const stations = l ? Object.entries(l.stations).map(([s, frames]) => `<div class="station" data-station="${esc(s)}"><h3>station ${esc(s)}</h3><div class="frames">${frames.map(frameTile).join("")}</div></div>`).join("") : "";
  return `<section class="line-card" data-line="${esc(line)}"><h2>line ${esc(line)}: score trend (dashed: threshold)</h2>${trendSvg(trend)}${stations}</section>`;
}

async function renderAlerts(params) {
  const q = new URLSearchParams(params);
  const rows = await getJSON(`/api/alerts?${q}`);
  const input = (name) => `<input name="${name}" placeholder="${name}" value="${esc(params.get(name) || "")}">`;
  const body = rows.map((a) => `<tr class="clickable" data-frame="${esc(a.frame_id)}">
    <td>${when(a.time_ms)}</td><td>${esc(a.line)}</td><td>${esc(a.station)}</td><td>${esc(a.category)}</td><td>${fmt(a.score)}</td><td>${fmt(a.threshold)}</td><td>${esc(a.frame_id)}</td></tr>`).join("");
  return `<h2>Alerts</h2><form class="filters" id="alert-filters">${input("line")}${input("station")}${input("category")}<button>filter</button></form>
    <table id="alerts"><thead><tr><th>time</th><th>line</th><th>station</th><th>category</th><th>score</th><th>threshold</th><th>frame</th></tr></thead>
    <tbody>${body || `<tr><td colspan="7" class="empty">no alerts</td></tr>`}</tbody></table>`;
}

async function renderFrame(id) {
  const f = await getJSON(`/api/frames/${enc(id)}`);
  const img = (name, file, caption) => `<figure><img id="${name}" alt="${name}" src="/img/${enc(id)}/${file}"><figcaption>${caption}</figcaption></figure>`;
  const region = f.region ? `${esc(f.region.area_px)} px, box ${esc(f.region.bbox.join(", "))}` : "none";
  return `<section id="frame-detail" data-frame="${esc(id)}"><h2>frame ${esc(id)} ${badge(f)}</h2>
    <div class="detail">${img("overlay", "overlay.png", "heatmap over RGB, largest anomalous region outlined")}${img("rgb", "rgb.jpg", "RGB")}${img("depth", "depth.png", "depth (nearer = brighter)")}${img("heatmap", "heatmap.png", "anomaly map (threshold mid-ramp)")}</div>
    <table><tbody>
      <tr><th>line / station</th><td><a href="#/line/${enc(f.line)}">${esc(f.line)}</a> / ${esc(f.station)}</td></tr>
      <tr><th>category</th><td>${esc(f.category)}</td></tr>
      <tr><th>score / threshold</th><td>${fmt(f.score)} / ${fmt(f.threshold)}</td></tr>
      <tr><th>model</th><td>${esc(f.model)} ${esc(f.model_version)}</td></tr>
      <tr><th>inputs</th><td>${esc(f.modalities.join(" + "))}</td></tr>
      <tr><th>largest region</th><td>${region}</td></tr>
      <tr><th>written</th><td>${when(f.time_ms)}${f.latency_ms === null ? "" : ` (${f.latency_ms} ms after publish)`}</td></tr>
    </tbody></table></section>`;
}

async function render() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  try {
    let parts;
    try {
      // A frame id may hold '/', so a frame address is "frame/" + the rest, decoded once.
      parts = path.startsWith("/frame/") ? ["frame", decodeURIComponent(path.slice("/frame/".length))] : path.split("/").filter(Boolean).map(decodeURIComponent);
    } catch (err) {
      throw new Error(`the address ${location.hash.slice(0, 80)} is malformed; go back to the lines view`);
    }
    let html;
    if (parts[0] === "line" && parts[1]) html = await renderLine(parts[1]);
    else if (parts[0] === "alerts") html = await renderAlerts(new URLSearchParams(query || ""));
    else if (parts[0] === "frame" && parts[1]) html = await renderFrame(parts[1]);
    else html = await renderLines();
    if (html !== lastRender) { view.innerHTML = html; lastRender = html; bindFilters(); }
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "";
  } catch (err) {
    status.textContent = `refresh failed: ${err.message}`;
    status.className = "stale";
  }
}

function bindFilters() {
  const form = document.getElementById("alert-filters");
  if (!form) return;
  form.onsubmit = (e) => {
    e.preventDefault();
    const q = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
    location.hash = `#/alerts?${q}`;
  };
}

// Rows open their frame; no inline handlers, so no frame id ever lands inside JavaScript source.
view.addEventListener("click", (e) => {
  const row = e.target.closest("tr.clickable[data-frame]");
  if (row) location.hash = `#/frame/${enc(row.dataset.frame)}`;
});
window.addEventListener("hashchange", () => { lastRender = ""; render(); });
render();
setInterval(render, POLL_MS);
