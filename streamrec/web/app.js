// The streamrec live view: one card per stream, fed by the runtime's websocket events (docs/events.md):
// hello {classes, streams}, prediction {stream, t, labels, active, modalities, latency_ms}, status {stream, state}.
// Plain browser JavaScript, no build step: the package serves this file as it is.
"use strict";

const TIMELINE_SECONDS = 60;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;

const params = new URLSearchParams(location.search);
const token = params.get("token");
const socketUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" +
  (token ? "?token=" + encodeURIComponent(token) : "");

let classes = [];
const streams = new Map();  // id -> {card, elements, history: [{wall, scores, active}], state}
let retryMs = RETRY_MIN_MS;
let everOpened = false;

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function setConnection(state, text) {
  const node = document.getElementById("connection");
  node.dataset.state = state;
  node.textContent = text;
}

function bar(kind) {
  const outer = element("div", { class: "bar " + kind });
  outer.appendChild(element("span"));
  return outer;
}

function createStream(id, source) {
  const card = element("section", { class: "stream", "data-stream": id });
  const top = element("div", { class: "top" });
  top.appendChild(element("span", { class: "name" }, id));
  const status = element("span", { class: "status", "data-state": "waiting" }, "waiting");
  top.appendChild(status);
  card.appendChild(top);
  card.appendChild(element("div", { class: "source", title: source || "" }, source || ""));
  const meta = element("div", { class: "meta" }, "no prediction yet");
  card.appendChild(meta);
  const active = element("div", { class: "active", "data-active": "" });
  active.appendChild(element("span", { class: "none" }, "nothing active"));
  card.appendChild(active);
  const table = element("table", { class: "scores" });
  const head = element("tr");
  for (const title of ["class", "fused", "", "audio", "video"]) head.appendChild(element("th", {}, title));
  table.appendChild(head);
  const rows = new Map();
  for (const name of classes) {
    const row = element("tr", { "data-class": name });
    const cells = {
      label: element("td", { class: "label" }, name),
      fused: element("td"), fusedNum: element("td", { class: "num" }),
      audio: element("td", { class: "small", title: "audio network" }),
      video: element("td", { class: "small", title: "video network" }),
    };
    cells.fused.appendChild(bar("fused"));
    cells.audio.appendChild(bar("audio"));
    cells.video.appendChild(bar("video"));
    for (const cell of [cells.label, cells.fused, cells.fusedNum, cells.audio, cells.video]) row.appendChild(cell);
    table.appendChild(row);
    rows.set(name, { row, ...cells });
  }
  card.appendChild(table);
  const explain = element("figure", { class: "explain", hidden: "" });
  const overlay = element("img", { alt: "Grad-CAM of the newest frame" });
  const caption = element("figcaption");
  explain.append(overlay, caption);
  card.appendChild(explain);
  const canvas = element("canvas", { class: "timeline" });
  card.appendChild(canvas);
  document.getElementById("streams").appendChild(card);
  document.getElementById("empty").hidden = true;
  const stream = { card, status, meta, active, rows, canvas, explain, overlay, caption, history: [] };
  streams.set(id, stream);
  return stream;
}

function streamFor(id) {
  return streams.get(id) || createStream(id, "");
}

function setWidth(cell, score) {
  cell.querySelector(".bar > span").style.width = (100 * Math.max(0, Math.min(1, score))).toFixed(1) + "%";
}

function onHello(event) {
  // A (re)connection: the server may have restarted with other streams or classes.
  classes = event.classes;
  document.body.dataset.hellos = String(Number(document.body.dataset.hellos || 0) + 1);  // connections so far
  for (const stream of streams.values()) stream.card.remove();
  streams.clear();
  document.getElementById("empty").hidden = event.streams.length > 0;
  for (const s of event.streams) createStream(s.id, s.source);
}

function onPrediction(event) {
  const stream = streamFor(event.stream);
  const scores = Object.fromEntries(event.labels.map((label) => [label.name, label.score]));
  const audio = event.modalities.audio || {};
  const video = event.modalities.video || {};
  for (const [name, cells] of stream.rows) {
    setWidth(cells.fused, scores[name] || 0);
    cells.fusedNum.textContent = (scores[name] || 0).toFixed(2);
    setWidth(cells.audio, audio[name] || 0);
    setWidth(cells.video, video[name] || 0);
    cells.row.classList.toggle("on", event.active.includes(name));
  }
  stream.active.replaceChildren(...(event.active.length
    ? event.active.map((name) => element("span", { class: "chip", "data-class": name }, name))
    : [element("span", { class: "none" }, "nothing active")]));
  stream.active.dataset.active = event.active.join(" ");
  const modalities = ["audio", "video"].filter((m) => event.modalities[m]).join(" + ") || "no input";
  stream.meta.textContent = `media ${event.t.toFixed(1)} s · latency ${event.latency_ms.toFixed(0)} ms · ${modalities}`;
  if (stream.status.dataset.state === "waiting") setStatus(stream, "started", "");
  if (event.explain) {  // only with --explain: where in the newest frame the frame network sees the top class
    stream.explain.hidden = false;
    if (stream.overlay.getAttribute("src") !== event.explain.overlay) stream.overlay.src = event.explain.overlay;
    stream.caption.textContent = `frame network looks here for ${event.explain.class} (Grad-CAM)`;
    stream.explain.dataset.class = event.explain.class;
  }
  stream.history.push({ wall: performance.now() / 1000, scores, active: new Set(event.active) });
  const oldest = performance.now() / 1000 - TIMELINE_SECONDS;
  while (stream.history.length && stream.history[0].wall < oldest) stream.history.shift();
}

function setStatus(stream, state, detail) {
  stream.status.dataset.state = state;
  stream.status.textContent = state;
  stream.status.title = detail || "";
}

function onStatus(event) {
  setStatus(streamFor(event.stream), event.state, event.detail);
}

function drawTimeline(stream) {
  const canvas = stream.canvas;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== width * ratio) { canvas.width = width * ratio; canvas.height = height * ratio; }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  if (!classes.length) return;
  const labelWidth = 70, rowHeight = (height - 14) / classes.length;
  const now = performance.now() / 1000, plotWidth = width - labelWidth - 4;
  const x = (wall) => labelWidth + plotWidth * (1 - (now - wall) / TIMELINE_SECONDS);
  g.font = "10px system-ui, sans-serif";
  g.textBaseline = "middle";
  classes.forEach((name, row) => {
    const y = row * rowHeight;
    g.fillStyle = "#6b7280";
    g.fillText(name, 2, y + rowHeight / 2);
    stream.history.forEach((entry, i) => {
      const next = stream.history[i + 1];
      const x0 = x(entry.wall), x1 = next ? x(next.wall) : x(now);
      const score = entry.scores[name] || 0;
      if (score > 0.02) {
        g.fillStyle = `rgba(47, 111, 179, ${Math.min(1, score)})`;
        g.fillRect(x0, y + 1, Math.max(1, x1 - x0), rowHeight - 2);
      }
      if (entry.active.has(name)) {
        g.strokeStyle = "#1d8a4f";
        g.lineWidth = 2;
        g.strokeRect(x0, y + 1, Math.max(1, x1 - x0), rowHeight - 2);
      }
    });
  });
  g.fillStyle = "#6b7280";
  g.textBaseline = "bottom";
  g.fillText(`-${TIMELINE_SECONDS} s`, labelWidth, height);
  g.fillText("now", width - 24, height);
}

function animate() {
  for (const stream of streams.values()) drawTimeline(stream);
  requestAnimationFrame(animate);
}

function connect() {
  setConnection("connecting", everOpened ? "reconnecting…" : "connecting…");
  let opened = false;
  const socket = new WebSocket(socketUrl);
  socket.onopen = () => {
    opened = everOpened = true;
    retryMs = RETRY_MIN_MS;
    setConnection("open", "connected");
  };
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "hello") onHello(event);
    else if (event.type === "prediction") onPrediction(event);
    else if (event.type === "status") onStatus(event);
  };
  socket.onclose = () => {
    // Browsers hide the HTTP status of a refused handshake; a refusal before any open is most likely the token.
    const why = opened ? "disconnected" : token === null ? "cannot connect" : "refused (wrong token?)";
    setConnection("closed", `${why}: retrying in ${(retryMs / 1000).toFixed(1)} s`);
    setTimeout(connect, retryMs);
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  };
}

connect();
requestAnimationFrame(animate);
